//! SCSI data transfer over iSCSI: collecting write data (immediate data,
//! unsolicited Data-Out, R2T-solicited Data-Out) and cutting read data and
//! status into Data-In / SCSI Response PDUs (RFC 7143 §4.2.5, §11.7, §11.8).
//!
//! Both halves are pure: [`WriteState`] takes PDUs and says what is wrong
//! or which R2Ts to send next; [`reply_pdus`] turns an executor reply into
//! PDUs. The connection stamps sequence numbers on them afterwards.
//!
//! We negotiate DataPDUInOrder=Yes and DataSequenceInOrder=Yes (RFC 7143
//! §13.19, §13.20), so write data arrives as one contiguous run: the
//! unsolicited burst first, then one solicited sequence per R2T in R2T
//! order. Every PDU must start exactly where the previous one ended.
//!
//! ```text
//! 0            immediate   FirstBurstLength             EDTL
//! |<-- cmd PDU -->|<-- Data-Out, TTT=ffffffff -->|<-- R2T 0 -->|<-- R2T 1 -->|
//!                  DataSN 0,1,..                  DataSN 0,..   DataSN 0,..
//! ```

use std::collections::VecDeque;

use busrig_proto::pdu::{DataIn, DataOut, Header, Pdu, ScsiResponse, RESERVED_TAG};

use crate::write_data::WriteData;
use busrig_proto::scsi::sense::status;
use bytes::Bytes;

/// Negotiated values that shape a write (RFC 7143 §13.10-§13.17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteLimits {
    pub immediate_data: bool,
    pub initial_r2t: bool,
    pub first_burst_length: u32,
    pub max_burst_length: u32,
    pub max_outstanding_r2t: u32,
}

/// A write-data protocol violation; each one is answered with a Reject
/// (reason protocol error) and, at ErrorRecoveryLevel 0, the end of the
/// connection (RFC 7143 §7.1.4: no recovery within the connection).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// Immediate data although ImmediateData=No (RFC 7143 §13.11).
    #[error("immediate data sent although ImmediateData=No")]
    ImmediateNotAllowed,
    /// Unsolicited Data-Out although InitialR2T=Yes or after the unsolicited burst ended.
    #[error("unsolicited Data-Out not allowed here")]
    UnsolicitedNotAllowed,
    /// DataSN out of order (RFC 7143 §11.7.5).
    #[error("DataSN {got}, expected {expected}")]
    BadDataSn { expected: u32, got: u32 },
    /// Buffer offset out of order (DataPDUInOrder=Yes, RFC 7143 §13.19).
    #[error("buffer offset {got}, expected {expected}")]
    BadOffset { expected: u32, got: u32 },
    /// Data beyond the Expected Data Transfer Length (RFC 7143 §11.3.4).
    #[error("data up to byte {end} exceeds the expected data transfer length {edtl}")]
    BeyondEdtl { end: u64, edtl: u32 },
    /// Data beyond FirstBurstLength or the R2T's desired length.
    #[error("data up to byte {end} exceeds the burst ending at {limit}")]
    BeyondBurst { end: u64, limit: u32 },
    /// A Target Transfer Tag we did not hand out (or not the one due next).
    #[error("target transfer tag {0:#x} is not the R2T being answered")]
    BadTtt(u32),
    /// The F bit ended a sequence before all requested data arrived.
    #[error("sequence ended at byte {at}, {missing} bytes short")]
    ShortSequence { at: u32, missing: u32 },
}

/// One R2T to send (RFC 7143 §11.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct R2tSpec {
    pub ttt: u32,
    pub r2t_sn: u32,
    pub offset: u32,
    pub len: u32,
}

#[derive(Debug, Clone, Copy)]
struct Unsolicited {
    /// Where the unsolicited burst must end at the latest.
    limit: u32,
    next_data_sn: u32,
}

#[derive(Debug, Clone, Copy)]
struct Outstanding {
    ttt: u32,
    offset: u32,
    len: u32,
    next_data_sn: u32,
}

