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
//! hybrid block polling do, bounded: a thread that saw no traffic spins
//! once for the window after each wake-up and then sleeps, so an idle
//! target costs nothing measurable, and a busy one trades some CPU for
//! latency. `poll_us = 0` turns it off.

use std::cell::RefCell;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

/// One connection thread's sockets and spin window.
struct Poller {
    epoll: Epoll,
    window: Duration,
    runtime: tokio::runtime::Handle,
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
            p.spin();
        }
    });
}

impl Poller {
    fn spin(&self) {
        let start = Instant::now();
        let mut events = [EpollEvent::empty(); 1];
        let metrics = self.runtime.metrics();
        loop {
            match self.epoll.wait(&mut events, EpollTimeout::ZERO) {
                Ok(n) if n > 0 => return,
                Ok(_) => {}
                // EINTR: try again; anything else: stop polling this time.
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return,
            }
            if metrics.global_queue_depth() > 0 || start.elapsed() >= self.window {
                return;
            }
            std::hint::spin_loop();
        }
    }
}
