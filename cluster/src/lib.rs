//! Cluster node daemon (issue 5). Not yet implemented: this crate is empty on purpose.
