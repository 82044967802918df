//! libiscsi's URL form for naming a portal, a target and a LUN.
//!
//! ```text
//! iscsi://[user[%secret]@]host[:port][/target-iqn/lun][?key=value&...]
//!          \____ CHAP ___/ \_ portal _/ \_ full URL _/
//! ```
//!
//! The grammar follows libiscsi's `iscsi_parse_url` so a URL that works with
//! `iscsi-inq` works here: the CHAP user and secret are split at the first
//! `%` (or `:`), the host may be an IPv6 literal in brackets, the port
//! defaults to 3260 (the IANA iSCSI port, RFC 7143 §13.6), the target name
//! may be percent-encoded, and the LUN is decimal. The query keys
//! `target_user` and `target_password` give the target's credentials for
//! mutual CHAP (libiscsi's spelling), `header_digest=crc32c|none` chooses the
//! header digest; `data_digest` is busrig's addition with the same values.
//!
//! A URL parsed from configuration (serde) is the same string form.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::{ChapCredentials, DigestPreference};

/// The registered iSCSI port (RFC 7143 §13.6).
pub const DEFAULT_PORT: u16 = 3260;

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// The URL does not start with `iscsi://`.
    #[error("an iSCSI URL starts with iscsi:// (got {0:?})")]
    Scheme(String),
    /// The host part is empty or malformed.
    #[error("bad host in iSCSI URL: {0}")]
    Host(String),
    /// The port is not a number from 1 to 65535.
    #[error("bad port in iSCSI URL: {0:?}")]
    Port(String),
    /// A full URL lacks `/target-iqn/lun`.
    #[error(
        "an iSCSI URL names a target and a LUN: iscsi://[user%secret@]host[:port]/target-iqn/lun"
    )]
    MissingTarget,
    /// The LUN is not a decimal number below 16384 (flat space addressing).
    #[error("bad LUN in iSCSI URL: {0:?} (a decimal number below 16384)")]
    Lun(String),
    /// A query argument is unknown or has a bad value.
    #[error("bad query argument in iSCSI URL: {0}")]
    Query(String),
}

/// Where a target listens: host name or address, and TCP port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Portal {
    pub host: String,
    pub port: u16,
}

impl Portal {
    /// `host:port`, with brackets around an IPv6 literal, as `TcpStream::connect` takes it.
    pub fn socket_addr_string(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Parses `host[:port]` or `[v6]:port`, defaulting the port to 3260.
    pub fn parse(s: &str) -> Result<Portal, UrlError> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, tail) = rest
                .split_once(']')
                .ok_or_else(|| UrlError::Host(s.to_string()))?;
            let port = match tail {
                "" => None,
                t => Some(
                    t.strip_prefix(':')
                        .ok_or_else(|| UrlError::Host(s.to_string()))?,
                ),
            };
            (h, port)
        } else if s.matches(':').count() > 1 {
            // A bare IPv6 literal without port (libiscsi also accepts this).
            (s, None)
        } else {
            match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        if host.is_empty() || host.contains(['/', '@', '?']) {
            return Err(UrlError::Host(s.to_string()));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(v) if v != 0 => v,
                _ => return Err(UrlError::Port(p.to_string())),
            },
        };
        Ok(Portal {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for Portal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.socket_addr_string())
    }
}

/// A parsed `iscsi://` URL. `target` and `lun` are `None` for a portal URL
/// (`iscsi://host[:port]`), which is what discovery takes.
#[derive(Clone, PartialEq, Eq)]
pub struct IscsiUrl {
    pub portal: Portal,
    pub target: Option<String>,
    pub lun: Option<u16>,
    /// The initiator's CHAP credentials (`user%secret@`).
    pub chap: Option<ChapCredentials>,
    /// The target's credentials for mutual CHAP (`?target_user=..&target_password=..`).
    pub mutual_chap: Option<ChapCredentials>,
    pub header_digest: Option<DigestPreference>,
    pub data_digest: Option<DigestPreference>,
}

impl fmt::Debug for IscsiUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets never reach logs: Debug prints the redacted form.
        write!(f, "IscsiUrl({})", self.redacted())
    }
}

impl IscsiUrl {
    /// Parses a full URL that names a target and a LUN.
    pub fn parse(s: &str) -> Result<IscsiUrl, UrlError> {
        let u = IscsiUrl::parse_any(s)?;
        if u.target.is_none() || u.lun.is_none() {
            return Err(UrlError::MissingTarget);
        }
        Ok(u)
    }

