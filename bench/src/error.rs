//! Why a bench run did not end well, and the exit status each reason
//! gives `busrig bench`.

/// Exit status for RESERVATION CONFLICT, as sg3_utils and `busrig disk`.
pub const EXIT_CONFLICT: u8 = 24;
/// Exit status for data that did not read back as written.
pub const EXIT_MISCOMPARE: u8 = 14;
/// Exit status for a transport or command failure during the run.
pub const EXIT_FAILED: u8 = 99;
/// Exit status for a run stopped by SIGINT or SIGTERM (128 + SIGINT, as a
/// shell reports a process that Ctrl-C ended).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Why the run did not end well.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BenchError {
    /// Another I_T nexus holds the LUN: RESERVATION CONFLICT.
    #[error("reservation conflict: {0}")]
    Conflict(String),
    /// Data did not read back as it was written.
    #[error("miscompare: {0}")]
    Miscompare(String),
    /// A login, a command or the control plane failed.
    #[error("i/o error: {0}")]
    Io(String),
    /// The run was asked for something the LUN or the bench cannot do.
    #[error("usage: {0}")]
    Usage(String),
    /// Ctrl-C (or SIGTERM) came before the timed run started.
    #[error("interrupted: {0}")]
    Interrupted(String),
}

impl BenchError {
    /// The exit status of `busrig bench` for this failure.
    pub fn status(&self) -> u8 {
        match self {
            BenchError::Conflict(_) => EXIT_CONFLICT,
            BenchError::Miscompare(_) => EXIT_MISCOMPARE,
            BenchError::Io(_) => EXIT_FAILED,
            BenchError::Usage(_) => 1,
            BenchError::Interrupted(_) => EXIT_INTERRUPTED,
        }
    }

    /// What went wrong, without the kind.
    pub fn message(&self) -> &str {
        match self {
            BenchError::Conflict(m)
            | BenchError::Miscompare(m)
            | BenchError::Io(m)
            | BenchError::Usage(m)
            | BenchError::Interrupted(m) => m,
        }
    }

    /// The kind, as the report names it.
    pub fn kind(&self) -> &'static str {
        match self {
            BenchError::Conflict(_) => "reservation conflict",
            BenchError::Miscompare(_) => "miscompare",
            BenchError::Io(_) => "i/o error",
            BenchError::Usage(_) => "usage",
            BenchError::Interrupted(_) => "interrupted",
        }
    }
}
