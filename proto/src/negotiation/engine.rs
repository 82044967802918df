//! The rule engine both negotiators share: answering an offer and
//! checking an answer against a key's result function (RFC 7143 §6.2), and
//! the per-session negotiation state.

use std::collections::{HashMap, HashSet};

use super::keys::{Key, Rule, Senders, Usage, DATA_LEN};
use super::*;
use crate::text::{self, TextPairs};

/// Which side the engine plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Target,
    Initiator,
}

/// This side's values: a limit (numbers), a wish (booleans) or the
/// supported list (lists), in wire form.
#[derive(Debug, Clone)]
pub(super) struct Prefs {
    pub(super) values: HashMap<Key, String>,
}

impl Prefs {
    pub(super) fn value(&self, key: Key) -> &str {
        self.values
            .get(&key)
            .map(String::as_str)
            .unwrap_or(key.default_value())
    }
}

impl Prefs {
    /// What one side declares at login: its operational values, its
    /// authentication methods in preference order, and the two keys busrig
    /// always declares (TaskReporting=RFC3720 and iSCSIProtocolLevel=1, the
    /// level of RFC 7143; its §13 lists the keys). The initiator offers these and the
    /// target negotiates against them, so both build them here.
    pub(super) fn declaring(op: &OperationalValues, auth: &[AuthMethod]) -> Prefs {
        let values = [
            (
                Key::HeaderDigest,
                join_list(&op.header_digests, DigestType::as_str),
            ),
            (
                Key::DataDigest,
                join_list(&op.data_digests, DigestType::as_str),
            ),
            (Key::AuthMethod, join_list(auth, AuthMethod::as_str)),
            (Key::MaxConnections, op.max_connections.to_string()),
            (Key::MaxOutstandingR2T, op.max_outstanding_r2t.to_string()),
            (Key::MaxBurstLength, op.max_burst_length.to_string()),
            (Key::FirstBurstLength, op.first_burst_length.to_string()),
            (Key::DefaultTime2Wait, op.default_time2wait.to_string()),
            (Key::DefaultTime2Retain, op.default_time2retain.to_string()),
            (Key::ErrorRecoveryLevel, op.error_recovery_level.to_string()),
            (Key::InitialR2T, bool_str(op.initial_r2t)),
            (Key::ImmediateData, bool_str(op.immediate_data)),
            (Key::DataPduInOrder, bool_str(op.data_pdu_in_order)),
            (
                Key::DataSequenceInOrder,
                bool_str(op.data_sequence_in_order),
            ),
            (Key::TaskReporting, "RFC3720".to_string()),
            (Key::ProtocolLevel, "1".to_string()),
            (
                Key::MaxRecvDataSegmentLength,
                op.max_recv_data_segment_length.to_string(),
            ),
        ];
        Prefs {
            values: values.into_iter().collect(),
        }
    }
}

pub(super) fn join_list<T: Copy>(items: &[T], f: impl Fn(T) -> &'static str) -> String {
    items.iter().map(|&i| f(i)).collect::<Vec<_>>().join(",")
}

pub(super) fn bool_str(b: bool) -> String {
    text::encode_boolean(b).to_string()
}

pub(super) fn parse_ranged(value: &str, lo: u64, hi: u64) -> Option<u64> {
    text::decode_number(value)
        .ok()
        .filter(|n| (lo..=hi).contains(n))
}

/// Responder side of one key (RFC 7143 §6.2): our answer to the peer's
/// offer, or `Reject` when the offer is unusable.
pub(super) fn respond(rule: Rule, ours: &str, offer: &str) -> String {
    match rule {
        Rule::Min(lo, hi) | Rule::Max(lo, hi) => {
            let (Some(theirs), Some(mine)) =
                (parse_ranged(offer, lo, hi), parse_ranged(ours, lo, hi))
            else {
                return REJECT.to_string();
            };
            let result = if matches!(rule, Rule::Min(..)) {
                theirs.min(mine)
            } else {
                theirs.max(mine)
            };
            text::encode_decimal(result)
        }
        Rule::And | Rule::Or => {
            let (Ok(theirs), Ok(mine)) = (text::decode_boolean(offer), text::decode_boolean(ours))
            else {
                return REJECT.to_string();
            };
            bool_str(if rule == Rule::And {
                theirs && mine
            } else {
                theirs || mine
            })
        }
        Rule::List => {
            // RFC 7143 §6.2.1: the responder picks the first value of the
            // offer that it supports; unknown values are ignored.
            let supported: Vec<&str> = ours.split(',').collect();
            offer
                .split(',')
                .find(|v| supported.contains(v))
                .unwrap_or(REJECT)
                .to_string()
        }
        Rule::Declarative => String::new(),
    }
}