    /// Parses a portal URL or a full URL (the target and LUN are optional).
    pub fn parse_any(s: &str) -> Result<IscsiUrl, UrlError> {
        let rest = s
            .strip_prefix("iscsi://")
            .ok_or_else(|| UrlError::Scheme(s.to_string()))?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        // Target names never contain '@', so the last '@' ends the credentials
        // even when a secret contains one.
        let (userinfo, rest) = match rest.rfind('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let chap = match userinfo {
            None => None,
            Some(ui) => {
                let (user, secret) = ui
                    .split_once('%')
                    .or_else(|| ui.split_once(':'))
                    .unwrap_or((ui, ""));
                // libiscsi ignores credentials unless both halves are present.
                (!user.is_empty() && !secret.is_empty()).then(|| ChapCredentials::new(user, secret))
            }
        };
        let (portal, path) = match rest.split_once('/') {
            Some((p, path)) => (p, Some(path)),
            None => (rest, None),
        };
        let portal = Portal::parse(portal)?;
        let (target, lun) = match path {
            None | Some("") => (None, None),
            Some(path) => {
                let (t, l) = path.rsplit_once('/').ok_or(UrlError::MissingTarget)?;
                if t.is_empty() {
                    return Err(UrlError::MissingTarget);
                }
                let lun = l
                    .parse::<u16>()
                    .ok()
                    .filter(|v| *v < 0x4000)
                    .ok_or_else(|| UrlError::Lun(l.to_string()))?;
                (Some(percent_decode(t)), Some(lun))
            }
        };
        let mut url = IscsiUrl {
            portal,
            target,
            lun,
            chap,
            mutual_chap: None,
            header_digest: None,
            data_digest: None,
        };
        let (mut tuser, mut tpass) = (None, None);
        for kv in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|kv| !kv.is_empty())
        {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match k {
                "target_user" => tuser = Some(percent_decode(v)),
                "target_password" => tpass = Some(percent_decode(v)),
                "header_digest" => url.header_digest = Some(parse_digest(k, v)?),
                "data_digest" => url.data_digest = Some(parse_digest(k, v)?),
                _ => return Err(UrlError::Query(format!("unknown key {k:?}"))),
            }
        }
        // As in libiscsi, mutual CHAP only exists on top of one-way CHAP.
        if let (Some(u), Some(p), Some(_)) = (tuser, tpass, &url.chap) {
            if !u.is_empty() && !p.is_empty() {
                url.mutual_chap = Some(ChapCredentials::new(&u, &p));
            }
        }
        Ok(url)
    }

    /// The URL with secrets replaced by `***`, for logs and error messages.
    pub fn redacted(&self) -> String {
        self.render(true)
    }

    /// The same URL without target and LUN (for discovery).
    pub fn portal_url(&self) -> IscsiUrl {
        IscsiUrl {
            target: None,
            lun: None,
            ..self.clone()
        }
    }

    fn render(&self, redact: bool) -> String {
        let mut s = String::from("iscsi://");
        if let Some(c) = &self.chap {
            s.push_str(&c.user);
            s.push('%');
            s.push_str(if redact { "***" } else { &c.secret });
            s.push('@');
        }
        s.push_str(&self.portal.socket_addr_string());
        if let (Some(t), Some(l)) = (&self.target, self.lun) {
            s.push('/');
            s.push_str(&percent_encode(t));
            s.push('/');
            s.push_str(&l.to_string());
        }
        let mut q = Vec::new();
        if let Some(m) = &self.mutual_chap {
            q.push(format!("target_user={}", percent_encode(&m.user)));
            q.push(format!(
                "target_password={}",
                if redact {
                    "***".to_string()
                } else {
                    percent_encode(&m.secret)
                }
            ));
        }
        if let Some(d) = self.header_digest {
            q.push(format!("header_digest={}", d.url_value()));
        }
        if let Some(d) = self.data_digest {
            q.push(format!("data_digest={}", d.url_value()));
        }
        if !q.is_empty() {
            s.push('?');
            s.push_str(&q.join("&"));
        }
        s
    }
}

fn parse_digest(k: &str, v: &str) -> Result<DigestPreference, UrlError> {
    match v.to_ascii_lowercase().as_str() {
        "crc32c" => Ok(DigestPreference::Crc32c),
        "none" => Ok(DigestPreference::None),
        "crc32c,none" | "prefer-crc32c" => Ok(DigestPreference::PreferCrc32c),
        "none,crc32c" | "prefer-none" => Ok(DigestPreference::PreferNone),
        _ => Err(UrlError::Query(format!("{k}={v}: expected crc32c or none"))),
    }
}

