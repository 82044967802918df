//! The transport over real loopback sockets: routing, JSON bodies and
//! queries, and the limits a misbehaving client meets.

use std::time::{Duration, Instant};

use axum::routing::{get, post};
use axum::Router;
use busrig_http::{authorized, request, HttpResponse, JsonBody, Limits, Query, Server};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

fn router() -> Router {
    Router::new()
        .route(
            "/echo",
            post(|q: Query, JsonBody(body): JsonBody| async move {
                HttpResponse::ok(json!({ "body": body, "lun": q.get("lun"), "query": q.0 }))
            }),
        )
        .route("/hello", get(|| async { HttpResponse::ok(json!("hello")) }))
        .method_not_allowed_fallback(|| async { HttpResponse::error(405, "wrong method") })
        .fallback(|| async { HttpResponse::error(404, "no such endpoint") })
}

/// A running server and the means to stop it.
struct Running {
    addr: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(limits: Limits) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(Server::new(router()).limits(limits).serve(listener, async {
            let _ = stopped.await;
        }));
        Running {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

/// Sends `raw` and returns everything the server answers until it closes.
async fn raw_exchange(addr: &str, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the server closes the connection");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn round_trip_with_query_and_body() {
    let srv = Running::start(Limits::default()).await;
    let (code, v) = request(
        &srv.addr,
        "POST",
        "/echo?lun=3&x=a+b%3Ac",
        Some(&json!({"a": 1})),
        None,
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    assert_eq!(v["body"]["a"], 1);
    assert_eq!(v["lun"], "3");
    assert_eq!(v["query"], json!([["lun", "3"], ["x", "a b:c"]]));
    let (code, v) = request(&srv.addr, "POST", "/echo", None, None)
        .await
        .unwrap();
    assert_eq!(
        (code, &v["body"]),
        (200, &Value::Null),
        "an empty body is null"
    );
    srv.stop().await;
}

#[tokio::test]
async fn query_components_are_decoded_as_a_form() {
    let srv = Running::start(Limits::default()).await;
    let (code, v) = request(
        &srv.addr,
        "POST",
        "/echo?t=iqn.2026-11.x%3Ay+z&pct=100%&bad=%zz%C3%A9&lun=1&lun=2",
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    assert_eq!(v["query"][0], json!(["t", "iqn.2026-11.x:y z"]));
    assert_eq!(v["query"][1], json!(["pct", "100%"]));
    assert_eq!(v["query"][2], json!(["bad", "%zzé"]));
    assert_eq!(v["lun"], "1", "the first value given wins");
    srv.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_answer_json() {
    let srv = Running::start(Limits::default()).await;
    let (code, v) = request(&srv.addr, "GET", "/nope", None, None)
        .await
        .unwrap();
    assert_eq!(code, 404);
    assert_eq!(v["error"], "no such endpoint");
    let (code, v) = request(&srv.addr, "GET", "/echo", None, None)
        .await
        .unwrap();
    assert_eq!(code, 405);
    assert_eq!(v["error"], "wrong method");
    srv.stop().await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_refused() {
    let srv = Running::start(Limits::default()).await;
    // curl -d sends a form content type: the body is read as JSON anyway.
    let answer = raw_exchange(
        &srv.addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 5\r\n\r\n{nope",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("body is not JSON"), "{answer}");
    let answer = raw_exchange(
        &srv.addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 8\r\n\r\n{\"a\": 2}",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413() {
    let srv = Running::start(Limits {
        max_body: 64,
        ..Limits::default()
    })
    .await;
    let big = json!({ "pad": "x".repeat(200) });
    let (code, v) = request(&srv.addr, "POST", "/echo", Some(&big), None)
        .await
        .unwrap();
    assert_eq!(code, 413);
    assert!(
        v["error"].as_str().unwrap().contains("64-byte limit"),
        "{v}"
    );
    // Within the limit, the same endpoint serves.
    let (code, _) = request(&srv.addr, "POST", "/echo", Some(&json!({"a": 1})), None)
        .await
        .unwrap();
    assert_eq!(code, 200);
    srv.stop().await;
}

#[tokio::test]
async fn a_client_stalled_inside_the_body_is_refused_with_408() {
    let srv = Running::start(Limits {
        io_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let started = Instant::now();
    // Announces 100 bytes, sends 2, then says nothing more.
    let mut s = TcpStream::connect(&srv.addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the server gives up on the client")
        .unwrap();
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("stalled"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    srv.stop().await;
}

#[tokio::test]
async fn a_client_stalled_inside_the_head_is_disconnected() {
    let srv = Running::start(Limits {
        io_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let mut s = TcpStream::connect(&srv.addr).await.unwrap();
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the server disconnects the client")
        .ok();
    let answer = String::from_utf8_lossy(&out);
    assert!(
        !answer.contains("hello"),
        "the request was not served: {answer}"
    );
    // The server still serves others.
    let (code, v) = request(&srv.addr, "GET", "/hello", None, None)
        .await
        .unwrap();
    assert_eq!((code, v), (200, json!("hello")));
    srv.stop().await;
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let srv = Running::start(Limits::default()).await;
    let addr = srv.addr.clone();
    srv.stop().await;
    assert!(request(&addr, "GET", "/hello", None, None).await.is_err());
}

#[test]
fn only_loopback_without_token() {
    let lo: std::net::SocketAddr = "127.0.0.1:5".parse().unwrap();
    let lo6: std::net::SocketAddr = "[::1]:5".parse().unwrap();
    let far: std::net::SocketAddr = "10.0.0.2:5".parse().unwrap();
    assert!(authorized(&lo, None, None));
    assert!(authorized(&lo6, Some("s3cret"), None));
    assert!(!authorized(&far, None, None));
    assert!(!authorized(&far, None, Some("x")));
    assert!(!authorized(&far, Some("s3cret"), Some("wrong")));
    assert!(authorized(&far, Some("s3cret"), Some("s3cret")));
    assert!(!authorized(&far, Some(""), Some("")));
}
