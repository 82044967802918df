//! The message store: soft recovery from the shared disk, group commit
//! through the transaction log, checkpoints into the page database, and the
//! in-memory index that answers listings. The byte layout is in
//! `format.rs`; this module decides what is written when.
//!
//! Durability rules (docs/mailstore.md "Recovery"):
//! - a delivery is acknowledged only after the log record holding it was
//!   written with FUA; one log write is in flight at a time, so the first
//!   record that does not decode is the end of the log;
//! - a checkpoint writes the page runs without FUA, flushes, and only then
//!   writes the superblock (with FUA) that moves the log start past them;
//! - any device error stops the store: nothing is acknowledged after it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot, watch};

use crate::device::{BlockDevice, DeviceError};
use crate::format::{
    decode_run, encode_run, run_pages, Delivery, FormatError, Layout, LogHeader, LogRecord,
    RunHeader, Superblock, PAGE,
};

/// Why a store operation failed; [`StoreError::smtp`] is its wire form.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk failed or was taken away; the store has stopped.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// What is on the disk is damaged where it must not be.
    #[error("{where_}: {error}")]
    Corrupt { where_: String, error: FormatError },
    /// The disk holds no store and formatting was not asked for.
    #[error("{0}")]
    Unformatted(String),
    /// The store stopped after an earlier failure.
    #[error("the store has stopped: {0}")]
    Stopped(String),
    /// The message is larger than the store accepts.
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    /// The database has no room for the message.
    #[error("the message database is full")]
    Full,
}

impl StoreError {
    /// The SMTP reply for this error (RFC 5321 §4.2.2, RFC 3463 codes).
    pub fn smtp(&self) -> (u16, String) {
        match self {
            StoreError::TooLarge { limit, .. } => {
                (552, format!("5.3.4 message too big (limit {limit} bytes)"))
            }
            StoreError::Full => (452, "4.3.1 insufficient system storage".into()),
            other => (451, format!("4.3.0 local error in processing: {other}")),
        }
    }
}

/// Start-up options.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Format the disk even if it holds something that is not a store.
    pub format: bool,
    /// Largest message body accepted (clamped to what the log can hold).
    pub max_message_bytes: usize,
    /// A pause between a checkpoint's page writes and its flush, so tests
    /// can power-cycle the LUN while those writes sit in a volatile cache.
    pub checkpoint_delay: std::time::Duration,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            format: false,
            max_message_bytes: 1 << 20,
            checkpoint_delay: std::time::Duration::ZERO,
        }
    }
}

/// A message handed to [`MailStore::deliver`].
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The Message-ID header value, empty if none: the dedup key.
    pub message_id: String,
    pub recipients: Vec<String>,
    pub body: Bytes,
}

/// The outcome of a durable delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub uid: u64,
    /// The Message-ID was already stored; nothing new was written.
    pub duplicate: bool,
}

/// One line of a mailbox listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    pub uid: u64,
    pub size: usize,
    pub message_id: String,
}

/// What recovery found, for the start-up log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    pub formatted: bool,
    pub db_messages: usize,
    pub log_records: usize,
    pub log_messages: usize,
    pub checkpoint_lsn: u64,
    pub log_end: u64,
}

/// Where a message's bytes are.
#[derive(Debug, Clone)]
enum Loc {
    /// Only in the log (and memory) until the next checkpoint.
    Log(Delivery),
    /// A page run of the database.
    Db { page: u64, pages: u32 },
}

#[derive(Debug, Clone)]
struct Msg {
    message_id: String,
    size: usize,
    loc: Loc,
}

/// The in-memory index, rebuilt by recovery.
#[derive(Debug, Default)]
struct Index {
    messages: BTreeMap<u64, Msg>,
    mailboxes: BTreeMap<String, Vec<u64>>,
    by_message_id: HashMap<String, u64>,
}

impl Index {
    fn insert(&mut self, d: &Delivery, loc: Loc) {
        if self.messages.contains_key(&d.uid) {
            return;
        }
        for r in &d.recipients {
            self.mailboxes.entry(r.clone()).or_default().push(d.uid);
        }
        if !d.message_id.is_empty() {
            self.by_message_id.insert(d.message_id.clone(), d.uid);
        }
        self.messages.insert(
            d.uid,
            Msg {
                message_id: d.message_id.clone(),
                size: d.body.len(),
                loc,
            },
        );
    }
}

