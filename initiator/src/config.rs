//! What an initiator asks for at login: its identity (initiator name and
//! ISID, which with the target portal group make the I_T nexus), its
//! credentials, the operational values it proposes, and its timeouts.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The initiator name the CLI and library use unless told otherwise
/// (an iqn-format name, RFC 7143 §4.2.7.2).
pub const DEFAULT_INITIATOR_NAME: &str = "iqn.2026-11.io.busrig:initiator";

/// A CHAP name and secret (RFC 7143 §12.1.3).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChapCredentials {
    pub user: String,
    pub secret: String,
}

impl ChapCredentials {
    pub fn new(user: &str, secret: &str) -> ChapCredentials {
        ChapCredentials {
            user: user.to_string(),
            secret: secret.to_string(),
        }
    }
}

impl fmt::Debug for ChapCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChapCredentials({}, ***)", self.user)
    }
}

/// How to offer HeaderDigest / DataDigest (RFC 7143 §13.1): the offer is a
/// list in order of preference and the target picks the first it supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DigestPreference {
    /// Offer `None` only.
    #[default]
    None,
    /// Offer `CRC32C` only; login fails if the target refuses it.
    Crc32c,
    /// Offer `CRC32C,None`.
    PreferCrc32c,
    /// Offer `None,CRC32C`.
    PreferNone,
}

impl DigestPreference {
    /// The value list sent in the login key.
    pub fn offer(self) -> &'static str {
        match self {
            DigestPreference::None => "None",
            DigestPreference::Crc32c => "CRC32C",
            DigestPreference::PreferCrc32c => "CRC32C,None",
            DigestPreference::PreferNone => "None,CRC32C",
        }
    }

    pub(crate) fn url_value(self) -> &'static str {
        match self {
            DigestPreference::None => "none",
            DigestPreference::Crc32c => "crc32c",
            DigestPreference::PreferCrc32c => "prefer-crc32c",
            DigestPreference::PreferNone => "prefer-none",
        }
    }
}

/// The Initiator Session ID (RFC 7143 §11.12.5): six bytes, the top two bits
/// of the first byte give the format (00 OUI, 01 EN, 10 random, 11 reserved).
/// With the initiator name it identifies the I_T nexus, so a node that logs
/// in again with the same ISID reinstates its session (RFC 7143 §6.3.5) and
/// keeps its PR registrations.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Isid(pub [u8; 6]);

impl Isid {
    /// The ISID `busrig disk` uses unless `--isid` says otherwise: a fixed
    /// value of the "random" format, so that successive invocations act as
    /// the same I_T nexus (a `pr register` followed by a `pr reserve` must
    /// come from one nexus, as it would from one host's session).
    pub const CLI_DEFAULT: Isid = Isid([0x80, 0x62, 0x75, 0x73, 0x00, 0x01]);

    /// A fresh random-format ISID (T = 10b), as libiscsi and open-iscsi pick
    /// for a new session.
    pub fn random() -> Isid {
        let mut b: [u8; 6] = rand::random();
        b[0] = 0x80 | (b[0] & 0x3f);
        Isid(b)
    }

    pub fn bytes(self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for Isid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Isid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Isid({self})")
    }
}

/// Why an ISID string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an ISID is 12 hex digits (6 bytes), optionally with 0x and ':' or '-' separators: {0:?}")]
pub struct IsidParseError(pub String);

impl FromStr for Isid {
    type Err = IsidParseError;
    fn from_str(s: &str) -> Result<Isid, IsidParseError> {
        let t = s.trim();
        let t = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .unwrap_or(t);
        let hex: String = t
            .chars()
            .filter(|c| !matches!(c, ':' | '-' | '.'))
            .collect();
        if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(IsidParseError(s.to_string()));
        }
        let mut b = [0u8; 6];
        for (i, out) in b.iter_mut().enumerate() {
            *out = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| IsidParseError(s.to_string()))?;
        }
        Ok(Isid(b))
    }
}

impl Serialize for Isid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Isid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Isid, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The operational values the initiator proposes (RFC 7143 §13). The
/// negotiated outcome is in [`crate::SessionInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Proposal {
    pub header_digest: DigestPreference,
    pub data_digest: DigestPreference,
    /// What we can receive in one PDU's data segment (declarative, §13.12).
    pub max_recv_data_segment_length: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub immediate_data: bool,
    pub initial_r2t: bool,
    pub max_outstanding_r2t: u32,
    pub default_time2wait: u32,
    pub default_time2retain: u32,
}

