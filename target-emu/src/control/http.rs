//! The control plane's transport: plain HTTP/1.1 with JSON bodies, one
//! request per connection (`Connection: close`), so `curl` works as a client
//! as well as `busrig bus`.
//!
//! Access rule: loopback clients are always served; any other client must
//! present `Authorization: Bearer TOKEN`, and only when a token is configured.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head and body the control plane reads.
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1024 * 1024;
/// A client that sends nothing for this long is disconnected.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A parsed control request.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Value,
    pub peer: SocketAddr,
}

impl HttpRequest {
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A control response: HTTP status and JSON body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Value,
}

impl HttpResponse {
    pub fn ok(body: Value) -> HttpResponse {
        HttpResponse { status: 200, body }
    }

    pub fn error(status: u16, message: impl Into<String>) -> HttpResponse {
        HttpResponse {
            status,
            body: serde_json::json!({ "error": message.into() }),
        }
    }
}

/// Errors of the control transport (client side and request parsing).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The connection failed or timed out.
    #[error("control connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something that is not a valid HTTP message.
    #[error("malformed HTTP message: {0}")]
    Malformed(String),
    /// The body was not JSON.
    #[error("body is not JSON: {0}")]
    Json(#[from] serde_json::Error),
}

fn status_text(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        _ => "Error",
    }
}

fn decode_component(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads until the end of the head (`\r\n\r\n`), returning the buffer and the head length.
async fn read_head<S: AsyncRead + Unpin>(io: &mut S) -> Result<(Vec<u8>, usize), HttpError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok((buf, pos + 4));
        }
        if buf.len() > MAX_HEAD {
            return Err(HttpError::Malformed("head too large".into()));
        }
        let n = tokio::time::timeout(IO_TIMEOUT, io.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))??;
        if n == 0 {
            return Err(HttpError::Malformed(
                "connection closed inside the head".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn read_body<S: AsyncRead + Unpin>(
    io: &mut S,
    mut buf: Vec<u8>,
    len: usize,
) -> Result<Vec<u8>, HttpError> {
    let mut chunk = [0u8; 4096];
    while buf.len() < len {
        let n = tokio::time::timeout(IO_TIMEOUT, io.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))??;
        if n == 0 {
            return Err(HttpError::Malformed(
                "connection closed inside the body".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.truncate(len);
    Ok(buf)
}

/// Parses one request from `io`. Returns the request and the bearer token, if any.
async fn read_request<S: AsyncRead + Unpin>(
    io: &mut S,
    peer: SocketAddr,
) -> Result<(HttpRequest, Option<String>), HttpResponse> {
    let bad = |e: HttpError| HttpResponse::error(400, e.to_string());
    let (buf, head_len) = read_head(io).await.map_err(bad)?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&buf[..head_len]) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(HttpResponse::error(400, "malformed request head")),
    }
    let method = req.method.unwrap_or("").to_string();
    let target = req.path.unwrap_or("/");
    let (path, qs) = target.split_once('?').unwrap_or((target, ""));
    let query = qs
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode_component(k), decode_component(v))
        })
        .collect();
    let mut len = 0usize;
    let mut token = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| HttpResponse::error(400, "bad Content-Length"))?;
        } else if h.name.eq_ignore_ascii_case("authorization") {
            token = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(|t| t.trim().to_string());
        }
    }
    if len > MAX_BODY {
        return Err(HttpResponse::error(
            413,
            format!("body of {len} bytes is over the {MAX_BODY}-byte limit"),
        ));
    }
    let body = read_body(io, buf[head_len..].to_vec(), len)
        .await
        .map_err(bad)?;
    let body = if body.iter().all(|b| b.is_ascii_whitespace()) {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| HttpResponse::error(400, format!("body is not JSON: {e}")))?
    };
    Ok((
        HttpRequest {
            method,
            path: path.to_string(),
            query,
            body,
            peer,
        },
        token,
    ))
}

async fn write_response<S: AsyncWrite + Unpin>(
    io: &mut S,
    resp: &HttpResponse,
) -> std::io::Result<()> {
    let mut body = serde_json::to_vec_pretty(&resp.body).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        resp.status,
        status_text(resp.status),
        body.len()
    );
    io.write_all(head.as_bytes()).await?;
    io.write_all(&body).await?;
    io.shutdown().await
}

