//! CHAP authentication with MD5 for iSCSI login (RFC 1994, RFC 7143
//! §12.1.3).
//!
//! The exchange, after `AuthMethod=CHAP` was agreed in the security stage:
//!
//! ```text
//! initiator -> target   CHAP_A=<A1,A2,...>
//! target -> initiator   CHAP_A=5  CHAP_I=<id>  CHAP_C=<challenge>
//! initiator -> target   CHAP_N=<name>  CHAP_R=<response>
//!                       [CHAP_I=<id'>  CHAP_C=<challenge'>]   (mutual)
//! target -> initiator   [CHAP_N=<name'>  CHAP_R=<response'>]  (mutual)
//! ```
//!
//! where `response = MD5(id || secret || challenge)` (RFC 1994 §4.1).
//! Randomness (identifier and challenge) is supplied by the caller: this
//! crate reads no RNG and no clock.
//!
//! Target side:
//!
//! ```
//! use busrig_proto::chap::{ChapCredentials, ChapStep, ChapTarget, ChapTargetConfig};
//! use busrig_proto::text::TextPairs;
//!
//! let config = ChapTargetConfig::one_way(ChapCredentials::new("alice", "alice-secret-123"));
//! // id and challenge come from the caller's RNG.
//! let mut target = ChapTarget::new(config, 7, [0x5a; 16]);
//! let offer: TextPairs = [("CHAP_A", "5")].into_iter().collect();
//! let ChapStep::Continue(challenge) = target.step(&offer).unwrap() else { panic!() };
//! assert_eq!(challenge.get("CHAP_A"), Some("5"));
//! // ... send `challenge`, receive the initiator's CHAP_N / CHAP_R, call
//! // `target.step` again: `ChapStep::Done(keys)` means authenticated.
//! ```
//!
//! Initiator side:
//!
//! ```
//! use busrig_proto::chap::{ChapCredentials, ChapInitiator, ChapStep};
//! use busrig_proto::text::TextPairs;
//!
//! let mut initiator = ChapInitiator::new(ChapCredentials::new("alice", "alice-secret-123"), None);
//! let first = initiator.start(); // CHAP_A=5
//! assert_eq!(first.get("CHAP_A"), Some("5"));
//! let challenge: TextPairs =
//!     [("CHAP_A", "5"), ("CHAP_I", "7"), ("CHAP_C", "0x0102030405")].into_iter().collect();
//! let ChapStep::Done(answer) = initiator.step(&challenge).unwrap() else { panic!() };
//! assert_eq!(answer.get("CHAP_N"), Some("alice"));
//! ```

use md5::{Digest, Md5};

use crate::pdu::login_status;
use crate::text::{self, TextPairs};

/// CHAP algorithm number of MD5 (RFC 1994 §2, IANA PPP auth algorithms).
pub const CHAP_ALGORITHM_MD5: u8 = 5;

/// Shortest secret accepted. RFC 7143 §12.1.3 asks for CHAP secrets of at
/// least 96 bits (12 bytes), 128 bits recommended, because CHAP over an
/// unencrypted link is open to off-line dictionary attack; the Microsoft
/// initiator refuses shorter ones too. A shorter secret is an error.
pub const MIN_SECRET_LEN: usize = 12;

/// The secret length RFC 7143 §12.1.3 recommends (128 bits).
pub const RECOMMENDED_SECRET_LEN: usize = 16;

/// Longest challenge accepted from a peer: RFC 7143 §12.1.3 limits the
/// binary length of CHAP_C and CHAP_R to 1024 bytes.
pub const MAX_CHALLENGE_LEN: usize = 1024;

/// Length of an MD5 response.
pub const MD5_RESPONSE_LEN: usize = 16;

/// A CHAP name and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ChapCredentials {
    /// The CHAP name sent in CHAP_N (often the initiator or target IQN).
    pub name: String,
    /// The shared secret.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for ChapCredentials {
    // Never print the secret: these values end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChapCredentials")
            .field("name", &self.name)
            .field("secret", &format_args!("<{} bytes>", self.secret.len()))
            .finish()
    }
}

impl ChapCredentials {
    /// Credentials from a name and a secret. No checks here; see
    /// [`ChapCredentials::check`].
    pub fn new(name: impl Into<String>, secret: impl AsRef<[u8]>) -> Self {
        ChapCredentials {
            name: name.into(),
            secret: secret.as_ref().to_vec(),
        }
    }

