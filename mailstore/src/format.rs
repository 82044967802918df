//! The mail store's on-disk format, with no I/O: the superblock, the
//! transaction log records and the message page runs of the database, each
//! encoded into and decoded from whole 4 KiB pages. docs/mailstore.md
//! describes the same layout for people; the store (`store.rs`) decides
//! when each is written.
//!
//! ```text
//! page 0, 1        superblock slots (ping-pong: the valid one with the
//!                  highest generation wins, so a torn superblock write
//!                  leaves the previous one)
//! page 2 ..        log area, log_pages pages, used as a circle: the record
//!                  with LSN L starts at page 2 + (L mod log_pages)
//! page 2+log_pages database area: message page runs, appended from
//!   .. total       db_first_page up to db_next_page
//! ```
//!
//! Every structure carries the store id (random, chosen at format) and a
//! CRC32 (IEEE, `crc32fast`), so a record left over from an earlier lap of
//! the log, from an earlier format, or half written, is refused.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The store's unit of I/O and allocation. Every write is this size and
/// aligned to it, whatever the LUN's logical block size.
pub const PAGE: usize = 4096;

/// Superblock magic, page 0 and 1.
pub const SUPERBLOCK_MAGIC: &[u8; 8] = b"BUSRIGMS";
/// Log record magic.
pub const LOG_MAGIC: &[u8; 4] = b"BRLG";
/// Message page run magic.
pub const RUN_MAGIC: &[u8; 4] = b"BRMP";
/// The format version written by this code.
pub const VERSION: u32 = 1;

/// Bytes of a log record header (the payload follows).
pub const LOG_HEADER: usize = 40;
/// Bytes of a message run header (the encoded delivery follows).
pub const RUN_HEADER: usize = 32;
/// Bytes of the superblock covered by its CRC (the CRC follows them).
const SUPERBLOCK_BODY: usize = 88;

/// Longest Message-ID kept (RFC 5322 lines are at most 998 octets).
pub const MAX_MESSAGE_ID: usize = 998;
/// Longest mailbox name.
pub const MAX_MAILBOX: usize = 64;
/// Most recipients of one delivery.
pub const MAX_RECIPIENTS: usize = 100;

/// Why bytes read from the disk are not a valid structure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The magic number is not there: never written, or something else.
    #[error("no {0} magic")]
    Magic(&'static str),
    /// The CRC does not match: a torn or corrupt write.
    #[error("{0} checksum mismatch")]
    Checksum(&'static str),
    /// A well-formed structure that belongs to another format of the disk.
    #[error("{0} belongs to store {1:016x}")]
    ForeignStore(&'static str, u64),
    /// A log record at the wrong position: left over from an earlier lap.
    #[error("log record has LSN {found}, expected {expected}")]
    WrongLsn { expected: u64, found: u64 },
    /// A field is out of range or the structure is cut short.
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    /// A format version this code does not read.
    #[error("format version {0} is not supported")]
    Version(u32),
}

fn malformed(what: &'static str, detail: impl Into<String>) -> FormatError {
    FormatError::Malformed {
        what,
        detail: detail.into(),
    }
}

/// Pages needed for `bytes` bytes.
pub fn pages_for(bytes: usize) -> u32 {
    bytes.div_ceil(PAGE) as u32
}

/// Where the areas are, in pages, for a LUN of `total_pages` pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub total_pages: u64,
    pub log_first_page: u64,
    pub log_pages: u64,
    pub db_first_page: u64,
}

impl Layout {
    /// The default layout: an eighth of the disk for the log, between
    /// 1 MiB and 64 MiB, the rest for the database.
    pub fn for_capacity(total_pages: u64) -> Option<Layout> {
        let log_pages = (total_pages / 8).clamp(256, 16384);
        let db_first_page = 2 + log_pages;
        // Leave the database at least as much room as the log.
        if total_pages < db_first_page + log_pages {
            return None;
        }
        Some(Layout {
            total_pages,
            log_first_page: 2,
            log_pages,
            db_first_page,
        })
    }

    /// The page where the log page with LSN `lsn` lives.
    pub fn log_page(&self, lsn: u64) -> u64 {
        self.log_first_page + lsn % self.log_pages
    }
}

/// Page 0 or 1: where everything is and how far the checkpoint got.
///
/// ```text
///  0  8  magic "BUSRIGMS"
///  8  4  format version (1)
/// 12  4  page size (4096)
/// 16  8  store id
/// 24  8  generation (+1 per superblock write)
/// 32  8  total pages
/// 40  8  log first page
/// 48  8  log pages
/// 56  8  database first page
/// 64  8  database next page (first free page)
/// 72  8  checkpoint LSN: replay starts here
/// 80  8  next message uid
/// 88  4  CRC32 of bytes 0..88
/// 92     zero to the end of the page
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    pub store_id: u64,
    pub generation: u64,
    pub layout: Layout,
    pub db_next_page: u64,
    pub checkpoint_lsn: u64,
    pub next_uid: u64,
}