struct Shared<D> {
    dev: D,
    /// Logical blocks per 4 KiB page.
    blocks_per_page: u64,
    layout: Layout,
    store_id: u64,
    index: Mutex<Index>,
    failed: watch::Sender<Option<String>>,
    max_message_bytes: usize,
    checkpoint_delay: std::time::Duration,
}

impl<D: BlockDevice> Shared<D> {
    async fn read_pages(&self, page: u64, pages: u32) -> Result<Bytes, DeviceError> {
        self.dev
            .read(
                page * self.blocks_per_page,
                pages * self.blocks_per_page as u32,
            )
            .await
    }

    async fn write_pages(&self, page: u64, data: Bytes, fua: bool) -> Result<(), DeviceError> {
        debug_assert_eq!(data.len() % PAGE, 0);
        self.dev.write(page * self.blocks_per_page, data, fua).await
    }

    /// `pages` log pages from `lsn`, wrapping at the end of the log area.
    async fn read_log(&self, lsn: u64, pages: u32) -> Result<Bytes, DeviceError> {
        let l = self.layout;
        let start = l.log_page(lsn);
        let first = (l.log_first_page + l.log_pages - start).min(pages as u64) as u32;
        let a = self.read_pages(start, first).await?;
        if first == pages {
            return Ok(a);
        }
        let b = self.read_pages(l.log_first_page, pages - first).await?;
        let mut out = BytesMut::with_capacity(a.len() + b.len());
        out.extend_from_slice(&a);
        out.extend_from_slice(&b);
        Ok(out.freeze())
    }

    /// Writes a log record at `lsn` with FUA, wrapping if needed.
    async fn write_log(&self, lsn: u64, data: Bytes) -> Result<(), DeviceError> {
        let l = self.layout;
        let start = l.log_page(lsn);
        let room = ((l.log_first_page + l.log_pages - start) as usize) * PAGE;
        if data.len() <= room {
            return self.write_pages(start, data, true).await;
        }
        self.write_pages(start, data.slice(..room), true).await?;
        self.write_pages(l.log_first_page, data.slice(room..), true)
            .await
    }

    fn fail(&self, why: &str) {
        self.failed.send_if_modified(|f| {
            if f.is_none() {
                *f = Some(why.to_string());
                true
            } else {
                false
            }
        });
    }

    fn stopped(&self) -> Option<String> {
        self.failed.borrow().clone()
    }
}

/// A delivery waiting for the log writer.
struct Commit {
    msg: NewMessage,
    reply: oneshot::Sender<Result<Accepted, StoreError>>,
}

/// State only the log writer task touches.
struct Writer {
    sb: Superblock,
    /// LSN of the next log record.
    log_end: u64,
    next_uid: u64,
    /// Messages only in the log, in uid order.
    dirty: Vec<u64>,
    /// Database pages the dirty messages will take.
    dirty_pages: u64,
}

/// The store: clone-free handle shared by the SMTP sessions.
pub struct MailStore<D> {
    shared: Arc<Shared<D>>,
    tx: mpsc::Sender<Commit>,
}

/// Largest log record (bytes) a group commit builds: a quarter of the log,
/// so a record always fits after a checkpoint.
fn max_record_bytes(l: &Layout) -> usize {
    (l.log_pages as usize * PAGE / 4).min(8 << 20)
}

