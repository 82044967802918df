//! Login and Text key=value pairs (RFC 7143 §6.1, §6.2).
//!
//! A text data segment is a sequence of `key=value` strings, each terminated
//! by a NUL byte. Keys are case sensitive, values are UTF-8. This module
//! parses and encodes such segments and converts the value encodings of
//! RFC 7143 §6.1 (decimal, hex `0x..`, base64 `0b..`, booleans).
//!
//! ```text
//! "InitiatorName=iqn.2024-01.org.example:node1\0SessionType=Normal\0"
//! ```
//!
//! Text that spans several PDUs (C bit, RFC 7143 §11.10.2 / §11.12.2) is
//! joined by the caller, byte by byte (a pair may be split in the middle);
//! [`TextAccumulator`] does that and parses once the final PDU arrived.

use bytes::BufMut;

/// Longest key name allowed (RFC 7143 §6.1: "must not exceed 63 characters").
pub const MAX_KEY_LEN: usize = 63;

/// Longest simple value when the key does not say otherwise (RFC 7143 §6.1:
/// "the maximum length of a simple-value ... is 255 bytes").
pub const MAX_SIMPLE_VALUE_LEN: usize = 255;

/// Longest encoded value we accept for keys carrying large binary values
/// (CHAP_C, CHAP_R). RFC 7143 §12.1.3 caps the binary length of CHAP values
/// at 1024 bytes, i.e. 2050 characters in hex; we accept up to 8192 encoded
/// characters, the amount of key=value data every implementation must be
/// able to receive in one negotiation sequence (RFC 7143 §6.1).
pub const MAX_LARGE_BINARY_VALUE_LEN: usize = 8192;

/// Default cap on reassembled text (all PDUs of one request or response).
/// RFC 7143 §6.1 asks for at least 8192 bytes; a SendTargets answer listing
/// many targets can be longer, so we allow 64 KiB by default.
pub const DEFAULT_MAX_TEXT_LEN: usize = 64 * 1024;

/// Keys whose values are large binary values and may exceed
/// [`MAX_SIMPLE_VALUE_LEN`] (RFC 7143 §12.1.3 CHAP; §12.1.2 SRP and §12.1.1
/// KRB5 keys are the same kind even though busrig does not implement them).
const LARGE_VALUE_KEYS: &[&str] = &[
    "CHAP_C",
    "CHAP_R",
    "SRP_A",
    "SRP_B",
    "SRP_M",
    "SRP_HM",
    "SRP_s",
    "KRB_AP_REQ",
    "KRB_AP_REP",
];

/// Keys that may legitimately appear more than once in one text exchange
/// (RFC 7143 §6.2: "except for responses to specific keys that explicitly
/// allow repeated key declarations (e.g., TargetAddress)").
const REPEATABLE_KEYS: &[&str] = &["TargetAddress"];

/// Errors in the text layer. All of them are the peer's fault and end a
/// login with Initiator Error (RFC 7143 §11.13.5, status 02/00) when the
/// peer is the initiator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// A pair had nothing before the `=`.
    #[error("empty key name")]
    EmptyKey,
    /// A key name is longer than 63 bytes (RFC 7143 §6.1).
    #[error("key name of {0} bytes exceeds 63")]
    KeyTooLong(usize),
    /// A key name contains a byte outside the allowed set (RFC 7143 §6.1).
    #[error("key name {key:?} contains invalid byte {byte:#04x}")]
    BadKeyChar { key: String, byte: u8 },
    /// A pair has no `=` separator.
    #[error("pair {0:?} has no '='")]
    MissingEquals(String),
    /// A value is longer than the key allows (RFC 7143 §6.1).
    #[error("value of {key} is {len} bytes, limit {max}")]
    ValueTooLong { key: String, len: usize, max: usize },
    /// The text is not valid UTF-8 (RFC 7143 §6.1).
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
    /// A key appears twice in one exchange (RFC 7143 §6.2).
    #[error("key {0} repeated")]
    DuplicateKey(String),
    /// A numerical value is not a decimal, hex or base64 constant.
    #[error("invalid numerical value {0:?}")]
    BadNumber(String),
    /// A binary value is not a hex or base64 constant.
    #[error("invalid binary value {0:?}")]
    BadBinary(String),
    /// A boolean value is neither `Yes` nor `No`.
    #[error("invalid boolean value {0:?}")]
    BadBoolean(String),
    /// Reassembled text exceeded the configured limit.
    #[error("text of more than {0} bytes")]
    TooLong(usize),
}

