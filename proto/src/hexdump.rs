//! Bytes as text for people and scripts: plain hex, the classic
//! offset/hex/ASCII dump, and the byte values the CLI takes.

/// Lower-case hex, two digits per byte, no separators.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Rows of 16 bytes: the offset, the bytes in hex, and the printable ones
/// as ASCII (`.` for the rest), as `hexdump -C` lays them out.
pub fn hexdump(b: &[u8]) -> String {
    let rows: Vec<String> = b
        .chunks(16)
        .enumerate()
        .map(|(i, row)| {
            let hexes: Vec<String> = row.iter().map(|x| format!("{x:02x}")).collect();
            let text: String = row
                .iter()
                .map(|&c| {
                    if (0x20..0x7f).contains(&c) {
                        c as char
                    } else {
                        '.'
                    }
                })
                .collect();
            format!("{:08x}  {:<47}  {}", i * 16, hexes.join(" "), text)
        })
        .collect();
    rows.join("\n")
}

/// A byte that is neither 0..255 nor 0x00..0xff.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a byte (0..255 or 0x00..0xff)")]
pub struct ByteParseError(pub String);

/// A byte, decimal or `0x` hex (`90`, `0x5a`).
pub fn parse_byte(s: &str) -> Result<u8, ByteParseError> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u8::from_str_radix(h, 16),
        None => s.parse::<u8>(),
    };
    r.map_err(|_| ByteParseError(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hexdump_rows() {
        let d = hexdump(b"ABCDEFGHIJKLMNOPQ");
        let lines: Vec<&str> = d.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("00000000  41 42"));
        assert!(lines[0].ends_with("ABCDEFGHIJKLMNOP"));
        assert_eq!(lines[1], format!("00000010  {:<47}  Q", "51"));
        assert_eq!(hexdump(b""), "");
        assert_eq!(hex(&[0, 0xab]), "00ab");
    }

    #[test]
    fn bytes_parse_in_decimal_or_hex() {
        assert_eq!(parse_byte("0x5a"), Ok(0x5a));
        assert_eq!(parse_byte("90"), Ok(90));
        assert!(parse_byte("256").is_err());
        assert!(parse_byte("0xzz").is_err());
    }
}
