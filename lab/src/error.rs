//! The lab's one error enum (docs/architecture.md, convention 5).
//!
//! Messages are written for the person running the lab. A variant that
//! wraps a cause keeps it as its `source`, so the binary's `{:#}` prints
//! "what was being done: why it failed".

use std::path::PathBuf;

/// What went wrong in the lab, the scenario runner or the demo.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// `dir` has no readable `lab.json`.
    #[error("{} is not a lab folder (no lab.json; run `busrig lab up --dir {}`)", dir.display(), dir.display())]
    NotALab {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// `lab.json` does not parse.
    #[error("{} is damaged", path.display())]
    Damaged {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// No node of that name in the lab.
    #[error("no node {name:?} in this lab (nodes: {})", nodes.join(", "))]
    NoSuchNode { name: String, nodes: Vec<String> },
    /// The process is not running.
    #[error("{0} is not running")]
    NotRunning(String),
    /// The process is already running.
    #[error("{name} is already running (pid {pid})")]
    AlreadyRunning { name: String, pid: u32 },
    /// A signal could not be sent.
    #[error("cannot send {signal} to pid {pid}")]
    Signal {
        signal: nix::sys::signal::Signal,
        pid: u32,
        source: nix::Error,
    },
    /// The run was interrupted (SIGINT or SIGTERM).
    #[error("interrupted")]
    Interrupted,
    /// `up` was interrupted and took down what it had started (names).
    #[error("interrupted while starting the lab; {}", match stopped.is_empty() {
        true => "nothing had been started yet".to_string(),
        false => format!("stopped what had been started: {}", stopped.join(", ")),
    })]
    UpInterrupted { stopped: Vec<String> },
    /// A check or a wait of the lab failed; the message says which.
    #[error("{0}")]
    Failed(String),
    /// An I/O operation failed; `what` names it.
    #[error("{what}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// A step failed because of `source`; `what` names the step.
    #[error("{what}")]
    Context { what: String, source: Box<LabError> },
    /// An I/O error with nothing to add.
    #[error(transparent)]
    RawIo(#[from] std::io::Error),
    /// JSON could not be encoded or decoded.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A scenario file does not parse.
    #[error(transparent)]
    Toml(#[from] toml::de::Error),
    /// The lab's cluster file cannot be used.
    #[error(transparent)]
    ClusterFile(#[from] busrig_cluster::cluster_file::ClusterFileError),
    /// A node's admin endpoint failed.
    #[error(transparent)]
    Admin(#[from] busrig_cluster::admin::AdminError),
    /// The bus's control plane failed.
    #[error(transparent)]
    Http(#[from] busrig_http::HttpError),
}

/// The lab's result.
pub type Result<T, E = LabError> = std::result::Result<T, E>;

/// `bail!` for [`LabError::Failed`].
macro_rules! fail {
    ($($t:tt)*) => {
        return Err($crate::LabError::Failed(format!($($t)*)))
    };
}
pub(crate) use fail;

/// Names what was being done when an error happened.
pub(crate) trait Context<T> {
    /// Wraps the error in [`LabError::Context`] (or [`LabError::Io`]).
    fn context(self, what: impl Into<String>) -> Result<T>;
    /// [`Context::context`] with the message built only on failure.
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: Into<LabError>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|e| wrap(e.into(), what.into()))
    }
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| wrap(e.into(), what().into()))
    }
}

impl LabError {
    /// This error, explained by `what` was being done.
    pub fn context(self, what: impl Into<String>) -> LabError {
        wrap(self, what.into())
    }

    /// The message and every cause, joined by `: `, each once (as the
    /// binary prints errors).
    pub fn chain(&self) -> String {
        busrig_lograte::text::error_chain(self)
    }
}

fn wrap(e: LabError, what: String) -> LabError {
    match e {
        LabError::RawIo(source) => LabError::Io { what, source },
        e => LabError::Context {
            what,
            source: Box::new(e),
        },
    }
}
