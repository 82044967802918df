//! busrig-bench: storage-aligned I/O benchmarks through busrig's
//! initiator, against `busrig target` or any iSCSI target (issue 8).
//! `busrig bench URL` parses its arguments into a [`BenchConfig`], calls
//! [`run`] and prints the [`Results`].
//!
//! A run is one or more jobs (one, or two with [`Profile::Exchange2003`]).
//! A job drives one LUN from `sessions` sessions with `qd` commands in
//! flight on each; every command is timed from just before it is handed
//! to the session to its SCSI status, and the latencies go into
//! HdrHistograms merged at the end.
//!
//! I/O offsets are `offset + k * bs` for slots `k` within `range`:
//! sequential jobs walk the slots in order from one shared cursor (so
//! `qd` commands go to consecutive slots, as fio does), random jobs draw
//! them uniformly. An offset of 32256 reproduces the classic partition
//! start at sector 63, which puts every 64 KiB I/O across a 64 KiB stripe
//! unit.
//!
//! With `verify` each slot has an owner: a worker claims a slot before
//! its I/O and releases it after, so no two commands touch the same bytes
//! at once and every read of a written slot is checked against the stamp
//! of its last write (see [`pattern`]). After the timed run every written
//! slot is read back once more.
//!
//! Before anything is written the bench asks the LUN, with a zero-length
//! WRITE, whether this I_T nexus may write; a RESERVATION CONFLICT is
//! reported with what PERSISTENT RESERVE IN says about the holder, and the
//! exit status is 24 as in `busrig disk`.
//!
//! ```text
//! config   what to run: the access pattern, the jobs of a profile
//! device   what the workers drive: a LUN over iSCSI or a local file
//! error    BenchError and the exit statuses
//! pattern  the self-describing data of verify and its check
//! plot     the SVG latency plot: a read and a write curve per job
//! report   latency summaries, plot bins
//! results  the human and JSON reports of one run
//! run      sessions, workers, verify read-back, disk model counters
//! ```

pub mod config;
pub mod device;
pub mod error;
pub mod pattern;
pub mod plot;
pub mod report;
pub mod results;
pub mod run;

pub use config::{jobs, BenchConfig, JobSpec, Profile, RwMode};
pub use error::BenchError;
pub use results::Results;
pub use run::{run, run_isolated, Interrupt, Progress, Silent, DRAIN};
