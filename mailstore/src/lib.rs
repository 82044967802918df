//! busrig-mailstore: the mail-store workload (issue 7), a small message
//! store that keeps everything on a shared LUN (a transaction log written
//! with FUA and a database of 4 KiB pages, soft recovery on start) and
//! answers SMTP. `busrig mailstore` serves it and `busrig mailload` drives
//! it across failovers; docs/mailstore.md documents the on-disk format and
//! the protocol.
//!
//! Where to start: [`store::MailStore::open`] recovers a store from a
//! [`device::BlockDevice`] and [`smtp::run`] accepts SMTP clients for it.
//!
//! ```text
//! format  on-disk structures, no I/O: superblock, log record, page run
//! device  BlockDevice: the narrow disk interface; iSCSI and clusdisk backends
//! store   recovery, group commit, checkpoint, index
//! smtp    the SMTP subset and XLIST/XFETCH; the accept loop
//! load    the SMTP load generator behind `busrig mailload`
//! ```

pub mod device;
pub mod format;
pub mod load;
pub mod serve;
pub mod smtp;
pub mod store;