impl Superblock {
    /// The superblock of a freshly formatted store.
    pub fn new(store_id: u64, layout: Layout) -> Superblock {
        Superblock {
            store_id,
            generation: 1,
            layout,
            db_next_page: layout.db_first_page,
            checkpoint_lsn: 0,
            next_uid: 1,
        }
    }

    /// Which of the two slots (page 0 or 1) this generation is written to.
    pub fn slot(&self) -> u64 {
        self.generation % 2
    }

    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(PAGE);
        b.put_slice(SUPERBLOCK_MAGIC);
        b.put_u32(VERSION);
        b.put_u32(PAGE as u32);
        b.put_u64(self.store_id);
        b.put_u64(self.generation);
        b.put_u64(self.layout.total_pages);
        b.put_u64(self.layout.log_first_page);
        b.put_u64(self.layout.log_pages);
        b.put_u64(self.layout.db_first_page);
        b.put_u64(self.db_next_page);
        b.put_u64(self.checkpoint_lsn);
        b.put_u64(self.next_uid);
        debug_assert_eq!(b.len(), SUPERBLOCK_BODY);
        let crc = crc32fast::hash(&b);
        b.put_u32(crc);
        b.resize(PAGE, 0);
        b.freeze()
    }

    pub fn decode(page: &[u8]) -> Result<Superblock, FormatError> {
        if page.len() < SUPERBLOCK_BODY + 4 {
            return Err(malformed("superblock", "shorter than its header"));
        }
        if &page[..8] != SUPERBLOCK_MAGIC {
            return Err(FormatError::Magic("superblock"));
        }
        let mut crc = &page[SUPERBLOCK_BODY..SUPERBLOCK_BODY + 4];
        if crc.get_u32() != crc32fast::hash(&page[..SUPERBLOCK_BODY]) {
            return Err(FormatError::Checksum("superblock"));
        }
        let mut b = &page[8..SUPERBLOCK_BODY];
        let version = b.get_u32();
        if version != VERSION {
            return Err(FormatError::Version(version));
        }
        let page_size = b.get_u32();
        if page_size as usize != PAGE {
            return Err(malformed("superblock", format!("page size {page_size}")));
        }
        let sb = Superblock {
            store_id: b.get_u64(),
            generation: b.get_u64(),
            layout: Layout {
                total_pages: b.get_u64(),
                log_first_page: b.get_u64(),
                log_pages: b.get_u64(),
                db_first_page: b.get_u64(),
            },
            db_next_page: b.get_u64(),
            checkpoint_lsn: b.get_u64(),
            next_uid: b.get_u64(),
        };
        let l = sb.layout;
        let sane = l.log_first_page >= 2
            && l.log_pages > 0
            && l.db_first_page >= l.log_first_page + l.log_pages
            && sb.db_next_page >= l.db_first_page
            && sb.db_next_page <= l.total_pages;
        if !sane {
            return Err(malformed(
                "superblock",
                format!("inconsistent layout {sb:?}"),
            ));
        }
        Ok(sb)
    }

    /// The superblock to use from the two slots: the valid one with the
    /// highest generation. `None` when neither is valid.
    pub fn pick(slot0: &[u8], slot1: &[u8]) -> Option<Superblock> {
        let a = Superblock::decode(slot0).ok();
        let b = Superblock::decode(slot1).ok();
        match (a, b) {
            (Some(a), Some(b)) if a.store_id == b.store_id => {
                Some(if a.generation >= b.generation { a } else { b })
            }
            // Two different stores cannot come from one format (it zeroes
            // slot 0 before writing slot 1): refuse to guess.
            (Some(_), Some(_)) => None,
            (a, b) => a.or(b),
        }
    }
}

