//! The task set across every session of the target.
//!
//! Each SCSI command that is being executed holds a [`TaskGuard`]. Task
//! management (ABORT TASK, ABORT TASK SET, LOGICAL UNIT RESET, target resets)
//! and PREEMPT AND ABORT cancel matching tasks and then wait until every one of
//! them has finished, so that a TMF response is only sent once the affected
//! commands can no longer touch the medium (SAM-5 §7.1, RFC 7143 §11.6.1).
//!
//! Cancellation is cooperative: the executor checks [`TaskGuard::is_aborted`]
//! before every side effect and never drops a command in the middle of a
//! write, so "finished" really means no more I/O will be issued.
//!
//! Who aborted a task decides whether it gets an answer. The control mode
//! page sets TAS (SPC-4 §7.5.8, SAM-5 §5.6): a task aborted by its own I_T
//! nexus (ABORT TASK, its own resets, its logout) ends without a response,
//! because the TMF response speaks for it; a task aborted by anyone else
//! (another initiator's CLEAR TASK SET, LOGICAL UNIT RESET, target reset or
//! PREEMPT AND ABORT, or a bus reset or power cycle injected through the
//! control plane) ends with TASK ABORTED status, so its initiator
//! learns at once instead of waiting for its command timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::nexus::ItNexus;

/// What a running task is, for matching by TMFs.
#[derive(Debug, Clone)]
pub struct TaskInfo {
    pub nexus: ItNexus,
    pub lun: u64,
    pub itt: u32,
    pub cmd_sn: u32,
}

/// Who ends a set of tasks.
#[derive(Debug, Clone, Copy)]
pub enum AbortBy<'a> {
    /// A task management function or command received on this I_T nexus.
    Nexus(&'a ItNexus),
    /// The control plane: an injected bus reset or power cycle.
    ControlPlane,
}

impl std::fmt::Display for AbortBy<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AbortBy::Nexus(n) => write!(f, "{n}"),
            AbortBy::ControlPlane => f.write_str("control plane"),
        }
    }
}

struct Entry {
    info: TaskInfo,
    token: CancellationToken,
    /// Set (under the set's lock, before `token` is cancelled) when the
    /// abort came from another I_T nexus or the control plane.
    foreign: bool,
}

#[derive(Default)]
struct Inner {
    tasks: Mutex<HashMap<u64, Entry>>,
    /// Woken whenever a task leaves the set.
    finished: Notify,
    next_id: AtomicU64,
}

/// Shared registry of running tasks. Cheap to clone.
#[derive(Clone, Default)]
pub struct TaskRegistry {
    inner: Arc<Inner>,
}

/// Held by a running command; leaving the set happens on drop.
pub struct TaskGuard {
    id: u64,
    token: CancellationToken,
    registry: TaskRegistry,
}

impl TaskGuard {
    /// True once a TMF or PREEMPT AND ABORT has aborted this task.
    pub fn is_aborted(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves when the task is aborted (for waits that should give up early).
    pub async fn aborted(&self) {
        self.token.cancelled().await
    }

    /// True when the task was aborted by another I_T nexus or by the
    /// control plane: it is answered (TAS, see the module documentation).
    pub fn aborted_by_another(&self) -> bool {
        // Only asked once a task was aborted, so the lock stays off the
        // path of commands that run normally.
        self.is_aborted()
            && self
                .registry
                .inner
                .tasks
                .lock()
                .unwrap()
                .get(&self.id)
                .is_some_and(|e| e.foreign)
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.registry.inner.tasks.lock().unwrap().remove(&self.id);
        self.registry.inner.finished.notify_waiters();
    }
}

impl TaskRegistry {
    pub fn new() -> TaskRegistry {
        TaskRegistry::default()
    }

    /// Enters a task into the set.
    pub fn register(&self, info: TaskInfo) -> TaskGuard {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        self.inner.tasks.lock().unwrap().insert(
            id,
            Entry {
                info,
                token: token.clone(),
                foreign: false,
            },
        );
        TaskGuard {
            id,
            token,
            registry: self.clone(),
        }
    }

    /// Number of running tasks that match `pred`.
    pub fn count(&self, pred: impl Fn(&TaskInfo) -> bool) -> usize {
        self.inner
            .tasks
            .lock()
            .unwrap()
            .values()
            .filter(|e| pred(&e.info))
            .count()
    }

