//! The client: one request per call over a fresh connection, JSON both ways.

use std::time::Duration;

use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{Method, Request, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// How long connecting may take, and then how long the answer may take.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of the client side of the transport.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The connection or the answer timed out.
    #[error("control connection: {0}")]
    Io(#[from] std::io::Error),
    /// The request could not be built (a bad method, address or path).
    #[error("invalid request: {0}")]
    Invalid(#[from] axum::http::Error),
    /// The connection failed or the peer did not answer with HTTP.
    #[error("control connection: {0}")]
    Exchange(#[from] hyper_util::client::legacy::Error),
    /// The answer's body could not be read.
    #[error("reading the answer: {0}")]
    Body(#[from] hyper::Error),
    /// A body was not JSON.
    #[error("body is not JSON: {0}")]
    Json(#[from] serde_json::Error),
}

fn timed_out(what: String) -> HttpError {
    HttpError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, what))
}

/// Sends one request to `addr` (`host:port`) and returns the status and the
/// JSON body (`null` when the body is empty). `token` is presented as the
/// bearer token (RFC 6750 §2.1).
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> Result<(u16, Value), HttpError> {
    let uri: Uri = format!("http://{addr}{path}")
        .parse()
        .map_err(axum::http::Error::from)?;
    let method = Method::from_bytes(method.as_bytes()).map_err(axum::http::Error::from)?;
    let mut builder = Request::builder().method(method).uri(uri);
    let payload = match body {
        Some(v) => {
            builder = builder.header(CONTENT_TYPE, "application/json");
            Bytes::from(serde_json::to_vec(v)?)
        }
        None => Bytes::new(),
    };
    if let Some(t) = token {
        builder = builder.header(AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = builder.body(Full::new(payload))?;

    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(IO_TIMEOUT));
    // No pool: callers drive this from short-lived runtimes (`block_on`), and
    // a pooled connection would outlive the runtime that spawned its task.
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector);
    let resp = tokio::time::timeout(IO_TIMEOUT, client.request(req))
        .await
        .map_err(|_| timed_out(format!("no answer from {addr} within {IO_TIMEOUT:?}")))??;
    let status = resp.status().as_u16();
    let bytes = tokio::time::timeout(IO_TIMEOUT, resp.into_body().collect())
        .await
        .map_err(|_| timed_out(format!("answer from {addr} stalled")))??
        .to_bytes();
    let value = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)?
    };
    Ok((status, value))
}
