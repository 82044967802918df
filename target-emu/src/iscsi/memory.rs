//! Memory the portal holds for initiators, counted per connection and for
//! the whole target, so that no initiator can make the target grow without
//! bound (docs/limits.md).
//!
//! What is counted: PDUs queued for sending, read data reserved for a
//! command before it runs, write data that has arrived and write data an
//! R2T asked for, and out-of-order requests waiting for their CmdSN. Each
//! counted byte is in two counters, the connection's and the target's
//! [`MemoryPool`]; both are plain atomics, so the data path takes no lock.
//! A connection that finds no room stops admitting: its commands wait
//! before they run or before their next R2T, and MaxCmdSN stops advancing
//! (RFC 7143 §4.2.2.1), which is the standard back-pressure on an
//! initiator.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The smallest charge of a piece of received data: a small PDU payload
/// keeps the whole read buffer it was cut from alive (the reader reads in
/// chunks of this size, `codec::READ_CHUNK`), so it is counted as one.
pub const MIN_PIECE_CHARGE: u64 = 16 * 1024;

/// What one received piece of `len` bytes costs while it is held.
pub fn piece_charge(len: usize) -> u64 {
    if len == 0 {
        0
    } else {
        (len as u64).max(MIN_PIECE_CHARGE)
    }
}

/// Subtracts without wrapping below zero: a counting mistake must not
/// turn into a target that believes its memory is full for ever.
fn saturating_sub(counter: &AtomicU64, n: u64) {
    let _ = counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
        Some(v.saturating_sub(n))
    });
}

/// The target-wide count of bytes held for initiators, and its limit.
pub struct MemoryPool {
    used: AtomicU64,
    limit: u64,
    /// Connections parked in `waiters`; releases look at the list only
    /// when this is not zero.
    waiting: AtomicUsize,
    /// Parked connections in the order they parked, with the bytes each
    /// is waiting for.
    waiters: Mutex<VecDeque<(Arc<Notify>, u64)>>,
}

impl MemoryPool {
    pub fn new(limit: u64) -> MemoryPool {
        MemoryPool {
            used: AtomicU64::new(0),
            limit,
            waiting: AtomicUsize::new(0),
            waiters: Mutex::new(VecDeque::new()),
        }
    }

    /// Bytes counted now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The configured limit (`iscsi.target_memory`).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes that may still be taken.
    pub fn room(&self) -> u64 {
        self.limit.saturating_sub(self.used.load(Ordering::SeqCst))
    }

    fn add(&self, n: u64) {
        self.used.fetch_add(n, Ordering::SeqCst);
    }

