//! Write data as it arrived: the data segments of the command and Data-Out
//! PDUs, in order, without gluing them together.
//!
//! A 1 MiB WRITE arrives as four or more PDUs. Copying their payloads into
//! one buffer cost the connection thread as much as receiving them
//! (README "Performance"); kept as pieces, the LU writes them with one
//! positioned write per piece on the blocking pool, and only commands that
//! parse their data (parameter lists, COMPARE AND WRITE, ...) ask for one
//! contiguous buffer, which is free when there is one piece.

use bytes::{Bytes, BytesMut};

/// Bytes in order, held as the pieces they arrived in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteData {
    parts: Vec<Bytes>,
    len: usize,
}

impl WriteData {
    pub fn new() -> WriteData {
        WriteData::default()
    }

    /// Appends a piece (empty pieces are dropped).
    pub fn push(&mut self, part: Bytes) {
        if !part.is_empty() {
            self.len += part.len();
            self.parts.push(part);
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pieces, in order, none empty.
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// All of it in one buffer: the piece itself when there is one, a copy
    /// otherwise.
    pub fn contiguous(&self) -> Bytes {
        match self.parts.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            parts => {
                let mut b = BytesMut::with_capacity(self.len);
                for p in parts {
                    b.extend_from_slice(p);
                }
                b.freeze()
            }
        }
    }

    /// Bytes `from..to` (clamped to the length), sharing the pieces.
    pub fn slice(&self, from: usize, to: usize) -> WriteData {
        let to = to.min(self.len);
        let mut out = WriteData::new();
        let mut at = 0;
        for p in &self.parts {
            let (start, end) = (at, at + p.len());
            at = end;
            if end <= from {
                continue;
            }
            if start >= to {
                break;
            }
            out.push(p.slice(from.saturating_sub(start)..(to - start).min(p.len())));
        }
        out
    }
}

impl From<Bytes> for WriteData {
    fn from(b: Bytes) -> WriteData {
        let mut d = WriteData::new();
        d.push(b);
        d
    }
}

impl From<Vec<u8>> for WriteData {
    fn from(v: Vec<u8>) -> WriteData {
        Bytes::from(v).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces() -> WriteData {
        let mut d = WriteData::new();
        d.push(Bytes::from_static(b"abc"));
        d.push(Bytes::new());
        d.push(Bytes::from_static(b"defgh"));
        d.push(Bytes::from_static(b"ij"));
        d
    }

    #[test]
    fn contiguous_joins_and_one_piece_is_not_copied() {
        let d = pieces();
        assert_eq!(d.len(), 10);
        assert_eq!(d.parts().len(), 3);
        assert_eq!(&d.contiguous()[..], b"abcdefghij");
        let one = Bytes::from(vec![7u8; 100]);
        let d = WriteData::from(one.clone());
        assert_eq!(d.contiguous().as_ptr(), one.as_ptr());
        assert!(WriteData::new().contiguous().is_empty());
    }

    #[test]
    fn slices_match_the_joined_bytes() {
        let d = pieces();
        let all = d.contiguous();
        for from in 0..=11 {
            for to in from..=12 {
                let s = d.slice(from, to);
                let want = &all[from.min(10)..to.min(10).max(from.min(10))];
                assert_eq!(&s.contiguous()[..], want, "{from}..{to}");
                assert_eq!(s.len(), want.len());
                assert!(s.parts().iter().all(|p| !p.is_empty()));
            }
        }
    }
}