/// Originator side of one key: checks the peer's answer to our offer
/// against the result function and returns the result (RFC 7143 §6.2: an
/// answer that violates the function is a protocol error).
pub(super) fn check_answer(rule: Rule, offered: &str, answer: &str) -> Option<String> {
    match rule {
        Rule::Min(lo, hi) | Rule::Max(lo, hi) => {
            let a = parse_ranged(answer, lo, hi)?;
            let o = parse_ranged(offered, lo, hi)?;
            let ok = if matches!(rule, Rule::Min(..)) {
                a <= o
            } else {
                a >= o
            };
            ok.then(|| text::encode_decimal(a))
        }
        Rule::And | Rule::Or => {
            let a = text::decode_boolean(answer).ok()?;
            let o = text::decode_boolean(offered).ok()?;
            // AND: an offered No must come back No; OR: an offered Yes must
            // come back Yes (RFC 7143 §6.2.2).
            let ok = if rule == Rule::And { o || !a } else { !o || a };
            ok.then(|| bool_str(a))
        }
        Rule::List => offered
            .split(',')
            .any(|v| v == answer)
            .then(|| answer.to_string()),
        Rule::Declarative => Some(answer.to_string()),
    }
}

/// Shared negotiation state of one side of one session.
#[derive(Debug, Clone)]
pub(super) struct Engine {
    pub(super) role: Role,
    pub(super) prefs: Prefs,
    pub(super) params: SessionParams,
    /// Keys settled (negotiated or declared) during login.
    pub(super) settled: HashSet<Key>,
    /// Our offers awaiting the peer's answer, with the offered value.
    pub(super) pending: HashMap<Key, String>,
    /// Whether we declared our MaxRecvDataSegmentLength already.
    pub(super) declared_mrdsl: bool,
}

impl Engine {
    pub(super) fn new(role: Role, prefs: Prefs) -> Self {
        Engine {
            role,
            prefs,
            params: SessionParams::default(),
            settled: HashSet::new(),
            pending: HashMap::new(),
            declared_mrdsl: false,
        }
    }

    pub(super) fn peer_may_send(&self, key: Key) -> bool {
        match key.senders() {
            Senders::Both => true,
            Senders::Initiator => self.role == Role::Target,
            Senders::Target => self.role == Role::Initiator,
        }
    }

    /// Applies a settled value to the parameters. Values were validated by
    /// `respond` / `check_answer`, so parse failures keep the default.
    pub(super) fn apply(&mut self, key: Key, value: &str) {
        let p = &mut self.params;
        let num = || text::decode_number(value).ok();
        let yes = value == "Yes";
        match key {
            Key::HeaderDigest => p.header_digest = DigestType::parse(value).unwrap_or_default(),
            Key::DataDigest => p.data_digest = DigestType::parse(value).unwrap_or_default(),
            Key::AuthMethod => p.auth_method = AuthMethod::parse(value).unwrap_or_default(),
            Key::MaxConnections => {
                if let Some(n) = num() {
                    p.max_connections = n as u16;
                }
            }
            Key::MaxOutstandingR2T => {
                if let Some(n) = num() {
                    p.max_outstanding_r2t = n as u16;
                }
            }
            Key::MaxBurstLength => {
                if let Some(n) = num() {
                    p.max_burst_length = n as u32;
                }
            }
            Key::FirstBurstLength => {
                if let Some(n) = num() {
                    p.first_burst_length = n as u32;
                }
            }
            Key::DefaultTime2Wait => {
                if let Some(n) = num() {
                    p.default_time2wait = n as u16;
                }
            }
            Key::DefaultTime2Retain => {
                if let Some(n) = num() {
                    p.default_time2retain = n as u16;
                }
            }
            Key::ErrorRecoveryLevel => {
                if let Some(n) = num() {
                    p.error_recovery_level = n as u8;
                }
            }
            Key::InitialR2T => p.initial_r2t = yes,
            Key::ImmediateData => p.immediate_data = yes,
            Key::DataPduInOrder => p.data_pdu_in_order = yes,
            Key::DataSequenceInOrder => p.data_sequence_in_order = yes,
            _ => {}
        }
    }