/// One delivered message: what the log records and the database keeps.
///
/// ```text
///  0  1  kind (1 = delivery)
///  1  8  uid
///  9  8  received, Unix milliseconds
/// 17  2  Message-ID length M, then M bytes
///     2  recipient count R, then R times: 1-byte length, mailbox name
///     4  body length B, then B bytes (the message as received, CRLF lines)
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub uid: u64,
    pub received_ms: u64,
    /// The client's Message-ID header value, empty when it sent none.
    pub message_id: String,
    /// Mailbox names, each at most [`MAX_MAILBOX`] bytes.
    pub recipients: Vec<String>,
    pub body: Bytes,
}

const KIND_DELIVERY: u8 = 1;

impl Delivery {
    /// Bytes of the encoding.
    pub fn encoded_len(&self) -> usize {
        1 + 8
            + 8
            + 2
            + self.message_id.len()
            + 2
            + self.recipients.iter().map(|r| 1 + r.len()).sum::<usize>()
            + 4
            + self.body.len()
    }

    pub fn encode(&self, b: &mut BytesMut) {
        debug_assert!(self.message_id.len() <= MAX_MESSAGE_ID);
        debug_assert!(self.recipients.len() <= MAX_RECIPIENTS);
        b.put_u8(KIND_DELIVERY);
        b.put_u64(self.uid);
        b.put_u64(self.received_ms);
        b.put_u16(self.message_id.len() as u16);
        b.put_slice(self.message_id.as_bytes());
        b.put_u16(self.recipients.len() as u16);
        for r in &self.recipients {
            debug_assert!(r.len() <= MAX_MAILBOX);
            b.put_u8(r.len() as u8);
            b.put_slice(r.as_bytes());
        }
        b.put_u32(self.body.len() as u32);
        b.put_slice(&self.body);
    }

    /// Decodes one delivery from the front of `b`, advancing it.
    pub fn decode(b: &mut &[u8]) -> Result<Delivery, FormatError> {
        const W: &str = "delivery";
        fn need(b: &[u8], n: usize) -> Result<(), FormatError> {
            if b.len() < n {
                Err(malformed(
                    W,
                    format!("cut short: {n} bytes needed, {}", b.len()),
                ))
            } else {
                Ok(())
            }
        }
        fn text(b: &mut &[u8], n: usize) -> Result<String, FormatError> {
            need(b, n)?;
            let s = std::str::from_utf8(&b[..n])
                .map_err(|_| malformed(W, "a name is not UTF-8"))?
                .to_string();
            b.advance(n);
            Ok(s)
        }
        need(b, 1 + 8 + 8 + 2)?;
        let kind = b.get_u8();
        if kind != KIND_DELIVERY {
            return Err(malformed(W, format!("unknown kind {kind}")));
        }
        let uid = b.get_u64();
        let received_ms = b.get_u64();
        let mlen = b.get_u16() as usize;
        if mlen > MAX_MESSAGE_ID {
            return Err(malformed(W, format!("Message-ID of {mlen} bytes")));
        }
        let message_id = text(b, mlen)?;
        need(b, 2)?;
        let count = b.get_u16() as usize;
        if count > MAX_RECIPIENTS {
            return Err(malformed(W, format!("{count} recipients")));
        }
        let mut recipients = Vec::with_capacity(count);
        for _ in 0..count {
            need(b, 1)?;
            let n = b.get_u8() as usize;
            recipients.push(text(b, n)?);
        }
        need(b, 4)?;
        let blen = b.get_u32() as usize;
        need(b, blen)?;
        let body = Bytes::copy_from_slice(&b[..blen]);
        b.advance(blen);
        Ok(Delivery {
            uid,
            received_ms,
            message_id,
            recipients,
            body,
        })
    }
}

