//! `busrig dashboard`: one live web page over a cluster and its bus, the
//! rig's Cluster Administrator (docs/dashboard.md).
//!
//! The server side polls the nodes' admin endpoints (`GET /status`,
//! `/catalog`, `/db` for the cluster event log), the bus's control plane
//! (`GET /status`, `/audit`) and, in a lab, `lab.json` and the nodes' logs
//! ([`collect`]). Each round becomes a [`collect::Snapshot`]; the page
//! receives it as server-sent events (`GET /events`), the state whenever
//! it changed and the timeline's new entries ([`timeline`]), so it updates
//! without a reload. What the chaos checkers would flag is shown at once
//! ([`alarms`]).
//!
//! Actions (`POST /action`, [`actions`]) go through the same authenticated
//! endpoints as `busrig cluster`, `busrig bus` and `busrig lab`; the
//! dashboard's own `POST` needs its token, from loopback too, as the
//! control plane's do (docs/security.md). The page's files are compiled
//! into the binary ([`assets`]).

pub mod actions;
pub mod alarms;
mod assets;
pub mod collect;
pub mod timeline;

use std::convert::Infallible;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use busrig_http::{HttpResponse, JsonBody, Limits, Server, DEFAULT_LIMITS};
use futures_util::stream::Stream;
use tokio::net::TcpListener;
use tokio::sync::{watch, Mutex};

pub use collect::{Snapshot, Sources};

/// The default listen address: loopback, next to the control plane (3261).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3270";

/// How often the nodes and the bus are asked, by default.
pub const DEFAULT_POLL: Duration = Duration::from_millis(500);

/// The label a lab's dashboard token is derived under from the cluster
/// secret (docs/security.md "Credentials").
pub const LAB_TOKEN_LABEL: &str = "busrig lab dashboard token v1";

/// The file `busrig lab up --dashboard` records its dashboard in, in the
/// lab folder: `{"pid": N, "url": "..."}`; `busrig lab down` stops it.
pub const LAB_DASHBOARD_FILE: &str = "dashboard.json";

/// The dashboard's limits: the event streams are long requests, so a
/// stream lasts up to an hour and the page reconnects after it (the
/// browser's `EventSource` does that by itself).
pub const DASHBOARD_LIMITS: Limits = Limits {
    request_timeout: Duration::from_secs(3600),
    max_connections: 32,
    ..DEFAULT_LIMITS
};

/// Errors of the dashboard's setup.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The lab folder could not be read.
    #[error(transparent)]
    Lab(#[from] busrig_lab::LabError),
    /// Nothing to watch was given.
    #[error("say what to watch: --lab DIR, or --config FILE / --node ADDR and --control ADDR")]
    NoSources,
    /// A background dashboard could not be started.
    #[error("{0}")]
    Start(String),
}

/// The token of the dashboard of the lab whose cluster file holds
/// `secret`: whoever can read that file can act through the dashboard.
pub fn lab_token(secret: &str) -> String {
    busrig_cluster::admin::derive_credential(secret, LAB_TOKEN_LABEL)
}

/// The address to open: the page at `addr`, with the token in the
/// fragment, which the browser never sends to a server; the page reads it
/// and presents it on its actions.
pub fn url(addr: &std::net::SocketAddr, token: Option<&str>) -> String {
    match token {
        Some(t) => format!("http://{addr}/#token={t}"),
        None => format!("http://{addr}/"),
    }
}

/// The dashboard of a lab folder: its sources and its token.
pub fn for_lab(dir: &Path, binary: PathBuf) -> Result<(Sources, String), DashboardError> {
    let cfg = busrig_lab::lab_config(dir)?;
    // lab.json must be there too: the nodes' and the bus's addresses.
    busrig_lab::LabState::load(dir)?;
    let token = lab_token(&cfg.secret);
    Ok((Sources::lab(dir, binary, &cfg), token))
}

/// A running dashboard's shared state.
struct Shared {
    /// The latest snapshot, as the JSON the page reads.
    state: watch::Receiver<Arc<String>>,
    timeline: watch::Receiver<u64>,
    entries: Arc<std::sync::Mutex<timeline::Timeline>>,
    actions: Mutex<actions::Actor>,
}

/// A dashboard: sources, token, poll interval.
pub struct Dashboard {
    sources: Sources,
    token: Option<String>,
    poll: Duration,
}

impl Dashboard {
    /// A dashboard over `sources`; `token` is what its actions need
    /// (`None`: it only shows).
    pub fn new(sources: Sources, token: Option<String>) -> Dashboard {
        Dashboard {
            sources,
            token: token.filter(|t| !t.is_empty()),
            poll: DEFAULT_POLL,
        }
    }

