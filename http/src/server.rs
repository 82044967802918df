//! The server side: JSON answers and extractors, the access rule, and the
//! layer stack and accept loop every busrig endpoint is served with.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutError};

/// Size and time limits of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body read, in bytes; a larger one is answered 413.
    pub max_body: usize,
    /// How long a client may take to send its request head, and then may
    /// leave the body stalled between two reads, before it is refused.
    pub io_timeout: Duration,
}

/// The limits the control plane and the admin endpoints are served with.
pub const DEFAULT_LIMITS: Limits = Limits {
    max_body: 1024 * 1024,
    io_timeout: Duration::from_secs(30),
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

/// Whether a client at `peer` presenting `presented` may be served.
pub fn authorized(peer: &SocketAddr, configured: Option<&str>, presented: Option<&str>) -> bool {
    if peer.ip().is_loopback() {
        return true;
    }
    matches!((configured, presented), (Some(c), Some(p)) if !c.is_empty() && c == p)
}

/// The access rule as middleware, outermost, so a refused client's body is
/// never read.
async fn authorize(
    State(token): State<Option<Arc<str>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    // RFC 6750 §2.1: `Authorization: Bearer TOKEN`.
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if authorized(&peer, token.as_deref(), presented) {
        next.run(req).await
    } else {
        tracing::warn!(%peer, "request refused: not loopback and no valid token");
        HttpResponse::error(
            403,
            "control plane: non-loopback clients need a configured token (Authorization: Bearer TOKEN)",
        )
        .into_response()
    }
}

/// A router with its token and limits, ready to serve.
#[derive(Debug, Clone)]
pub struct Server {
    router: Router,
    token: Option<String>,
    limits: Limits,
}

impl Server {
    /// Serves `router` with the default limits and no token (loopback only).
    pub fn new(router: Router) -> Server {
        Server {
            router,
            token: None,
            limits: DEFAULT_LIMITS,
        }
    }

    /// The bearer token non-loopback clients must present; `None` serves
    /// loopback clients only.
    pub fn token(mut self, token: Option<String>) -> Server {
        self.token = token;
        self
    }

    pub fn limits(mut self, limits: Limits) -> Server {
        self.limits = limits;
        self
    }

    /// The router with the common layers around it.
    fn app(self) -> Router {
        let token: Option<Arc<str>> = self.token.map(Arc::from);
        self.router
            .layer(DefaultBodyLimit::max(self.limits.max_body))
            .layer(RequestBodyTimeoutLayer::new(self.limits.io_timeout))
            .layer(Extension(self.limits))
            .layer(middleware::from_fn_with_state(token, authorize))
    }

    /// Accepts connections on `listener` until `shutdown` resolves; requests
    /// already accepted are answered.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let io_timeout = self.limits.io_timeout;
        let app = self.app();
        let mut http = hyper::server::conn::http1::Builder::new();
        // One request per connection (`Connection: close`), as `curl` and
        // the client expect; a client that does not finish its head in time
        // is disconnected.
        http.keep_alive(false)
            .timer(TokioTimer::new())
            .header_read_timeout(io_timeout);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                acc = listener.accept() => match acc {
                    Ok((stream, peer)) => {
                        let app = app.clone();
                        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                            req.extensions_mut().insert(ConnectInfo(peer));
                            app.clone().oneshot(req)
                        });
                        let conn = http.serve_connection(TokioIo::new(stream), service);
                        tokio::spawn(async move {
                            if let Err(e) = conn.await {
                                tracing::debug!(%peer, error = %e, "connection ended with an error");
                            }
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