/// The header of a log record, readable from its first page alone.
///
/// ```text
///  0  4  magic "BRLG"
///  4  4  CRC32 of bytes 8..40+payload length
///  8  8  store id
/// 16  8  LSN: the log position (in pages, from 0 at format) of this page
/// 24  4  pages the record occupies (header and payload, zero padded)
/// 28  4  payload length
/// 32  4  delivery count
/// 36  4  reserved (0)
/// 40     payload: the deliveries, one after another
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogHeader {
    pub crc: u32,
    pub store_id: u64,
    pub lsn: u64,
    pub pages: u32,
    pub payload_len: u32,
    pub count: u32,
}

impl LogHeader {
    /// Checks the first page of what should be the record at `expected_lsn`.
    /// `max_pages` bounds the record (the log area size).
    pub fn decode(
        first_page: &[u8],
        store_id: u64,
        expected_lsn: u64,
        max_pages: u64,
    ) -> Result<LogHeader, FormatError> {
        if first_page.len() < LOG_HEADER {
            return Err(malformed("log record", "shorter than its header"));
        }
        if &first_page[..4] != LOG_MAGIC {
            return Err(FormatError::Magic("log record"));
        }
        let mut b = &first_page[4..LOG_HEADER];
        let h = LogHeader {
            crc: b.get_u32(),
            store_id: b.get_u64(),
            lsn: b.get_u64(),
            pages: b.get_u32(),
            payload_len: b.get_u32(),
            count: b.get_u32(),
        };
        if h.store_id != store_id {
            return Err(FormatError::ForeignStore("log record", h.store_id));
        }
        if h.lsn != expected_lsn {
            return Err(FormatError::WrongLsn {
                expected: expected_lsn,
                found: h.lsn,
            });
        }
        if h.pages == 0
            || h.pages as u64 > max_pages
            || pages_for(LOG_HEADER + h.payload_len as usize) != h.pages
        {
            return Err(malformed(
                "log record",
                format!("{} pages for {} payload bytes", h.pages, h.payload_len),
            ));
        }
        Ok(h)
    }
}

/// A log record: the deliveries committed by one log write (group commit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub lsn: u64,
    pub deliveries: Vec<Delivery>,
}

impl LogRecord {
    /// Pages the encoded record occupies.
    pub fn pages(deliveries: &[Delivery]) -> u32 {
        pages_for(LOG_HEADER + deliveries.iter().map(Delivery::encoded_len).sum::<usize>())
    }

    /// The record as whole zero-padded pages.
    pub fn encode(&self, store_id: u64) -> Bytes {
        let payload_len: usize = self.deliveries.iter().map(Delivery::encoded_len).sum();
        let pages = pages_for(LOG_HEADER + payload_len);
        let mut b = BytesMut::with_capacity(pages as usize * PAGE);
        b.put_slice(LOG_MAGIC);
        b.put_u32(0); // CRC, filled in below
        b.put_u64(store_id);
        b.put_u64(self.lsn);
        b.put_u32(pages);
        b.put_u32(payload_len as u32);
        b.put_u32(self.deliveries.len() as u32);
        b.put_u32(0);
        for d in &self.deliveries {
            d.encode(&mut b);
        }
        let crc = crc32fast::hash(&b[8..]);
        b[4..8].copy_from_slice(&crc.to_be_bytes());
        b.resize(pages as usize * PAGE, 0);
        b.freeze()
    }

