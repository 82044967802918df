//! tokio-util framing of iSCSI PDUs over a byte stream.
//!
//! A thin wrapper over the sans-IO [`Pdu::decode`] / [`Pdu::encode`] of
//! `busrig-proto` (STYLE rule 2): the decoder maps "not a whole PDU yet" to
//! `Ok(None)` and hands every PDU error up, fatal or not, as a value the
//! connection decides about. The [`WireConfig`] is replaceable because digests
//! and the receive limit change when login completes (RFC 7143 §13.1,
//! §13.12): the new values apply from the first PDU after the final Login
//! Response.

use std::io::IoSlice;

use busrig_proto::pdu::{Pdu, PduError, WireConfig, WireQueue};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

/// Room kept free in the read buffer so one read can take several small
/// PDUs; the decoder itself reserves at most one PDU within our declared
/// MaxRecvDataSegmentLength.
const READ_CHUNK: usize = 16 * 1024;

/// What reading from the connection can yield besides a PDU.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The transport failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A PDU could not be decoded; see [`PduError::is_fatal`].
    #[error("{0}")]
    Pdu(#[from] PduError),
}

/// Decoder and encoder of PDUs with the connection's current framing.
#[derive(Debug, Clone, Default)]
pub struct PduCodec {
    config: WireConfig,
}

impl PduCodec {
    pub fn new(config: WireConfig) -> PduCodec {
        PduCodec { config }
    }

    /// The framing in force.
    pub fn config(&self) -> WireConfig {
        self.config
    }

    /// Switches framing, e.g. after login negotiated digests.
    pub fn set_config(&mut self, config: WireConfig) {
        self.config = config;
    }
}

impl Decoder for PduCodec {
    type Item = Pdu;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Pdu>, CodecError> {
        Ok(Pdu::decode(src, &self.config)?)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Pdu>, CodecError> {
        match self.decode(src)? {
            Some(pdu) => Ok(Some(pdu)),
            // A PDU cut short by the peer closing: nothing to answer, the
            // connection is over (and FramedRead reports it as an error).
            None if src.is_empty() => Ok(None),
            None => Err(CodecError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed inside a PDU ({} bytes buffered)",
                    src.len()
                ),
            ))),
        }
    }
}

impl Encoder<Pdu> for PduCodec {
    type Error = std::io::Error;

    fn encode(&mut self, pdu: Pdu, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        pdu.encode(&self.config, dst);
        Ok(())
    }
}

/// Reads whole PDUs from a byte stream.
///
/// [`PduReader::next`] is cancel-safe (it can sit in a `select!`): bytes are
/// only ever moved from the stream into the buffer, and PDUs only taken out
/// of the buffer synchronously.
pub struct PduReader<R> {
    io: R,
    buf: BytesMut,
    codec: PduCodec,
    eof: bool,
    failed: bool,
}

impl<R: AsyncRead + Unpin> PduReader<R> {
    pub fn new(io: R, config: WireConfig) -> PduReader<R> {
        PduReader {
            io,
            buf: BytesMut::new(),
            codec: PduCodec::new(config),
            eof: false,
            failed: false,
        }
    }

    /// Changes the framing for the PDUs that follow.
    pub fn set_config(&mut self, config: WireConfig) {
        self.codec.set_config(config);
    }

    /// The next PDU; `None` at a clean end of stream. After an error the
    /// stream cannot be framed any more and `None` follows.
    pub async fn next(&mut self) -> Option<Result<Pdu, CodecError>> {
        if self.failed {
            return None;
        }
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(pdu)) => return Some(Ok(pdu)),
                Ok(None) => {}
                Err(e) => {
                    if matches!(&e, CodecError::Pdu(p) if p.is_fatal()) {
                        self.failed = true;
                    }
                    return Some(Err(e));
                }
            }
            if self.eof {
                self.failed = true;
                return match self.codec.decode_eof(&mut self.buf) {
                    Ok(Some(pdu)) => Some(Ok(pdu)),
                    Ok(None) => None,
                    Err(e) => Some(Err(e)),
                };
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) => {
                    self.failed = true;
                    return Some(Err(CodecError::Io(e)));
                }
            }
        }
    }
}

/// Buffers handed to one `writev`.
const MAX_IOV: usize = 64;

/// Writes PDUs to a byte stream; [`PduWriter::feed`] batches, and
/// [`PduWriter::flush`] pushes the batch out with vectored writes, large
/// data segments by reference (see [`WireQueue`]).
pub struct PduWriter<W> {
    io: W,
    queue: WireQueue,
    codec: PduCodec,
}

impl<W: AsyncWrite + Unpin> PduWriter<W> {
    pub fn new(io: W, config: WireConfig) -> PduWriter<W> {
        PduWriter {
            io,
            queue: WireQueue::new(),
            codec: PduCodec::new(config),
        }
    }

    /// Changes the framing for the PDUs that follow.
    pub fn set_config(&mut self, config: WireConfig) {
        self.codec.set_config(config);
    }

