//! SendTargets (RFC 7143 Appendix C): the request a Text command carries
//! and the TargetName/TargetAddress list that answers it.

use super::NegotiationError;
use crate::text::{self, TextPairs};

/// A SendTargets request seen in a full-feature Text request (RFC 7143
/// Appendix C). The caller answers it with [`send_targets_response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendTargetsRequest {
    /// `SendTargets=All` in a discovery session: every target this
    /// initiator may see.
    All,
    /// `SendTargets=<name>`: that target only.
    Target(String),
    /// `SendTargets=` (empty) in a normal session: the session's target.
    SessionTarget,
}

/// One target in a SendTargets response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendTargetsEntry {
    /// The target's iSCSI name.
    pub name: String,
    /// `(address, portal group tag)` pairs, the address as `host:port`
    /// with IPv6 literals in brackets (RFC 7143 §13.8).
    pub addresses: Vec<(String, u16)>,
}

/// Encodes a SendTargets response: per target a TargetName and one
/// `TargetAddress=<address>,<tag>` per portal (RFC 7143 Appendix C, §13.8).
pub fn send_targets_response(entries: &[SendTargetsEntry]) -> TextPairs {
    let mut out = TextPairs::new();
    for entry in entries {
        out.push("TargetName", entry.name.clone());
        for (addr, tag) in &entry.addresses {
            out.push("TargetAddress", format!("{addr},{tag}"));
        }
    }
    out
}

/// Reads a SendTargets response (RFC 7143 Appendix C): each TargetName
/// starts an entry, each following `TargetAddress=<address>[,<tag>]` adds a
/// portal (a missing tag reads as 1). Parse the text with
/// [`TextPairs::parse_allow_repeats`]. Addresses before any TargetName are
/// refused.
pub fn parse_send_targets(keys: &TextPairs) -> Result<Vec<SendTargetsEntry>, NegotiationError> {
    let mut out: Vec<SendTargetsEntry> = Vec::new();
    for (k, v) in keys.iter() {
        match k {
            "TargetName" => out.push(SendTargetsEntry {
                name: v.to_string(),
                addresses: Vec::new(),
            }),
            "TargetAddress" => {
                let bad = || NegotiationError::BadDeclaration {
                    key: k.to_string(),
                    value: v.chars().take(80).collect(),
                };
                let entry = out.last_mut().ok_or_else(bad)?;
                // The tag follows the last comma; IPv6 literals are
                // bracketed and contain no comma.
                let (addr, tag) = match v.rsplit_once(',') {
                    Some((a, t)) => {
                        let n = text::decode_number(t).map_err(|_| bad())?;
                        (a, u16::try_from(n).map_err(|_| bad())?)
                    }
                    None => (v, 1),
                };
                if addr.is_empty() {
                    return Err(bad());
                }
                entry.addresses.push((addr.to_string(), tag));
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn send_targets_round_trip() {
        let entries = vec![
            SendTargetsEntry {
                name: "iqn.a".into(),
                addresses: vec![("10.0.0.1:3260".into(), 1), ("[fe80::1]:3260".into(), 2)],
            },
            SendTargetsEntry {
                name: "iqn.b".into(),
                addresses: vec![("10.0.0.1:3260".into(), 1)],
            },
        ];
        let pairs = send_targets_response(&entries);
        let bytes = pairs.to_bytes();
        assert_eq!(
            bytes,
            b"TargetName=iqn.a\0TargetAddress=10.0.0.1:3260,1\0TargetAddress=[fe80::1]:3260,2\0\
TargetName=iqn.b\0TargetAddress=10.0.0.1:3260,1\0"
        );
        let back = parse_send_targets(&TextPairs::parse_allow_repeats(&bytes).unwrap()).unwrap();
        assert_eq!(back, entries);
        assert!(parse_send_targets(&kv(&[("TargetAddress", "10.0.0.1:3260,1")])).is_err());
    }
}