    /// Decodes the whole record (`bytes` holds at least `header.pages` pages).
    pub fn decode(header: &LogHeader, bytes: &[u8]) -> Result<LogRecord, FormatError> {
        let end = LOG_HEADER + header.payload_len as usize;
        if bytes.len() < end {
            return Err(malformed("log record", "cut short"));
        }
        if crc32fast::hash(&bytes[8..end]) != header.crc {
            return Err(FormatError::Checksum("log record"));
        }
        let mut p = &bytes[LOG_HEADER..end];
        let mut deliveries = Vec::with_capacity(header.count.min(4096) as usize);
        for _ in 0..header.count {
            deliveries.push(Delivery::decode(&mut p)?);
        }
        if !p.is_empty() {
            return Err(malformed("log record", "bytes after the last delivery"));
        }
        Ok(LogRecord {
            lsn: header.lsn,
            deliveries,
        })
    }
}

/// A message in the database: a run of whole pages holding one delivery.
///
/// ```text
///  0  4  magic "BRMP"
///  4  4  CRC32 of bytes 8..32+delivery length
///  8  8  store id
/// 16  8  uid
/// 24  4  pages of the run
/// 28  4  delivery length
/// 32     the delivery, encoded as in the log
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunHeader {
    pub crc: u32,
    pub store_id: u64,
    pub uid: u64,
    pub pages: u32,
    pub len: u32,
}

/// Pages a delivery takes in the database.
pub fn run_pages(d: &Delivery) -> u32 {
    pages_for(RUN_HEADER + d.encoded_len())
}

/// A delivery as a database page run.
pub fn encode_run(store_id: u64, d: &Delivery) -> Bytes {
    let len = d.encoded_len();
    let pages = pages_for(RUN_HEADER + len);
    let mut b = BytesMut::with_capacity(pages as usize * PAGE);
    b.put_slice(RUN_MAGIC);
    b.put_u32(0);
    b.put_u64(store_id);
    b.put_u64(d.uid);
    b.put_u32(pages);
    b.put_u32(len as u32);
    d.encode(&mut b);
    let crc = crc32fast::hash(&b[8..]);
    b[4..8].copy_from_slice(&crc.to_be_bytes());
    b.resize(pages as usize * PAGE, 0);
    b.freeze()
}

impl RunHeader {
    pub fn decode(first_page: &[u8], store_id: u64) -> Result<RunHeader, FormatError> {
        if first_page.len() < RUN_HEADER {
            return Err(malformed("message run", "shorter than its header"));
        }
        if &first_page[..4] != RUN_MAGIC {
            return Err(FormatError::Magic("message run"));
        }
        let mut b = &first_page[4..RUN_HEADER];
        let h = RunHeader {
            crc: b.get_u32(),
            store_id: b.get_u64(),
            uid: b.get_u64(),
            pages: b.get_u32(),
            len: b.get_u32(),
        };
        if h.store_id != store_id {
            return Err(FormatError::ForeignStore("message run", h.store_id));
        }
        if h.pages == 0 || pages_for(RUN_HEADER + h.len as usize) != h.pages {
            return Err(malformed(
                "message run",
                format!("{} pages for {} bytes", h.pages, h.len),
            ));
        }
        Ok(h)
    }
}