impl<D: BlockDevice> MailStore<D> {
    /// Soft recovery: reads the superblock, indexes the database, replays
    /// the log from the checkpoint, and starts the log writer.
    pub async fn open(dev: D, opts: StoreOptions) -> Result<(MailStore<D>, Recovery), StoreError> {
        let bs = dev.block_size() as usize;
        if PAGE.checked_rem(bs) != Some(0) {
            return Err(StoreError::Unformatted(format!(
                "block size {bs} does not divide the 4 KiB page"
            )));
        }
        let blocks_per_page = (PAGE / bs) as u64;
        let total_pages = dev.blocks() / blocks_per_page;
        let head = dev.read(0, 2 * blocks_per_page as u32).await?;
        let (s0, s1) = head.split_at(PAGE);
        let mut rec = Recovery::default();
        let sb = match Superblock::pick(s0, s1) {
            Some(sb) if !opts.format => sb,
            _ => {
                let blank = head.iter().all(|&b| b == 0);
                if !(blank || opts.format) {
                    return Err(StoreError::Unformatted(
                        "the disk holds no valid mail store superblock; \
                         start with --format to overwrite it"
                            .into(),
                    ));
                }
                let layout = Layout::for_capacity(total_pages).ok_or_else(|| {
                    StoreError::Unformatted(format!(
                        "a disk of {total_pages} pages is too small for a mail store"
                    ))
                })?;
                let store_id = loop {
                    let id: u64 = rand::random();
                    if id != 0 {
                        break id;
                    }
                };
                let sb = Superblock::new(store_id, layout);
                // Slot 0 is cleared first, so two valid superblocks of
                // different stores never coexist.
                let zero = Bytes::from(vec![0u8; PAGE]);
                dev.write(0, zero, true).await?;
                dev.write(sb.slot() * blocks_per_page, sb.encode(), true)
                    .await?;
                tracing::info!(
                    store_id = format_args!("{store_id:016x}"),
                    ?layout,
                    "formatted the disk"
                );
                rec.formatted = true;
                sb
            }
        };
        if sb.layout.total_pages > total_pages {
            return Err(StoreError::Unformatted(format!(
                "the store was formatted for {} pages but the disk has {total_pages}",
                sb.layout.total_pages
            )));
        }
        let (failed, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            dev,
            blocks_per_page,
            layout: sb.layout,
            store_id: sb.store_id,
            index: Mutex::new(Index::default()),
            failed,
            max_message_bytes: opts
                .max_message_bytes
                .min(max_record_bytes(&sb.layout) - 2 * PAGE),
            checkpoint_delay: opts.checkpoint_delay,
        });
        rec.db_messages = scan_database(&shared, &sb).await?;
        let mut w = Writer {
            sb,
            log_end: sb.checkpoint_lsn,
            next_uid: sb.next_uid,
            dirty: Vec::new(),
            dirty_pages: 0,
        };
        replay(&shared, &mut w, &mut rec).await?;
        rec.checkpoint_lsn = sb.checkpoint_lsn;
        rec.log_end = w.log_end;
        if w.log_end - w.sb.checkpoint_lsn > sb.layout.log_pages / 2 {
            w.checkpoint(&shared).await?;
        }
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(log_writer(shared.clone(), w, rx));
        Ok((MailStore { shared, tx }, rec))
    }

    /// The largest message body accepted.
    pub fn max_message_bytes(&self) -> usize {
        self.shared.max_message_bytes
    }

    /// Resolves once the store has stopped, with the reason.
    pub async fn stopped(&self) -> String {
        let mut rx = self.shared.failed.subscribe();
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                return "the store was dropped".into();
            }
        }
    }

    /// The reason the store stopped, if it has.
    pub fn is_stopped(&self) -> Option<String> {
        self.shared.stopped()
    }

    /// Stores a message durably; returns only after its log record is on
    /// stable storage (or it was already stored under the same Message-ID).
    pub async fn deliver(&self, msg: NewMessage) -> Result<Accepted, StoreError> {
        if let Some(r) = self.shared.stopped() {
            return Err(StoreError::Stopped(r));
        }
        if msg.body.len() > self.shared.max_message_bytes {
            return Err(StoreError::TooLarge {
                size: msg.body.len(),
                limit: self.shared.max_message_bytes,
            });
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Commit { msg, reply })
            .await
            .map_err(|_| StoreError::Stopped("the log writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Stopped("the log writer has stopped".into()))?
    }

    /// The messages of a mailbox, oldest first.
    pub fn list(&self, mailbox: &str) -> Vec<ListEntry> {
        let ix = self.shared.index.lock().expect("index lock");
        ix.mailboxes
            .get(mailbox)
            .map(|uids| {
                uids.iter()
                    .filter_map(|u| {
                        ix.messages.get(u).map(|m| ListEntry {
                            uid: *u,
                            size: m.size,
                            message_id: m.message_id.clone(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One message of a mailbox, `None` if the mailbox does not hold it.
    pub async fn fetch(
        &self,
        mailbox: &str,
        uid: u64,
    ) -> Result<Option<(ListEntry, Bytes)>, StoreError> {
        let m = {
            let ix = self.shared.index.lock().expect("index lock");
            let held = ix.mailboxes.get(mailbox).is_some_and(|v| v.contains(&uid));
            match ix.messages.get(&uid) {
                Some(m) if held => m.clone(),
                _ => return Ok(None),
            }
        };
        let entry = ListEntry {
            uid,
            size: m.size,
            message_id: m.message_id.clone(),
        };
        let body = match m.loc {
            Loc::Log(d) => d.body,
            Loc::Db { page, pages } => {
                let bytes = match self.shared.read_pages(page, pages).await {
                    Ok(b) => b,
                    Err(e) => {
                        self.shared.fail(&e.to_string());
                        return Err(e.into());
                    }
                };
                let corrupt = |error| StoreError::Corrupt {
                    where_: format!("message {uid} at page {page}"),
                    error,
                };
                let h = RunHeader::decode(&bytes, self.shared.store_id).map_err(corrupt)?;
                decode_run(&h, &bytes).map_err(corrupt)?.body
            }
        };
        Ok(Some((entry, body)))
    }
}

/// Indexes the page runs between the database start and the superblock's
/// next free page; returns how many there are.
async fn scan_database<D: BlockDevice>(
    shared: &Shared<D>,
    sb: &Superblock,
) -> Result<usize, StoreError> {
    const CHUNK: u64 = 256;
    let end = sb.db_next_page;
    let mut page = sb.layout.db_first_page;
    let mut buf = Bytes::new();
    let mut buf_page = page;
    let mut n = 0;
    while page < end {
        let covers = |buf: &Bytes, buf_page: u64, p: u64, k: u64| {
            p >= buf_page && (p + k - buf_page) as usize * PAGE <= buf.len()
        };
        if !covers(&buf, buf_page, page, 1) {
            buf = shared
                .read_pages(page, CHUNK.min(end - page) as u32)
                .await?;
            buf_page = page;
        }
        let off = (page - buf_page) as usize * PAGE;
        let corrupt = |error| StoreError::Corrupt {
            where_: format!("database page {page}"),
            error,
        };
        let h = RunHeader::decode(&buf[off..], shared.store_id).map_err(corrupt)?;
        if page + h.pages as u64 > end {
            return Err(corrupt(FormatError::Malformed {
                what: "message run",
                detail: "runs past the database end".into(),
            }));
        }
        if !covers(&buf, buf_page, page, h.pages as u64) {
            let k = (h.pages as u64).max(CHUNK.min(end - page));
            buf = shared.read_pages(page, k as u32).await?;
            buf_page = page;
        }
        let off = (page - buf_page) as usize * PAGE;
        let d = decode_run(&h, &buf[off..]).map_err(corrupt)?;
        shared.index.lock().expect("index lock").insert(
            &d,
            Loc::Db {
                page,
                pages: h.pages,
            },
        );
        n += 1;
        page += h.pages as u64;
    }
    Ok(n)
}

/// Replays the log from the checkpoint until the first record that does
/// not decode (never written, left from an earlier lap, torn or corrupt).
async fn replay<D: BlockDevice>(
    shared: &Shared<D>,
    w: &mut Writer,
    rec: &mut Recovery,
) -> Result<(), StoreError> {
    let log_pages = shared.layout.log_pages;
    loop {
        let used = w.log_end - w.sb.checkpoint_lsn;
        if used >= log_pages {
            break;
        }
        let first = shared.read_log(w.log_end, 1).await?;
        let h = match LogHeader::decode(&first, shared.store_id, w.log_end, log_pages - used) {
            Ok(h) => h,
            Err(e) => {
                tracing::info!(lsn = w.log_end, reason = %e, "end of the log");
                break;
            }
        };
        let all = if h.pages == 1 {
            first
        } else {
            shared.read_log(w.log_end, h.pages).await?
        };
        let r = match LogRecord::decode(&h, &all) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(lsn = w.log_end, reason = %e, "log ends in a damaged record");
                break;
            }
        };
        rec.log_records += 1;
        for d in &r.deliveries {
            w.next_uid = w.next_uid.max(d.uid + 1);
            let mut ix = shared.index.lock().expect("index lock");
            if ix.messages.contains_key(&d.uid) {
                continue;
            }
            ix.insert(d, Loc::Log(d.clone()));
            w.dirty.push(d.uid);
            w.dirty_pages += run_pages(d) as u64;
            rec.log_messages += 1;
        }
        w.log_end += h.pages as u64;
    }
    Ok(())
}

/// The log writer: takes every delivery waiting, writes them as one log
/// record (group commit), acknowledges them, checkpoints when the log is
/// half full. The first device error stops it and the store.
async fn log_writer<D: BlockDevice>(
    shared: Arc<Shared<D>>,
    mut w: Writer,
    mut rx: mpsc::Receiver<Commit>,
) {
    let limit = max_record_bytes(&shared.layout) / 2;
    while let Some(first) = rx.recv().await {
        let mut bytes = first.msg.body.len();
        let mut batch = vec![first];
        while bytes < limit {
            match rx.try_recv() {
                Ok(c) => {
                    bytes += c.msg.body.len();
                    batch.push(c);
                }
                Err(_) => break,
            }
        }
        if let Err(e) = w.commit(&shared, batch).await {
            tracing::error!(error = %e, "the store stops");
            shared.fail(&e.to_string());
            break;
        }
    }
    // Anything still queued is refused, never acknowledged.
    rx.close();
    while let Ok(c) = rx.try_recv() {
        let why = shared.stopped().unwrap_or_default();
        let _ = c.reply.send(Err(StoreError::Stopped(why)));
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

type Reply = oneshot::Sender<Result<Accepted, StoreError>>;

impl Writer {
    async fn commit<D: BlockDevice>(
        &mut self,
        shared: &Shared<D>,
        batch: Vec<Commit>,
    ) -> Result<(), DeviceError> {
        let l = shared.layout;
        let db_room = l.total_pages - self.sb.db_next_page;
        let mut records: Vec<(Delivery, Reply)> = Vec::new();
        // Second copies of a Message-ID within this batch: answered with
        // the first copy's uid once it is durable.
        let mut echoes: Vec<(usize, Reply)> = Vec::new();
        let mut in_batch: HashMap<String, usize> = HashMap::new();
        let mut pages = 0u64;
        for Commit { msg, reply } in batch {
            if !msg.message_id.is_empty() {
                let known = shared
                    .index
                    .lock()
                    .expect("index lock")
                    .by_message_id
                    .get(&msg.message_id)
                    .copied();
                if let Some(uid) = known {
                    let _ = reply.send(Ok(Accepted {
                        uid,
                        duplicate: true,
                    }));
                    continue;
                }
                if let Some(&i) = in_batch.get(&msg.message_id) {
                    echoes.push((i, reply));
                    continue;
                }
            }
            let d = Delivery {
                uid: self.next_uid,
                received_ms: now_ms(),
                message_id: msg.message_id,
                recipients: msg.recipients,
                body: msg.body,
            };
            let need = run_pages(&d) as u64;
            if self.dirty_pages + pages + need > db_room {
                let _ = reply.send(Err(StoreError::Full));
                continue;
            }
            pages += need;
            self.next_uid += 1;
            if !d.message_id.is_empty() {
                in_batch.insert(d.message_id.clone(), records.len());
            }
            records.push((d, reply));
        }
        if records.is_empty() {
            return Ok(());
        }
        let deliveries: Vec<Delivery> = records.iter().map(|(d, _)| d.clone()).collect();
        let rec_pages = LogRecord::pages(&deliveries) as u64;
        if self.log_end + rec_pages - self.sb.checkpoint_lsn > l.log_pages {
            if let Err(e) = self.checkpoint(shared).await {
                refuse(records, echoes, &e);
                return Err(e);
            }
        }
        let lsn = self.log_end;
        let bytes = LogRecord { lsn, deliveries }.encode(shared.store_id);
        if let Err(e) = shared.write_log(lsn, bytes).await {
            refuse(records, echoes, &e);
            return Err(e);
        }
        self.log_end += rec_pages;
        tracing::debug!(
            lsn,
            pages = rec_pages,
            messages = records.len(),
            "log record durable"
        );
        let uids: Vec<u64> = records.iter().map(|(d, _)| d.uid).collect();
        {
            let mut ix = shared.index.lock().expect("index lock");
            for (d, _) in &records {
                ix.insert(d, Loc::Log(d.clone()));
            }
        }
        self.dirty.extend(&uids);
        self.dirty_pages += pages;
        for (i, reply) in echoes {
            let _ = reply.send(Ok(Accepted {
                uid: uids[i],
                duplicate: true,
            }));
        }
        for (d, reply) in records {
            let _ = reply.send(Ok(Accepted {
                uid: d.uid,
                duplicate: false,
            }));
        }
        if self.log_end - self.sb.checkpoint_lsn > l.log_pages / 2 {
            self.checkpoint(shared).await?;
        }
        Ok(())
    }

    /// Moves every message only in the log into the database and frees
    /// the log up to the current end.
    async fn checkpoint<D: BlockDevice>(&mut self, shared: &Shared<D>) -> Result<(), DeviceError> {
        let cp_lsn = self.log_end;
        let deliveries: Vec<Delivery> = {
            let ix = shared.index.lock().expect("index lock");
            self.dirty
                .iter()
                .filter_map(|u| match &ix.messages.get(u)?.loc {
                    Loc::Log(d) => Some(d.clone()),
                    Loc::Db { .. } => None,
                })
                .collect()
        };
        let start = self.sb.db_next_page;
        let mut page = start;
        let mut placed = Vec::with_capacity(deliveries.len());
        let mut buf = BytesMut::new();
        for d in &deliveries {
            let run = encode_run(shared.store_id, d);
            let pages = (run.len() / PAGE) as u32;
            placed.push((d.uid, page, pages));
            page += pages as u64;
            buf.extend_from_slice(&run);
        }
        if !buf.is_empty() {
            shared.write_pages(start, buf.freeze(), false).await?;
            if !shared.checkpoint_delay.is_zero() {
                tracing::info!(delay = ?shared.checkpoint_delay, "checkpoint pauses before its flush");
                tokio::time::sleep(shared.checkpoint_delay).await;
            }
            shared.dev.flush().await?;
        }
        let sb = Superblock {
            generation: self.sb.generation + 1,
            checkpoint_lsn: cp_lsn,
            db_next_page: page,
            next_uid: self.next_uid,
            ..self.sb
        };
        shared.write_pages(sb.slot(), sb.encode(), true).await?;
        {
            let mut ix = shared.index.lock().expect("index lock");
            for (uid, page, pages) in placed {
                if let Some(m) = ix.messages.get_mut(&uid) {
                    m.loc = Loc::Db { page, pages };
                }
            }
        }
        tracing::info!(
            messages = deliveries.len(),
            checkpoint_lsn = cp_lsn,
            db_next_page = page,
            generation = sb.generation,
            "checkpoint"
        );
        self.sb = sb;
        self.dirty.clear();
        self.dirty_pages = 0;
        Ok(())
    }
}

fn refuse(records: Vec<(Delivery, Reply)>, echoes: Vec<(usize, Reply)>, e: &DeviceError) {
    let why = e.to_string();
    for (_, r) in records {
        let _ = r.send(Err(StoreError::Stopped(why.clone())));
    }
    for (_, r) in echoes {
        let _ = r.send(Err(StoreError::Stopped(why.clone())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::mem::MemDevice;
    use proptest::prelude::*;

    fn msg(i: u64, to: &str, size: usize) -> NewMessage {
        let mut body = format!("Message-ID: <m{i}@test>\r\nSubject: {i}\r\n\r\n").into_bytes();
        body.resize(body.len() + size, b'x');
        NewMessage {
            message_id: format!("<m{i}@test>"),
            recipients: vec![to.to_string()],
            body: body.into(),
        }
    }

    /// 8 MiB of 512-byte blocks: a 1 MiB log of 256 pages.
    fn disk() -> MemDevice {
        MemDevice::new(512, 16384)
    }

    async fn open(d: MemDevice) -> (MailStore<MemDevice>, Recovery) {
        MailStore::open(d, StoreOptions::default()).await.unwrap()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn deliver_list_fetch_and_dedup() {
        rt().block_on(async {
            let (s, rec) = open(disk()).await;
            assert!(rec.formatted);
            let a = s.deliver(msg(1, "alice", 10)).await.unwrap();
            let b = s.deliver(msg(2, "alice", 10)).await.unwrap();
            assert_eq!((a.uid, a.duplicate), (1, false));
            assert_eq!(b.uid, 2);
            let again = s.deliver(msg(1, "alice", 10)).await.unwrap();
            assert_eq!(
                again,
                Accepted {
                    uid: 1,
                    duplicate: true
                }
            );
            let l = s.list("alice");
            assert_eq!(l.iter().map(|e| e.uid).collect::<Vec<_>>(), vec![1, 2]);
            let (e, body) = s.fetch("alice", 2).await.unwrap().unwrap();
            assert_eq!(e.message_id, "<m2@test>");
            assert_eq!(body, msg(2, "alice", 10).body);
            assert!(s.fetch("bob", 2).await.unwrap().is_none());
        });
    }

    #[test]
    fn recovery_replays_the_log_and_reads_checkpointed_pages() {
        rt().block_on(async {
            let d = disk();
            let (s, _) = open(d).await;
            // 300 messages of ~3 KiB wrap the 256-page log several times.
            for i in 0..300 {
                s.deliver(msg(i, if i % 2 == 0 { "a" } else { "b" }, 3000))
                    .await
                    .unwrap();
            }
            let dev = s.shared.dev.reboot();
            drop(s);
            let (s2, rec) = open(dev).await;
            assert!(!rec.formatted);
            assert!(rec.db_messages > 0, "{rec:?}");
            assert_eq!(rec.db_messages + rec.log_messages, 300, "{rec:?}");
            assert_eq!(s2.list("a").len(), 150);
            assert_eq!(s2.list("b").len(), 150);
            for e in s2.list("b") {
                let (_, body) = s2.fetch("b", e.uid).await.unwrap().unwrap();
                assert!(body.starts_with(format!("Message-ID: {}", e.message_id).as_bytes()));
            }
            // Uids stay unique after recovery.
            let n = s2.deliver(msg(1000, "a", 1)).await.unwrap();
            assert!(n.uid > 300);
        });
    }

    #[test]
    fn a_disk_error_refuses_and_stops_the_store() {
        rt().block_on(async {
            let (s, _) = open(disk()).await;
            s.deliver(msg(1, "a", 1)).await.unwrap();
            s.shared.dev.fail_after_writes(0);
            let e = s.deliver(msg(2, "a", 1)).await.unwrap_err();
            assert_eq!(e.smtp().0, 451);
            assert!(s.is_stopped().is_some());
            let e = s.deliver(msg(3, "a", 1)).await.unwrap_err();
            assert!(matches!(e, StoreError::Stopped(_)));
        });
    }

    #[test]
    fn garbage_on_the_disk_is_not_formatted_over() {
        rt().block_on(async {
            let d = disk();
            d.write(0, Bytes::from(vec![0xabu8; 512]), true)
                .await
                .unwrap();
            let e = MailStore::open(d, StoreOptions::default())
                .await
                .err()
                .unwrap();
            assert!(matches!(e, StoreError::Unformatted(_)), "{e}");
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Seeded crash schedule: deliveries of random sizes, the disk
        /// loses its volatile cache after a random number of writes (in the
        /// middle of a log write or a checkpoint), then recovery runs.
        /// Every acknowledged message is there, exactly once.
        #[test]
        fn acknowledged_messages_survive_a_power_cut(
            sizes in prop::collection::vec(0usize..20_000, 1..80),
            cut_after in 0u64..120,
        ) {
            rt().block_on(async {
                let (s, _) = open(disk()).await;
                s.shared.dev.fail_after_writes(cut_after);
                let mut acked = Vec::new();
                for (i, size) in sizes.iter().enumerate() {
                    match s.deliver(msg(i as u64, "box", *size)).await {
                        Ok(a) => acked.push((i as u64, a.uid)),
                        Err(_) => break,
                    }
                }
                s.shared.dev.power_cycle();
                let dev = s.shared.dev.reboot();
                drop(s);
                let (s2, _) = open(dev).await;
                let listed = s2.list("box");
                for (i, uid) in &acked {
                    let hits: Vec<_> = listed.iter().filter(|e| e.message_id == format!("<m{i}@test>")).collect();
                    assert_eq!(hits.len(), 1, "message {i} (uid {uid}) listed {} times", hits.len());
                    assert_eq!(hits[0].uid, *uid);
                    let (_, body) = s2.fetch("box", *uid).await.unwrap().unwrap();
                    assert_eq!(body, msg(*i, "box", sizes[*i as usize]).body);
                }
                let w = s2.shared.index.lock().unwrap().messages.len();
                assert!(w >= acked.len());
            });
        }
    }

    #[test]
    fn log_space_is_reused_after_checkpoints() {
        rt().block_on(async {
            let (s, _) = open(disk()).await;
            for i in 0..200 {
                s.deliver(msg(i, "a", 8000)).await.unwrap();
            }
            // 200 x 3 pages = 600 log pages through a 256-page log.
            assert_eq!(s.list("a").len(), 200);
            let dev = s.shared.dev.reboot();
            drop(s);
            let (s2, rec) = open(dev).await;
            assert_eq!(rec.db_messages + rec.log_messages, 200);
            assert!(rec.log_end - rec.checkpoint_lsn <= 128, "{rec:?}");
            assert_eq!(s2.list("a").len(), 200);
        });
    }
}