    /// Asks the sources every `poll` instead of [`DEFAULT_POLL`].
    pub fn poll(mut self, poll: Duration) -> Dashboard {
        self.poll = poll.max(Duration::from_millis(50));
        self
    }

    /// Polls the sources and serves the page on `listener` until
    /// `shutdown` resolves.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let (state_tx, state_rx) = watch::channel(Arc::new(String::from("{}")));
        let (tl_tx, tl_rx) = watch::channel(0u64);
        let entries = Arc::new(std::sync::Mutex::new(timeline::Timeline::default()));
        let mut collector = collect::Collector::new(self.sources.clone(), entries.clone());
        let actor = actions::Actor::new(self.sources.clone(), entries.clone());
        let shared = Arc::new(Shared {
            state: state_rx,
            timeline: tl_rx,
            entries,
            actions: Mutex::new(actor),
        });
        let poll = self.poll;
        let poller = tokio::spawn(async move {
            let mut every = tokio::time::interval(poll);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = String::new();
            loop {
                every.tick().await;
                let snap = collector.round().await;
                let text = serde_json::to_string(&snap).unwrap_or_else(|_| "{}".into());
                if text != last {
                    last.clone_from(&text);
                    let _ = state_tx.send(Arc::new(text));
                }
                let seq = collector.timeline_seq();
                tl_tx.send_if_modified(|s| std::mem::replace(s, seq) != seq);
            }
        });
        Server::new(router(shared))
            .token(self.token)
            .limits(DASHBOARD_LIMITS)
            .serve(listener, shutdown)
            .await;
        poller.abort();
    }
}

/// A static file of the page.
fn asset(path: &str) -> Response {
    match assets::get(path) {
        Some((mime, body)) => (
            [
                (header::CONTENT_TYPE, mime),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response(),
        None => HttpResponse::error(404, format!("no such file: {path}")).into_response(),
    }
}

/// `GET /events`: the state now and at every change (`event: state`), the
/// timeline's entries once and then its new ones (`event: timeline`).
fn events(shared: Arc<Shared>) -> impl Stream<Item = Result<Event, Infallible>> {
    struct Cursor {
        shared: Arc<Shared>,
        state: watch::Receiver<Arc<String>>,
        timeline: watch::Receiver<u64>,
        /// The last timeline entry sent.
        sent: u64,
        first: bool,
    }
    let state = shared.state.clone();
    let timeline = shared.timeline.clone();
    let cursor = Cursor {
        shared,
        state,
        timeline,
        sent: 0,
        first: true,
    };
    futures_util::stream::unfold(cursor, |mut c| async move {
        loop {
            let new_entries = || {
                let tl = c.shared.entries.lock().unwrap_or_else(|p| p.into_inner());
                tl.since(c.sent)
            };
            if c.first {
                c.first = false;
                c.state.mark_unchanged();
                let text = c.state.borrow().clone();
                let event = Event::default()
                    .event("state")
                    .retry(Duration::from_secs(1))
                    .data(text.as_str());
                return Some((Ok(event), c));
            }
            let fresh = new_entries();
            if let Some(last) = fresh.last() {
                c.sent = last.seq;
                let data = serde_json::to_string(&fresh).unwrap_or_else(|_| "[]".into());
                return Some((Ok(Event::default().event("timeline").data(data)), c));
            }
            tokio::select! {
                r = c.state.changed() => {
                    r.ok()?;
                    let text = c.state.borrow_and_update().clone();
                    return Some((Ok(Event::default().event("state").data(text.as_str())), c));
                }
                r = c.timeline.changed() => {
                    r.ok()?;
                    c.timeline.mark_unchanged();
                }
            }
        }
    })
}

fn router(shared: Arc<Shared>) -> Router {
    type S = State<Arc<Shared>>;
    Router::new()
        .route("/", get(|| async { asset("index.html") }))
        .route(
            "/assets/{file}",
            get(|axum::extract::Path(f): axum::extract::Path<String>| async move { asset(&f) }),
        )
        .route(
            "/events",
            get(|State(s): S| async move {
                Sse::new(events(s)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            }),
        )
        .route(
            "/state",
            get(|State(s): S| async move {
                let text = s.state.borrow().clone();
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    text.as_str().to_owned(),
                )
            }),
        )
        .route(
            "/action",
            post(|State(s): S, JsonBody(body): JsonBody| async move {
                let mut actor = s.actions.lock().await;
                actor.perform(&body).await
            }),
        )
        .method_not_allowed_fallback(|| async {
            HttpResponse::error(405, "wrong method for this endpoint")
        })
        .fallback(|uri: Uri| async move {
            (
                StatusCode::NOT_FOUND,
                HttpResponse::error(404, format!("no such page: {}", uri.path())),
            )
                .into_response()
        })
        .with_state(shared)
}

/// A dashboard started in the background for a lab (`busrig lab up
/// --dashboard`), as recorded in [`LAB_DASHBOARD_FILE`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LabDashboard {
    pub pid: u32,
    pub url: String,
}

/// How long a background dashboard may take to print its address.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(20);

/// The readiness line `busrig dashboard` prints on stdout: this, then the
/// address to open.
pub const READY_LINE: &str = "busrig dashboard on ";

/// Starts `binary dashboard --lab DIR --listen 127.0.0.1:0` in its own
/// session (so Ctrl-C in the terminal leaves it running, as it does the
/// lab's nodes), waits for its address, and records it in the lab folder.
/// A dashboard recorded there before is stopped first.
pub fn spawn_for_lab(binary: &Path, dir: &Path) -> Result<LabDashboard, DashboardError> {
    use std::io::BufRead as _;
    use std::os::unix::process::CommandExt as _;
    stop_for_lab(dir)?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| io_error(&logs, e))?;
    let log_path = logs.join("dashboard.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| io_error(&log_path, e))?;
    let mut cmd = std::process::Command::new(binary);
    cmd.arg("dashboard")
        .arg("--lab")
        .arg(dir)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and touches only the child
    // between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().map_err(|e| io_error(binary, e))?;
    let pid = child.id();
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        let url = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix(READY_LINE).map(|u| u.trim().to_string()));
        let _ = tx.send(url);
    });
    let url = match rx.recv_timeout(SPAWN_TIMEOUT) {
        Ok(Some(url)) => url,
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(DashboardError::Start(format!(
                "the dashboard did not start (its log, {}):\n{}",
                log_path.display(),
                busrig_lab::log_tail(&log_path, 20)
            )));
        }
    };
    let rec = LabDashboard { pid, url };
    let file = dir.join(LAB_DASHBOARD_FILE);
    let text = serde_json::to_vec_pretty(&rec).unwrap_or_default();
    std::fs::write(&file, text).map_err(|e| io_error(&file, e))?;
    // The child is reaped by `stop_for_lab` (or by init once this
    // process exits): it outlives this process on purpose.
    std::mem::forget(child);
    Ok(rec)
}