/// Decodes a whole run (`bytes` holds at least `header.pages` pages).
pub fn decode_run(header: &RunHeader, bytes: &[u8]) -> Result<Delivery, FormatError> {
    let end = RUN_HEADER + header.len as usize;
    if bytes.len() < end {
        return Err(malformed("message run", "cut short"));
    }
    if crc32fast::hash(&bytes[8..end]) != header.crc {
        return Err(FormatError::Checksum("message run"));
    }
    let mut p = &bytes[RUN_HEADER..end];
    let d = Delivery::decode(&mut p)?;
    if !p.is_empty() || d.uid != header.uid {
        return Err(malformed(
            "message run",
            "delivery does not match its header",
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn layout() -> Layout {
        Layout::for_capacity(16384).unwrap()
    }

    fn delivery(uid: u64, body: &[u8]) -> Delivery {
        Delivery {
            uid,
            received_ms: 1_700_000_000_000 + uid,
            message_id: format!("<{uid}@test>"),
            recipients: vec!["alice".into(), "bob".into()],
            body: Bytes::copy_from_slice(body),
        }
    }

    #[test]
    fn layout_reserves_superblocks_log_and_database() {
        let l = layout();
        assert_eq!(l.log_first_page, 2);
        assert_eq!(l.log_pages, 2048);
        assert_eq!(l.db_first_page, 2050);
        assert_eq!(l.log_page(0), 2);
        assert_eq!(l.log_page(2048), 2);
        assert_eq!(l.log_page(2049), 3);
        assert!(Layout::for_capacity(300).is_none());
    }

    #[test]
    fn superblock_round_trips_and_detects_damage() {
        let sb = Superblock {
            generation: 7,
            checkpoint_lsn: 99,
            next_uid: 42,
            db_next_page: 3000,
            ..Superblock::new(0xfeed, layout())
        };
        let page = sb.encode();
        assert_eq!(page.len(), PAGE);
        assert_eq!(Superblock::decode(&page), Ok(sb));
        let mut bad = page.to_vec();
        bad[70] ^= 1;
        assert_eq!(
            Superblock::decode(&bad),
            Err(FormatError::Checksum("superblock"))
        );
        assert_eq!(
            Superblock::decode(&[0u8; PAGE]),
            Err(FormatError::Magic("superblock"))
        );
    }

    #[test]
    fn pick_takes_the_newest_valid_slot() {
        let old = Superblock::new(1, layout());
        let new = Superblock {
            generation: 2,
            checkpoint_lsn: 5,
            ..old
        };
        assert_eq!(Superblock::pick(&new.encode(), &old.encode()), Some(new));
        // A torn write of the newer slot leaves the older one.
        let mut torn = new.encode().to_vec();
        torn[80] ^= 0xff;
        assert_eq!(Superblock::pick(&torn, &old.encode()), Some(old));
        assert_eq!(Superblock::pick(&[0; PAGE], &[0; PAGE]), None);
    }

    #[test]
    fn log_record_refuses_stale_foreign_and_torn_pages() {
        let r = LogRecord {
            lsn: 10,
            deliveries: vec![delivery(1, b"hello\r\n"), delivery(2, &[7u8; 5000])],
        };
        let bytes = r.encode(9);
        assert_eq!(bytes.len(), 2 * PAGE);
        assert_eq!(LogRecord::pages(&r.deliveries), 2);
        let h = LogHeader::decode(&bytes, 9, 10, 64).unwrap();
        assert_eq!(LogRecord::decode(&h, &bytes), Ok(r));
        assert_eq!(
            LogHeader::decode(&bytes, 9, 10 + 64, 64),
            Err(FormatError::WrongLsn {
                expected: 74,
                found: 10
            })
        );
        assert_eq!(
            LogHeader::decode(&bytes, 8, 10, 64),
            Err(FormatError::ForeignStore("log record", 9))
        );
        // The second page never made it to the disk.
        let mut torn = bytes.to_vec();
        torn[PAGE..].fill(0);
        assert_eq!(
            LogRecord::decode(&h, &torn),
            Err(FormatError::Checksum("log record"))
        );
    }

    #[test]
    fn run_round_trips() {
        let d = delivery(5, b"Subject: x\r\n\r\nbody\r\n");
        let run = encode_run(3, &d);
        assert_eq!(run.len(), PAGE * run_pages(&d) as usize);
        let h = RunHeader::decode(&run, 3).unwrap();
        assert_eq!(h.uid, 5);
        assert_eq!(decode_run(&h, &run), Ok(d));
    }

    fn arb_delivery() -> impl Strategy<Value = Delivery> {
        (
            any::<u64>(),
            any::<u64>(),
            "[ -~]{0,60}",
            prop::collection::vec("[a-z0-9._-]{1,64}", 0..5),
            prop::collection::vec(any::<u8>(), 0..9000),
        )
            .prop_map(
                |(uid, received_ms, message_id, recipients, body)| Delivery {
                    uid,
                    received_ms,
                    message_id,
                    recipients,
                    body: body.into(),
                },
            )
    }

    proptest! {
        #[test]
        fn log_records_round_trip(
            lsn in 0u64..1 << 40,
            store in any::<u64>(),
            ds in prop::collection::vec(arb_delivery(), 0..6),
        ) {
            let r = LogRecord { lsn, deliveries: ds };
            let bytes = r.encode(store);
            prop_assert_eq!(bytes.len() % PAGE, 0);
            let h = LogHeader::decode(&bytes, store, lsn, u64::MAX).unwrap();
            prop_assert_eq!(h.pages as usize * PAGE, bytes.len());
            prop_assert_eq!(LogRecord::decode(&h, &bytes), Ok(r));
        }

        /// Any single flipped bit in the header or payload is detected:
        /// the record is refused, never decoded into something else.
        #[test]
        fn a_flipped_bit_ends_replay(
            ds in prop::collection::vec(arb_delivery(), 1..4),
            pick in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let r = LogRecord { lsn: 3, deliveries: ds };
            let bytes = r.encode(77);
            let h0 = LogHeader::decode(&bytes, 77, 3, u64::MAX).unwrap();
            let used = LOG_HEADER + h0.payload_len as usize;
            let at = pick.index(used);
            let mut bad = bytes.to_vec();
            bad[at] ^= 1 << bit;
            let outcome = LogHeader::decode(&bad, 77, 3, u64::MAX)
                .and_then(|h| LogRecord::decode(&h, &bad));
            prop_assert!(outcome.is_err(), "flip at byte {} accepted", at);
        }

        /// A torn write (a prefix of the pages new, the rest old) is refused.
        #[test]
        fn a_torn_record_is_refused(
            ds in prop::collection::vec(arb_delivery(), 1..4),
            old in prop::collection::vec(arb_delivery(), 1..4),
            keep in any::<prop::sample::Index>(),
        ) {
            let new = LogRecord { lsn: 8, deliveries: ds }.encode(1);
            let stale = LogRecord { lsn: 8 - 4, deliveries: old }.encode(1);
            let pages = new.len() / PAGE;
            prop_assume!(pages > 1);
            let keep = 1 + keep.index(pages - 1); // pages of the new record that landed
            let mut disk = new.to_vec();
            for p in keep..pages {
                let src = stale.get(p * PAGE..(p + 1) * PAGE);
                let dst = &mut disk[p * PAGE..(p + 1) * PAGE];
                match src {
                    Some(s) => dst.copy_from_slice(s),
                    None => dst.fill(0xa5),
                }
            }
            prop_assume!(disk != new.to_vec());
            let outcome = LogHeader::decode(&disk, 1, 8, u64::MAX)
                .and_then(|h| LogRecord::decode(&h, &disk));
            prop_assert!(outcome.is_err());
        }

        #[test]
        fn runs_round_trip_and_detect_flips(
            d in arb_delivery(),
            pick in any::<prop::sample::Index>(),
        ) {
            let run = encode_run(5, &d);
            let h = RunHeader::decode(&run, 5).unwrap();
            prop_assert_eq!(decode_run(&h, &run), Ok(d));
            let used = RUN_HEADER + h.len as usize;
            let mut bad = run.to_vec();
            bad[pick.index(used)] ^= 0x10;
            let outcome = RunHeader::decode(&bad, 5).and_then(|h| decode_run(&h, &bad));
            prop_assert!(outcome.is_err());
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = Superblock::decode(&bytes);
            let _ = LogHeader::decode(&bytes, 0, 0, 10);
            let _ = RunHeader::decode(&bytes, 0);
            let _ = Delivery::decode(&mut &bytes[..]);
        }
    }
}
