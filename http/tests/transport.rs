//! The transport over real loopback sockets: routing, JSON bodies and
//! queries, and the limits a misbehaving client meets.

use std::time::{Duration, Instant};

use axum::http::Method;
use axum::routing::{get, post};
use axum::Router;
use busrig_http::{
    authorize, bearer_token, is_loopback, request, HttpResponse, JsonBody, Limits, Query, Refusal,
    Server,
};
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

/// The token the test servers are started with.
const TOKEN: &str = "test-token-0123456789";

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
        let task = tokio::spawn(
            Server::new(router())
                .token(Some(TOKEN.into()))
                .limits(limits)
                .serve(listener, async {
                    let _ = stopped.await;
                }),
        );
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
        Some(TOKEN),
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    assert_eq!(v["body"]["a"], 1);
    assert_eq!(v["lun"], "3");
    assert_eq!(v["query"], json!([["lun", "3"], ["x", "a b:c"]]));
    let (code, v) = request(&srv.addr, "POST", "/echo", None, Some(TOKEN))
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
        Some(TOKEN),
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
        b"POST /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-token-0123456789\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 5\r\n\r\n{nope",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("body is not JSON"), "{answer}");
    let answer = raw_exchange(
        &srv.addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-token-0123456789\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 8\r\n\r\n{\"a\": 2}",
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
    let (code, v) = request(&srv.addr, "POST", "/echo", Some(&big), Some(TOKEN))
        .await
        .unwrap();
    assert_eq!(code, 413);
    assert!(
        v["error"].as_str().unwrap().contains("64-byte limit"),
        "{v}"
    );
    // Within the limit, the same endpoint serves.
    let (code, _) = request(
        &srv.addr,
        "POST",
        "/echo",
        Some(&json!({"a": 1})),
        Some(TOKEN),
    )
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
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-token-0123456789\r\nContent-Length: 100\r\n\r\n{\"")
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

/// Reads from `s` until the server closes or `limit` passes; `None` when
/// nothing at all arrived in time.
async fn answer_within(s: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) if out.is_empty() => return None,
            Err(_) => break,
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn a_post_without_the_token_is_refused_from_loopback_too() {
    let srv = Running::start(Limits::default()).await;
    let (code, v) = request(&srv.addr, "POST", "/echo", Some(&json!({"a": 1})), None)
        .await
        .unwrap();
    assert_eq!(code, 401, "{v}");
    assert!(v["error"].as_str().unwrap().contains("Bearer"), "{v}");
    let (code, _) = request(
        &srv.addr,
        "POST",
        "/echo",
        Some(&json!({"a": 1})),
        Some("wrong-token"),
    )
    .await
    .unwrap();
    assert_eq!(code, 401);
    // Read-only requests from loopback need nothing.
    let (code, v) = request(&srv.addr, "GET", "/hello", None, None)
        .await
        .unwrap();
    assert_eq!((code, v), (200, json!("hello")));
    srv.stop().await;
}

#[tokio::test]
async fn without_a_configured_token_nothing_can_change() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(Server::new(router()).serve(listener, async {
        let _ = stopped.await;
    }));
    let (code, v) = request(&addr, "POST", "/echo", None, Some(""))
        .await
        .unwrap();
    assert_eq!(code, 401, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("no credential configured"),
        "{v}"
    );
    let (code, _) = request(&addr, "GET", "/hello", None, None).await.unwrap();
    assert_eq!(code, 200);
    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test]
async fn an_unauthenticated_request_is_refused_before_its_body_is_sent() {
    // A long body timeout: a server that waited for the body would not
    // answer within the test's limit.
    let srv = Running::start(Limits {
        io_timeout: Duration::from_secs(30),
        ..Limits::default()
    })
    .await;
    for auth in ["", "Authorization: Bearer not-the-token\r\n"] {
        let mut s = TcpStream::connect(&srv.addr).await.unwrap();
        let head = format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let answer = answer_within(&mut s, Duration::from_secs(5))
            .await
            .expect("the refusal arrives without the body");
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{answer}"
        );
    }
    srv.stop().await;
}

#[tokio::test]
async fn the_bearer_scheme_is_matched_in_any_case() {
    let srv = Running::start(Limits::default()).await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let raw = format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nAuthorization: {scheme} {TOKEN}\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        let answer = raw_exchange(&srv.addr, raw.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{scheme}: {answer}");
    }
    let raw = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {TOKEN}\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    let answer = raw_exchange(&srv.addr, raw.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 401"),
        "another scheme: {answer}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_are_turned_away_unread() {
    let srv = Running::start(Limits {
        max_connections: 4,
        io_timeout: Duration::from_secs(30),
        ..Limits::default()
    })
    .await;
    // Four clients that connect and say nothing hold every slot.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(&srv.addr).await.unwrap());
    }
    // The server admits connections in order: once a fifth is refused,
    // the four are certainly admitted.
    let mut extra = TcpStream::connect(&srv.addr).await.unwrap();
    let answer = answer_within(&mut extra, Duration::from_secs(5))
        .await
        .expect("a connection over the cap is answered at once");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too many connections"), "{answer}");
    // A slot frees when its client goes away.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, v) = request(&srv.addr, "GET", "/hello", None, None)
            .await
            .unwrap();
        if code == 200 {
            assert_eq!(v, json!("hello"));
            break;
        }
        assert_eq!(code, 503, "{v}");
        assert!(
            Instant::now() < deadline,
            "no slot freed after a client left"
        );
        tokio::task::yield_now().await;
    }
    drop(held);
    srv.stop().await;
}

