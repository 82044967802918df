//! The server side: JSON answers and extractors, the access rule, and the
//! layer stack and accept loop every busrig endpoint is served with.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutError};

/// Size, time and connection limits of one server. The control plane and
/// the node admin endpoint each get their own, separate from the iSCSI
/// portal's connections (docs/security.md "Limits").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body read, in bytes; a larger one is answered 413.
    /// Only an authenticated request has its body read at all.
    pub max_body: usize,
    /// How long a client may take to send its request head, and then may
    /// leave the body stalled between two reads, before it is refused.
    pub io_timeout: Duration,
    /// How long one connection (one request: the head, the body, the work
    /// and the answer) may last before it is closed, however it trickles.
    pub request_timeout: Duration,
    /// Connections served at once; one more is answered 503 and closed
    /// without its request being read.
    pub max_connections: usize,
}

/// The limits the control plane and the admin endpoints are served with
/// unless their caller says otherwise.
pub const DEFAULT_LIMITS: Limits = Limits {
    max_body: 1024 * 1024,
    io_timeout: Duration::from_secs(10),
    request_timeout: Duration::from_secs(180),
    max_connections: 64,
};

impl Default for Limits {
    fn default() -> Limits {
        DEFAULT_LIMITS
    }
}

/// An answer: HTTP status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Value,
}

impl HttpResponse {
    pub fn ok(body: Value) -> HttpResponse {
        HttpResponse { status: 200, body }
    }

    /// `status` with `{"error": message}`.
    pub fn error(status: u16, message: impl Into<String>) -> HttpResponse {
        HttpResponse {
            status,
            body: serde_json::json!({ "error": message.into() }),
        }
    }
}

impl IntoResponse for HttpResponse {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = serde_json::to_vec_pretty(&self.body).unwrap_or_else(|_| b"{}".to_vec());
        body.push(b'\n');
        let mut resp = (status, body).into_response();
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp
    }
}

/// Whether `err` or one of its sources is `E`.
fn caused_by<E: std::error::Error + 'static>(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.is::<E>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// The request body as JSON, whatever its `Content-Type`; an empty (or
/// all-whitespace) body is `null`. Refusals are JSON answers: 413 over the
/// size limit, 408 when the client stalls, 400 when it is not JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = HttpResponse;

    async fn from_request(req: Request, state: &S) -> Result<JsonBody, HttpResponse> {
        let limit = req
            .extensions()
            .get::<Limits>()
            .copied()
            .unwrap_or_default()
            .max_body;
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                HttpResponse::error(413, format!("body is over the {limit}-byte limit"))
            } else if caused_by::<TimeoutError>(&rejection) {
                HttpResponse::error(408, "the client stalled inside the body")
            } else {
                HttpResponse::error(400, rejection.body_text())
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(Value::Null));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| HttpResponse::error(400, format!("body is not JSON: {e}")))
    }
}

/// The query string's `key=value` pairs, decoded as a form
/// (`application/x-www-form-urlencoded`, so `+` is a space), in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    /// The first value given for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = HttpResponse;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Query, HttpResponse> {
        axum::extract::Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|rejection| HttpResponse::error(400, rejection.body_text()))
    }
}

/// Whether `ip` is a loopback address, an IPv4 one written as IPv6
/// (`::ffff:127.0.0.1`, RFC 4291 §2.5.5.2) included: a dual-stack listener
/// sees IPv4 clients that way.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.is_loopback(),
            None => v6.is_loopback(),
        },
    }
}

/// The token of an `Authorization: Bearer TOKEN` header value (RFC 6750
/// §2.1). The scheme is matched without regard to case (RFC 9110 §11.1);
/// another scheme, or no token, is `None`.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whether a request may change something: anything but `GET` and `HEAD`
/// (RFC 9110 §9.2.1 calls those two safe). Every busrig endpoint that
/// changes a bus or a cluster is a `POST`.
pub fn is_mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD)
}

/// Why a request was refused; each is answered 401 with a
/// `WWW-Authenticate: Bearer` challenge (RFC 6750 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No bearer token was presented, and the request needs one.
    #[error("this request needs a credential: Authorization: Bearer TOKEN")]
    Missing,
    /// A token was presented and it is not this server's.
    #[error("the credential presented is not valid here")]
    Invalid,
    /// The request needs a token and this server was started without one,
    /// so nobody can make it.
    #[error("this server has no credential configured, so it only answers read-only requests from loopback")]
    NotConfigured,
}

impl Refusal {
    /// The `error` attribute of the challenge (RFC 6750 §3.1).
    fn challenge(self) -> &'static str {
        match self {
            Refusal::Missing | Refusal::NotConfigured => "Bearer realm=\"busrig\"",
            Refusal::Invalid => "Bearer realm=\"busrig\", error=\"invalid_token\"",
        }
    }
}

/// The access rule (docs/security.md): a request that presents the
/// configured token is served from anywhere; a read-only request (`GET`,
/// `HEAD`) from loopback is served without one; everything else is refused.
/// Tokens are compared in constant time.
pub fn authorize(
    peer: &SocketAddr,
    method: &Method,
    configured: Option<&str>,
    presented: Option<&str>,
) -> Result<(), Refusal> {
    let configured = configured.filter(|c| !c.is_empty());
    if let (Some(c), Some(p)) = (configured, presented) {
        if bool::from(c.as_bytes().ct_eq(p.as_bytes())) {
            return Ok(());
        }
        return Err(Refusal::Invalid);
    }
    if !is_mutating(method) && is_loopback(peer.ip()) {
        return Ok(());
    }
    match (configured, presented) {
        (None, _) => Err(Refusal::NotConfigured),
        (Some(_), _) => Err(Refusal::Missing),
    }
}