impl TextError {
    /// Login status (class, detail) for a login request that failed to
    /// parse (RFC 7143 §11.13.5): always Initiator Error 02/00.
    pub fn login_status(&self) -> (u8, u8) {
        crate::pdu::login_status::INITIATOR_ERROR
    }
}

/// An ordered list of key=value pairs of one text exchange.
///
/// Order is preserved because it is visible on the wire and some peers log
/// it; lookups are linear, which is fine for the few dozen keys of a login.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextPairs {
    pairs: Vec<(String, String)>,
}

impl TextPairs {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a complete text data segment, rejecting repeated keys (other
    /// than those the RFC allows to repeat, such as TargetAddress).
    ///
    /// A missing NUL after the last pair and trailing NUL bytes (padding)
    /// are tolerated; empty strings between two NULs are skipped.
    pub fn parse(data: &[u8]) -> Result<Self, TextError> {
        Self::parse_inner(data, false)
    }

    /// Parses a text data segment in which any key may repeat, as in a
    /// SendTargets response (RFC 7143 Appendix C) where every target brings
    /// its own TargetName and TargetAddress pairs.
    pub fn parse_allow_repeats(data: &[u8]) -> Result<Self, TextError> {
        Self::parse_inner(data, true)
    }

    fn parse_inner(data: &[u8], allow_repeats: bool) -> Result<Self, TextError> {
        let mut out = TextPairs::new();
        for raw in data.split(|&b| b == 0) {
            // Empty pieces come from trailing padding or a doubled NUL.
            if raw.is_empty() {
                continue;
            }
            let text = std::str::from_utf8(raw).map_err(|_| TextError::InvalidUtf8)?;
            let (key, value) = text
                .split_once('=')
                .ok_or_else(|| TextError::MissingEquals(truncate(text)))?;
            validate_key(key)?;
            let max = max_value_len(key);
            if value.len() > max {
                return Err(TextError::ValueTooLong {
                    key: key.to_string(),
                    len: value.len(),
                    max,
                });
            }
            if !allow_repeats && !REPEATABLE_KEYS.contains(&key) && out.contains_key(key) {
                return Err(TextError::DuplicateKey(key.to_string()));
            }
            out.pairs.push((key.to_string(), value.to_string()));
        }
        Ok(out)
    }

    /// Appends a pair. The caller is responsible for not adding a key twice
    /// where the RFC forbids it; [`TextPairs::set`] replaces instead.
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.pairs.push((key.into(), value.into()));
    }

    /// Sets `key` to `value`, replacing the first existing pair with that
    /// key (keeping its position) or appending a new one.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        match self.pairs.iter_mut().find(|(k, _)| *k == key) {
            Some(pair) => pair.1 = value,
            None => self.pairs.push((key, value)),
        }
    }

    /// The value of the first pair with this key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All values of pairs with this key, in order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether a pair with this key exists.
    pub fn contains_key(&self, key: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == key)
    }

    /// Removes every pair with this key and returns the first value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let first = self
            .pairs
            .iter()
            .position(|(k, _)| k == key)
            .map(|i| self.pairs.remove(i).1);
        self.pairs.retain(|(k, _)| k != key);
        first
    }

    /// Iterates over the pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Bytes [`TextPairs::encode`] writes (without PDU padding).
    pub fn encoded_len(&self) -> usize {
        self.pairs.iter().map(|(k, v)| k.len() + v.len() + 2).sum()
    }

    /// Writes every pair as `key=value\0` (RFC 7143 §6.1). The PDU layer adds
    /// the padding to a 4-byte boundary.
    pub fn encode<B: BufMut>(&self, dst: &mut B) {
        for (k, v) in &self.pairs {
            dst.put_slice(k.as_bytes());
            dst.put_u8(b'=');
            dst.put_slice(v.as_bytes());
            dst.put_u8(0);
        }
    }

    /// The encoded pairs as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for TextPairs {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut out = TextPairs::new();
        out.extend(iter);
        out
    }
}