    /// Checks the credentials: an empty name or secret, or a secret shorter
    /// than [`MIN_SECRET_LEN`] ([`ChapError::WeakSecret`]), is an error.
    pub fn check(&self) -> Result<(), ChapError> {
        if self.name.is_empty() {
            return Err(ChapError::EmptyName);
        }
        if self.secret.is_empty() {
            return Err(ChapError::EmptySecret);
        }
        if self.secret.len() < MIN_SECRET_LEN {
            return Err(ChapError::WeakSecret {
                len: self.secret.len(),
            });
        }
        Ok(())
    }
}

/// Errors of the CHAP exchange.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChapError {
    /// A configured CHAP name is empty.
    #[error("empty CHAP name")]
    EmptyName,
    /// A configured secret is empty.
    #[error("empty CHAP secret")]
    EmptySecret,
    /// A configured secret is shorter than the 12 bytes RFC 7143 §12.1.3
    /// asks for.
    #[error("CHAP secret of {len} bytes is shorter than 12 (RFC 7143 §12.1.3; 16 recommended)")]
    WeakSecret { len: usize },
    /// The same secret is configured for both directions, which RFC 7143
    /// §12.1.3 forbids.
    #[error("the same CHAP secret is configured for both directions")]
    SameSecretBothWays,
    /// The peer offered no algorithm we implement (only MD5, 5).
    #[error("no supported CHAP algorithm in {0:?}")]
    UnsupportedAlgorithm(String),
    /// A required CHAP key is absent.
    #[error("missing {0}")]
    MissingKey(&'static str),
    /// A CHAP key has a malformed value.
    #[error("bad value for {key}: {reason}")]
    BadValue { key: &'static str, reason: String },
    /// A CHAP key arrived at a point of the exchange where it has no place.
    #[error("unexpected {0} at this point of the CHAP exchange")]
    UnexpectedKey(String),
    /// CHAP_N does not name the configured user.
    #[error("unknown CHAP name {0:?}")]
    UnknownName(String),
    /// The CHAP_R does not match the expected response.
    #[error("CHAP response does not match")]
    BadResponse,
    /// The peer asked for mutual CHAP but no credentials are configured.
    #[error("mutual CHAP requested but not configured")]
    MutualNotConfigured,
    /// Mutual CHAP is required by configuration but the initiator did not
    /// ask for it.
    #[error("mutual CHAP required")]
    MutualRequired,
    /// The initiator sent back our own challenge (RFC 7143 §12.1.3: a
    /// reflection attack; the responder must refuse it).
    #[error("mutual CHAP challenge equals ours (reflection)")]
    ReflectedChallenge,
    /// The exchange already finished or failed.
    #[error("CHAP exchange already finished")]
    Finished,
}

impl ChapError {
    /// Login status (class, detail) a target sends for this error (RFC 7143
    /// §11.13.5, §12.1.3: a failed authentication ends with "Authentication
    /// Failure" 02/01; malformed keys are an Initiator Error 02/00; missing
    /// configuration is a Target Error 03/00).
    pub fn login_status(&self) -> (u8, u8) {
        match self {
            ChapError::EmptyName
            | ChapError::EmptySecret
            | ChapError::WeakSecret { .. }
            | ChapError::SameSecretBothWays => login_status::TARGET_ERROR,
            ChapError::MissingKey(_)
            | ChapError::BadValue { .. }
            | ChapError::UnexpectedKey(_)
            | ChapError::Finished => login_status::INITIATOR_ERROR,
            ChapError::UnsupportedAlgorithm(_)
            | ChapError::UnknownName(_)
            | ChapError::BadResponse
            | ChapError::MutualNotConfigured
            | ChapError::MutualRequired
            | ChapError::ReflectedChallenge => login_status::AUTHENTICATION_FAILURE,
        }
    }
}

/// Result of one CHAP step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChapStep {
    /// Send these keys; the exchange needs another message from the peer.
    Continue(TextPairs),
    /// Send these keys (possibly none); this side's part of the exchange is
    /// complete and successful.
    Done(TextPairs),
}

impl ChapStep {
    /// The keys to send.
    pub fn keys(&self) -> &TextPairs {
        match self {
            ChapStep::Continue(k) | ChapStep::Done(k) => k,
        }
    }

    /// Whether this side is done.
    pub fn is_done(&self) -> bool {
        matches!(self, ChapStep::Done(_))
    }
}

/// The CHAP/MD5 response: `MD5(id || secret || challenge)` (RFC 1994 §4.1).
pub fn chap_md5_response(id: u8, secret: &[u8], challenge: &[u8]) -> [u8; MD5_RESPONSE_LEN] {
    let mut hasher = Md5::new();
    hasher.update([id]);
    hasher.update(secret);
    hasher.update(challenge);
    hasher.finalize().into()
}