impl Default for Proposal {
    fn default() -> Proposal {
        // The values open-iscsi proposes by default: large bursts, immediate
        // and unsolicited data allowed, so writes need the fewest round trips.
        Proposal {
            header_digest: DigestPreference::None,
            data_digest: DigestPreference::None,
            max_recv_data_segment_length: 262_144,
            max_burst_length: 16_776_192,
            first_burst_length: 262_144,
            immediate_data: true,
            initial_r2t: false,
            max_outstanding_r2t: 1,
            default_time2wait: 2,
            default_time2retain: 20,
        }
    }
}

/// Everything a session needs besides the portal and target name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionConfig {
    pub initiator_name: String,
    pub initiator_alias: Option<String>,
    pub isid: Isid,
    pub chap: Option<ChapCredentials>,
    /// Set for mutual CHAP: the target must prove it knows this secret.
    pub mutual_chap: Option<ChapCredentials>,
    pub proposal: Proposal,
    /// Default time limit for one SCSI command or task management function.
    #[serde(with = "secs")]
    pub command_timeout: Duration,
    /// Time limit for TCP connect plus the whole login.
    #[serde(with = "secs")]
    pub login_timeout: Duration,
    /// How long to keep trying to log in again after the connection drops
    /// before failing every outstanding command (zero: no recovery).
    #[serde(with = "secs")]
    pub recovery_timeout: Duration,
    /// Interval of our own NOP-Out pings, which detect a dead connection
    /// while idle (open-iscsi's noop_out_interval); zero disables them.
    #[serde(with = "secs")]
    pub nop_interval: Duration,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            initiator_name: DEFAULT_INITIATOR_NAME.to_string(),
            initiator_alias: None,
            isid: Isid::random(),
            chap: None,
            mutual_chap: None,
            proposal: Proposal::default(),
            command_timeout: Duration::from_secs(30),
            login_timeout: Duration::from_secs(15),
            recovery_timeout: Duration::from_secs(20),
            nop_interval: Duration::from_secs(5),
        }
    }
}

impl SessionConfig {
    /// Takes the credentials and digest choices a URL carries.
    pub fn with_url(mut self, url: &crate::IscsiUrl) -> SessionConfig {
        if url.chap.is_some() {
            self.chap = url.chap.clone();
            self.mutual_chap = url.mutual_chap.clone();
        }
        if let Some(d) = url.header_digest {
            self.proposal.header_digest = d;
        }
        if let Some(d) = url.data_digest {
            self.proposal.data_digest = d;
        }
        self
    }
}

/// Durations as (fractional) seconds in config files.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isid_parses_hex_forms() {
        let want = Isid([0x80, 0x12, 0x34, 0x56, 0x78, 0x9a]);
        assert_eq!("80123456789a".parse::<Isid>().unwrap(), want);
        assert_eq!("0x80123456789A".parse::<Isid>().unwrap(), want);
        assert_eq!("80:12:34:56:78:9a".parse::<Isid>().unwrap(), want);
        assert_eq!(want.to_string(), "80123456789a");
        assert!("8012345678".parse::<Isid>().is_err());
        assert!("80123456789g".parse::<Isid>().is_err());
    }

    #[test]
    fn random_isid_has_random_format_bits() {
        for _ in 0..32 {
            assert_eq!(
                Isid::random().0[0] & 0xc0,
                0x80,
                "RFC 7143 §11.12.5: T=10b is the random format"
            );
        }
    }

    #[test]
    fn config_from_json_with_defaults() {
        let c: SessionConfig = serde_json::from_str(
            r#"{"initiator_name":"iqn.x:node1","isid":"800000000001","command_timeout":2.5}"#,
        )
        .unwrap();
        assert_eq!(c.initiator_name, "iqn.x:node1");
        assert_eq!(c.isid, Isid([0x80, 0, 0, 0, 0, 1]));
        assert_eq!(c.command_timeout, Duration::from_millis(2500));
        assert_eq!(c.proposal, Proposal::default());
    }

    #[test]
    fn url_credentials_flow_into_config() {
        let url = crate::IscsiUrl::parse(
            "iscsi://u%p@h/iqn.t/0?target_user=t&target_password=q&header_digest=crc32c",
        )
        .unwrap();
        let c = SessionConfig::default().with_url(&url);
        assert_eq!(c.chap.unwrap().secret, "p");
        assert_eq!(c.mutual_chap.unwrap().user, "t");
        assert_eq!(c.proposal.header_digest, DigestPreference::Crc32c);
    }
}