impl<K: Into<String>, V: Into<String>> Extend<(K, V)> for TextPairs {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.push(k, v);
        }
    }
}

impl IntoIterator for TextPairs {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;
    fn into_iter(self) -> Self::IntoIter {
        self.pairs.into_iter()
    }
}

/// Splits encoded text into data segments of at most `max_segment` bytes
/// for sending in several PDUs; every segment but the last goes out with
/// the C bit set (RFC 7143 §11.10.2, §11.12.2). `max_segment` is the peer's
/// MaxRecvDataSegmentLength. Yields `(segment, continue_bit)`; empty text
/// yields one empty final segment.
pub fn split_segments(encoded: &[u8], max_segment: usize) -> Vec<(&[u8], bool)> {
    let max_segment = max_segment.max(1);
    if encoded.is_empty() {
        return vec![(encoded, false)];
    }
    let chunks: Vec<&[u8]> = encoded.chunks(max_segment).collect();
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| (c, i != last))
        .collect()
}

/// Checks a key name against RFC 7143 §6.1: 1..=63 bytes of letters, digits,
/// `.`, `-`, `+`, `@`, `_`. The IANA-registered `X#` prefix (RFC 7143 §13.5.4,
/// e.g. `X#NodeArchitecture`) is also accepted.
pub fn validate_key(key: &str) -> Result<(), TextError> {
    if key.is_empty() {
        return Err(TextError::EmptyKey);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(TextError::KeyTooLong(key.len()));
    }
    let bytes = key.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let ok = b.is_ascii_alphanumeric()
            || matches!(b, b'.' | b'-' | b'+' | b'@' | b'_')
            || (i == 1 && b == b'#' && bytes[0] == b'X');
        if !ok {
            return Err(TextError::BadKeyChar {
                key: truncate(key),
                byte: b,
            });
        }
    }
    Ok(())
}

/// The longest value accepted for `key` (RFC 7143 §6.1, §12.1.3).
pub fn max_value_len(key: &str) -> usize {
    if LARGE_VALUE_KEYS.contains(&key) {
        MAX_LARGE_BINARY_VALUE_LEN
    } else {
        MAX_SIMPLE_VALUE_LEN
    }
}

/// Decodes a numerical value (RFC 7143 §6.1): a decimal constant (no
/// leading zeros), a hex constant `0x..`/`0X..`, or a base64 constant
/// `0b..`/`0B..` of at most 8 bytes (a regular-binary-value read as a
/// big-endian number). Values of 2^64 and above are refused.
pub fn decode_number(value: &str) -> Result<u64, TextError> {
    let bad = || TextError::BadNumber(truncate(value));
    if has_prefix(value, "0x") || has_prefix(value, "0b") {
        let bytes = decode_binary(value).map_err(|_| bad())?;
        // Leading zero bytes do not change the number, so allow them.
        let significant: &[u8] = {
            let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
            &bytes[start..]
        };
        if significant.len() > 8 {
            return Err(bad());
        }
        return Ok(significant
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)));
    }
    let digits = value.as_bytes();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    // "the digit 0 or a string of 1 or more digits starting with a non-zero
    // digit" (RFC 7143 §6.1).
    if digits.len() > 1 && digits[0] == b'0' {
        return Err(bad());
    }
    value.parse::<u64>().map_err(|_| bad())
}

/// Encodes a number as a decimal constant, the form every peer accepts.
pub fn encode_decimal(n: u64) -> String {
    n.to_string()
}

/// Encodes a number as a hex constant (`0x` and lowercase digits).
pub fn encode_hex_number(n: u64) -> String {
    format!("0x{n:x}")
}

