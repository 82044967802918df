//! Thin tokio driver that performs a [`Node`](crate::node::Node)'s actions
//! (STYLE rules 4 and 7): the state machines decide, this layer only does
//! the I/O — UDP for cluster messages ([`udp`]), iSCSI for shared-disk
//! operations ([`disk`]) — and feeds time and results back ([`run`]).

pub mod disk;
pub mod run;
pub mod shared;
pub mod udp;

pub use disk::{DiskExecutor, InitiatorDisks};
pub use run::{
    role_text, run, Command, Exit, Io, NodePhase, NodeStatus, NotReadable, ProposeError,
    ProposeResult,
};
pub use shared::{node_isid, node_session_config, NodeDisks, SharedDisk};
pub use udp::ClusterTransport;
