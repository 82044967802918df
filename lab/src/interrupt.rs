//! Ctrl-C for the lab's long-running verbs (`busrig lab up`, `busrig
//! demo`): SIGINT and SIGTERM are counted instead of ending the process,
//! so the verb can take down what it started before it exits.
//!
//! The lab's processes run in sessions of their own (see
//! [`crate::Lab::up`]): a Ctrl-C typed at the terminal reaches only the
//! verb, never the bus or the nodes, and the verb decides what becomes of
//! them. The first signal asks it to stop and clean up; the second to
//! stop waiting for anything (kill rather than stop cleanly).

use std::sync::atomic::{AtomicU32, Ordering};

use nix::sys::signal::{signal, SigHandler, Signal};

static SIGNALS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_signal(_: nix::libc::c_int) {
    // Only an atomic store: async-signal-safe.
    SIGNALS.fetch_add(1, Ordering::SeqCst);
}

/// Counts SIGINT and SIGTERM from now on instead of letting them end the
/// process. Call it before starting anything that must be cleaned up.
pub fn install() {
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only adds to an atomic.
        if let Err(e) = unsafe { signal(sig, SigHandler::Handler(on_signal)) } {
            tracing::warn!("cannot handle {sig}: {e}; it will end the process");
        }
    }
}

/// SIGINT and SIGTERM received since [`install`].
pub fn count() -> u32 {
    SIGNALS.load(Ordering::SeqCst)
}

/// Whether the user asked to stop (one signal or more).
pub fn interrupted() -> bool {
    count() > 0
}

/// Whether the user asked twice: stop waiting, kill what is left.
pub fn insisted() -> bool {
    count() > 1
}