/// Decodes a binary value given as a hex constant (`0x..`, an odd number of
/// digits gets an implicit leading zero nibble) or a base64 constant
/// (`0b..`, with optional `=` padding) (RFC 7143 §6.1).
pub fn decode_binary(value: &str) -> Result<Vec<u8>, TextError> {
    let bad = || TextError::BadBinary(truncate(value));
    if has_prefix(value, "0x") {
        let digits = &value.as_bytes()[2..];
        if digits.is_empty() {
            return Err(bad());
        }
        let mut out = Vec::with_capacity(digits.len().div_ceil(2));
        let mut iter = digits.iter();
        if digits.len() % 2 == 1 {
            out.push(hex_val(*iter.next().expect("non-empty")).ok_or_else(bad)?);
        }
        while let (Some(&hi), Some(&lo)) = (iter.next(), iter.next()) {
            let hi = hex_val(hi).ok_or_else(bad)?;
            let lo = hex_val(lo).ok_or_else(bad)?;
            out.push((hi << 4) | lo);
        }
        Ok(out)
    } else if has_prefix(value, "0b") {
        base64_decode(&value.as_bytes()[2..]).ok_or_else(bad)
    } else {
        Err(bad())
    }
}

/// Encodes bytes as a hex constant: `0x` and two lowercase digits per byte.
pub fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 + bytes.len() * 2);
    out.push_str("0x");
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// Encodes bytes as a base64 constant: `0b` and standard base64 (RFC 4648
/// alphabet) with `=` padding, as RFC 7143 §6.1 describes.
pub fn encode_base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(2 + bytes.len().div_ceil(3) * 4);
    out.push_str("0b");
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextets = [(n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63];
        for (i, s) in sextets.iter().enumerate() {
            // A chunk of k bytes yields k + 1 significant characters.
            if i <= chunk.len() {
                out.push(ALPHABET[*s as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes a boolean value: exactly `Yes` or `No` (RFC 7143 §6.1).
pub fn decode_boolean(value: &str) -> Result<bool, TextError> {
    match value {
        "Yes" => Ok(true),
        "No" => Ok(false),
        _ => Err(TextError::BadBoolean(truncate(value))),
    }
}

/// Encodes a boolean value as `Yes` or `No`.
pub fn encode_boolean(b: bool) -> &'static str {
    if b {
        "Yes"
    } else {
        "No"
    }
}

/// Joins the data segments of a text or login exchange that spans several
/// PDUs (C bit set on all but the last, RFC 7143 §11.10.2) and parses the
/// whole once the last segment is in.
///
/// Segments are concatenated as bytes because a key=value pair may be split
/// across PDUs. Pass each PDU's data segment without its padding (the
/// DataSegmentLength bytes); trailing NULs are tolerated anyway.
#[derive(Debug, Clone)]
pub struct TextAccumulator {
    buf: Vec<u8>,
    max_len: usize,
    allow_repeats: bool,
}

impl Default for TextAccumulator {
    fn default() -> Self {
        Self::new()
    }
}

impl TextAccumulator {
    /// An accumulator that accepts up to [`DEFAULT_MAX_TEXT_LEN`] bytes and
    /// rejects repeated keys.
    pub fn new() -> Self {
        Self::with_limit(DEFAULT_MAX_TEXT_LEN)
    }

    /// An accumulator with a custom byte limit (at least 8192 is required
    /// by RFC 7143 §6.1 for negotiation).
    pub fn with_limit(max_len: usize) -> Self {
        TextAccumulator {
            buf: Vec::new(),
            max_len,
            allow_repeats: false,
        }
    }

    /// Accepts repeated keys when parsing, for SendTargets responses.
    pub fn allowing_repeats(mut self) -> Self {
        self.allow_repeats = true;
        self
    }

    /// Adds one PDU's data segment. With `continue_` (the PDU's C bit) set
    /// the text is incomplete and `Ok(None)` is returned; otherwise the
    /// joined text is parsed, the accumulator is emptied and the pairs are
    /// returned. On error the accumulator is emptied too.
    pub fn push(
        &mut self,
        segment: &[u8],
        continue_: bool,
    ) -> Result<Option<TextPairs>, TextError> {
        if self.buf.len() + segment.len() > self.max_len {
            self.buf.clear();
            return Err(TextError::TooLong(self.max_len));
        }
        self.buf.extend_from_slice(segment);
        if continue_ {
            return Ok(None);
        }
        let data = std::mem::take(&mut self.buf);
        TextPairs::parse_inner(&data, self.allow_repeats).map(Some)
    }

    /// Whether segments with the C bit were received and the final one is
    /// still missing.
    pub fn is_pending(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Drops any partial text (e.g. when a login is restarted).
    pub fn reset(&mut self) {
        self.buf.clear();
    }
}

/// Case-insensitive ASCII prefix test. Compares bytes: slicing the `str`
/// could split a multi-byte character of a peer's value and panic.
fn has_prefix(value: &str, prefix: &str) -> bool {
    value
        .as_bytes()
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn base64_val(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Decodes base64 with optional `=` padding (RFC 7143 §6.1: "ending with an
/// optional '=' or '=='"). Returns None for bad characters, a lone trailing
/// sextet, or non-zero bits left over in the last character.
fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    let body = match text {
        [rest @ .., b'=', b'='] => rest,
        [rest @ .., b'='] => rest,
        _ => text,
    };
    // A group of 4 characters carries 3 bytes; a lone leftover character
    // carries only 6 bits, less than a byte.
    let (body_rem, text_rem) = (body.len() % 4, text.len() % 4);
    if body.is_empty() || body_rem == 1 {
        return None;
    }
    // Padding is only valid if it completes a 4-character group.
    if body.len() != text.len() && text_rem > 0 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &c in body {
        acc = (acc << 6) | u32::from(base64_val(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero, or two encodings would decode alike.
    if acc != 0 {
        return None;
    }
    Some(out)
}

/// Shortens peer-supplied text kept in error values, so a hostile 8 KiB
/// value does not end up verbatim in logs.
fn truncate(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pairs(list: &[(&str, &str)]) -> TextPairs {
        list.iter().copied().collect()
    }

    #[test]
    fn encodes_byte_exact() {
        let p = pairs(&[
            ("InitiatorName", "iqn.2024-01.org.example:node1"),
            ("SessionType", "Normal"),
            ("AuthMethod", "CHAP,None"),
        ]);
        let expected: &[u8] = b"InitiatorName=iqn.2024-01.org.example:node1\0\
SessionType=Normal\0AuthMethod=CHAP,None\0";
        assert_eq!(p.to_bytes(), expected);
        assert_eq!(p.encoded_len(), expected.len());
        let mut buf = bytes::BytesMut::new();
        p.encode(&mut buf);
        assert_eq!(&buf[..], expected);
    }

    #[test]
    fn empty_value_encodes_as_key_equals_nul() {
        // RFC 7143 Appendix C: "SendTargets=" asks for the session's target.
        assert_eq!(pairs(&[("SendTargets", "")]).to_bytes(), b"SendTargets=\0");
        assert_eq!(
            TextPairs::parse(b"SendTargets=\0")
                .unwrap()
                .get("SendTargets"),
            Some("")
        );
    }

    #[test]
    fn parse_tolerates_missing_final_nul_and_padding() {
        let want = pairs(&[("HeaderDigest", "None"), ("DataDigest", "CRC32C")]);
        for data in [
            &b"HeaderDigest=None\0DataDigest=CRC32C\0"[..],
            b"HeaderDigest=None\0DataDigest=CRC32C",
            b"HeaderDigest=None\0DataDigest=CRC32C\0\0\0\0",
            b"HeaderDigest=None\0DataDigest=CRC32C\0\0\0",
        ] {
            assert_eq!(TextPairs::parse(data).unwrap(), want, "{data:?}");
        }
        assert!(TextPairs::parse(b"").unwrap().is_empty());
        assert!(TextPairs::parse(b"\0\0\0\0").unwrap().is_empty());
    }

    #[test]
    fn value_may_contain_equals_sign() {
        let p = TextPairs::parse(b"X-com.example.opt=a=b\0").unwrap();
        assert_eq!(p.get("X-com.example.opt"), Some("a=b"));
    }

    #[test]
    fn parse_errors() {
        let long_key = "K".repeat(64);
        let ok_key = "K".repeat(63);
        let cases: Vec<(&str, Vec<u8>, TextError)> = vec![
            ("§6.1 empty key", b"=x\0".to_vec(), TextError::EmptyKey),
            (
                "§6.1 key over 63 bytes",
                format!("{long_key}=1\0").into_bytes(),
                TextError::KeyTooLong(64),
            ),
            (
                "§6.1 space in key",
                b"Header Digest=None\0".to_vec(),
                TextError::BadKeyChar {
                    key: "Header Digest".into(),
                    byte: b' ',
                },
            ),
            (
                "§6.1 '#' only in X# prefix",
                b"A#B=1\0".to_vec(),
                TextError::BadKeyChar {
                    key: "A#B".into(),
                    byte: b'#',
                },
            ),
            (
                "§6.1 pair without '='",
                b"HeaderDigest\0".to_vec(),
                TextError::MissingEquals("HeaderDigest".into()),
            ),
            (
                "§6.1 simple value over 255 bytes",
                format!("TargetAlias={}\0", "a".repeat(256)).into_bytes(),
                TextError::ValueTooLong {
                    key: "TargetAlias".into(),
                    len: 256,
                    max: 255,
                },
            ),
            (
                "§12.1.3 CHAP_C over 8192 characters",
                format!("CHAP_C=0x{}\0", "ab".repeat(4096)).into_bytes(),
                TextError::ValueTooLong {
                    key: "CHAP_C".into(),
                    len: 8194,
                    max: 8192,
                },
            ),
            (
                "§6.1 text is UTF-8",
                b"TargetAlias=\xff\xfe\0".to_vec(),
                TextError::InvalidUtf8,
            ),
            (
                "§6.2 key repeated in one exchange",
                b"MaxBurstLength=512\0MaxBurstLength=1024\0".to_vec(),
                TextError::DuplicateKey("MaxBurstLength".into()),
            ),
        ];
        for (name, data, err) in cases {
            assert_eq!(TextPairs::parse(&data), Err(err), "{name}");
        }
        assert!(TextPairs::parse(format!("{ok_key}=1").as_bytes()).is_ok());
        assert!(TextPairs::parse(format!("TargetAlias={}", "a".repeat(255)).as_bytes()).is_ok());
    }

    #[test]
    fn large_binary_values_allowed_for_chap() {
        // 1024 bytes of challenge in hex: 2050 characters (RFC 7143 §12.1.3).
        let v = format!("0x{}", "5a".repeat(1024));
        let p = TextPairs::parse(format!("CHAP_C={v}\0CHAP_R={v}\0").as_bytes()).unwrap();
        assert_eq!(decode_binary(p.get("CHAP_C").unwrap()).unwrap().len(), 1024);
    }

    #[test]
    fn vendor_keys_are_valid_key_names() {
        let p =
            TextPairs::parse(b"X#NodeArchitecture=busrig/0.1\0X-com.example.a_b+c@d=1\0").unwrap();
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn repeats_allowed_where_the_rfc_allows() {
        let data = b"TargetName=iqn.a\0TargetAddress=10.0.0.1:3260,1\0\
TargetAddress=10.0.0.2:3260,2\0TargetName=iqn.b\0TargetAddress=10.0.0.1:3260,1\0";
        // TargetAddress repeats in one exchange (RFC 7143 §6.2), TargetName
        // only in a SendTargets response.
        assert_eq!(
            TextPairs::parse(data),
            Err(TextError::DuplicateKey("TargetName".into()))
        );
        let p = TextPairs::parse_allow_repeats(data).unwrap();
        assert_eq!(
            p.get_all("TargetName").collect::<Vec<_>>(),
            ["iqn.a", "iqn.b"]
        );
        assert_eq!(p.get_all("TargetAddress").count(), 3);
    }

    #[test]
    fn set_replaces_in_place_and_remove_drops_all() {
        let mut p = pairs(&[("A", "1"), ("B", "2")]);
        p.set("A", "3");
        p.set("C", "4");
        assert_eq!(p.to_bytes(), b"A=3\0B=2\0C=4\0");
        p.push("B", "5");
        assert_eq!(p.remove("B").as_deref(), Some("2"));
        assert!(!p.contains_key("B"));
        assert_eq!(p.into_iter().count(), 2);
    }

    #[test]
    fn numbers() {
        let ok: &[(&str, u64)] = &[
            ("0", 0),
            ("262144", 262_144),
            ("18446744073709551615", u64::MAX),
            ("0x10", 16),
            ("0X1f", 31),
            ("0xFFFFFF", 16_777_215),
            ("0x00ffffffffffffffff", u64::MAX),
            ("0bAQ==", 1),
            ("0BAAE=", 1),
            ("0bAQAA", 65_536),
        ];
        for &(text, n) in ok {
            assert_eq!(decode_number(text), Ok(n), "{text}");
        }
        for text in [
            "",
            "-1",
            "+1",
            "01",
            "1.5",
            "0x",
            "0xg",
            "0b",
            "18446744073709551616",
            "0x010000000000000000",
            " 1",
            "Yes",
        ] {
            assert!(decode_number(text).is_err(), "{text}");
        }
        assert_eq!(encode_decimal(8192), "8192");
        assert_eq!(encode_hex_number(0x2000), "0x2000");
    }

    #[test]
    fn binary_hex_and_base64_vectors() {
        // RFC 4648 §10 test vectors, with the RFC 7143 "0b" prefix.
        let vectors: &[(&[u8], &str)] = &[
            (b"f", "0bZg=="),
            (b"fo", "0bZm8="),
            (b"foo", "0bZm9v"),
            (b"foob", "0bZm9vYg=="),
            (b"fooba", "0bZm9vYmE="),
            (b"foobar", "0bZm9vYmFy"),
        ];
        for &(raw, enc) in vectors {
            assert_eq!(encode_base64(raw), enc);
            assert_eq!(decode_binary(enc).unwrap(), raw);
            // Padding is optional (RFC 7143 §6.1).
            assert_eq!(decode_binary(enc.trim_end_matches('=')).unwrap(), raw);
        }
        assert_eq!(encode_hex(&[0x00, 0x1f, 0xa0, 0xff]), "0x001fa0ff");
        assert_eq!(
            decode_binary("0x001FA0ff").unwrap(),
            [0x00, 0x1f, 0xa0, 0xff]
        );
        assert_eq!(decode_binary("0xabc").unwrap(), [0x0a, 0xbc]);
        for bad in [
            "0x", "0xzz", "0b", "0bZ", "0bZg=", "0bZh==", "0bZ!==", "abc", "0bZg===",
        ] {
            assert!(decode_binary(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn booleans() {
        assert_eq!(decode_boolean("Yes"), Ok(true));
        assert_eq!(decode_boolean("No"), Ok(false));
        assert!(decode_boolean("yes").is_err());
        assert_eq!(encode_boolean(true), "Yes");
        assert_eq!(encode_boolean(false), "No");
    }

    #[test]
    fn accumulator_joins_a_pair_split_across_pdus() {
        let mut acc = TextAccumulator::new();
        assert_eq!(
            acc.push(b"InitiatorName=iqn.2024-01.org.ex", true),
            Ok(None)
        );
        assert!(acc.is_pending());
        assert_eq!(acc.push(b"ample:n1\0SessionTy", true), Ok(None));
        let p = acc.push(b"pe=Discovery\0", false).unwrap().unwrap();
        assert_eq!(p.get("InitiatorName"), Some("iqn.2024-01.org.example:n1"));
        assert_eq!(p.get("SessionType"), Some("Discovery"));
        assert!(!acc.is_pending());
    }

    #[test]
    fn accumulator_enforces_its_limit_and_resets() {
        let mut acc = TextAccumulator::with_limit(16);
        assert_eq!(acc.push(b"TargetAlias=abc", true), Ok(None));
        assert_eq!(acc.push(b"defgh", true), Err(TextError::TooLong(16)));
        assert!(!acc.is_pending());
        acc.push(b"A=1", true).unwrap();
        acc.reset();
        assert_eq!(
            acc.push(b"B=2\0", false).unwrap().unwrap(),
            pairs(&[("B", "2")])
        );
        let mut rep = TextAccumulator::new().allowing_repeats();
        let p = rep
            .push(b"TargetName=a\0TargetName=b\0", false)
            .unwrap()
            .unwrap();
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn split_segments_sets_continue_on_all_but_last() {
        let data = pairs(&[("MaxBurstLength", "262144"), ("FirstBurstLength", "65536")]).to_bytes();
        let segs = split_segments(&data, 10);
        assert!(segs[..segs.len() - 1]
            .iter()
            .all(|(s, c)| *c && s.len() == 10));
        assert!(!segs.last().unwrap().1);
        let joined: Vec<u8> = segs.iter().flat_map(|(s, _)| s.iter().copied()).collect();
        assert_eq!(joined, data);
        let mut acc = TextAccumulator::new();
        let mut out = None;
        for (s, c) in segs {
            out = acc.push(s, c).unwrap();
        }
        assert_eq!(out.unwrap().get("FirstBurstLength"), Some("65536"));
        assert_eq!(split_segments(&[], 512), vec![(&[][..], false)]);
    }

    #[test]
    fn errors_map_to_initiator_error() {
        assert_eq!(TextError::EmptyKey.login_status(), (0x02, 0x00));
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        "[A-Z][A-Za-z0-9.+@_-]{0,62}"
    }

    fn value_strategy() -> impl Strategy<Value = String> {
        // Any UTF-8 without NUL; at most 60 chars keeps it under 255 bytes.
        "[^\u{0}]{0,60}"
    }

    proptest! {
        #[test]
        fn text_round_trips(list in proptest::collection::vec((key_strategy(), value_strategy()), 0..20)) {
            let mut seen = std::collections::HashSet::new();
            let p: TextPairs = list
                .into_iter()
                .filter(|(k, _)| seen.insert(k.clone()))
                .collect();
            let bytes = p.to_bytes();
            prop_assert_eq!(TextPairs::parse(&bytes).unwrap(), p.clone());
            // With padding to a 4-byte boundary, as on the wire.
            let mut padded = bytes.clone();
            padded.resize(bytes.len().div_ceil(4) * 4, 0);
            prop_assert_eq!(TextPairs::parse(&padded).unwrap(), p.clone());
            // Split anywhere across PDUs.
            let mut acc = TextAccumulator::new();
            let mut out = None;
            for (seg, c) in split_segments(&bytes, 7) {
                out = acc.push(seg, c).unwrap();
            }
            prop_assert_eq!(out.unwrap(), p);
        }

        #[test]
        fn binary_round_trips(raw in proptest::collection::vec(any::<u8>(), 1..64)) {
            prop_assert_eq!(decode_binary(&encode_hex(&raw)).unwrap(), raw.clone());
            prop_assert_eq!(decode_binary(&encode_base64(&raw)).unwrap(), raw);
        }

        #[test]
        fn number_round_trips(n in any::<u64>()) {
            prop_assert_eq!(decode_number(&encode_decimal(n)), Ok(n));
            prop_assert_eq!(decode_number(&encode_hex_number(n)), Ok(n));
            let bytes = n.to_be_bytes();
            prop_assert_eq!(decode_number(&encode_base64(&bytes)), Ok(n));
        }

        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = TextPairs::parse(&data);
            let _ = TextPairs::parse_allow_repeats(&data);
        }
    }

    /// Found by the login_text fuzz target: a value whose second byte is
    /// inside a multi-byte character must not panic the prefix checks.
    #[test]
    fn number_prefix_check_on_multibyte_value() {
        assert!(decode_number("0\u{6e5}1").is_err());
        assert!(decode_binary("0\u{6e5}1").is_err());
        assert!(decode_boolean("\u{6e5}").is_err());
    }
}
