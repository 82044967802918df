//! Linearizability of register histories: the Wing–Gong search (as in
//! Knossos's `linear` checker), one register (key) at a time.
//!
//! A history is a list of operations, each with its invocation time and,
//! when the client saw an answer, its completion time and result. An
//! operation without an answer (a timeout, a dropped connection) is
//! *indeterminate*: it may take effect at any instant after its
//! invocation, or never. The history is linearizable when some total
//! order of the operations (leaving out indeterminate ones that never took
//! effect) respects real time — an operation that completed before another
//! was invoked comes first — and is a legal run of one register.
//!
//! The search picks, among the operations no unlinearized operation
//! completed before, one to linearize next, applies it to the register and
//! recurses; `(linearized set, register value)` pairs already seen are not
//! searched twice. Because a history truncated at a time T (operations
//! still pending at T become indeterminate) of a linearizable history is
//! linearizable, the smallest failing prefix is found by bisection on T,
//! and reported with the operations around the one that completed at T.

use std::collections::HashSet;

use serde::Serialize;

/// What an operation did to the register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "f", rename_all = "kebab-case")]
pub enum RegOp {
    /// Set the value.
    Write { value: String },
    /// Read the value (`None`: the key does not exist).
    Read { value: Option<String> },
    /// Set `value` if the register holds `expect` (`None`: absent).
    Cas {
        expect: Option<String>,
        value: String,
    },
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// It took effect (a read returned its value; a CAS matched).
    Ok,
    /// It definitely did not take effect (a CAS whose expectation was not
    /// met, or a change refused before it was ordered); a failed CAS still
    /// observed that the register differed from `expect`.
    Fail,
    /// No answer: it may or may not have taken effect.
    Unknown,
}

/// One client operation on one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Operation {
    /// The client (a thread of the workload) that issued it.
    pub client: usize,
    /// The admin endpoint it went through.
    pub node: String,
    pub key: String,
    pub op: RegOp,
    pub outcome: Outcome,
    /// Milliseconds (Unix time) when the client sent it.
    pub invoke_ms: u64,
    /// When the answer came; `None` for an indeterminate operation.
    pub complete_ms: Option<u64>,
}

/// Why a key's history is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinearViolation {
    pub key: String,
    /// The operation whose completion made the history non-linearizable.
    pub op: Operation,
    /// The operations overlapping it and the last ones before it: the
    /// smallest window that shows the problem.
    pub window: Vec<Operation>,
}

/// The verdict on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    Violation(Box<LinearViolation>),
    /// The search gave up after this many states (counted as a failure of
    /// the check, never as a pass).
    TooLarge(usize),
}

/// How many `(set, value)` states one search may visit.
pub const STATE_LIMIT: usize = 2_000_000;

/// Checks every key of `history` separately; keys in order.
pub fn check(history: &[Operation]) -> Vec<(String, Verdict)> {
    let mut keys: Vec<&str> = history.iter().map(|o| o.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .map(|k| {
            let ops: Vec<Operation> = history.iter().filter(|o| o.key == k).cloned().collect();
            (k.to_string(), check_key(k, &ops))
        })
        .collect()
}

/// Checks the operations on one key.
pub fn check_key(key: &str, ops: &[Operation]) -> Verdict {
    match search(ops, u64::MAX) {
        Search::Yes => return Verdict::Linearizable,
        Search::Limit(n) => return Verdict::TooLarge(n),
        Search::No => {}
    }
    // The failing truncation: the smallest completion time T at which the
    // history cut at T is no longer linearizable.
    let mut times: Vec<u64> = ops.iter().filter_map(|o| o.complete_ms).collect();
    times.sort_unstable();
    times.dedup();
    let (mut lo, mut hi) = (0usize, times.len().saturating_sub(1));
    while lo < hi {
        let mid = (lo + hi) / 2;
        match search(ops, times[mid]) {
            Search::Yes => lo = mid + 1,
            _ => hi = mid,
        }
    }
    let t = times.get(lo).copied().unwrap_or(u64::MAX);
    let culprit = ops
        .iter()
        .find(|o| o.complete_ms == Some(t))
        .or(ops.last())
        .cloned()
        .expect("a failing history has operations");
    // The window: everything that overlaps the culprit, plus the
    // operations that completed after the last one that completed before
    // the culprit's invocation began (the value it should have seen).
    let since = ops
        .iter()
        .filter_map(|o| o.complete_ms.filter(|&c| c < culprit.invoke_ms))
        .max()
        .map_or(0, |c| {
            ops.iter()
                .filter(|o| o.complete_ms == Some(c))
                .map(|o| o.invoke_ms)
                .min()
                .unwrap_or(c)
        });
    let mut window: Vec<Operation> = ops
        .iter()
        .filter(|o| o.invoke_ms <= t && o.complete_ms.is_none_or(|c| c >= since))
        .cloned()
        .collect();
    window.sort_by_key(|o| (o.invoke_ms, o.complete_ms));
    Verdict::Violation(Box::new(LinearViolation {
        key: key.to_string(),
        op: culprit,
        window,
    }))
}

enum Search {
    Yes,
    No,
    Limit(usize),
}

/// One operation as the search sees it, after truncation at a time.
#[derive(Clone)]
struct Entry<'a> {
    op: &'a RegOp,
    outcome: Outcome,
    invoke: u64,
    /// `u64::MAX` when indeterminate (then also optional).
    complete: u64,
}