    fn sub(&self, n: u64) {
        saturating_sub(&self.used, n);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.wake_fitting();
        }
    }

    /// Wakes parked connections, oldest first, as long as what they wait
    /// for fits in the room there is; the first that does not fit stops
    /// the round, so a large request is not starved by small ones. Waking
    /// everyone at each release would cost each release as many retries
    /// as there are connections waiting.
    fn wake_fitting(&self) {
        let mut list = self.lock();
        let mut room = self.room();
        while let Some((_, need)) = list.front() {
            if *need > room {
                break;
            }
            room -= *need;
            if let Some((w, _)) = list.pop_front() {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                w.notify_one();
            }
        }
    }

    /// Asks for `wake` to be notified when `need` bytes may fit. The caller
    /// checks for room again afterwards: a release between its first check
    /// and this call has then either been seen by that check or wakes it.
    fn park(&self, wake: &Arc<Notify>, need: u64) {
        let mut list = self.lock();
        if !list.iter().any(|(w, _)| Arc::ptr_eq(w, wake)) {
            list.push_back((wake.clone(), need));
            self.waiting.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Takes `wake` off the list (its connection has ended).
    fn unpark(&self, wake: &Arc<Notify>) {
        let mut list = self.lock();
        let before = list.len();
        list.retain(|(w, _)| !Arc::ptr_eq(w, wake));
        self.waiting
            .fetch_sub(before - list.len(), Ordering::SeqCst);
        drop(list);
        // Whoever was behind it may fit now.
        self.wake_fitting();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Arc<Notify>, u64)>> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The counters of one connection, readable by the control plane and
/// tests through its session handle.
#[derive(Debug, Default)]
pub struct ConnMemory {
    used: AtomicU64,
    /// The MaxCmdSN last stamped on a PDU.
    max_cmd_sn: AtomicU32,
    /// Commands waiting for memory before they run or send their next R2T.
    waiting: AtomicU32,
}

impl ConnMemory {
    /// Bytes this connection holds now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The MaxCmdSN the connection last told its initiator.
    pub fn max_cmd_sn(&self) -> u32 {
        self.max_cmd_sn.load(Ordering::Relaxed)
    }

    /// Commands waiting for memory.
    pub fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }

    pub(crate) fn set_max_cmd_sn(&self, sn: u32) {
        self.max_cmd_sn.store(sn, Ordering::Relaxed);
    }

    pub(crate) fn set_waiting(&self, n: usize) {
        self.waiting.store(n as u32, Ordering::Relaxed);
    }
}

/// One connection's view of both counters: the actor and the writer task
/// each hold one.
#[derive(Clone)]
pub struct Meter {
    conn: Arc<ConnMemory>,
    pool: Arc<MemoryPool>,
    limit: u64,
    /// Notified when memory of this connection or of the pool is released.
    pub wake: Arc<Notify>,
}

impl Meter {
    pub fn new(conn: Arc<ConnMemory>, pool: Arc<MemoryPool>, limit: u64) -> Meter {
        Meter {
            conn,
            pool,
            limit,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Counts `n` bytes that are held whether or not there is room (PDUs
    /// to send, data the initiator was allowed to send unasked).
    pub fn add(&self, n: u64) {
        if n > 0 {
            self.conn.used.fetch_add(n, Ordering::Relaxed);
            self.pool.add(n);
        }
    }

    /// Releases `n` bytes counted by [`Meter::add`] or [`Meter::try_take`].
    pub fn sub(&self, n: u64) {
        if n > 0 {
            saturating_sub(&self.conn.used, n);
            self.pool.sub(n);
            // notify_one keeps a permit, so an actor that checks late still wakes.
            self.wake.notify_one();
        }
    }

    /// Room for `n` more bytes on this connection and in the pool. With
    /// `alone` (nothing of this connection's commands is counted) only the
    /// pool is asked, so one command larger than the connection limit
    /// still runs.
    pub fn fits(&self, n: u64, alone: bool) -> bool {
        let conn_ok = alone || self.conn.used().saturating_add(n) <= self.limit;
        conn_ok && n <= self.pool.room()
    }

    /// Bytes that may be taken now (the smaller room of the two counters).
    pub fn room(&self, alone: bool) -> u64 {
        let pool = self.pool.room();
        if alone {
            pool
        } else {
            pool.min(self.limit.saturating_sub(self.conn.used()))
        }
    }

    /// Takes `n` bytes if they fit; otherwise parks this connection on the
    /// pool and checks once more (see [`MemoryPool::park`]).
    pub fn try_take(&self, n: u64, alone: bool) -> bool {
        if self.fits(n, alone) {
            self.add(n);
            return true;
        }
        if n <= self.pool.room() {
            // Only this connection is full: its own releases wake it.
            return false;
        }
        self.pool.park(&self.wake, n);
        if self.fits(n, alone) {
            self.add(n);
            return true;
        }
        false
    }

    /// Whether both counters are under their limits: MaxCmdSN may advance.
    pub fn has_room(&self) -> bool {
        self.conn.used() < self.limit && self.pool.room() > 0
    }

    /// Whether `n` more bytes fit in the target's pool.
    pub fn pool_fits(&self, n: u64) -> bool {
        n <= self.pool.room()
    }

    /// Whether the target as a whole has room left.
    pub fn pool_has_room(&self) -> bool {
        self.pool.room() > 0
    }

    /// A command that found no room for `n` bytes: parks on the pool if
    /// the pool is what is short, then checks once more (see
    /// [`MemoryPool::park`]). Returns whether `n` fits now after all.
    pub fn park_for(&self, n: u64, alone: bool) -> bool {
        if n <= self.pool.room() {
            return false;
        }
        self.pool.park(&self.wake, n);
        self.fits(n, alone)
    }

    /// The connection has ended: it waits for nothing any more, and all it
    /// still counts goes back to the pool.
    pub fn close(&self) {
        self.pool.unpark(&self.wake);
        self.sub(self.conn.used());
    }

    pub fn conn(&self) -> &ConnMemory {
        &self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_within_both_limits_and_releases() {
        let pool = Arc::new(MemoryPool::new(100));
        let a = Meter::new(Arc::default(), pool.clone(), 60);
        let b = Meter::new(Arc::default(), pool.clone(), 60);
        assert!(a.try_take(50, false));
        assert!(!a.try_take(20, false), "over the connection limit");
        assert!(b.try_take(50, false));
        assert!(
            !b.try_take(1, true),
            "the pool is full even for a lone command"
        );
        assert!(!a.has_room() || !b.has_room() || pool.room() == 0);
        a.sub(50);
        assert_eq!(pool.used(), 50);
        assert!(b.try_take(10, false));
        assert_eq!(b.conn().used(), 60);
        assert!(!b.has_room());
    }

    #[test]
    fn a_lone_command_may_exceed_the_connection_limit_but_not_the_pool() {
        let pool = Arc::new(MemoryPool::new(100));
        let a = Meter::new(Arc::default(), pool.clone(), 10);
        assert!(a.try_take(80, true));
        assert!(!a.try_take(30, true));
        assert_eq!(a.room(true), 20);
        assert_eq!(a.room(false), 0);
    }

    #[tokio::test]
    async fn a_release_wakes_a_parked_connection() {
        let pool = Arc::new(MemoryPool::new(10));
        let a = Meter::new(Arc::default(), pool.clone(), 10);
        let b = Meter::new(Arc::default(), pool.clone(), 10);
        assert!(a.try_take(10, false));
        assert!(!b.try_take(5, false));
        let woken = b.wake.clone();
        let waiter = tokio::spawn(async move { woken.notified().await });
        a.sub(10);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the parked connection was not woken")
            .unwrap();
        assert!(b.try_take(5, false));
    }

    #[tokio::test]
    async fn releases_wake_the_oldest_waiters_that_fit() {
        let pool = Arc::new(MemoryPool::new(10));
        let holder = Meter::new(Arc::default(), pool.clone(), 10);
        assert!(holder.try_take(10, false));
        let big = Meter::new(Arc::default(), pool.clone(), 10);
        let small = Meter::new(Arc::default(), pool.clone(), 10);
        assert!(!big.try_take(8, false));
        assert!(!small.try_take(2, false));
        holder.sub(5);
        // 5 bytes free: the big request is first and does not fit, so the
        // small one behind it waits too.
        assert_eq!(pool.lock().len(), 2);
        holder.sub(5);
        assert!(pool.lock().is_empty(), "both fit in 10 and were woken");
        tokio::time::timeout(std::time::Duration::from_secs(5), big.wake.notified())
            .await
            .unwrap();
        // A connection that ends leaves the list.
        assert!(big.try_take(8, false));
        let late = Meter::new(Arc::default(), pool.clone(), 10);
        assert!(!late.try_take(5, false));
        late.close();
        assert!(pool.lock().is_empty());
        assert_eq!(pool.waiting.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn small_pieces_cost_a_read_chunk() {
        assert_eq!(piece_charge(0), 0);
        assert_eq!(piece_charge(512), MIN_PIECE_CHARGE);
        assert_eq!(piece_charge(1 << 20), 1 << 20);
    }
}