    /// Records a declarative key from the peer (RFC 7143 §6.2: no answer).
    pub(super) fn declare(&mut self, key: Key, value: &str) -> Result<(), NegotiationError> {
        let bad = || NegotiationError::BadDeclaration {
            key: key.name().to_string(),
            value: value.chars().take(80).collect(),
        };
        let p = &mut self.params;
        match key {
            Key::InitiatorName => {
                if value.is_empty() {
                    return Err(bad());
                }
                p.initiator_name = Some(value.to_string());
            }
            Key::TargetName => {
                if value.is_empty() {
                    return Err(bad());
                }
                p.target_name = Some(value.to_string());
            }
            Key::InitiatorAlias => p.initiator_alias = Some(value.to_string()),
            Key::TargetAlias => p.target_alias = Some(value.to_string()),
            Key::TargetAddress => p.target_addresses.push(value.to_string()),
            Key::TargetPortalGroupTag => {
                let n = text::decode_number(value).map_err(|_| bad())?;
                p.target_portal_group_tag = Some(u16::try_from(n).map_err(|_| bad())?);
            }
            Key::MaxRecvDataSegmentLength => {
                let n = parse_ranged(value, DATA_LEN.0, DATA_LEN.1).ok_or_else(bad)?;
                p.peer_max_recv_data_segment_length = n as u32;
            }
            Key::SessionType => {
                p.session_type = SessionType::parse(value).ok_or_else(|| {
                    NegotiationError::SessionTypeNotSupported(value.chars().take(80).collect())
                })?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Processes the peer's keys of one request/response. Returns our
    /// answers and the CHAP_* keys (handed to the caller's CHAP state).
    ///
    /// `login` is false for full-feature Text exchanges, where keys of use
    /// All may be renegotiated and LO/IO keys are refused.
    pub(super) fn process(
        &mut self,
        keys: &TextPairs,
        stage: Stage,
        ops_allowed: bool,
    ) -> Result<(TextPairs, TextPairs), NegotiationError> {
        let login = stage != Stage::FullFeature;
        let mut out = TextPairs::new();
        let mut auth = TextPairs::new();
        let mut answered_here: Vec<Key> = Vec::new();
        for (name, value) in keys.iter() {
            if name.starts_with("CHAP_") {
                if stage != Stage::Security {
                    return Err(NegotiationError::KeyNotAllowedInStage {
                        key: name.to_string(),
                        stage,
                    });
                }
                auth.push(name, value);
                continue;
            }
            let Some(key) = Key::from_name(name) else {
                // Unknown keys, including X- and X# extension keys we do
                // not implement, get NotUnderstood (RFC 7143 §6.2).
                out.push(name, NOT_UNDERSTOOD);
                continue;
            };
            // An answer to one of our offers.
            if let Some(offered) = self.pending.remove(&key) {
                self.take_answer(key, &offered, value)?;
                continue;
            }
            if !self.peer_may_send(key) {
                out.push(name, REJECT);
                continue;
            }
            match (key.usage(), login) {
                (Usage::FullFeatureOnly, true) => {
                    out.push(name, REJECT);
                    continue;
                }
                (Usage::LeadingOnly | Usage::InitializeOnly | Usage::SecurityOnly, false) => {
                    // RFC 7143 §13: LO and IO keys are login-only; after
                    // login we refuse them.
                    out.push(name, REJECT);
                    continue;
                }
                _ => {}
            }
            if login {
                if key.usage() == Usage::SecurityOnly && stage != Stage::Security {
                    return Err(NegotiationError::KeyNotAllowedInStage {
                        key: name.to_string(),
                        stage,
                    });
                }
                if stage == Stage::Security && key.is_operational() && !ops_allowed {
                    return Err(NegotiationError::KeyNotAllowedInStage {
                        key: name.to_string(),
                        stage,
                    });
                }
                // RFC 7143 §6.2: "An attempt to renegotiate/redeclare
                // parameters not specifically allowed MUST be detected"; the
                // target answers with Login reject (Initiator Error).
                if self.settled.contains(&key) && key != Key::TargetAddress {
                    return Err(NegotiationError::Renegotiated(name.to_string()));
                }
                self.settled.insert(key);
            }
            if self.params.session_type == SessionType::Discovery && key.irrelevant_in_discovery() {
                out.push(name, IRRELEVANT);
                continue;
            }
            match key {
                // RFC 7143 §13.25: obsolete marker keys. OFMarkInt and
                // IFMarkInt MUST be answered Reject; for IFMarker/OFMarker
                // "No" is allowed and is what RFC 3720 peers expect.
                Key::IfMarkInt | Key::OfMarkInt => out.push(name, REJECT),
                Key::IfMarker | Key::OfMarker => out.push(name, "No"),
                _ => match key.rule() {
                    Rule::Declarative => self.declare(key, value)?,
                    rule => {
                        let answer = respond(rule, self.prefs.value(key), value);
                        if answer != REJECT {
                            self.apply(key, &answer);
                        }
                        if key == Key::AuthMethod && answer == REJECT {
                            return Err(NegotiationError::NoCommonAuthMethod);
                        }
                        out.push(name, answer);
                        answered_here.push(key);
                    }
                },
            }
        }
        self.fix_first_burst(&mut out, &answered_here);
        Ok((out, auth))
    }

    /// RFC 7143 §13.14: FirstBurstLength is irrelevant when InitialR2T=Yes
    /// and ImmediateData=No, and must not exceed MaxBurstLength. Both
    /// depend on other keys of the same exchange, so this runs last.
    pub(super) fn fix_first_burst(&mut self, out: &mut TextPairs, answered_here: &[Key]) {
        if !answered_here.contains(&Key::FirstBurstLength) {
            self.params.first_burst_length = self
                .params
                .first_burst_length
                .min(self.params.max_burst_length);
            return;
        }
        let name = Key::FirstBurstLength.name();
        if out.get(name) == Some(REJECT) {
            return;
        }
        if self.params.initial_r2t && !self.params.immediate_data {
            out.set(name, IRRELEVANT);
            self.params.first_burst_length = 65_536.min(self.params.max_burst_length);
            return;
        }
        let clamped = self
            .params
            .first_burst_length
            .min(self.params.max_burst_length);
        self.params.first_burst_length = clamped;
        out.set(name, text::encode_decimal(u64::from(clamped)));
    }

    /// Handles the peer's answer to our offer.
    pub(super) fn take_answer(
        &mut self,
        key: Key,
        offered: &str,
        answer: &str,
    ) -> Result<(), NegotiationError> {
        self.settled.insert(key);
        match answer {
            // The default stays in force (RFC 7143 §6.2). If our value was
            // needed (we only offer what differs from the default, and for
            // AuthMethod always), refusing it fails the negotiation.
            REJECT | NOT_UNDERSTOOD => {
                if key == Key::AuthMethod {
                    return Err(NegotiationError::NoCommonAuthMethod);
                }
                if self.role == Role::Target {
                    return Err(NegotiationError::OfferRefused {
                        key: key.name().to_string(),
                        value: answer.to_string(),
                    });
                }
                Ok(())
            }
            IRRELEVANT => Ok(()),
            _ => {
                let result = check_answer(key.rule(), offered, answer).ok_or_else(|| {
                    NegotiationError::BadAnswer {
                        key: key.name().to_string(),
                        value: answer.chars().take(80).collect(),
                    }
                })?;
                if key.rule() == Rule::Declarative {
                    self.declare(key, &result)
                } else {
                    self.apply(key, &result);
                    Ok(())
                }
            }
        }
    }

    /// Records an offer we send.
    pub(super) fn offer(&mut self, out: &mut TextPairs, key: Key, value: String) {
        self.pending.insert(key, value.clone());
        out.push(key.name(), value);
    }

    /// Declares our MaxRecvDataSegmentLength once per login.
    pub(super) fn declare_mrdsl(&mut self, out: &mut TextPairs) {
        if self.declared_mrdsl {
            return;
        }
        self.declared_mrdsl = true;
        let v = self.prefs.value(Key::MaxRecvDataSegmentLength).to_string();
        if let Some(n) = parse_ranged(&v, DATA_LEN.0, DATA_LEN.1) {
            self.params.local_max_recv_data_segment_length = n as u32;
        }
        out.push(Key::MaxRecvDataSegmentLength.name(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responder_applies_the_result_functions() {
        // RFC 7143 §6.2.2: min, max, AND, OR; out of range is Reject.
        assert_eq!(respond(Rule::Min(1, 10), "4", "8"), "4");
        assert_eq!(respond(Rule::Max(0, 3600), "2", "5"), "5");
        assert_eq!(respond(Rule::Min(1, 10), "4", "11"), REJECT);
        assert_eq!(respond(Rule::And, "Yes", "No"), "No");
        assert_eq!(respond(Rule::Or, "No", "Yes"), "Yes");
        assert_eq!(respond(Rule::Or, "No", "maybe"), REJECT);
        // RFC 7143 §6.2.1: the first offered value the responder supports.
        assert_eq!(respond(Rule::List, "None,CRC32C", "CRC32C,None"), "CRC32C");
        assert_eq!(respond(Rule::List, "None", "CRC32C"), REJECT);
    }

    #[test]
    fn originator_refuses_answers_that_break_the_function() {
        assert_eq!(
            check_answer(Rule::Min(1, 10), "4", "3").as_deref(),
            Some("3")
        );
        assert_eq!(check_answer(Rule::Min(1, 10), "4", "5"), None);
        assert_eq!(check_answer(Rule::And, "No", "Yes"), None);
        assert_eq!(
            check_answer(Rule::List, "CRC32C,None", "None").as_deref(),
            Some("None")
        );
        assert_eq!(check_answer(Rule::List, "None", "CRC32C"), None);
    }
}