/// The Wing–Gong search on `ops` cut at `cut`: operations invoked after
/// `cut` are left out, those completing after it become indeterminate.
fn search(ops: &[Operation], cut: u64) -> Search {
    let mut entries: Vec<Entry<'_>> = ops
        .iter()
        .filter(|o| o.invoke_ms <= cut)
        .filter(|o| o.outcome != Outcome::Fail || matches!(o.op, RegOp::Cas { .. }))
        .filter_map(|o| {
            let done = o.complete_ms.filter(|&c| c <= cut);
            let outcome = if done.is_some() {
                o.outcome
            } else {
                Outcome::Unknown
            };
            // A read without an answer constrains nothing, nor does a
            // change that may or may not have failed a comparison only.
            if outcome == Outcome::Unknown && matches!(o.op, RegOp::Read { .. }) {
                return None;
            }
            Some(Entry {
                op: &o.op,
                outcome,
                invoke: o.invoke_ms,
                complete: if outcome == Outcome::Unknown {
                    u64::MAX
                } else {
                    done.unwrap_or(u64::MAX)
                },
            })
        })
        .collect();
    entries.sort_by_key(|e| (e.invoke, e.complete));
    let n = entries.len();
    let words = n.div_ceil(64).max(1);
    let mut seen: HashSet<(Vec<u64>, Option<String>)> = HashSet::new();
    // Depth-first with an explicit stack of (set, value).
    let mut stack: Vec<(Vec<u64>, Option<String>)> = vec![(vec![0; words], None)];
    while let Some((set, value)) = stack.pop() {
        let done = |i: usize| set[i / 64] >> (i % 64) & 1 == 1;
        // Every required (determinate) operation linearized: a witness.
        if (0..n).all(|i| done(i) || entries[i].complete == u64::MAX) {
            return Search::Yes;
        }
        if !seen.insert((set.clone(), value.clone())) {
            continue;
        }
        if seen.len() > STATE_LIMIT {
            return Search::Limit(seen.len());
        }
        // No operation invoked after the earliest pending completion can
        // go before that operation.
        let horizon = (0..n)
            .filter(|&i| !done(i))
            .map(|i| entries[i].complete)
            .min()
            .unwrap_or(u64::MAX);
        for i in (0..n).filter(|&i| !done(i)) {
            let e = &entries[i];
            if e.invoke > horizon {
                break;
            }
            if let Some(next) = step(&value, e) {
                let mut s = set.clone();
                s[i / 64] |= 1 << (i % 64);
                stack.push((s, next));
            }
        }
    }
    Search::No
}

