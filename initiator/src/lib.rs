//! Async iSCSI initiator (issue 4). Not yet implemented: this crate is empty on purpose.
