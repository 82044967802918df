//! PDUs waiting to be written, as buffers for a vectored write.
//!
//! Headers, small data segments, padding and digests are encoded into one
//! growing buffer; a data segment of at least [`ZERO_COPY_MIN`] bytes is
//! queued as the `Bytes` it already is, between the encoded bytes before
//! and after it. A writer hands [`WireQueue::slices`] to `writev` and
//! reports what the socket took with [`WireQueue::advance`], so a 1 MiB
//! Data-In or Data-Out payload is copied once, by the kernel, instead of
//! first into a send buffer. Sans-IO: the caller owns the socket.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

use super::frame::WireConfig;
use super::Pdu;

/// Data segments at least this long are queued by reference; shorter ones
/// cost less to copy than an extra buffer in the write.
pub const ZERO_COPY_MIN: usize = 8 * 1024;

/// The wire form of PDUs not yet written, in order.
#[derive(Debug, Default)]
pub struct WireQueue {
    /// Segments in wire order, before `tail`.
    queue: VecDeque<Bytes>,
    /// Bytes in `queue`.
    queued: usize,
    /// Encoded bytes after the last queued segment.
    tail: BytesMut,
}

impl WireQueue {
    pub fn new() -> WireQueue {
        WireQueue::default()
    }

    /// Appends the wire form of `pdu` per `cfg`.
    pub fn push(&mut self, pdu: &Pdu, cfg: &WireConfig) {
        let data = pdu.data_segment();
        if data.len() < ZERO_COPY_MIN {
            pdu.encode(cfg, &mut self.tail);
            return;
        }
        pdu.encode_head(cfg, &mut self.tail);
        self.seal();
        self.queued += data.len();
        self.queue.push_back(data);
        pdu.encode_tail(cfg, &mut self.tail);
    }

    /// Moves the encoded tail into the queue.
    fn seal(&mut self) {
        if !self.tail.is_empty() {
            let b = self.tail.split().freeze();
            self.queued += b.len();
            self.queue.push_back(b);
        }
    }

    /// Bytes not yet written.
    pub fn len(&self) -> usize {
        self.queued + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `dst` with the next buffers to write, in order; returns how
    /// many it filled (0 only when the queue is empty).
    pub fn slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let tail = (!self.tail.is_empty()).then_some(&self.tail[..]);
        let bufs = self.queue.iter().map(|b| &b[..]).chain(tail);
        let mut n = 0;
        for (slot, b) in dst.iter_mut().zip(bufs) {
            *slot = IoSlice::new(b);
            n += 1;
        }
        n
    }

    /// Drops the first `n` bytes, which the socket took.
    pub fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.queue.front_mut() else {
                break;
            };
            if front.len() <= n {
                n -= front.len();
                self.queued -= front.len();
                self.queue.pop_front();
            } else {
                front.advance(n);
                self.queued -= n;
                n = 0;
            }
        }
        if n > 0 {
            self.tail.advance(n.min(self.tail.len()));
        }
        if self.tail.is_empty() {
            // Keeps the allocation for the next batch.
            self.tail.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::{Header, NopOut};

    fn pdu(i: u32, len: usize) -> Pdu {
        Pdu {
            header: Header::NopOut(NopOut {
                itt: i,
                ttt: 0xffff_ffff,
                cmd_sn: i,
                ..Default::default()
            }),
            ahs: Bytes::new(),
            data: Bytes::from(
                (0..len)
                    .map(|b| (b * 7) as u8 ^ i as u8)
                    .collect::<Vec<u8>>(),
            ),
        }
    }

    /// Whatever the socket takes at a time, the bytes written are the
    /// concatenated wire forms, and large segments are not copied.
    #[test]
    fn drains_to_the_wire_form_in_any_steps() {
        let cfg = WireConfig {
            header_digest: true,
            data_digest: true,
            max_recv_data_segment_length: 1 << 20,
        };
        let pdus: Vec<Pdu> = [0, 5, ZERO_COPY_MIN - 1, ZERO_COPY_MIN, 65_537, 3]
            .iter()
            .enumerate()
            .map(|(i, &len)| pdu(i as u32, len))
            .collect();
        let mut expected = BytesMut::new();
        for p in &pdus {
            p.encode(&cfg, &mut expected);
        }
        for step in [1, 7, 48, 1000, 70_000, usize::MAX] {
            let mut q = WireQueue::new();
            for p in &pdus {
                q.push(p, &cfg);
            }
            assert_eq!(q.len(), expected.len());
            let mut wire = Vec::new();
            while !q.is_empty() {
                let mut iov = [IoSlice::new(&[]); 4];
                let n = q.slices(&mut iov);
                assert!(n > 0);
                let mut took = 0;
                for s in &iov[..n] {
                    let k = s.len().min(step - took.min(step));
                    wire.extend_from_slice(&s[..k]);
                    took += k;
                    if took == step {
                        break;
                    }
                }
                q.advance(took);
            }
            assert_eq!(wire, expected, "step {step}");
        }
        // The 64 KiB segment is queued by reference.
        let mut q = WireQueue::new();
        let big = pdu(9, 65_536);
        q.push(&big, &cfg);
        let mut iov = [IoSlice::new(&[]); 4];
        assert_eq!(q.slices(&mut iov), 3);
        assert_eq!(iov[1].as_ptr(), big.data.as_ptr());
    }
}
