//! busrig's HTTP+JSON transport, shared by the bus control plane
//! (`busrig-target`) and every cluster node's admin endpoint
//! (`busrig-cluster`), and the client both use (`busrig bus`,
//! `busrig cluster`, the lab).
//!
//! Servers are [axum](https://docs.rs/axum) [`Router`]s: each endpoint is a
//! route, so a later stream endpoint (server-sent events) is one more route
//! merged into the same router. [`Server`] puts the common layers around a
//! router — the access rule, the body size limit and the I/O timeouts — and
//! serves it on a listener the caller bound until the caller's shutdown
//! future resolves.
//!
//! Every answer is JSON ([`HttpResponse`]); errors are a non-200 status with
//! `{"error": "..."}`. Bodies are read as JSON whatever their
//! `Content-Type` (so `curl -d` works), and an empty body reads as `null`.
//!
//! Access rule (docs/security.md): a request presenting the server's token
//! as `Authorization: Bearer TOKEN` (RFC 6750 §2.1) is served from anywhere;
//! without it only read-only requests (`GET`, `HEAD`) from loopback are.
//! The rule is decided on the request head, before any of the body is read;
//! a refusal is 401 with a `WWW-Authenticate: Bearer` challenge. Each server
//! caps its connections and the time one request may take ([`Limits`]).

mod client;
mod server;

pub use client::{request, HttpError};
pub use server::{
    authorize, bearer_token, is_loopback, is_mutating, HttpResponse, JsonBody, Limits, Query,
    Refusal, Server, DEFAULT_LIMITS,
};
