//! One module per `busrig` verb: its clap arguments, the call into the
//! library crate that does the work, and what it prints
//! (docs/architecture.md, "Crates"). `cli::disk` is the `busrig disk`
//! command, not the initiator's `Disk`; `cli::node` and `cli::cluster`
//! likewise front `busrig_cluster`.

pub mod bench;
pub mod bus;
pub mod cluster;
pub mod dashboard;
pub mod demo;
pub mod disk;
pub mod echo;
pub mod lab;
pub mod mailload;
pub mod mailstore;
pub mod manual;
pub mod node;
pub mod progress;

/// The help heading of the `global = true` options of `busrig bus`,
/// `disk` and `cluster`: every verb takes them, before or after its name,
/// and `--help` lists them apart so a verb's own options stand out.
pub const GLOBAL: &str = "Global options";
