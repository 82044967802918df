//! Poll mode for the connection threads: a thread about to sleep first
//! watches its own sockets for a short while.
//!
//! A command at queue depth 1 crosses the machine twice: the initiator's
//! write wakes the target thread, the target's reply wakes the initiator.
//! When the woken thread's core is idle, the wake-up is an inter-processor
//! interrupt to a halted core, and on a virtual machine that is an exit to
//! the hypervisor and back. Measured on the 2-vCPU machine of the README, a
//! plain TCP ping-pong between two processes on different cores took 90 µs
//! per round trip; with the replying side spinning instead of sleeping it
//! took 31 µs. A thread that keeps running for a few tens of microseconds
//! after its last reply is still awake when the next command arrives.
//!
//! So each connection thread (see [`super::IoThreads`]) keeps an epoll set
//! of the sockets it serves, and when tokio is about to park it (no task
//! left to run) it polls that set without blocking, up to `iscsi.poll_us`,
//! before letting tokio sleep. It stops spinning as soon as
//! - one of its sockets is readable: tokio's own epoll then has the event
//!   too and the park returns at once;
//! - another thread has scheduled a task on it (a blocking-pool I/O that
//!   completed, a reset from another session): tokio's injection queue is
//!   not empty;
//! - the window is over: it sleeps as before.
//!
//! This is what polled-mode storage targets (SPDK's reactors) and Linux's
//! hybrid block polling do, bounded and adaptive: after [`PATIENCE`] spins
//! in a row that ran out their window without seeing anything, the thread
//! skips spinning for the next 1, 2, 4, ... up to [`MAX_SKIP`] parks, and
//! a spin that ends on an event resets that. So an idle target, or one whose commands wait on
//! the disk longer than the window (1 MiB writes on the blocking pool),
//! spins rarely and leaves the CPU to the threads doing the work, while a
//! steady stream of small commands keeps its thread awake. `poll_us = 0`
//! turns it off.

use std::cell::{Cell, RefCell};
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

/// The most parks a thread skips spinning for after fruitless spins.
pub const MAX_SKIP: u32 = 64;

/// Fruitless spins in a row before the thread starts skipping: one late
/// command in a steady stream should not cost the next one a wake-up.
pub const PATIENCE: u32 = 4;

/// One connection thread's sockets and spin window.
struct Poller {
    epoll: Epoll,
    window: Duration,
    runtime: tokio::runtime::Handle,
    /// Parks to skip before the next spin.
    skip: Cell<u32>,
    /// Fruitless spins in a row.
    misses: Cell<u32>,
}

thread_local! {
    static POLLER: RefCell<Option<Poller>> = const { RefCell::new(None) };
}

/// Makes the current thread, which runs `runtime`, a polling thread with
/// a spin window of `window`. Without this (or with a zero window) the
/// thread never spins and [`watch`] does nothing.
pub fn install(window: Duration, runtime: tokio::runtime::Handle) -> std::io::Result<()> {
    if window.is_zero() {
        return Ok(());
    }
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    POLLER.with(|p| {
        *p.borrow_mut() = Some(Poller {
            epoll,
            window,
            runtime,
            skip: Cell::new(0),
            misses: Cell::new(0),
        })
    });
    Ok(())
}

/// Adds a socket served on this thread to the set it polls before
/// sleeping. The kernel drops it from the set when the socket is closed.
pub fn watch(fd: BorrowedFd<'_>) {
    POLLER.with(|p| {
        if let Some(p) = p.borrow().as_ref() {
            // Level-triggered: unread data ends the spin at once.
            if let Err(e) = p.epoll.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, 0)) {
                tracing::debug!(error = %e, "cannot poll this connection; it is served without poll mode");
            }
        }
    });
}

/// The runtime's park hook: spins until a socket of this thread is
/// readable, a task was scheduled from elsewhere, or the window is over.
pub fn before_park() {
    POLLER.with(|p| {
        if let Some(p) = p.borrow().as_ref() {
            p.park();
        }
    });
}

impl Poller {
    fn park(&self) {
        let skip = self.skip.get();
        if skip > 0 {
            self.skip.set(skip - 1);
            return;
        }
        if self.spin() {
            self.misses.set(0);
            return;
        }
        let misses = self.misses.get().saturating_add(1);
        self.misses.set(misses);
        if misses >= PATIENCE {
            // 1, 2, 4, ... parks for the 1st, 2nd, 3rd, ... miss past patience.
            let doublings = (misses - PATIENCE).min(MAX_SKIP.trailing_zeros());
            self.skip.set(1 << doublings);
        }
    }

    /// Spins for up to the window; true when it ended on an event.
    fn spin(&self) -> bool {
        let start = Instant::now();
        let mut events = [EpollEvent::empty(); 1];
        let metrics = self.runtime.metrics();
        loop {
            match self.epoll.wait(&mut events, EpollTimeout::ZERO) {
                Ok(n) if n > 0 => return true,
                Ok(_) => {}
                // EINTR: try again; anything else: stop polling this time.
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return false,
            }
            if metrics.global_queue_depth() > 0 {
                return true;
            }
            if start.elapsed() >= self.window {
                return false;
            }
            std::hint::spin_loop();
        }
    }
}