/// Stops the dashboard recorded in the lab folder, if one runs; its pid.
pub fn stop_for_lab(dir: &Path) -> Result<Option<u32>, DashboardError> {
    use nix::sys::signal::{kill, Signal};
    let file = dir.join(LAB_DASHBOARD_FILE);
    let Ok(text) = std::fs::read_to_string(&file) else {
        return Ok(None);
    };
    let _ = std::fs::remove_file(&file);
    let Ok(rec) = serde_json::from_str::<LabDashboard>(&text) else {
        return Ok(None);
    };
    if !busrig_lab::alive(rec.pid) || !is_dashboard(rec.pid) {
        return Ok(None);
    }
    let pid = nix::unistd::Pid::from_raw(rec.pid as i32);
    let _ = kill(pid, Signal::SIGTERM);
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while busrig_lab::alive(rec.pid) && std::time::Instant::now() < until {
        // Reap it if it is this process's child (`lab up --dashboard`
        // and `lab down` in one process, as in the tests).
        let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        std::thread::sleep(Duration::from_millis(20));
    }
    if busrig_lab::alive(rec.pid) {
        let _ = kill(pid, Signal::SIGKILL);
    }
    Ok(Some(rec.pid))
}

/// Whether process `pid` is a `busrig dashboard` (and not another process
/// that got the pid of one that ended).
fn is_dashboard(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|&b| b == 0).any(|a| a == b"dashboard"))
        .unwrap_or(false)
}

fn io_error(path: &Path, e: std::io::Error) -> DashboardError {
    DashboardError::Start(format!("{}: {e}", path.display()))
}

/// A dashboard served on a thread of its own (`busrig demo --dashboard`),
/// stopped when this is dropped.
pub struct Background {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Serves `dashboard` on `listen` from a new thread with its own
    /// runtime; returns once it listens.
    pub fn start(
        dashboard: Dashboard,
        listen: std::net::SocketAddr,
    ) -> std::io::Result<Background> {
        let listener = std::net::TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let url = url(&addr, dashboard.token.as_deref());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("dashboard".into())
            .spawn(move || {
                rt.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(l) => {
                            dashboard
                                .serve(l, async {
                                    let _ = rx.await;
                                })
                                .await
                        }
                        Err(e) => tracing::warn!(error = %e, "dashboard: cannot listen"),
                    }
                })
            })?;
        Ok(Background {
            url,
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