/// Compares without an early exit so the time taken does not reveal how
/// many leading bytes of a guessed response were right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Picks MD5 from a CHAP_A list (RFC 7143 §12.1.3: the responder chooses
/// one algorithm it supports; values it does not understand are ignored).
fn select_algorithm(list: &str) -> Result<(), ChapError> {
    let ok = list
        .split(',')
        .any(|a| text::decode_number(a.trim()).ok() == Some(u64::from(CHAP_ALGORITHM_MD5)));
    if ok {
        Ok(())
    } else {
        Err(ChapError::UnsupportedAlgorithm(
            list.chars().take(80).collect(),
        ))
    }
}

fn decode_id(keys: &TextPairs) -> Result<u8, ChapError> {
    let raw = keys.get("CHAP_I").ok_or(ChapError::MissingKey("CHAP_I"))?;
    let n = text::decode_number(raw).map_err(|e| ChapError::BadValue {
        key: "CHAP_I",
        reason: e.to_string(),
    })?;
    u8::try_from(n).map_err(|_| ChapError::BadValue {
        key: "CHAP_I",
        reason: format!("{n} exceeds 255"),
    })
}

fn decode_large(keys: &TextPairs, key: &'static str) -> Result<Vec<u8>, ChapError> {
    let raw = keys.get(key).ok_or(ChapError::MissingKey(key))?;
    let bytes = text::decode_binary(raw).map_err(|e| ChapError::BadValue {
        key,
        reason: e.to_string(),
    })?;
    if bytes.is_empty() || bytes.len() > MAX_CHALLENGE_LEN {
        return Err(ChapError::BadValue {
            key,
            reason: format!("{} bytes, expected 1..=1024", bytes.len()),
        });
    }
    Ok(bytes)
}

/// What the target checks and, for mutual CHAP, what it answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChapTargetConfig {
    /// The name and secret the initiator must prove (CHAP_N / secret).
    pub initiator: ChapCredentials,
    /// The target's own name and secret for mutual CHAP; `None` refuses a
    /// mutual challenge.
    pub target: Option<ChapCredentials>,
    /// Fail the login unless the initiator asks for mutual CHAP.
    pub require_mutual: bool,
}

impl ChapTargetConfig {
    /// One-way CHAP: only the initiator authenticates.
    pub fn one_way(initiator: ChapCredentials) -> Self {
        ChapTargetConfig {
            initiator,
            target: None,
            require_mutual: false,
        }
    }

    /// Mutual CHAP available (not required).
    pub fn mutual(initiator: ChapCredentials, target: ChapCredentials) -> Self {
        ChapTargetConfig {
            initiator,
            target: Some(target),
            require_mutual: false,
        }
    }