    /// Running tasks that match `pred`.
    pub fn list(&self, pred: impl Fn(&TaskInfo) -> bool) -> Vec<TaskInfo> {
        self.inner
            .tasks
            .lock()
            .unwrap()
            .values()
            .filter(|e| pred(&e.info))
            .map(|e| e.info.clone())
            .collect()
    }

    /// Aborts every task matching `pred` on behalf of `by` and waits until
    /// all of them have left the set. Returns how many were aborted.
    pub async fn abort_matching(&self, by: AbortBy<'_>, pred: impl Fn(&TaskInfo) -> bool) -> usize {
        let ids: Vec<u64> = {
            let mut tasks = self.inner.tasks.lock().unwrap();
            tasks
                .iter_mut()
                .filter(|(_, e)| pred(&e.info))
                .map(|(id, e)| {
                    let own = matches!(by, AbortBy::Nexus(n) if *n == e.info.nexus);
                    e.foreign |= !own;
                    e.token.cancel();
                    *id
                })
                .collect()
        };
        self.wait_for(&ids).await;
        ids.len()
    }

    /// Waits, without aborting them, until every task matching `pred` now
    /// has left the set (a LUN removal lets its commands finish). Returns
    /// how many there were.
    pub async fn wait_matching(&self, pred: impl Fn(&TaskInfo) -> bool) -> usize {
        let ids: Vec<u64> = {
            let tasks = self.inner.tasks.lock().unwrap();
            tasks
                .iter()
                .filter(|(_, e)| pred(&e.info))
                .map(|(id, _)| *id)
                .collect()
        };
        self.wait_for(&ids).await;
        ids.len()
    }

    async fn wait_for(&self, ids: &[u64]) {
        loop {
            let notified = self.inner.finished.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let remaining = {
                let tasks = self.inner.tasks.lock().unwrap();
                ids.iter().filter(|id| tasks.contains_key(id)).count()
            };
            if remaining == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(init: &str, lun: u64, itt: u32) -> TaskInfo {
        TaskInfo {
            nexus: ItNexus::new(init, [0; 6], "t", 1),
            lun,
            itt,
            cmd_sn: itt,
        }
    }

    #[tokio::test]
    async fn abort_waits_for_matching_tasks_only() {
        let reg = TaskRegistry::new();
        let a = reg.register(info("a", 0, 1));
        let b = reg.register(info("b", 0, 2));
        let reg2 = reg.clone();
        let waiter = tokio::spawn(async move {
            reg2.abort_matching(AbortBy::ControlPlane, |t| t.nexus.initiator.as_ref() == "a")
                .await
        });
        // The abort cannot complete while task a is still running.
        a.aborted().await;
        assert!(a.is_aborted());
        assert!(!b.is_aborted());
        assert!(!waiter.is_finished());
        drop(a);
        assert_eq!(waiter.await.unwrap(), 1);
        assert_eq!(reg.count(|_| true), 1);
        drop(b);
        assert_eq!(reg.count(|_| true), 0);
    }

    /// TAS: only a task aborted by someone other than its own nexus is
    /// answered.
    #[tokio::test]
    async fn who_aborted_decides_whether_the_task_is_answered() {
        let reg = TaskRegistry::new();
        let a = reg.register(info("a", 0, 1));
        let b = reg.register(info("b", 0, 2));
        let c = reg.register(info("c", 1, 3));
        let me = a_nexus();
        let (x, y, z) = (a, b, c);
        let reg2 = reg.clone();
        let waiter = tokio::spawn(async move {
            reg2.abort_matching(AbortBy::Nexus(&me), |t| t.lun == 0)
                .await
        });
        x.aborted().await;
        y.aborted().await;
        assert!(!x.aborted_by_another(), "its own nexus aborted it");
        assert!(y.aborted_by_another(), "another nexus aborted it");
        assert!(!z.is_aborted() && !z.aborted_by_another());
        drop((x, y));
        assert_eq!(waiter.await.unwrap(), 2);
        let reg3 = reg.clone();
        let waiter =
            tokio::spawn(async move { reg3.abort_matching(AbortBy::ControlPlane, |_| true).await });
        z.aborted().await;
        assert!(z.aborted_by_another(), "the device aborted it");
        drop(z);
        assert_eq!(waiter.await.unwrap(), 1);
    }

    fn a_nexus() -> ItNexus {
        info("a", 0, 0).nexus
    }
}
