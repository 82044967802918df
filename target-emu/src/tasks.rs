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

struct Entry {
    info: TaskInfo,
    token: CancellationToken,
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

    /// Aborts every task matching `pred` and waits until all of them have
    /// left the set. Returns how many were aborted.
    pub async fn abort_matching(&self, pred: impl Fn(&TaskInfo) -> bool) -> usize {
        let ids: Vec<u64> = {
            let tasks = self.inner.tasks.lock().unwrap();
            tasks
                .iter()
                .filter(|(_, e)| pred(&e.info))
                .map(|(id, e)| {
                    e.token.cancel();
                    *id
                })
                .collect()
        };
        loop {
            let notified = self.inner.finished.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let remaining = {
                let tasks = self.inner.tasks.lock().unwrap();
                ids.iter().filter(|id| tasks.contains_key(id)).count()
            };
            if remaining == 0 {
                return ids.len();
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
            reg2.abort_matching(|t| t.nexus.initiator.as_ref() == "a")
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
}