/// Write data of one command being collected.
#[derive(Debug)]
pub struct WriteState {
    edtl: u32,
    data: WriteData,
    unsolicited: Option<Unsolicited>,
    outstanding: VecDeque<Outstanding>,
    next_r2t_offset: u32,
    r2t_sn: u32,
    limits: WriteLimits,
}

impl WriteState {
    /// Starts a write from the SCSI Command PDU: its EDTL, immediate data
    /// and F bit ("no unsolicited Data-Out follows", RFC 7143 §11.3.1).
    pub fn new(
        edtl: u32,
        immediate: Bytes,
        final_: bool,
        limits: WriteLimits,
    ) -> Result<WriteState, DataError> {
        let first_burst_end = limits.first_burst_length.min(edtl);
        if !immediate.is_empty() {
            if !limits.immediate_data {
                return Err(DataError::ImmediateNotAllowed);
            }
            let end = immediate.len() as u64;
            if end > u64::from(edtl) {
                return Err(DataError::BeyondEdtl { end, edtl });
            }
            if end > u64::from(limits.first_burst_length) {
                return Err(DataError::BeyondBurst {
                    end,
                    limit: limits.first_burst_length,
                });
            }
        }
        let received = immediate.len() as u32;
        let data = WriteData::from(immediate);
        // InitialR2T=Yes forbids unsolicited Data-Out (RFC 7143 §13.10); an
        // F bit of 0 then is the initiator's mistake and any Data-Out it
        // sends is refused as it arrives.
        let unsolicited =
            (!final_ && !limits.initial_r2t && received < first_burst_end).then_some(Unsolicited {
                limit: first_burst_end,
                next_data_sn: 0,
            });
        Ok(WriteState {
            edtl,
            data,
            unsolicited,
            outstanding: VecDeque::new(),
            next_r2t_offset: received,
            r2t_sn: 0,
            limits,
        })
    }

    /// Bytes received so far.
    pub fn received(&self) -> u32 {
        self.data.len() as u32
    }

    /// Whether all EDTL bytes are in.
    pub fn is_complete(&self) -> bool {
        self.received() >= self.edtl
    }

    /// Whether `ttt` belongs to an R2T of this command still being answered.
    pub fn has_ttt(&self, ttt: u32) -> bool {
        self.outstanding.iter().any(|o| o.ttt == ttt)
    }

    /// Takes one Data-Out PDU. On error nothing was stored.
    pub fn on_data_out(&mut self, h: &DataOut, data: Bytes) -> Result<(), DataError> {
        let received = self.received();
        let end = u64::from(h.buffer_offset) + data.len() as u64;
        if end > u64::from(self.edtl) {
            return Err(DataError::BeyondEdtl {
                end,
                edtl: self.edtl,
            });
        }
        if h.ttt == RESERVED_TAG {
            let Some(u) = self.unsolicited.as_mut() else {
                return Err(DataError::UnsolicitedNotAllowed);
            };
            if h.data_sn != u.next_data_sn {
                return Err(DataError::BadDataSn {
                    expected: u.next_data_sn,
                    got: h.data_sn,
                });
            }
            if h.buffer_offset != received {
                return Err(DataError::BadOffset {
                    expected: received,
                    got: h.buffer_offset,
                });
            }
            if end > u64::from(u.limit) {
                return Err(DataError::BeyondBurst {
                    end,
                    limit: u.limit,
                });
            }
            u.next_data_sn += 1;
            let limit = u.limit;
            self.data.push(data);
            // The unsolicited burst ends with its F bit or when it has
            // used up FirstBurstLength (RFC 7143 §13.14); R2Ts then ask
            // for the rest from wherever it stopped.
            if h.final_ || self.received() >= limit {
                self.unsolicited = None;
                self.next_r2t_offset = self.received();
            }
            return Ok(());
        }
        let Some(o) = self.outstanding.front_mut() else {
            return Err(DataError::BadTtt(h.ttt));
        };
        // DataSequenceInOrder=Yes: sequences are answered in R2T order.
        if o.ttt != h.ttt {
            return Err(DataError::BadTtt(h.ttt));
        }
        if h.data_sn != o.next_data_sn {
            return Err(DataError::BadDataSn {
                expected: o.next_data_sn,
                got: h.data_sn,
            });
        }
        if h.buffer_offset != received {
            return Err(DataError::BadOffset {
                expected: received,
                got: h.buffer_offset,
            });
        }
        let seq_end = o.offset + o.len;
        if end > u64::from(seq_end) {
            return Err(DataError::BeyondBurst {
                end,
                limit: seq_end,
            });
        }
        let new_received = end as u32;
        if h.final_ && new_received < seq_end {
            return Err(DataError::ShortSequence {
                at: new_received,
                missing: seq_end - new_received,
            });
        }
        o.next_data_sn += 1;
        self.data.push(data);
        if new_received == seq_end {
            self.outstanding.pop_front();
        }
        Ok(())
    }