    /// Encodes a PDU into the batch.
    pub fn feed(&mut self, pdu: Pdu) {
        self.queue.push(&pdu, &self.codec.config);
    }

    /// Bytes waiting in the batch.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Writes the batch out.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        write_queue(&mut self.io, &mut self.queue).await?;
        self.io.flush().await
    }

    /// Encodes and writes one PDU.
    pub async fn send(&mut self, pdu: Pdu) -> std::io::Result<()> {
        self.feed(pdu);
        self.flush().await
    }

    /// Flushes and closes the write side.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.flush().await?;
        self.io.shutdown().await
    }
}

/// Writes everything in `queue` with vectored writes.
async fn write_queue<W: AsyncWrite + Unpin>(
    io: &mut W,
    queue: &mut WireQueue,
) -> std::io::Result<()> {
    while !queue.is_empty() {
        let n = {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let k = queue.slices(&mut iov);
            io.write_vectored(&iov[..k]).await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        queue.advance(n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use busrig_proto::pdu::{Header, NopOut};
    use bytes::Bytes;

    #[test]
    fn round_trip_and_partial_input() {
        let mut codec = PduCodec::default();
        let pdu = Pdu {
            header: Header::NopOut(NopOut {
                itt: 7,
                ttt: 0xffff_ffff,
                cmd_sn: 3,
                ..Default::default()
            }),
            ahs: Bytes::new(),
            data: Bytes::from_static(b"ping!"),
        };
        let mut wire = BytesMut::new();
        codec.encode(pdu.clone(), &mut wire).unwrap();
        let mut partial = wire.split_to(20);
        assert!(codec.decode(&mut partial).unwrap().is_none());
        partial.unsplit(wire);
        assert_eq!(codec.decode(&mut partial).unwrap(), Some(pdu));
        assert!(partial.is_empty());
    }

    #[test]
    fn oversized_segment_is_fatal_before_the_data_arrives() {
        let mut codec = PduCodec::new(WireConfig {
            max_recv_data_segment_length: 512,
            ..Default::default()
        });
        let pdu = Pdu {
            header: Header::NopOut(NopOut {
                itt: 1,
                ttt: 0xffff_ffff,
                ..Default::default()
            }),
            ahs: Bytes::new(),
            data: Bytes::from(vec![0u8; 4096]),
        };
        let mut wire = PduCodec::default();
        let mut buf = BytesMut::new();
        wire.encode(pdu, &mut buf).unwrap();
        buf.truncate(48);
        match codec.decode(&mut buf) {
            Err(CodecError::Pdu(e)) => assert!(e.is_fatal()),
            other => panic!("expected a fatal error, got {other:?}"),
        }
    }

    /// Large data segments go out as their own buffers, small ones are
    /// copied; either way the stream decodes to the same PDUs, also when
    /// the socket takes a few bytes at a time.
    #[tokio::test]
    async fn vectored_batches_decode_to_the_same_pdus() {
        for cfg in [
            WireConfig {
                max_recv_data_segment_length: 1 << 20,
                ..WireConfig::default()
            },
            WireConfig {
                header_digest: true,
                data_digest: true,
                max_recv_data_segment_length: 1 << 20,
            },
        ] {
            let pdus: Vec<Pdu> = [0usize, 5, 8191, 8192, 65_537, 3]
                .iter()
                .enumerate()
                .map(|(i, &len)| Pdu {
                    header: Header::NopOut(NopOut {
                        itt: i as u32,
                        ttt: 0xffff_ffff,
                        cmd_sn: i as u32,
                        ..Default::default()
                    }),
                    ahs: Bytes::new(),
                    data: Bytes::from((0..len).map(|b| (b * 7 + i) as u8).collect::<Vec<u8>>()),
                })
                .collect();
            // A 1000-byte pipe: every write is partial.
            let (a, mut b) = tokio::io::duplex(1000);
            let mut tx = PduWriter::new(a, cfg);
            let sent = pdus.clone();
            let writer = tokio::spawn(async move {
                for p in sent {
                    tx.feed(p);
                }
                assert!(tx.pending() > 65_537);
                tx.flush().await.unwrap();
                assert_eq!(tx.pending(), 0);
            });
            let mut wire = BytesMut::new();
            b.read_buf(&mut wire).await.unwrap();
            let mut codec = PduCodec::new(cfg);
            let mut got = Vec::new();
            while got.len() < pdus.len() {
                match codec.decode(&mut wire).unwrap() {
                    Some(p) => got.push(p),
                    None => {
                        assert!(
                            b.read_buf(&mut wire).await.unwrap() > 0,
                            "stream ended early"
                        );
                    }
                }
            }
            writer.await.unwrap();
            assert_eq!(got, pdus, "{cfg:?}");
        }
    }

    #[test]
    fn eof_inside_a_pdu_is_an_error() {
        let mut codec = PduCodec::default();
        let mut buf = BytesMut::from(&[0u8; 30][..]);
        assert!(codec.decode_eof(&mut buf).is_err());
        assert!(codec.decode_eof(&mut BytesMut::new()).unwrap().is_none());
    }
}