/// Whether a client at `peer` presenting `presented` may use the control plane.
pub fn authorized(peer: &SocketAddr, configured: Option<&str>, presented: Option<&str>) -> bool {
    if peer.ip().is_loopback() {
        return true;
    }
    matches!((configured, presented), (Some(c), Some(p)) if !c.is_empty() && c == p)
}

/// Serves one control connection.
pub async fn serve_connection<S, H, F>(
    mut io: S,
    peer: SocketAddr,
    token: Option<&str>,
    handler: &H,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Fn(HttpRequest) -> F,
    F: Future<Output = HttpResponse>,
{
    let resp = match read_request(&mut io, peer).await {
        Ok((req, presented)) => {
            if authorized(&peer, token, presented.as_deref()) {
                handler(req).await
            } else {
                tracing::warn!(%peer, "control request refused: not loopback and no valid token");
                HttpResponse::error(403, "control plane: non-loopback clients need a configured token (Authorization: Bearer TOKEN)")
            }
        }
        Err(resp) => resp,
    };
    if let Err(e) = write_response(&mut io, &resp).await {
        tracing::debug!(%peer, error = %e, "control response not delivered");
    }
}

/// Accepts control connections until `shutdown` resolves.
pub async fn serve<H, F>(
    listener: TcpListener,
    token: Option<String>,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(HttpRequest) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = HttpResponse> + Send,
{
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            acc = listener.accept() => match acc {
                Ok((stream, peer)) => {
                    let handler = handler.clone();
                    let token = token.clone();
                    tokio::spawn(async move {
                        serve_connection(stream, peer, token.as_deref(), &handler).await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Client side: sends one request and returns the status and JSON body.
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> Result<(u16, Value), HttpError> {
    let mut stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connect to {addr} timed out"),
            )
        })??;
    let body = body
        .map(serde_json::to_vec)
        .transpose()?
        .unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(IO_TIMEOUT, stream.read_to_end(&mut buf))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "response timed out"))??;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(&buf) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(HttpError::Malformed("bad response head".into())),
    };
    let status = resp.code.unwrap_or(0);
    let rest = &buf[head_len..];
    let value = if rest.iter().all(|b| b.is_ascii_whitespace()) {
        Value::Null
    } else {
        serde_json::from_slice(rest)?
    };
    Ok((status, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_without_token() {
        let lo: SocketAddr = "127.0.0.1:5".parse().unwrap();
        let far: SocketAddr = "10.0.0.2:5".parse().unwrap();
        assert!(authorized(&lo, None, None));
        assert!(!authorized(&far, None, None));
        assert!(!authorized(&far, None, Some("x")));
        assert!(!authorized(&far, Some("s3cret"), Some("wrong")));
        assert!(authorized(&far, Some("s3cret"), Some("s3cret")));
        assert!(!authorized(&far, Some(""), Some("")));
    }

    #[test]
    fn query_components_are_decoded() {
        assert_eq!(decode_component("iqn.2026-11.x%3Ay+z"), "iqn.2026-11.x:y z");
        assert_eq!(decode_component("100%"), "100%");
        assert_eq!(decode_component("%zz%C3%A9"), "%zzé");
        assert_eq!(decode_component("é%4"), "é%4");
    }

    #[tokio::test]
    async fn round_trip_over_loopback() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            None,
            |req: HttpRequest| async move {
                if req.path == "/echo" {
                    HttpResponse::ok(
                        serde_json::json!({ "method": req.method, "body": req.body, "q": req.query("lun") }),
                    )
                } else {
                    HttpResponse::error(404, "no such endpoint")
                }
            },
            async {
                let _ = rx.await;
            },
        ));
        let (code, v) = request(
            &addr,
            "POST",
            "/echo?lun=3",
            Some(&serde_json::json!({"a": 1})),
            None,
        )
        .await
        .unwrap();
        assert_eq!(code, 200);
        assert_eq!(v["method"], "POST");
        assert_eq!(v["body"]["a"], 1);
        assert_eq!(v["q"], "3");
        let (code, v) = request(&addr, "GET", "/nope", None, None).await.unwrap();
        assert_eq!(code, 404);
        assert!(v["error"].as_str().unwrap().contains("no such"));
        let _ = tx.send(());
        server.await.unwrap();
    }
}