    /// R2Ts to send now: none while the unsolicited burst is still open,
    /// otherwise enough to keep MaxOutstandingR2T sequences of at most
    /// MaxBurstLength in flight (RFC 7143 §13.13, §13.17). Each R2T takes
    /// its length from `budget`, the write data the connection is still
    /// willing to buffer; none is issued that does not fit.
    pub fn next_r2ts(
        &mut self,
        budget: &mut u64,
        mut alloc_ttt: impl FnMut() -> u32,
    ) -> Vec<R2tSpec> {
        let mut out = Vec::new();
        if self.unsolicited.is_some() {
            return out;
        }
        let max_outstanding = self.limits.max_outstanding_r2t.max(1) as usize;
        while self.outstanding.len() < max_outstanding && self.next_r2t_offset < self.edtl {
            let offset = self.next_r2t_offset;
            let len = self.limits.max_burst_length.max(1).min(self.edtl - offset);
            if u64::from(len) > *budget {
                break;
            }
            *budget -= u64::from(len);
            let ttt = alloc_ttt();
            let spec = R2tSpec {
                ttt,
                r2t_sn: self.r2t_sn,
                offset,
                len,
            };
            self.r2t_sn += 1;
            self.next_r2t_offset += len;
            self.outstanding.push_back(Outstanding {
                ttt,
                offset,
                len,
                next_data_sn: 0,
            });
            out.push(spec);
        }
        out
    }

    /// The length of the next R2T, if one remains to be sent.
    pub fn next_r2t_len(&self) -> Option<u32> {
        (self.next_r2t_offset < self.edtl).then(|| {
            self.limits
                .max_burst_length
                .max(1)
                .min(self.edtl - self.next_r2t_offset)
        })
    }

    /// Whether R2Ts remain to be sent once budget allows.
    pub fn wants_r2t(&self) -> bool {
        self.unsolicited.is_none() && self.next_r2t_offset < self.edtl
    }

    /// Target transfer tags still outstanding (to forget them on abort).
    pub fn ttts(&self) -> impl Iterator<Item = u32> + '_ {
        self.outstanding.iter().map(|o| o.ttt)
    }

    /// The collected data, in the pieces it arrived in.
    pub fn into_data(self) -> WriteData {
        self.data
    }
}

/// How a command's transfer compared with what it wanted (RFC 7143 §11.4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Residual {
    None,
    /// The command wanted more than the EDTL; the count is the excess.
    Overflow(u32),
    /// The command moved less than the EDTL; the count is the shortfall.
    Underflow(u32),
}

impl Residual {
    fn between(wanted: u64, edtl: u32) -> Residual {
        let edtl = u64::from(edtl);
        let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        if wanted > edtl {
            Residual::Overflow(clamp(wanted - edtl))
        } else if wanted < edtl {
            Residual::Underflow(clamp(edtl - wanted))
        } else {
            Residual::None
        }
    }

    fn flags(self) -> (bool, bool, u32) {
        match self {
            Residual::None => (false, false, 0),
            Residual::Overflow(n) => (true, false, n),
            Residual::Underflow(n) => (false, true, n),
        }
    }
}