#[tokio::test]
async fn a_trickling_request_is_cut_at_the_request_limit() {
    let srv = Running::start(Limits {
        io_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_millis(600),
        ..Limits::default()
    })
    .await;
    let started = Instant::now();
    let mut s = TcpStream::connect(&srv.addr).await.unwrap();
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // One byte every 100 ms is well inside the per-read limit; only the
    // whole-request limit stops it.
    let mut closed = false;
    for _ in 0..50 {
        if s.write_all(b" ").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    assert!(closed, "the server never closed the trickling connection");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );
    srv.stop().await;
}

/// One row per case of the access rule (docs/security.md).
#[test]
fn access_rule_table() {
    let lo: std::net::SocketAddr = "127.0.0.1:5".parse().unwrap();
    let lo6: std::net::SocketAddr = "[::1]:5".parse().unwrap();
    let mapped: std::net::SocketAddr = "[::ffff:127.0.0.1]:5".parse().unwrap();
    let far: std::net::SocketAddr = "10.0.0.2:5".parse().unwrap();
    let far_mapped: std::net::SocketAddr = "[::ffff:10.0.0.2]:5".parse().unwrap();
    let (get, post) = (Method::GET, Method::POST);
    /// Name, peer, method, configured token, presented token, decision.
    type Row<'a> = (
        &'a str,
        &'a std::net::SocketAddr,
        &'a Method,
        Option<&'a str>,
        Option<&'a str>,
        Result<(), Refusal>,
    );
    let rows: &[Row] = &[
        (
            "loopback read, no token anywhere",
            &lo,
            &get,
            None,
            None,
            Ok(()),
        ),
        (
            "IPv6 loopback read",
            &lo6,
            &get,
            Some("s3cret"),
            None,
            Ok(()),
        ),
        (
            "IPv4-mapped loopback read",
            &mapped,
            &get,
            Some("s3cret"),
            None,
            Ok(()),
        ),
        (
            "loopback change without a token",
            &lo,
            &post,
            Some("s3cret"),
            None,
            Err(Refusal::Missing),
        ),
        (
            "IPv4-mapped loopback change without a token",
            &mapped,
            &post,
            Some("s3cret"),
            None,
            Err(Refusal::Missing),
        ),
        (
            "loopback change with the token",
            &lo,
            &post,
            Some("s3cret"),
            Some("s3cret"),
            Ok(()),
        ),
        (
            "loopback change, none configured",
            &lo,
            &post,
            None,
            Some("x"),
            Err(Refusal::NotConfigured),
        ),
        (
            "loopback read with a wrong token",
            &lo,
            &get,
            Some("s3cret"),
            Some("wrong"),
            Err(Refusal::Invalid),
        ),
        (
            "remote read without a token",
            &far,
            &get,
            Some("s3cret"),
            None,
            Err(Refusal::Missing),
        ),
        (
            "IPv4-mapped remote read",
            &far_mapped,
            &get,
            Some("s3cret"),
            None,
            Err(Refusal::Missing),
        ),
        (
            "remote, none configured",
            &far,
            &get,
            None,
            None,
            Err(Refusal::NotConfigured),
        ),
        (
            "remote with a wrong token",
            &far,
            &post,
            Some("s3cret"),
            Some("wrong"),
            Err(Refusal::Invalid),
        ),
        (
            "remote with a prefix of the token",
            &far,
            &post,
            Some("s3cret"),
            Some("s3cre"),
            Err(Refusal::Invalid),
        ),
        (
            "remote with the token",
            &far,
            &post,
            Some("s3cret"),
            Some("s3cret"),
            Ok(()),
        ),
        (
            "an empty configured token is none",
            &far,
            &get,
            Some(""),
            Some(""),
            Err(Refusal::NotConfigured),
        ),
    ];
    for (name, peer, method, configured, presented, want) in rows {
        assert_eq!(
            authorize(peer, method, *configured, *presented),
            *want,
            "{name}"
        );
    }
}

#[test]
fn loopback_addresses() {
    for (ip, want) in [
        ("127.0.0.1", true),
        ("127.3.4.5", true),
        ("::1", true),
        ("::ffff:127.0.0.1", true),
        ("::ffff:10.0.0.1", false),
        ("10.0.0.1", false),
        ("::", false),
    ] {
        assert_eq!(is_loopback(ip.parse().unwrap()), want, "{ip}");
    }
}

#[test]
fn bearer_header_values() {
    for (value, want) in [
        ("Bearer abc", Some("abc")),
        ("bearer abc", Some("abc")),
        ("BEARER  abc ", Some("abc")),
        ("Bearer\tabc", Some("abc")),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Bearerabc", None),
    ] {
        assert_eq!(bearer_token(value), want, "{value:?}");
    }
}
