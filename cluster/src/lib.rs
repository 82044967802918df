//! busrig's cluster node: the components of a Windows Server 2003 server
//! cluster (Node Manager, Membership Manager, quorum arbiter, Log Manager,
//! Global Update Manager, cluster database) as pure state machines, driven
//! by a thin tokio layer.
//!
//! Every state machine takes time as an input (`tick(now)`) and returns what
//! to do instead of doing it (docs/architecture.md "Pure cores and drivers"), so the whole cluster can run
//! in the deterministic simulator under `tests/`.

pub mod admin;
pub mod admin_client;
pub mod arbiter;
pub mod clusdisk;
pub mod cluster_file;
pub mod config;
pub mod db;
pub mod driver;
pub mod echo;
pub mod failover;
pub mod host;
pub mod log_manager;
pub mod message;
pub mod node;
pub mod node_manager;
pub mod placement;
pub mod quorum_log;
pub mod report;
pub mod resource;
pub mod service;
pub mod snapshot_diff;
pub mod storage_validation;
pub mod validate;