/// What the connection knows about a command when its reply is built.
#[derive(Debug, Clone, Copy)]
pub struct ReplyShape {
    pub itt: u32,
    pub read: bool,
    pub write: bool,
    pub edtl: u32,
    /// The initiator's MaxRecvDataSegmentLength (RFC 7143 §13.12).
    pub initiator_mrdsl: u32,
    /// MaxBurstLength: each Data-In sequence ends with the F bit (§13.13).
    pub max_burst_length: u32,
}

/// The outcome of a command as the executor reports it.
#[derive(Debug, Clone, Default)]
pub struct CommandResult {
    pub status: u8,
    /// Sense data (fixed or descriptor format), without the SenseLength.
    pub sense: Option<Bytes>,
    pub data_in: Bytes,
    /// For data-out commands: how many bytes the CDB asked for.
    pub data_out_wanted: Option<u32>,
}

/// Turns a command outcome into Data-In PDUs and/or a SCSI Response.
///
/// Read data is cut to the EDTL and into PDUs of at most the initiator's
/// MaxRecvDataSegmentLength, never crossing a MaxBurstLength boundary, with
/// DataSN counting from 0 and the F bit on the last PDU of each burst.
/// GOOD status without sense rides in the last Data-In (phase collapse,
/// RFC 7143 §11.7.4); anything else gets its own SCSI Response carrying the
/// sense (§11.4.7). Residuals compare what the command wanted with the EDTL
/// (§11.4.5): read data longer than the EDTL is an overflow, shorter an
/// underflow; for writes the CDB's transfer length is compared.
pub fn reply_pdus(shape: &ReplyShape, out: CommandResult) -> Vec<Pdu> {
    let (send, residual) = if shape.read {
        let len = out.data_in.len().min(shape.edtl as usize);
        (
            out.data_in.slice(..len),
            Residual::between(out.data_in.len() as u64, shape.edtl),
        )
    } else {
        let wanted = if shape.write {
            out.data_out_wanted
                .map(u64::from)
                .unwrap_or(u64::from(shape.edtl))
        } else {
            // No transfer flag: whatever the command would have moved is
            // beyond an EDTL that is normally 0.
            (out.data_in.len() as u64).max(out.data_out_wanted.map(u64::from).unwrap_or(0))
        };
        (Bytes::new(), Residual::between(wanted, shape.edtl))
    };
    let (overflow, underflow, residual_count) = residual.flags();
    let collapse = out.status == status::GOOD && out.sense.is_none() && !send.is_empty();

    let mut pdus = Vec::new();
    let total = send.len();
    let seg_max = shape.initiator_mrdsl.max(512) as usize;
    let burst = shape.max_burst_length.max(512) as usize;
    let mut offset = 0usize;
    let mut data_sn = 0u32;
    while offset < total {
        let burst_end = (offset / burst + 1) * burst;
        let len = seg_max.min(burst_end - offset).min(total - offset);
        let end = offset + len;
        let last = end == total;
        let mut h = DataIn {
            final_: last || end == burst_end,
            itt: shape.itt,
            ttt: RESERVED_TAG,
            data_sn,
            buffer_offset: offset as u32,
            ..Default::default()
        };
        if last && collapse {
            h.status_present = true;
            h.status = out.status;
            h.overflow = overflow;
            h.underflow = underflow;
            h.residual_count = residual_count;
        }
        pdus.push(Pdu {
            header: Header::DataIn(h),
            ahs: Bytes::new(),
            data: send.slice(offset..end),
        });
        offset = end;
        data_sn += 1;
    }
    if !collapse {
        let h = ScsiResponse {
            overflow,
            underflow,
            response: 0,
            status: out.status,
            itt: shape.itt,
            exp_data_sn: data_sn,
            residual_count,
            ..Default::default()
        };
        let data = out
            .sense
            .as_deref()
            .map(busrig_proto::pdu::sense_segment)
            .unwrap_or_default();
        pdus.push(Pdu {
            header: Header::ScsiResponse(h),
            ahs: Bytes::new(),
            data,
        });
    }
    pdus
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: WriteLimits = WriteLimits {
        immediate_data: true,
        initial_r2t: false,
        first_burst_length: 8192,
        max_burst_length: 16384,
        max_outstanding_r2t: 1,
    };

    fn dout(ttt: u32, data_sn: u32, offset: u32, final_: bool) -> DataOut {
        DataOut {
            ttt,
            data_sn,
            buffer_offset: offset,
            final_,
            itt: 1,
            ..Default::default()
        }
    }

    fn b(data: &[u8]) -> Bytes {
        Bytes::copy_from_slice(data)
    }

    fn no_limit() -> u64 {
        u64::MAX
    }

    fn ttt_counter() -> impl FnMut() -> u32 {
        let mut n = 100;
        move || {
            n += 1;
            n
        }
    }

    #[test]
    fn immediate_unsolicited_then_r2ts_in_bursts() {
        let edtl = 40_000;
        let mut w = WriteState::new(edtl, b(&[1u8; 1000]), false, LIMITS).unwrap();
        // While the unsolicited burst is open, no R2T.
        assert!(w.next_r2ts(&mut no_limit(), ttt_counter()).is_empty());
        w.on_data_out(&dout(RESERVED_TAG, 0, 1000, false), b(&[2u8; 4096]))
            .unwrap();
        w.on_data_out(&dout(RESERVED_TAG, 1, 5096, true), b(&[3u8; 3096]))
            .unwrap();
        assert_eq!(w.received(), 8192);
        let mut ttts = ttt_counter();
        let r = w.next_r2ts(&mut no_limit(), &mut ttts);
        assert_eq!(
            r,
            vec![R2tSpec {
                ttt: 101,
                r2t_sn: 0,
                offset: 8192,
                len: 16384
            }]
        );
        // MaxOutstandingR2T=1: nothing more until this one is answered.
        assert!(w.next_r2ts(&mut no_limit(), &mut ttts).is_empty());
        w.on_data_out(&dout(101, 0, 8192, false), b(&[4u8; 8192]))
            .unwrap();
        w.on_data_out(&dout(101, 1, 16384, true), b(&[4u8; 8192]))
            .unwrap();
        let r = w.next_r2ts(&mut no_limit(), &mut ttts);
        assert_eq!(
            r,
            vec![R2tSpec {
                ttt: 102,
                r2t_sn: 1,
                offset: 24576,
                len: 15424
            }]
        );
        w.on_data_out(&dout(102, 0, 24576, true), b(&[5u8; 15424]))
            .unwrap();
        assert!(w.is_complete());
        let data = w.into_data().contiguous();
        assert_eq!(data.len(), 40_000);
        assert_eq!(data[999], 1);
        assert_eq!(data[1000], 2);
        assert_eq!(data[39_999], 5);
    }

    #[test]
    fn several_outstanding_r2ts_when_negotiated() {
        let limits = WriteLimits {
            initial_r2t: true,
            max_outstanding_r2t: 4,
            max_burst_length: 1024,
            ..LIMITS
        };
        let mut w = WriteState::new(3000, b(&[]), true, limits).unwrap();
        let r = w.next_r2ts(&mut no_limit(), ttt_counter());
        let spans: Vec<_> = r.iter().map(|s| (s.offset, s.len, s.r2t_sn)).collect();
        assert_eq!(spans, vec![(0, 1024, 0), (1024, 1024, 1), (2048, 952, 2)]);
        // Answering the second R2T first breaks DataSequenceInOrder.
        assert_eq!(
            w.on_data_out(&dout(102, 0, 1024, true), b(&[0; 1024])),
            Err(DataError::BadTtt(102))
        );
    }

    #[test]
    fn datasn_errors_match_libiscsi_datasn_invalid_cases() {
        // Two PDUs both with DataSN 0, DataSN 27, DataSN -1, reversed 1,0.
        for (first, second) in [
            (0u32, Some(0u32)),
            (27, None),
            (u32::MAX, None),
            (1, Some(0)),
        ] {
            let mut w = WriteState::new(1024, b(&[]), false, LIMITS).unwrap();
            let r1 = w.on_data_out(
                &dout(RESERVED_TAG, first, 0, second.is_none()),
                b(&[0; 512]),
            );
            let r = match (r1, second) {
                (Err(e), _) => Err(e),
                (Ok(()), Some(sn)) => {
                    w.on_data_out(&dout(RESERVED_TAG, sn, 512, true), b(&[0; 512]))
                }
                (Ok(()), None) => Ok(()),
            };
            assert!(
                matches!(r, Err(DataError::BadDataSn { .. })),
                "{first} {second:?}: {r:?}"
            );
        }
    }

    #[test]
    fn data_beyond_edtl_or_burst_is_refused_without_storing() {
        let mut w = WriteState::new(1000, b(&[]), false, LIMITS).unwrap();
        assert_eq!(
            w.on_data_out(&dout(RESERVED_TAG, 0, 0, true), b(&[0; 1500])),
            Err(DataError::BeyondEdtl {
                end: 1500,
                edtl: 1000
            })
        );
        assert_eq!(w.received(), 0);
        assert_eq!(
            WriteState::new(100, b(&[0; 200]), true, LIMITS).unwrap_err(),
            DataError::BeyondEdtl {
                end: 200,
                edtl: 100
            }
        );
        let mut w = WriteState::new(100_000, b(&[]), false, LIMITS).unwrap();
        assert_eq!(
            w.on_data_out(&dout(RESERVED_TAG, 0, 0, false), b(&[0; 9000])),
            Err(DataError::BeyondBurst {
                end: 9000,
                limit: 8192
            })
        );
        let mut w = WriteState::new(1000, b(&[]), false, LIMITS).unwrap();
        assert_eq!(
            w.on_data_out(&dout(RESERVED_TAG, 0, 8, false), b(&[0; 8])),
            Err(DataError::BadOffset {
                expected: 0,
                got: 8
            })
        );
    }

    #[test]
    fn r2ts_wait_for_budget() {
        let limits = WriteLimits {
            initial_r2t: true,
            max_outstanding_r2t: 4,
            max_burst_length: 1024,
            ..LIMITS
        };
        let mut w = WriteState::new(4096, b(&[]), true, limits).unwrap();
        let mut budget = 1500;
        let r = w.next_r2ts(&mut budget, ttt_counter());
        assert_eq!(r.len(), 1);
        assert_eq!(budget, 476);
        assert!(w.wants_r2t());
        let mut budget = 10_000;
        let r = w.next_r2ts(&mut budget, ttt_counter());
        assert_eq!(
            r.iter().map(|s| s.offset).collect::<Vec<_>>(),
            vec![1024, 2048, 3072]
        );
        assert!(!w.wants_r2t());
    }

    #[test]
    fn unsolicited_rules() {
        let no_imm = WriteLimits {
            immediate_data: false,
            ..LIMITS
        };
        assert_eq!(
            WriteState::new(512, b(&[0; 512]), true, no_imm).unwrap_err(),
            DataError::ImmediateNotAllowed
        );
        let r2t_first = WriteLimits {
            initial_r2t: true,
            ..LIMITS
        };
        let mut w = WriteState::new(512, b(&[]), false, r2t_first).unwrap();
        assert_eq!(
            w.on_data_out(&dout(RESERVED_TAG, 0, 0, true), b(&[0; 512])),
            Err(DataError::UnsolicitedNotAllowed)
        );
        // Unknown TTT while nothing is outstanding.
        assert_eq!(
            w.on_data_out(&dout(7, 0, 0, true), b(&[0; 512])),
            Err(DataError::BadTtt(7))
        );
        // An R2T sequence cut short by the F bit.
        let mut tt = ttt_counter();
        let r = w.next_r2ts(&mut no_limit(), &mut tt);
        assert_eq!(
            w.on_data_out(&dout(r[0].ttt, 0, 0, true), b(&[0; 256])),
            Err(DataError::ShortSequence {
                at: 256,
                missing: 256
            })
        );
    }

    fn shape(read: bool, write: bool, edtl: u32) -> ReplyShape {
        ReplyShape {
            itt: 9,
            read,
            write,
            edtl,
            initiator_mrdsl: 1024,
            max_burst_length: 2048,
        }
    }

    fn data_ins(pdus: &[Pdu]) -> Vec<&DataIn> {
        pdus.iter()
            .filter_map(|p| match &p.header {
                Header::DataIn(h) => Some(h),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn read_is_split_per_mrdsl_with_f_bit_per_burst_and_collapsed_status() {
        let out = CommandResult {
            data_in: Bytes::from(vec![7u8; 5000]),
            ..Default::default()
        };
        let pdus = reply_pdus(&shape(true, false, 5000), out);
        let d = data_ins(&pdus);
        assert_eq!(pdus.len(), 5);
        let lens: Vec<_> = pdus.iter().map(|p| p.data.len()).collect();
        assert_eq!(lens, vec![1024, 1024, 1024, 1024, 904]);
        let f: Vec<_> = d.iter().map(|h| h.final_).collect();
        assert_eq!(f, vec![false, true, false, true, true]);
        let sn: Vec<_> = d.iter().map(|h| (h.data_sn, h.buffer_offset)).collect();
        assert_eq!(sn, vec![(0, 0), (1, 1024), (2, 2048), (3, 3072), (4, 4096)]);
        assert!(d[4].status_present && d[4].status == 0 && !d[4].overflow && !d[4].underflow);
        assert!(d[..4].iter().all(|h| !h.status_present));
    }

    #[test]
    fn read_residuals() {
        // libiscsi Read10Invalid: one block with EDTL 200 -> 200 bytes, overflow 312.
        let out = CommandResult {
            data_in: Bytes::from(vec![1u8; 512]),
            ..Default::default()
        };
        let pdus = reply_pdus(&shape(true, false, 200), out.clone());
        let d = data_ins(&pdus);
        assert_eq!(pdus.len(), 1);
        assert_eq!(pdus[0].data.len(), 200);
        assert!(d[0].overflow && d[0].residual_count == 312);
        // EDTL 10000 -> underflow 9488.
        let pdus = reply_pdus(&shape(true, false, 10000), out.clone());
        let d = data_ins(&pdus);
        assert!(d[0].underflow && d[0].residual_count == 9488 && d[0].status_present);
        // EDTL 0 and no flags -> no data, SCSI Response with overflow 512.
        let pdus = reply_pdus(&shape(false, false, 0), out);
        assert_eq!(pdus.len(), 1);
        match &pdus[0].header {
            Header::ScsiResponse(r) => {
                assert!(r.overflow && r.residual_count == 512 && r.exp_data_sn == 0)
            }
            h => panic!("{h:?}"),
        }
    }

    #[test]
    fn write_residuals_compare_cdb_length_with_edtl() {
        for (edtl, wanted, expect) in [
            (0, 512, Residual::Overflow(512)),
            (10000, 512, Residual::Underflow(9488)),
            (200, 512, Residual::Overflow(312)),
            (512, 512, Residual::None),
        ] {
            let out = CommandResult {
                data_out_wanted: Some(wanted),
                ..Default::default()
            };
            let pdus = reply_pdus(&shape(false, true, edtl), out);
            let Header::ScsiResponse(r) = &pdus[0].header else {
                panic!()
            };
            let (o, u, n) = expect.flags();
            assert_eq!(
                (r.overflow, r.underflow, r.residual_count),
                (o, u, n),
                "edtl {edtl}"
            );
        }
    }

    #[test]
    fn check_condition_after_data_carries_sense_and_exp_data_sn() {
        let sense =
            Bytes::from_static(&[0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0]);
        let out = CommandResult {
            status: status::CHECK_CONDITION,
            sense: Some(sense.clone()),
            data_in: Bytes::from(vec![0u8; 1500]),
            data_out_wanted: None,
        };
        let pdus = reply_pdus(&shape(true, false, 1500), out);
        assert_eq!(pdus.len(), 3);
        let Header::ScsiResponse(r) = &pdus[2].header else {
            panic!()
        };
        assert_eq!((r.status, r.exp_data_sn), (status::CHECK_CONDITION, 2));
        assert_eq!(&pdus[2].data[..2], &[0, 18]);
        assert_eq!(&pdus[2].data[2..], &sense[..]);
        assert!(data_ins(&pdus).iter().all(|h| !h.status_present));
    }
}