    /// Checks both credentials ([`ChapCredentials::check`]) and that the two
    /// directions do not share a secret (RFC 7143 §12.1.3). Returns the
    /// first problem.
    pub fn check(&self) -> Result<(), ChapError> {
        for creds in std::iter::once(&self.initiator).chain(self.target.as_ref()) {
            creds.check()?;
        }
        if let Some(target) = &self.target {
            if target.secret == self.initiator.secret {
                return Err(ChapError::SameSecretBothWays);
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TargetState {
    AwaitAlgorithm,
    AwaitResponse,
    Authenticated,
    Failed,
}

/// Target (authenticator) side of CHAP.
#[derive(Debug, Clone)]
pub struct ChapTarget {
    config: ChapTargetConfig,
    id: u8,
    challenge: [u8; 16],
    state: TargetState,
    mutual_done: bool,
}

impl ChapTarget {
    /// A target exchange with the caller's random identifier and challenge.
    /// The challenge must be fresh for every login (RFC 1994 §2.3).
    pub fn new(config: ChapTargetConfig, id: u8, challenge: [u8; 16]) -> Self {
        ChapTarget {
            config,
            id,
            challenge,
            state: TargetState::AwaitAlgorithm,
            mutual_done: false,
        }
    }

    /// Processes the CHAP_* keys of one login request and returns the keys
    /// to answer with. On `Err` the login must fail with
    /// [`ChapError::login_status`]; the exchange is then finished.
    pub fn step(&mut self, keys: &TextPairs) -> Result<ChapStep, ChapError> {
        let result = match self.state {
            TargetState::AwaitAlgorithm => self.on_algorithms(keys),
            TargetState::AwaitResponse => self.on_response(keys),
            TargetState::Authenticated | TargetState::Failed => Err(ChapError::Finished),
        };
        if result.is_err() {
            self.state = TargetState::Failed;
        }
        result
    }

    fn on_algorithms(&mut self, keys: &TextPairs) -> Result<ChapStep, ChapError> {
        for (k, _) in keys.iter() {
            if k != "CHAP_A" {
                return Err(ChapError::UnexpectedKey(k.to_string()));
            }
        }
        let list = keys.get("CHAP_A").ok_or(ChapError::MissingKey("CHAP_A"))?;
        select_algorithm(list)?;
        self.state = TargetState::AwaitResponse;
        let mut out = TextPairs::new();
        out.push("CHAP_A", CHAP_ALGORITHM_MD5.to_string());
        out.push("CHAP_I", self.id.to_string());
        out.push("CHAP_C", text::encode_hex(&self.challenge));
        Ok(ChapStep::Continue(out))
    }

    fn on_response(&mut self, keys: &TextPairs) -> Result<ChapStep, ChapError> {
        for (k, _) in keys.iter() {
            if !matches!(k, "CHAP_N" | "CHAP_R" | "CHAP_I" | "CHAP_C") {
                return Err(ChapError::UnexpectedKey(k.to_string()));
            }
        }
        let name = keys.get("CHAP_N").ok_or(ChapError::MissingKey("CHAP_N"))?;
        let response = decode_large(keys, "CHAP_R")?;
        // Decode the mutual challenge before judging the response so a
        // malformed request is reported as such.
        let mutual = match (keys.contains_key("CHAP_I"), keys.contains_key("CHAP_C")) {
            (false, false) => None,
            (true, true) => Some((decode_id(keys)?, decode_large(keys, "CHAP_C")?)),
            (true, false) => return Err(ChapError::MissingKey("CHAP_C")),
            (false, true) => return Err(ChapError::MissingKey("CHAP_I")),
        };
        if self.config.initiator.secret.is_empty() {
            return Err(ChapError::EmptySecret);
        }
        if name != self.config.initiator.name {
            return Err(ChapError::UnknownName(name.chars().take(80).collect()));
        }
        let expected = chap_md5_response(self.id, &self.config.initiator.secret, &self.challenge);
        if !constant_time_eq(&response, &expected) {
            return Err(ChapError::BadResponse);
        }
        let mut out = TextPairs::new();
        match mutual {
            None if self.config.require_mutual => return Err(ChapError::MutualRequired),
            None => {}
            Some((id, challenge)) => {
                // RFC 7143 §12.1.3: a responder must refuse a challenge equal
                // to the one it sent, or the initiator could make us compute
                // the answer to our own challenge.
                if challenge == self.challenge {
                    return Err(ChapError::ReflectedChallenge);
                }
                let creds = self
                    .config
                    .target
                    .as_ref()
                    .ok_or(ChapError::MutualNotConfigured)?;
                if creds.secret.is_empty() {
                    return Err(ChapError::EmptySecret);
                }
                out.push("CHAP_N", creds.name.clone());
                let r = chap_md5_response(id, &creds.secret, &challenge);
                out.push("CHAP_R", text::encode_hex(&r));
                self.mutual_done = true;
            }
        }
        self.state = TargetState::Authenticated;
        Ok(ChapStep::Done(out))
    }

    /// Whether the initiator proved its identity.
    pub fn is_authenticated(&self) -> bool {
        self.state == TargetState::Authenticated
    }

    /// Whether the exchange is under way: algorithms or a response awaited.
    pub fn in_progress(&self) -> bool {
        matches!(
            self.state,
            TargetState::AwaitAlgorithm | TargetState::AwaitResponse
        )
    }

    /// Whether the target also authenticated itself (mutual CHAP).
    pub fn is_mutual(&self) -> bool {
        self.mutual_done
    }

    /// The authenticated CHAP name, once authenticated.
    pub fn authenticated_name(&self) -> Option<&str> {
        self.is_authenticated()
            .then_some(self.config.initiator.name.as_str())
    }
}

/// Mutual CHAP settings of an initiator: what the target must prove and the
/// caller's random identifier and challenge for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutualChap {
    /// The name and secret the target must answer with.
    pub target: ChapCredentials,
    /// Identifier for our challenge (caller's randomness).
    pub id: u8,
    /// Our challenge (caller's randomness, fresh per login).
    pub challenge: [u8; 16],
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum InitiatorState {
    Start,
    AwaitChallenge,
    AwaitMutualResponse,
    Done,
    Failed,
}

/// Initiator (peer) side of CHAP.
#[derive(Debug, Clone)]
pub struct ChapInitiator {
    credentials: ChapCredentials,
    mutual: Option<MutualChap>,
    state: InitiatorState,
    target_challenge: Vec<u8>,
}

impl ChapInitiator {
    /// An initiator exchange; with `mutual` the target must authenticate too.
    pub fn new(credentials: ChapCredentials, mutual: Option<MutualChap>) -> Self {
        ChapInitiator {
            credentials,
            mutual,
            state: InitiatorState::Start,
            target_challenge: Vec::new(),
        }
    }

    /// The first CHAP keys: `CHAP_A=5` (we only implement MD5).
    pub fn start(&mut self) -> TextPairs {
        self.state = InitiatorState::AwaitChallenge;
        [("CHAP_A", CHAP_ALGORITHM_MD5.to_string())]
            .into_iter()
            .collect()
    }

    /// Processes the CHAP_* keys of a login response. The target's challenge
    /// gives the response (and our mutual challenge); the target's mutual
    /// response is verified. On `Err` the initiator must drop the connection.
    pub fn step(&mut self, keys: &TextPairs) -> Result<ChapStep, ChapError> {
        let result = match self.state {
            InitiatorState::Start | InitiatorState::AwaitChallenge => self.on_challenge(keys),
            InitiatorState::AwaitMutualResponse => self.on_mutual_response(keys),
            InitiatorState::Done | InitiatorState::Failed => Err(ChapError::Finished),
        };
        if result.is_err() {
            self.state = InitiatorState::Failed;
        }
        result
    }

    fn on_challenge(&mut self, keys: &TextPairs) -> Result<ChapStep, ChapError> {
        let alg = keys.get("CHAP_A").ok_or(ChapError::MissingKey("CHAP_A"))?;
        // The target must pick exactly one algorithm, the one we offered.
        if text::decode_number(alg).ok() != Some(u64::from(CHAP_ALGORITHM_MD5)) {
            return Err(ChapError::UnsupportedAlgorithm(
                alg.chars().take(80).collect(),
            ));
        }
        let id = decode_id(keys)?;
        let challenge = decode_large(keys, "CHAP_C")?;
        let mut out = TextPairs::new();
        out.push("CHAP_N", self.credentials.name.clone());
        let r = chap_md5_response(id, &self.credentials.secret, &challenge);
        out.push("CHAP_R", text::encode_hex(&r));
        self.target_challenge = challenge;
        match &self.mutual {
            None => {
                self.state = InitiatorState::Done;
                Ok(ChapStep::Done(out))
            }
            Some(m) => {
                // Our challenge must differ from the target's, or the target
                // could replay our own response (RFC 7143 §12.1.3).
                if m.challenge[..] == self.target_challenge[..] {
                    return Err(ChapError::ReflectedChallenge);
                }
                out.push("CHAP_I", m.id.to_string());
                out.push("CHAP_C", text::encode_hex(&m.challenge));
                self.state = InitiatorState::AwaitMutualResponse;
                Ok(ChapStep::Continue(out))
            }
        }
    }

    fn on_mutual_response(&mut self, keys: &TextPairs) -> Result<ChapStep, ChapError> {
        let m = self.mutual.as_ref().ok_or(ChapError::MutualNotConfigured)?;
        let name = keys.get("CHAP_N").ok_or(ChapError::MissingKey("CHAP_N"))?;
        let response = decode_large(keys, "CHAP_R")?;
        if name != m.target.name {
            return Err(ChapError::UnknownName(name.chars().take(80).collect()));
        }
        let expected = chap_md5_response(m.id, &m.target.secret, &m.challenge);
        if !constant_time_eq(&response, &expected) {
            return Err(ChapError::BadResponse);
        }
        self.state = InitiatorState::Done;
        Ok(ChapStep::Done(TextPairs::new()))
    }

    /// Whether this side finished: response sent (one-way) or the target's
    /// mutual response verified.
    pub fn is_done(&self) -> bool {
        self.state == InitiatorState::Done
    }

    /// Whether [`ChapInitiator::start`] was called.
    pub fn has_started(&self) -> bool {
        self.state != InitiatorState::Start
    }

    /// Whether a mutual response is still awaited from the target.
    pub fn awaits_mutual_response(&self) -> bool {
        self.state == InitiatorState::AwaitMutualResponse
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t-passw0rd";
    const TARGET_SECRET: &str = "t4rget-s3cret-99";

    fn keys(list: &[(&str, &str)]) -> TextPairs {
        list.iter().copied().collect()
    }

    fn target(config: ChapTargetConfig) -> ChapTarget {
        ChapTarget::new(config, 0x2a, core::array::from_fn(|i| i as u8))
    }

    fn one_way() -> ChapTargetConfig {
        ChapTargetConfig::one_way(ChapCredentials::new("alice", SECRET))
    }

    fn mutual() -> ChapTargetConfig {
        ChapTargetConfig::mutual(
            ChapCredentials::new("alice", SECRET),
            ChapCredentials::new("iqn.2024-01.org.example:disk", TARGET_SECRET),
        )
    }

    #[test]
    fn md5_response_matches_independent_vectors() {
        // MD5 of the single byte 0x00 (id 0, empty secret and challenge),
        // a value any MD5 tool reproduces.
        assert_eq!(
            text::encode_hex(&chap_md5_response(0, b"", b"")),
            "0x93b885adfe0da089cdf634904fd59f71"
        );
        // id 0x2a, secret "s3cr3t-passw0rd", challenge 00 01 .. 0f: computed
        // with Python's hashlib.md5(bytes([0x2a]) + secret + challenge).
        let challenge: Vec<u8> = (0u8..16).collect();
        assert_eq!(
            text::encode_hex(&chap_md5_response(0x2a, SECRET.as_bytes(), &challenge)),
            "0x0e142cd5e6b61ae13f69baaa11add744"
        );
    }

    #[test]
    fn target_one_way_success_byte_exact() {
        let mut t = target(one_way());
        let step = t.step(&keys(&[("CHAP_A", "7,5")])).unwrap();
        assert_eq!(
            step,
            ChapStep::Continue(keys(&[
                ("CHAP_A", "5"),
                ("CHAP_I", "42"),
                ("CHAP_C", "0x000102030405060708090a0b0c0d0e0f"),
            ]))
        );
        assert!(t.in_progress() && !t.is_authenticated());
        let step = t
            .step(&keys(&[
                ("CHAP_N", "alice"),
                ("CHAP_R", "0x0e142cd5e6b61ae13f69baaa11add744"),
            ]))
            .unwrap();
        assert_eq!(step, ChapStep::Done(TextPairs::new()));
        assert!(t.is_authenticated() && !t.is_mutual());
        assert_eq!(t.authenticated_name(), Some("alice"));
        assert_eq!(t.step(&TextPairs::new()), Err(ChapError::Finished));
    }

    #[test]
    fn target_accepts_base64_response() {
        let mut t = target(one_way());
        t.step(&keys(&[("CHAP_A", "5")])).unwrap();
        let r = keys(&[
            ("CHAP_N", "alice"),
            ("CHAP_R", "0bDhQs1ea2GuE/abqqEa3XRA=="),
        ]);
        assert!(t.step(&r).unwrap().is_done());
    }

    #[test]
    fn target_failures() {
        let good_r = "0x0e142cd5e6b61ae13f69baaa11add744";
        // (case, config, response keys, error, login status)
        type Case<'a> = (
            &'a str,
            ChapTargetConfig,
            Vec<(&'a str, &'a str)>,
            ChapError,
            (u8, u8),
        );
        let cases: Vec<Case> = vec![
            (
                "RFC 1994 §4.1 wrong response",
                one_way(),
                vec![
                    ("CHAP_N", "alice"),
                    ("CHAP_R", "0x0e142cd5e6b61ae13f69baaa11add745"),
                ],
                ChapError::BadResponse,
                (2, 1),
            ),
            (
                "unknown name",
                one_way(),
                vec![("CHAP_N", "mallory"), ("CHAP_R", good_r)],
                ChapError::UnknownName("mallory".into()),
                (2, 1),
            ),
            (
                "missing CHAP_R",
                one_way(),
                vec![("CHAP_N", "alice")],
                ChapError::MissingKey("CHAP_R"),
                (2, 0),
            ),
            (
                "CHAP_R not hex/base64",
                one_way(),
                vec![("CHAP_N", "alice"), ("CHAP_R", "0e142cd5")],
                ChapError::BadValue {
                    key: "CHAP_R",
                    reason: "invalid binary value \"0e142cd5\"".into(),
                },
                (2, 0),
            ),
            (
                "§12.1.3 mutual challenge equal to ours (reflection)",
                mutual(),
                vec![
                    ("CHAP_N", "alice"),
                    ("CHAP_R", good_r),
                    ("CHAP_I", "1"),
                    ("CHAP_C", "0x000102030405060708090a0b0c0d0e0f"),
                ],
                ChapError::ReflectedChallenge,
                (2, 1),
            ),
            (
                "mutual requested, no target secret",
                one_way(),
                vec![
                    ("CHAP_N", "alice"),
                    ("CHAP_R", good_r),
                    ("CHAP_I", "1"),
                    ("CHAP_C", "0x99"),
                ],
                ChapError::MutualNotConfigured,
                (2, 1),
            ),
            (
                "mutual required, not requested",
                ChapTargetConfig {
                    require_mutual: true,
                    ..mutual()
                },
                vec![("CHAP_N", "alice"), ("CHAP_R", good_r)],
                ChapError::MutualRequired,
                (2, 1),
            ),
            (
                "CHAP_I without CHAP_C",
                mutual(),
                vec![("CHAP_N", "alice"), ("CHAP_R", good_r), ("CHAP_I", "1")],
                ChapError::MissingKey("CHAP_C"),
                (2, 0),
            ),
            (
                "CHAP_I above 255",
                mutual(),
                vec![
                    ("CHAP_N", "alice"),
                    ("CHAP_R", good_r),
                    ("CHAP_I", "256"),
                    ("CHAP_C", "0x99"),
                ],
                ChapError::BadValue {
                    key: "CHAP_I",
                    reason: "256 exceeds 255".into(),
                },
                (2, 0),
            ),
            (
                "stray key",
                one_way(),
                vec![("CHAP_N", "alice"), ("CHAP_R", good_r), ("CHAP_X", "1")],
                ChapError::UnexpectedKey("CHAP_X".into()),
                (2, 0),
            ),
        ];
        for (name, config, resp, err, status) in cases {
            let mut t = target(config);
            t.step(&keys(&[("CHAP_A", "5")])).unwrap();
            let got = t.step(&keys(&resp));
            assert_eq!(got, Err(err.clone()), "{name}");
            assert_eq!(err.login_status(), status, "{name}");
            assert!(!t.is_authenticated() && !t.in_progress(), "{name}");
        }
    }

    #[test]
    fn target_refuses_algorithms_other_than_md5() {
        let mut t = target(one_way());
        assert_eq!(
            t.step(&keys(&[("CHAP_A", "6,7")])),
            Err(ChapError::UnsupportedAlgorithm("6,7".into()))
        );
        let mut t = target(one_way());
        assert_eq!(
            t.step(&keys(&[("CHAP_N", "alice")])),
            Err(ChapError::UnexpectedKey("CHAP_N".into()))
        );
    }

    #[test]
    fn one_way_between_initiator_and_target() {
        let mut t = target(one_way());
        let mut i = ChapInitiator::new(ChapCredentials::new("alice", SECRET), None);
        assert!(!i.has_started());
        let a = i.start();
        assert_eq!(a, keys(&[("CHAP_A", "5")]));
        let c = t.step(&a).unwrap();
        let r = i.step(c.keys()).unwrap();
        assert!(r.is_done() && i.is_done());
        assert_eq!(
            r.keys(),
            &keys(&[
                ("CHAP_N", "alice"),
                ("CHAP_R", "0x0e142cd5e6b61ae13f69baaa11add744")
            ])
        );
        assert!(t.step(r.keys()).unwrap().is_done());
        assert!(t.is_authenticated());
    }

    #[test]
    fn mutual_between_initiator_and_target() {
        let mut t = target(mutual());
        let m = MutualChap {
            target: ChapCredentials::new("iqn.2024-01.org.example:disk", TARGET_SECRET),
            id: 9,
            challenge: [0xc3; 16],
        };
        let mut i = ChapInitiator::new(ChapCredentials::new("alice", SECRET), Some(m));
        let c = t.step(&i.start()).unwrap();
        let r = i.step(c.keys()).unwrap();
        assert!(!r.is_done() && i.awaits_mutual_response());
        assert_eq!(r.keys().get("CHAP_I"), Some("9"));
        assert_eq!(
            r.keys().get("CHAP_C"),
            Some(&*text::encode_hex(&[0xc3; 16]))
        );
        let answer = t.step(r.keys()).unwrap();
        assert!(answer.is_done() && t.is_mutual());
        let expected = chap_md5_response(9, TARGET_SECRET.as_bytes(), &[0xc3; 16]);
        assert_eq!(
            answer.keys(),
            &keys(&[
                ("CHAP_N", "iqn.2024-01.org.example:disk"),
                ("CHAP_R", &text::encode_hex(&expected)),
            ])
        );
        assert_eq!(
            i.step(answer.keys()).unwrap(),
            ChapStep::Done(TextPairs::new())
        );
        assert!(i.is_done());
    }

    #[test]
    fn initiator_rejects_bad_mutual_response_and_bad_challenges() {
        let m = MutualChap {
            target: ChapCredentials::new("tgt", TARGET_SECRET),
            id: 9,
            challenge: [0xc3; 16],
        };
        let challenge = keys(&[("CHAP_A", "5"), ("CHAP_I", "1"), ("CHAP_C", "0x1234")]);
        let mut i = ChapInitiator::new(ChapCredentials::new("alice", SECRET), Some(m.clone()));
        i.start();
        i.step(&challenge).unwrap();
        let forged = chap_md5_response(9, b"guessed-secret!!", &[0xc3; 16]);
        assert_eq!(
            i.step(&keys(&[
                ("CHAP_N", "tgt"),
                ("CHAP_R", &text::encode_hex(&forged))
            ])),
            Err(ChapError::BadResponse)
        );
        assert!(!i.is_done());

        // A target that sends our own mutual challenge as its challenge.
        let mut i = ChapInitiator::new(ChapCredentials::new("alice", SECRET), Some(m));
        i.start();
        let reflected = keys(&[
            ("CHAP_A", "5"),
            ("CHAP_I", "1"),
            ("CHAP_C", &text::encode_hex(&[0xc3; 16])),
        ]);
        assert_eq!(i.step(&reflected), Err(ChapError::ReflectedChallenge));

        for (bad, err) in [
            (
                keys(&[("CHAP_A", "7"), ("CHAP_I", "1"), ("CHAP_C", "0x12")]),
                ChapError::UnsupportedAlgorithm("7".into()),
            ),
            (
                keys(&[("CHAP_A", "5"), ("CHAP_C", "0x12")]),
                ChapError::MissingKey("CHAP_I"),
            ),
            (
                keys(&[
                    ("CHAP_A", "5"),
                    ("CHAP_I", "1"),
                    ("CHAP_C", &text::encode_hex(&[1; 1025])),
                ]),
                ChapError::BadValue {
                    key: "CHAP_C",
                    reason: "1025 bytes, expected 1..=1024".into(),
                },
            ),
        ] {
            let mut i = ChapInitiator::new(ChapCredentials::new("alice", SECRET), None);
            i.start();
            assert_eq!(i.step(&bad), Err(err));
        }
    }

    #[test]
    fn initiator_accepts_base64_challenge() {
        let mut i = ChapInitiator::new(ChapCredentials::new("alice", SECRET), None);
        i.start();
        let c = keys(&[
            ("CHAP_A", "5"),
            ("CHAP_I", "0x2a"),
            (
                "CHAP_C",
                &text::encode_base64(&(0u8..16).collect::<Vec<_>>()),
            ),
        ]);
        let r = i.step(&c).unwrap();
        assert_eq!(
            r.keys().get("CHAP_R"),
            Some("0x0e142cd5e6b61ae13f69baaa11add744")
        );
    }

    #[test]
    fn credential_checks() {
        assert_eq!(ChapCredentials::new("a", SECRET).check(), Ok(()));
        let weak = ChapCredentials::new("a", "short").check().unwrap_err();
        assert_eq!(weak, ChapError::WeakSecret { len: 5 });
        assert_eq!(
            ChapCredentials::new("a", "eleven-byte").check(),
            Err(ChapError::WeakSecret { len: 11 })
        );
        assert_eq!(ChapCredentials::new("a", "twelve-bytes").check(), Ok(()));
        assert_eq!(
            ChapCredentials::new("", SECRET).check(),
            Err(ChapError::EmptyName)
        );
        assert_eq!(
            ChapCredentials::new("a", "").check(),
            Err(ChapError::EmptySecret)
        );

        assert_eq!(mutual().check(), Ok(()));
        let same = ChapTargetConfig::mutual(
            ChapCredentials::new("a", SECRET),
            ChapCredentials::new("b", SECRET),
        );
        assert_eq!(same.check(), Err(ChapError::SameSecretBothWays));
        let weak_one = ChapTargetConfig::mutual(
            ChapCredentials::new("a", "short"),
            ChapCredentials::new("b", TARGET_SECRET),
        );
        assert_eq!(weak_one.check(), Err(ChapError::WeakSecret { len: 5 }));
    }

    #[test]
    fn debug_does_not_print_secrets() {
        let d = format!("{:?}", ChapCredentials::new("alice", SECRET));
        assert!(d.contains("alice") && !d.contains(SECRET), "{d}");
    }
}
