//! busrig's lab: a whole cluster on loopback as real processes (one
//! `busrig target` and N `busrig node`), the faults to throw at it, the
//! scenario runner (`busrig lab run`) and the demo (`busrig demo`).
//!
//! Everything starts from a [`Lab`] handle: a lab folder and the path of
//! the `busrig` binary its processes run. The scenario runner and the demo
//! use the handle; the handle knows nothing of them
//! (docs/architecture.md, "Crates").

pub mod chaos;
pub mod demo;
mod error;
pub mod hosts;
pub mod interrupt;
mod process;
mod report;
pub mod scenario;
mod state;

pub use error::{LabError, Result};
pub use nix::sys::signal::Signal;
pub use process::{
    catalog, group_online_on, group_online_seen_by, runtime, Cut, FailoverReport, Lab, LabStatus,
    Net, Takeover, UpOptions, UpProgress, INTERRUPT_GRACE, LAB_TARGET, STOP_GRACE,
};
pub use state::{
    alive, bus_control, bus_token, cluster_file, lab_config, log_tail, process_state, state_file,
    temp_lab_dir, LabProcess, LabState, BUS_TOKEN_LABEL,
};