impl fmt::Display for IscsiUrl {
    /// The full URL including secrets (it must round-trip through config files).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}

impl FromStr for IscsiUrl {
    type Err = UrlError;
    fn from_str(s: &str) -> Result<IscsiUrl, UrlError> {
        IscsiUrl::parse_any(s)
    }
}

impl Serialize for IscsiUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for IscsiUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<IscsiUrl, D::Error> {
        let s = String::deserialize(d)?;
        IscsiUrl::parse_any(&s).map_err(serde::de::Error::custom)
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str) -> String {
    // iSCSI names (RFC 7143 §4.2.7.2) are lower-case ASCII with '.', '-', ':';
    // only characters that would change the URL's structure are escaped.
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' | '/' | '?' | '&' | '@' | '#' | ' ' | '=' => {
                out.push_str(&format!("%{:02X}", c as u32))
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_url_with_chap_and_port() {
        let u = IscsiUrl::parse("iscsi://alice%s3cret@10.0.0.1:3261/iqn.2026-11.io.busrig:bus0/2")
            .unwrap();
        assert_eq!(
            u.portal,
            Portal {
                host: "10.0.0.1".into(),
                port: 3261
            }
        );
        assert_eq!(u.target.as_deref(), Some("iqn.2026-11.io.busrig:bus0"));
        assert_eq!(u.lun, Some(2));
        let c = u.chap.clone().unwrap();
        assert_eq!((c.user.as_str(), c.secret.as_str()), ("alice", "s3cret"));
        assert!(u.mutual_chap.is_none());
        assert_eq!(
            u.to_string(),
            "iscsi://alice%s3cret@10.0.0.1:3261/iqn.2026-11.io.busrig:bus0/2"
        );
        assert_eq!(
            u.redacted(),
            "iscsi://alice%***@10.0.0.1:3261/iqn.2026-11.io.busrig:bus0/2"
        );
        assert!(!format!("{u:?}").contains("s3cret"));
    }

    #[test]
    fn default_port_and_colon_separator() {
        let u = IscsiUrl::parse("iscsi://bob:pw@host.example/iqn.x:y/0").unwrap();
        assert_eq!(u.portal.port, 3260);
        assert_eq!(u.chap.unwrap().secret, "pw");
    }

    #[test]
    fn secret_containing_percent_and_at() {
        let u = IscsiUrl::parse("iscsi://u%a%b@c@h/iqn.t/1").unwrap();
        let c = u.chap.unwrap();
        assert_eq!((c.user.as_str(), c.secret.as_str()), ("u", "a%b@c"));
        assert_eq!(u.portal.host, "h");
    }

    #[test]
    fn ipv6_portal() {
        let u = IscsiUrl::parse("iscsi://[::1]:3300/iqn.t/5").unwrap();
        assert_eq!(u.portal.host, "::1");
        assert_eq!(u.portal.socket_addr_string(), "[::1]:3300");
        assert_eq!(u.to_string(), "iscsi://[::1]:3300/iqn.t/5");
    }

    #[test]
    fn mutual_chap_and_digests_from_query() {
        let u = IscsiUrl::parse(
            "iscsi://u%p@h/iqn.t/0?target_user=tgt&target_password=tp&header_digest=crc32c&data_digest=none",
        )
        .unwrap();
        let m = u.mutual_chap.clone().unwrap();
        assert_eq!((m.user.as_str(), m.secret.as_str()), ("tgt", "tp"));
        assert_eq!(u.header_digest, Some(DigestPreference::Crc32c));
        assert_eq!(u.data_digest, Some(DigestPreference::None));
        assert_eq!(IscsiUrl::parse(&u.to_string()).unwrap(), u);
    }

    #[test]
    fn mutual_chap_needs_one_way_chap() {
        let u = IscsiUrl::parse("iscsi://h/iqn.t/0?target_user=tgt&target_password=tp").unwrap();
        assert!(u.mutual_chap.is_none());
    }

    #[test]
    fn percent_encoded_target() {
        let u = IscsiUrl::parse("iscsi://h/iqn.2026-11.io.busrig%3Abus0/1").unwrap();
        assert_eq!(u.target.as_deref(), Some("iqn.2026-11.io.busrig:bus0"));
    }

    #[test]
    fn portal_url_for_discovery() {
        let u = IscsiUrl::parse_any("iscsi://127.0.0.1:3260").unwrap();
        assert!(u.target.is_none() && u.lun.is_none());
        assert_eq!(
            IscsiUrl::parse_any("iscsi://127.0.0.1/").unwrap().target,
            None
        );
        assert_eq!(
            IscsiUrl::parse("iscsi://127.0.0.1:3260"),
            Err(UrlError::MissingTarget)
        );
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(
            IscsiUrl::parse("http://h/t/0"),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            IscsiUrl::parse("iscsi://h:0/t/0"),
            Err(UrlError::Port(_))
        ));
        assert!(matches!(
            IscsiUrl::parse("iscsi://h:x/t/0"),
            Err(UrlError::Port(_))
        ));
        assert!(matches!(
            IscsiUrl::parse("iscsi://h/t/abc"),
            Err(UrlError::Lun(_))
        ));
        assert!(matches!(
            IscsiUrl::parse("iscsi://h/t/16384"),
            Err(UrlError::Lun(_))
        ));
        assert_eq!(IscsiUrl::parse("iscsi://h/t"), Err(UrlError::MissingTarget));
        assert!(matches!(
            IscsiUrl::parse("iscsi:///t/0"),
            Err(UrlError::Host(_))
        ));
        assert!(matches!(
            IscsiUrl::parse("iscsi://h/t/0?bogus=1"),
            Err(UrlError::Query(_))
        ));
    }

    #[test]
    fn serde_round_trip_as_string() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Cfg {
            disk: IscsiUrl,
        }
        let c: Cfg = serde_json::from_str(r#"{"disk":"iscsi://u%p@h:1/iqn.t/3"}"#).unwrap();
        assert_eq!(c.disk.lun, Some(3));
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"disk":"iscsi://u%p@h:1/iqn.t/3"}"#
        );
        assert!(serde_json::from_str::<Cfg>(r#"{"disk":"nfs://x"}"#).is_err());
    }
}