/// The register after `e`, or `None` if `e` cannot happen now.
fn step(value: &Option<String>, e: &Entry<'_>) -> Option<Option<String>> {
    match (e.op, e.outcome) {
        (RegOp::Write { value: v }, Outcome::Ok | Outcome::Unknown) => Some(Some(v.clone())),
        (RegOp::Read { value: v }, _) => (v == value).then(|| value.clone()),
        (RegOp::Cas { expect, value: v }, Outcome::Ok) => {
            (expect == value).then(|| Some(v.clone()))
        }
        // An indeterminate CAS takes effect only if it could have matched
        // (linearizing it otherwise is the same as leaving it out).
        (RegOp::Cas { expect, value: v }, Outcome::Unknown) => {
            (expect == value).then(|| Some(v.clone()))
        }
        (RegOp::Cas { expect, .. }, Outcome::Fail) => (expect != value).then(|| value.clone()),
        (RegOp::Write { .. }, Outcome::Fail) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: usize, op: RegOp, outcome: Outcome, inv: u64, done: Option<u64>) -> Operation {
        Operation {
            client,
            node: format!("NODE{}", client + 1),
            key: "k".into(),
            op,
            outcome,
            invoke_ms: inv,
            complete_ms: done,
        }
    }
    fn w(v: &str) -> RegOp {
        RegOp::Write { value: v.into() }
    }
    fn r(v: Option<&str>) -> RegOp {
        RegOp::Read {
            value: v.map(String::from),
        }
    }
    fn cas(e: Option<&str>, v: &str) -> RegOp {
        RegOp::Cas {
            expect: e.map(String::from),
            value: v.into(),
        }
    }
    use Outcome::{Fail, Ok as Done, Unknown};

    fn verdict(ops: &[Operation]) -> Verdict {
        check_key("k", ops)
    }

    #[test]
    fn sequential_history_passes() {
        let h = [
            op(0, w("1"), Done, 0, Some(10)),
            op(1, r(Some("1")), Done, 20, Some(30)),
            op(0, cas(Some("1"), "2"), Done, 40, Some(50)),
            op(1, cas(Some("1"), "3"), Fail, 60, Some(70)),
            op(2, r(Some("2")), Done, 80, Some(90)),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn concurrent_reads_may_see_either_value() {
        let h = [
            op(0, w("1"), Done, 0, Some(10)),
            op(0, w("2"), Done, 20, Some(60)),
            op(1, r(Some("2")), Done, 25, Some(30)),
            op(2, r(Some("1")), Done, 26, Some(70)),
        ];
        // Read "2" at 25..30 fixes write 2 before 30; the read of "1"
        // (26..70) must then come before write 2 too: possible.
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn stale_read_is_flagged_with_its_window() {
        let h = [
            op(0, w("1"), Done, 0, Some(10)),
            op(0, w("2"), Done, 20, Some(30)),
            op(1, r(Some("1")), Done, 40, Some(50)),
            op(2, r(Some("2")), Done, 60, Some(70)),
        ];
        let Verdict::Violation(v) = verdict(&h) else {
            panic!("a stale read must be flagged");
        };
        assert_eq!(v.op.op, r(Some("1")));
        // The window starts with the write the read should have seen and
        // leaves out what came after.
        assert_eq!(v.window.len(), 2, "{:?}", v.window);
        assert_eq!(v.window[0].op, w("2"));
    }

    #[test]
    fn lost_write_is_flagged() {
        // An acknowledged write that a later read does not see, with no
        // other write to explain it.
        let h = [
            op(0, w("1"), Done, 0, Some(10)),
            op(1, w("2"), Done, 20, Some(30)),
            op(2, r(Some("1")), Done, 100, Some(110)),
        ];
        assert!(matches!(verdict(&h), Verdict::Violation(_)));
    }

    #[test]
    fn indeterminate_write_may_apply_late_or_never() {
        // The timed-out write of "2" may take effect after the first read...
        let late = [
            op(0, w("1"), Done, 0, Some(10)),
            op(1, w("2"), Unknown, 20, None),
            op(2, r(Some("1")), Done, 30, Some(40)),
            op(2, r(Some("2")), Done, 500, Some(510)),
        ];
        assert_eq!(verdict(&late), Verdict::Linearizable);
        // ... or never.
        let never = [
            op(0, w("1"), Done, 0, Some(10)),
            op(1, w("2"), Unknown, 20, None),
            op(2, r(Some("1")), Done, 900, Some(910)),
        ];
        assert_eq!(verdict(&never), Verdict::Linearizable);
        // But not before it was invoked.
        let early = [
            op(0, w("1"), Done, 0, Some(10)),
            op(2, r(Some("2")), Done, 12, Some(15)),
            op(1, w("2"), Unknown, 20, None),
        ];
        assert!(matches!(verdict(&early), Verdict::Violation(_)));
    }

    #[test]
    fn a_failed_cas_saw_a_different_value() {
        let h = [
            op(0, w("1"), Done, 0, Some(10)),
            op(1, cas(Some("1"), "2"), Fail, 20, Some(30)),
        ];
        assert!(matches!(verdict(&h), Verdict::Violation(_)));
        let absent = [
            op(1, cas(None, "2"), Done, 0, Some(5)),
            op(0, r(Some("2")), Done, 6, Some(7)),
        ];
        assert_eq!(verdict(&absent), Verdict::Linearizable);
    }

    #[test]
    fn two_successful_cas_from_the_same_value_are_flagged() {
        let h = [
            op(0, w("0"), Done, 0, Some(10)),
            op(1, cas(Some("0"), "a"), Done, 20, Some(40)),
            op(2, cas(Some("0"), "b"), Done, 21, Some(41)),
        ];
        assert!(matches!(verdict(&h), Verdict::Violation(_)));
    }

    #[test]
    fn keys_are_checked_apart() {
        let mut a = op(0, w("1"), Done, 0, Some(10));
        a.key = "a".into();
        let mut b = op(1, r(None), Done, 20, Some(30));
        b.key = "b".into();
        let out = check(&[a, b]);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|(_, v)| *v == Verdict::Linearizable));
    }

    #[test]
    fn a_few_hundred_concurrent_operations_stay_fast() {
        // Three clients, overlapping operations, a CAS chain: linearizable.
        let mut h = Vec::new();
        let mut t = 0;
        for i in 0..300u64 {
            let prev = i.to_string();
            let next = (i + 1).to_string();
            if i == 0 {
                h.push(op(0, w("0"), Done, t, Some(t + 5)));
            }
            h.push(op(0, cas(Some(&prev), &next), Done, t + 10, Some(t + 20)));
            h.push(op(1, r(Some(&next)), Done, t + 21, Some(t + 30)));
            h.push(op(2, cas(Some(&prev), "x"), Fail, t + 15, Some(t + 25)));
            t += 40;
        }
        let start = std::time::Instant::now();
        assert_eq!(verdict(&h), Verdict::Linearizable);
        assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
    }
}