/// The access rule as middleware, outermost: it sees only the request
/// head, so a refused client's body is never read.
async fn access(
    State(token): State<Option<Arc<str>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let header = req.headers().get(AUTHORIZATION);
    let presented = header.and_then(|v| v.to_str().ok()).and_then(bearer_token);
    match authorize(&peer, req.method(), token.as_deref(), presented) {
        Ok(()) => next.run(req).await,
        Err(refusal) => {
            tracing::warn!(
                %peer,
                method = %req.method(),
                path = req.uri().path(),
                reason = %refusal,
                "request refused"
            );
            let mut resp = HttpResponse::error(401, refusal.to_string()).into_response();
            resp.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static(refusal.challenge()),
            );
            resp
        }
    }
}

/// The answer to a connection over the cap, written straight to the
/// socket: nothing of the request is read.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
connection: close\r\n\
retry-after: 1\r\n\
content-length: 57\r\n\r\n\
{\"error\": \"too many connections at once; try again soon\"}";

/// How long a refused connection is kept to drain what the client sent,
/// so that closing it does not reset the connection (and lose the answer)
/// under a request still arriving.
const TURN_AWAY_LINGER: Duration = Duration::from_millis(250);

/// Answers 503 without reading the request, then discards what the client
/// sends (at most 64 KiB, for at most [`TURN_AWAY_LINGER`]) before closing.
async fn turn_away(mut stream: TcpStream) {
    let _ = tokio::time::timeout(TURN_AWAY_LINGER, async {
        stream.write_all(BUSY).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < 64 * 1024 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// A router with its token and limits, ready to serve.
#[derive(Debug, Clone)]
pub struct Server {
    router: Router,
    token: Option<String>,
    limits: Limits,
}

impl Server {
    /// Serves `router` with the default limits and no token: read-only
    /// requests from loopback only.
    pub fn new(router: Router) -> Server {
        Server {
            router,
            token: None,
            limits: DEFAULT_LIMITS,
        }
    }

    /// The bearer token every request that changes something, and every
    /// request from off the host, must present; `None` leaves only
    /// read-only requests from loopback.
    pub fn token(mut self, token: Option<String>) -> Server {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    pub fn limits(mut self, limits: Limits) -> Server {
        self.limits = limits;
        self
    }

    /// The router with the common layers around it. The access rule is
    /// outermost, so the body limit and the body timeout only ever apply
    /// to an authorized request.
    fn app(self) -> Router {
        let token: Option<Arc<str>> = self.token.map(Arc::from);
        self.router
            .layer(DefaultBodyLimit::max(self.limits.max_body))
            .layer(RequestBodyTimeoutLayer::new(self.limits.io_timeout))
            .layer(Extension(self.limits))
            .layer(middleware::from_fn_with_state(token, access))
    }

    /// Accepts connections on `listener` until `shutdown` resolves; requests
    /// already accepted are answered.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let limits = self.limits;
        let app = self.app();
        let mut http = hyper::server::conn::http1::Builder::new();
        // One request per connection (`Connection: close`), as `curl` and
        // the client expect; a client that does not finish its head in time
        // is disconnected.
        http.keep_alive(false)
            .timer(TokioTimer::new())
            .header_read_timeout(limits.io_timeout);
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        // Refusals being written, bounded too, so a flood costs at most
        // twice the cap in descriptors and every client still gets an
        // answer.
        let refusals = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        // Set while connections are turned away, so a flood logs once.
        let mut refusing = false;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                acc = listener.accept() => match acc {
                    Ok((stream, peer)) => {
                        let Ok(slot) = slots.clone().try_acquire_owned() else {
                            if !refusing {
                                tracing::warn!(
                                    %peer,
                                    max_connections = limits.max_connections,
                                    "connection cap reached: refusing connections until one ends"
                                );
                                refusing = true;
                            }
                            // With as many refusals in flight as the cap,
                            // wait for one to end (at most the linger): the
                            // rest of a flood waits in the kernel's accept
                            // queue, costing this process nothing.
                            let Ok(permit) = refusals.clone().acquire_owned().await else {
                                return;
                            };
                            tokio::spawn(async move {
                                turn_away(stream).await;
                                drop(permit);
                            });
                            continue;
                        };
                        if refusing {
                            tracing::info!("connections are served again");
                            refusing = false;
                        }
                        let app = app.clone();
                        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                            req.extensions_mut().insert(ConnectInfo(peer));
                            app.clone().oneshot(req)
                        });
                        let conn = http.serve_connection(TokioIo::new(stream), service);
                        tokio::spawn(async move {
                            match tokio::time::timeout(limits.request_timeout, conn).await {
                                Ok(Ok(())) => {}
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "connection ended with an error")
                                }
                                Err(_) => tracing::info!(
                                    %peer,
                                    limit = ?limits.request_timeout,
                                    "connection closed: the request took longer than its limit"
                                ),
                            }
                            drop(slot);
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    }
}
