//! Target side of login and full-feature text negotiation (RFC 7143
//! §6.2-§6.7).

use super::engine::*;
use super::keys::*;
use super::*;
use crate::text::TextPairs;

/// The answer to a full-feature Text request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TextReply {
    /// Answers to the negotiable keys of the request.
    pub keys: TextPairs,
    /// A SendTargets request the caller must answer by appending
    /// [`send_targets_response`] to `keys`.
    pub send_targets: Option<SendTargetsRequest>,
}

/// Target side of login and text negotiation for one connection.
#[derive(Debug, Clone)]
pub struct TargetNegotiator {
    limits: TargetLimits,
    engine: Engine,
    chap: Option<ChapTarget>,
    first_done: bool,
    authenticated: bool,
    offered_ops: bool,
}

impl TargetNegotiator {
    /// A negotiator enforcing `limits`.
    pub fn new(limits: TargetLimits) -> Self {
        let engine = Engine::new(
            Role::Target,
            Prefs::declaring(&limits.operational, &limits.auth_methods),
        );
        TargetNegotiator {
            limits,
            engine,
            chap: None,
            first_done: false,
            authenticated: false,
            offered_ops: false,
        }
    }

    /// Attaches the CHAP state. Call it before the request carrying CHAP_A
    /// arrives, e.g. after the first request once TargetName is known (to
    /// pick per-target credentials).
    pub fn set_chap(&mut self, chap: ChapTarget) {
        self.chap = Some(chap);
    }

    /// The attached CHAP state, e.g. for the authenticated name.
    pub fn chap(&self) -> Option<&ChapTarget> {
        self.chap.as_ref()
    }

    fn requires_auth(&self) -> bool {
        !self.limits.auth_methods.contains(&AuthMethod::None)
    }

    /// Processes the keys of one (reassembled) login request in stage
    /// `stage` (the request's CSG) and returns the keys of the response.
    /// On `Err` the login fails with [`NegotiationError::login_status`].
    pub fn on_login_request(
        &mut self,
        stage: Stage,
        keys: &TextPairs,
    ) -> Result<TextPairs, NegotiationError> {
        if stage == Stage::FullFeature {
            return Err(NegotiationError::KeyNotAllowedInStage {
                key: "CSG".to_string(),
                stage,
            });
        }
        let first = !self.first_done;
        if first {
            self.first_done = true;
            // SessionType decides which keys are relevant, so read it first.
            if let Some(v) = keys.get("SessionType") {
                let st = SessionType::parse(v)
                    .ok_or_else(|| NegotiationError::SessionTypeNotSupported(v.to_string()))?;
                if st == SessionType::Discovery && !self.limits.allow_discovery {
                    return Err(NegotiationError::SessionTypeNotSupported(v.to_string()));
                }
                self.engine.params.session_type = st;
            }
            // RFC 7143 §13.6 / §13.4: InitiatorName always, TargetName for
            // normal sessions, in the first login request.
            match keys.get("InitiatorName") {
                Some(v) if !v.is_empty() => {}
                _ => return Err(NegotiationError::MissingInitiatorName),
            }
            if self.engine.params.session_type == SessionType::Normal
                && !matches!(keys.get("TargetName"), Some(v) if !v.is_empty())
            {
                return Err(NegotiationError::MissingTargetName);
            }
            // Skipping the security stage is only possible without
            // authentication (RFC 7143 §6.3).
            if stage == Stage::Operational && self.requires_auth() {
                return Err(NegotiationError::AuthenticationRequired);
            }
        }

        // Operational keys may ride in the security stage only if the
        // initiator proposes no security, or immediately after the security
        // negotiation (RFC 7143 §6.3.3): allow them when CHAP is not chosen,
        // already finished, or finishes with this request's CHAP_R (a failed
        // CHAP_R fails the whole login anyway).
        let chap_selected = self.engine.params.auth_method == AuthMethod::Chap
            || keys.get("AuthMethod").is_some_and(|v| {
                respond(Rule::List, self.engine.prefs.value(Key::AuthMethod), v) == "CHAP"
            });
        let ops_allowed = !chap_selected || self.authenticated || keys.contains_key("CHAP_R");

        let (mut out, auth_keys) = self.engine.process(keys, stage, ops_allowed)?;

        // Drive CHAP with the CHAP_* keys of this request.
        if !auth_keys.is_empty() {
            if self.engine.params.auth_method != AuthMethod::Chap || self.authenticated {
                let k = auth_keys.iter().next().map(|(k, _)| k).unwrap_or("CHAP_");
                return Err(NegotiationError::KeyNotAllowedInStage {
                    key: k.to_string(),
                    stage,
                });
            }
            let chap = self
                .chap
                .as_mut()
                .ok_or(NegotiationError::ChapNotConfigured)?;
            let step = chap.step(&auth_keys)?;
            if step.is_done() {
                self.authenticated = true;
            }
            out.extend(step.keys().clone());
        }
        if self.engine.settled.contains(&Key::AuthMethod)
            && self.engine.params.auth_method == AuthMethod::None
        {
            self.authenticated = true;
        }

        if first {
            // SessionType is fixed by the first request (default Normal);
            // declaring it later would change the rules mid-login.
            self.engine.settled.insert(Key::SessionType);
            let p = &self.engine.params;
            // RFC 7143 §13.9: TargetPortalGroupTag in the response to the
            // first login request when TargetName was given.
            if p.target_name.is_some() {
                if let Some(tag) = self.limits.portal_group_tag {
                    out.push(Key::TargetPortalGroupTag.name(), tag.to_string());
                    self.engine.params.target_portal_group_tag = Some(tag);
                }
                if let Some(alias) = &self.limits.target_alias {
                    out.push(Key::TargetAlias.name(), alias.clone());
                    self.engine.params.target_alias = Some(alias.clone());
                }
            }
        }

        // Operational keys in the security stage mean the initiator may go
        // straight to full feature phase, so declare our receive limit now.
        let has_ops = keys
            .iter()
            .any(|(k, _)| Key::from_name(k).is_some_and(Key::is_operational));
        if stage == Stage::Security && has_ops {
            self.engine.declare_mrdsl(&mut out);
        }
        if stage == Stage::Operational {
            // The target always declares its receive limit (RFC 7143
            // §13.12), and offers keys whose value it needs to differ from
            // the RFC default when the initiator did not bring them up.
            self.engine.declare_mrdsl(&mut out);
            if !self.offered_ops {
                self.offered_ops = true;
                self.offer_needed(&mut out);
            }
        }
        Ok(out)
    }

    /// Offers every operational key whose target value would change the
    /// result against the RFC default, and that is still unsettled.
    fn offer_needed(&mut self, out: &mut TextPairs) {
        let discovery = self.engine.params.session_type == SessionType::Discovery;
        for key in Key::ALL {
            if self.engine.settled.contains(&key)
                || !key.is_operational()
                || key.usage() == Usage::FullFeatureOnly
                || matches!(
                    key,
                    Key::IfMarker | Key::OfMarker | Key::IfMarkInt | Key::OfMarkInt
                )
                || (discovery && key.irrelevant_in_discovery())
            {
                continue;
            }
            let rule = key.rule();
            if rule == Rule::Declarative {
                continue;
            }
            let ours = self.engine.prefs.value(key).to_string();
            let default = key.default_value();
            let needed = match rule {
                Rule::List => !ours.split(',').any(|v| v == default),
                _ => respond(rule, &ours, default) != default,
            };
            if needed {
                let value = if rule == Rule::List {
                    ours
                } else {
                    respond(rule, &ours, default)
                };
                self.engine.settled.insert(key);
                self.engine.offer(out, key, value);
            }
        }
    }

    /// Whether the target may set T=1 to leave `stage` (when the initiator
    /// asked to). `Ok(false)`: more exchanges are needed (CHAP under way,
    /// or our offers unanswered). `Err`: the login must fail, e.g. the
    /// initiator wants to leave the security stage unauthenticated.
    pub fn ready_to_leave(&self, stage: Stage) -> Result<bool, NegotiationError> {
        match stage {
            Stage::Security => {
                if self.authenticated {
                    return Ok(true);
                }
                if self.engine.params.auth_method == AuthMethod::Chap {
                    // CHAP agreed but not finished: keep the stage.
                    return Ok(false);
                }
                if self.requires_auth() {
                    return Err(NegotiationError::AuthenticationRequired);
                }
                Ok(true)
            }
            Stage::Operational => Ok(self.engine.pending.is_empty()),
            Stage::FullFeature => Ok(true),
        }
    }

    /// Answers the keys of a full-feature Text request (RFC 7143 §6.6,
    /// Appendix C). LO/IO keys get Reject, unknown keys NotUnderstood;
    /// SendTargets is handed to the caller in [`TextReply::send_targets`].
    pub fn on_text_request(&mut self, keys: &TextPairs) -> Result<TextReply, NegotiationError> {
        let mut filtered = TextPairs::new();
        let mut send_targets = None;
        let mut rejected_st = false;
        for (k, v) in keys.iter() {
            if k == Key::SendTargets.name() {
                let discovery = self.engine.params.session_type == SessionType::Discovery;
                // RFC 7143 Appendix C: "All" only in discovery sessions; an
                // empty value names the session's target (normal sessions).
                send_targets = match (v, discovery) {
                    ("All", true) => Some(SendTargetsRequest::All),
                    ("", false) => Some(SendTargetsRequest::SessionTarget),
                    ("All", false) | ("", true) => {
                        rejected_st = true;
                        None
                    }
                    (name, _) => Some(SendTargetsRequest::Target(name.to_string())),
                };
            } else {
                filtered.push(k, v);
            }
        }
        let (mut out, auth) = self.engine.process(&filtered, Stage::FullFeature, true)?;
        if let Some((k, _)) = auth.iter().next() {
            return Err(NegotiationError::KeyNotAllowedInStage {
                key: k.to_string(),
                stage: Stage::FullFeature,
            });
        }
        if rejected_st {
            out.push(Key::SendTargets.name(), REJECT);
        }
        Ok(TextReply {
            keys: out,
            send_targets,
        })
    }

    /// The negotiated parameters so far (final once the login completed).
    pub fn params(&self) -> &SessionParams {
        &self.engine.params
    }

    /// Whether the initiator authenticated, or authentication is not
    /// required and was not chosen.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
            || (!self.requires_auth() && self.engine.params.auth_method == AuthMethod::None)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    /// A target that went through a first security-stage request without
    /// authentication, ready for operational keys.
    fn target_after_security(limits: TargetLimits, session: SessionType) -> TargetNegotiator {
        let mut t = TargetNegotiator::new(limits);
        let mut first = kv(&[
            ("InitiatorName", INITIATOR),
            ("SessionType", session.as_str()),
        ]);
        if session == SessionType::Normal {
            first.push("TargetName", TARGET);
        }
        first.push("AuthMethod", "None");
        t.on_login_request(Stage::Security, &first).unwrap();
        assert!(t.ready_to_leave(Stage::Security).unwrap());
        t
    }

    type LimitsFn = fn(&mut TargetLimits);
    /// (clause, limits tweak, session type, offered keys, key, answer)
    type Row = (
        &'static str,
        LimitsFn,
        SessionType,
        &'static [(&'static str, &'static str)],
        &'static str,
        &'static str,
    );

    fn no_change(_: &mut TargetLimits) {}

    /// One row per negotiation rule: (clause, limits tweak, session type,
    /// offered keys, key to check, expected answer).
    #[test]
    fn target_answers_follow_rfc_rules() {
        use SessionType::{Discovery, Normal};
        #[rustfmt::skip]
        let rows: &[Row] = &[
            ("§13.13 MaxBurstLength: min of offer and limit", no_change, Normal,
                &[("MaxBurstLength", "1048576")], "MaxBurstLength", "262144"),
            ("§13.13 MaxBurstLength: lower offer wins", no_change, Normal,
                &[("MaxBurstLength", "65536")], "MaxBurstLength", "65536"),
            ("§13.13 MaxBurstLength: hex offer accepted", no_change, Normal,
                &[("MaxBurstLength", "0x10000")], "MaxBurstLength", "65536"),
            ("§13.13 MaxBurstLength: below 512 -> Reject", no_change, Normal,
                &[("MaxBurstLength", "511")], "MaxBurstLength", "Reject"),
            ("§13.13 MaxBurstLength: above 2^24-1 -> Reject", no_change, Normal,
                &[("MaxBurstLength", "16777216")], "MaxBurstLength", "Reject"),
            ("§6.1 numerical value not a number -> Reject", no_change, Normal,
                &[("MaxBurstLength", "lots")], "MaxBurstLength", "Reject"),
            ("§13.14 FirstBurstLength: min", no_change, Normal,
                &[("FirstBurstLength", "262144")], "FirstBurstLength", "65536"),
            ("§13.14 FirstBurstLength: irrelevant when InitialR2T=Yes and ImmediateData=No",
                no_change, Normal,
                &[("FirstBurstLength", "65536"), ("InitialR2T", "Yes"), ("ImmediateData", "No")],
                "FirstBurstLength", "Irrelevant"),
            ("§13.14 FirstBurstLength: not above MaxBurstLength", no_change, Normal,
                &[("FirstBurstLength", "65536"), ("MaxBurstLength", "4096")],
                "FirstBurstLength", "4096"),
            ("§13.17 MaxOutstandingR2T: min", |l| l.operational.max_outstanding_r2t = 4, Normal,
                &[("MaxOutstandingR2T", "16")], "MaxOutstandingR2T", "4"),
            ("§13.17 MaxOutstandingR2T: 0 out of range -> Reject", no_change, Normal,
                &[("MaxOutstandingR2T", "0")], "MaxOutstandingR2T", "Reject"),
            ("§13.2 MaxConnections: min with our 1", no_change, Normal,
                &[("MaxConnections", "8")], "MaxConnections", "1"),
            ("§13.2 MaxConnections: 0 out of range -> Reject", no_change, Normal,
                &[("MaxConnections", "0")], "MaxConnections", "Reject"),
            ("§13.16 DefaultTime2Retain: min", no_change, Normal,
                &[("DefaultTime2Retain", "60")], "DefaultTime2Retain", "20"),
            ("§13.16 DefaultTime2Retain: above 3600 -> Reject", no_change, Normal,
                &[("DefaultTime2Retain", "3601")], "DefaultTime2Retain", "Reject"),
            ("§13.15 DefaultTime2Wait: max, ours wins", no_change, Normal,
                &[("DefaultTime2Wait", "0")], "DefaultTime2Wait", "2"),
            ("§13.15 DefaultTime2Wait: max, offer wins", no_change, Normal,
                &[("DefaultTime2Wait", "10")], "DefaultTime2Wait", "10"),
            ("§13.20 ErrorRecoveryLevel: min with our 0", no_change, Normal,
                &[("ErrorRecoveryLevel", "2")], "ErrorRecoveryLevel", "0"),
            ("§13.20 ErrorRecoveryLevel: 3 out of range -> Reject", no_change, Normal,
                &[("ErrorRecoveryLevel", "3")], "ErrorRecoveryLevel", "Reject"),
            ("§13.10 InitialR2T: OR, our Yes wins", no_change, Normal,
                &[("InitialR2T", "No")], "InitialR2T", "Yes"),
            ("§13.10 InitialR2T: OR, both No", |l| l.operational.initial_r2t = false, Normal,
                &[("InitialR2T", "No")], "InitialR2T", "No"),
            ("§13.10 InitialR2T: OR, offer Yes", |l| l.operational.initial_r2t = false, Normal,
                &[("InitialR2T", "Yes")], "InitialR2T", "Yes"),
            ("§13.11 ImmediateData: AND, both Yes", no_change, Normal,
                &[("ImmediateData", "Yes")], "ImmediateData", "Yes"),
            ("§13.11 ImmediateData: AND, offer No", no_change, Normal,
                &[("ImmediateData", "No")], "ImmediateData", "No"),
            ("§13.11 ImmediateData: AND, our No", |l| l.operational.immediate_data = false, Normal,
                &[("ImmediateData", "Yes")], "ImmediateData", "No"),
            ("§6.1 boolean not Yes/No -> Reject", no_change, Normal,
                &[("ImmediateData", "yes")], "ImmediateData", "Reject"),
            ("§13.19 DataPDUInOrder: OR, our Yes wins", no_change, Normal,
                &[("DataPDUInOrder", "No")], "DataPDUInOrder", "Yes"),
            ("§13.19 DataPDUInOrder: OR, both No", |l| l.operational.data_pdu_in_order = false, Normal,
                &[("DataPDUInOrder", "No")], "DataPDUInOrder", "No"),
            ("§13.20 DataSequenceInOrder: OR, our Yes wins", no_change, Normal,
                &[("DataSequenceInOrder", "No")], "DataSequenceInOrder", "Yes"),
            ("§13.20 DataSequenceInOrder: OR, both No",
                |l| l.operational.data_sequence_in_order = false, Normal,
                &[("DataSequenceInOrder", "No")], "DataSequenceInOrder", "No"),
            ("§13.1 HeaderDigest: first offered value we support", no_change, Normal,
                &[("HeaderDigest", "CRC32C,None")], "HeaderDigest", "CRC32C"),
            ("§13.1 HeaderDigest: offer order decides", no_change, Normal,
                &[("HeaderDigest", "None,CRC32C")], "HeaderDigest", "None"),
            ("§6.2.1 list: unknown values are skipped", no_change, Normal,
                &[("HeaderDigest", "SHA1,CRC32C")], "HeaderDigest", "CRC32C"),
            ("§6.2.1 list: nothing acceptable -> Reject", no_change, Normal,
                &[("HeaderDigest", "SHA1")], "HeaderDigest", "Reject"),
            ("§13.1 DataDigest: only what we support",
                |l| l.operational.data_digests = vec![DigestType::None], Normal,
                &[("DataDigest", "CRC32C,None")], "DataDigest", "None"),
            ("§6.2 unknown key -> NotUnderstood", no_change, Normal,
                &[("FooBar", "1")], "FooBar", "NotUnderstood"),
            ("§13.5.3 X- vendor key -> NotUnderstood", no_change, Normal,
                &[("X-com.example.fast", "Yes")], "X-com.example.fast", "NotUnderstood"),
            ("§13.5.4 X# key we do not implement -> NotUnderstood", no_change, Normal,
                &[("X#NodeArchitecture", "other")], "X#NodeArchitecture", "NotUnderstood"),
            ("§13.25 OFMarkInt (obsolete) -> Reject", no_change, Normal,
                &[("OFMarkInt", "1~65535")], "OFMarkInt", "Reject"),
            ("§13.25 IFMarker (obsolete) -> No", no_change, Normal,
                &[("IFMarker", "No")], "IFMarker", "No"),
            ("§13.22 TaskReporting: RFC3720 only", no_change, Normal,
                &[("TaskReporting", "FastAbort,RFC3720")], "TaskReporting", "RFC3720"),
            ("RFC 7144 §13.24 iSCSIProtocolLevel: min with our 1", no_change, Normal,
                &[("iSCSIProtocolLevel", "2")], "iSCSIProtocolLevel", "1"),
            ("§13 MaxBurstLength irrelevant in discovery", no_change, Discovery,
                &[("MaxBurstLength", "65536")], "MaxBurstLength", "Irrelevant"),
            ("§13 ImmediateData irrelevant in discovery", no_change, Discovery,
                &[("ImmediateData", "Yes")], "ImmediateData", "Irrelevant"),
            ("§13 MaxConnections irrelevant in discovery", no_change, Discovery,
                &[("MaxConnections", "1")], "MaxConnections", "Irrelevant"),
            ("§13.1 HeaderDigest negotiated in discovery", no_change, Discovery,
                &[("HeaderDigest", "CRC32C")], "HeaderDigest", "CRC32C"),
            ("§13.7 TargetAlias has target senders only -> Reject", no_change, Normal,
                &[("TargetAlias", "x")], "TargetAlias", "Reject"),
            ("§13.3 SendTargets is FFPO -> Reject in login", no_change, Normal,
                &[("SendTargets", "All")], "SendTargets", "Reject"),
        ];
        for &(clause, tweak, session, offer, key, want) in rows {
            let mut limits = TargetLimits::default();
            tweak(&mut limits);
            let mut t = target_after_security(limits, session);
            let resp = t
                .on_login_request(Stage::Operational, &kv(offer))
                .unwrap_or_else(|e| panic!("{clause}: {e}"));
            assert_eq!(resp.get(key), Some(want), "{clause}: {resp:?}");
        }
    }

    /// One row per login failure: (clause, requests as (stage, keys),
    /// login status of the failure).
    #[test]
    fn target_login_failures_map_to_status() {
        let chap_only = || TargetLimits {
            auth_methods: vec![AuthMethod::Chap],
            ..TargetLimits::default()
        };
        let base = [("InitiatorName", INITIATOR), ("TargetName", TARGET)];
        type Row<'a> = (
            &'a str,
            fn() -> TargetLimits,
            Vec<(Stage, Vec<(&'a str, &'a str)>)>,
            (u8, u8),
        );
        let rows: Vec<Row> = vec![
            (
                "§13.6 first request without InitiatorName -> 02/07",
                TargetLimits::default,
                vec![(Stage::Security, vec![("TargetName", TARGET)])],
                (2, 7),
            ),
            (
                "§13.4 normal session without TargetName -> 02/07",
                TargetLimits::default,
                vec![(Stage::Security, vec![("InitiatorName", INITIATOR)])],
                (2, 7),
            ),
            (
                "§13.21 unknown SessionType -> 02/09",
                TargetLimits::default,
                vec![(
                    Stage::Security,
                    vec![("InitiatorName", INITIATOR), ("SessionType", "Bulk")],
                )],
                (2, 9),
            ),
            (
                "§11.13.5 discovery not offered -> 02/09",
                || TargetLimits {
                    allow_discovery: false,
                    ..TargetLimits::default()
                },
                vec![(
                    Stage::Security,
                    vec![("InitiatorName", INITIATOR), ("SessionType", "Discovery")],
                )],
                (2, 9),
            ),
            (
                "§6.2 key renegotiated in a later request -> 02/00",
                TargetLimits::default,
                vec![
                    (
                        Stage::Operational,
                        [&base[..], &[("MaxBurstLength", "65536")]].concat(),
                    ),
                    (Stage::Operational, vec![("MaxBurstLength", "4096")]),
                ],
                (2, 0),
            ),
            (
                "§6.2 declaration repeated in a later request -> 02/00",
                TargetLimits::default,
                vec![
                    (Stage::Security, base.to_vec()),
                    (Stage::Operational, vec![("InitiatorName", INITIATOR)]),
                ],
                (2, 0),
            ),
            (
                "§13.21 SessionType only in the first request -> 02/00",
                TargetLimits::default,
                vec![
                    (Stage::Security, base.to_vec()),
                    (Stage::Operational, vec![("SessionType", "Discovery")]),
                ],
                (2, 0),
            ),
            (
                "§13.12 MaxRecvDataSegmentLength out of range -> 02/00",
                TargetLimits::default,
                vec![(
                    Stage::Operational,
                    [&base[..], &[("MaxRecvDataSegmentLength", "100")]].concat(),
                )],
                (2, 0),
            ),
            (
                "§12 AuthMethod outside the security stage -> 02/00",
                TargetLimits::default,
                vec![(
                    Stage::Operational,
                    [&base[..], &[("AuthMethod", "None")]].concat(),
                )],
                (2, 0),
            ),
            (
                "§12 no acceptable AuthMethod -> 02/01",
                chap_only,
                vec![(
                    Stage::Security,
                    [&base[..], &[("AuthMethod", "None")]].concat(),
                )],
                (2, 1),
            ),
            (
                "§6.3 skipping security when it is required -> 02/01",
                chap_only,
                vec![(Stage::Operational, base.to_vec())],
                (2, 1),
            ),
            (
                "§6.3.3 operational keys while CHAP is under way -> 02/00",
                chap_only,
                vec![
                    (
                        Stage::Security,
                        [&base[..], &[("AuthMethod", "CHAP")]].concat(),
                    ),
                    (
                        Stage::Security,
                        vec![("CHAP_A", "5"), ("HeaderDigest", "None")],
                    ),
                ],
                (2, 0),
            ),
            (
                "§12.1.3 CHAP keys without AuthMethod=CHAP -> 02/00",
                TargetLimits::default,
                vec![
                    (
                        Stage::Security,
                        [&base[..], &[("AuthMethod", "None")]].concat(),
                    ),
                    (Stage::Security, vec![("CHAP_A", "5")]),
                ],
                (2, 0),
            ),
            (
                "§12.1.3 CHAP chosen but not configured -> 03/00",
                chap_only,
                vec![
                    (
                        Stage::Security,
                        [&base[..], &[("AuthMethod", "CHAP")]].concat(),
                    ),
                    (Stage::Security, vec![("CHAP_A", "5")]),
                ],
                (3, 0),
            ),
            (
                "§11.12 CSG=FullFeature in a login request -> 02/00",
                TargetLimits::default,
                vec![(Stage::FullFeature, base.to_vec())],
                (2, 0),
            ),
        ];
        for (clause, limits, requests, status) in rows {
            let mut t = TargetNegotiator::new(limits());
            let last = requests.len() - 1;
            for (i, (stage, keys)) in requests.into_iter().enumerate() {
                let got = t.on_login_request(stage, &kv(&keys));
                if i < last {
                    got.unwrap_or_else(|e| panic!("{clause}: early failure {e}"));
                } else {
                    let err = got.expect_err(clause);
                    assert_eq!(err.login_status(), status, "{clause}: {err}");
                }
            }
        }
    }

    #[test]
    fn leaving_security_unauthenticated_fails_when_auth_required() {
        let mut t = TargetNegotiator::new(TargetLimits {
            auth_methods: vec![AuthMethod::Chap],
            ..TargetLimits::default()
        });
        // The initiator never offers AuthMethod and asks to transit.
        t.on_login_request(
            Stage::Security,
            &kv(&[("InitiatorName", INITIATOR), ("TargetName", TARGET)]),
        )
        .unwrap();
        let err = t.ready_to_leave(Stage::Security).unwrap_err();
        assert_eq!(err, NegotiationError::AuthenticationRequired);
        assert_eq!(err.login_status(), (2, 1));
        assert!(!t.is_authenticated());
    }

    #[test]
    fn duplicate_key_in_one_request_is_an_initiator_error() {
        let err = TextPairs::parse(b"MaxBurstLength=512\0MaxBurstLength=512\0").unwrap_err();
        assert_eq!(NegotiationError::from(err).login_status(), (2, 0));
    }

    #[test]
    fn first_response_declares_tpgt_and_alias_and_op_stage_declares_mrdsl() {
        let mut t = TargetNegotiator::new(TargetLimits {
            target_alias: Some("busrig disk".into()),
            portal_group_tag: Some(7),
            ..TargetLimits::default()
        });
        let resp = t
            .on_login_request(
                Stage::Security,
                &kv(&[
                    ("InitiatorName", INITIATOR),
                    ("InitiatorAlias", "node1"),
                    ("TargetName", TARGET),
                    ("SessionType", "Normal"),
                    ("AuthMethod", "None"),
                ]),
            )
            .unwrap();
        assert_eq!(
            resp.to_bytes(),
            b"AuthMethod=None\0TargetPortalGroupTag=7\0TargetAlias=busrig disk\0"
        );
        let p = t.params();
        assert_eq!(p.initiator_name.as_deref(), Some(INITIATOR));
        assert_eq!(p.initiator_alias.as_deref(), Some("node1"));
        assert_eq!(p.target_name.as_deref(), Some(TARGET));
        assert_eq!(p.target_portal_group_tag, Some(7));
        // An empty operational request still gets our declaration, once.
        let resp = t
            .on_login_request(Stage::Operational, &TextPairs::new())
            .unwrap();
        assert_eq!(resp.to_bytes(), b"MaxRecvDataSegmentLength=262144\0");
        let resp = t
            .on_login_request(Stage::Operational, &TextPairs::new())
            .unwrap();
        assert!(resp.is_empty());
        assert_eq!(t.params().local_max_recv_data_segment_length, 262_144);
        assert_eq!(t.params().peer_max_recv_data_segment_length, 8192);
    }

    #[test]
    fn discovery_first_response_has_no_tpgt() {
        let mut t = TargetNegotiator::new(TargetLimits::default());
        let resp = t
            .on_login_request(
                Stage::Security,
                &kv(&[
                    ("InitiatorName", INITIATOR),
                    ("SessionType", "Discovery"),
                    ("AuthMethod", "None"),
                ]),
            )
            .unwrap();
        assert_eq!(resp.to_bytes(), b"AuthMethod=None\0");
        assert_eq!(t.params().session_type, SessionType::Discovery);
    }

    /// An open-iscsi style operational request and the target's byte-exact
    /// answer with default limits.
    #[test]
    fn open_iscsi_style_operational_exchange_byte_exact() {
        let mut t = target_after_security(TargetLimits::default(), SessionType::Normal);
        let req = TextPairs::parse(
            b"HeaderDigest=None\0DataDigest=None\0DefaultTime2Wait=2\0DefaultTime2Retain=0\0\
IFMarker=No\0OFMarker=No\0ErrorRecoveryLevel=0\0InitialR2T=No\0ImmediateData=Yes\0\
MaxBurstLength=16776192\0FirstBurstLength=262144\0MaxOutstandingR2T=1\0MaxConnections=1\0\
DataPDUInOrder=Yes\0DataSequenceInOrder=Yes\0MaxRecvDataSegmentLength=262144\0",
        )
        .unwrap();
        let resp = t.on_login_request(Stage::Operational, &req).unwrap();
        assert_eq!(
            String::from_utf8(resp.to_bytes()).unwrap(),
            "HeaderDigest=None\0DataDigest=None\0DefaultTime2Wait=2\0DefaultTime2Retain=0\0\
IFMarker=No\0OFMarker=No\0ErrorRecoveryLevel=0\0InitialR2T=Yes\0ImmediateData=Yes\0\
MaxBurstLength=262144\0FirstBurstLength=65536\0MaxOutstandingR2T=1\0MaxConnections=1\0\
DataPDUInOrder=Yes\0DataSequenceInOrder=Yes\0MaxRecvDataSegmentLength=262144\0"
        );
        assert!(t.ready_to_leave(Stage::Operational).unwrap());
        let p = t.params();
        assert_eq!(p.peer_max_recv_data_segment_length, 262_144);
        assert_eq!(p.default_time2retain, 0);
        assert!(p.initial_r2t && p.immediate_data);
        assert_eq!(
            (p.max_burst_length, p.first_burst_length),
            (262_144, 65_536)
        );
    }

    #[test]
    fn target_offers_what_it_needs_and_waits_for_answers() {
        let mut limits = TargetLimits::default();
        limits.operational.immediate_data = false;
        limits.operational.max_burst_length = 65_536;
        limits.operational.header_digests = vec![DigestType::Crc32c];
        let mut t = target_after_security(limits, SessionType::Normal);
        let resp = t
            .on_login_request(Stage::Operational, &kv(&[("DataDigest", "None")]))
            .unwrap();
        assert_eq!(
            resp.to_bytes(),
            b"DataDigest=None\0MaxRecvDataSegmentLength=262144\0HeaderDigest=CRC32C\0\
ImmediateData=No\0MaxBurstLength=65536\0"
        );
        assert!(!t.ready_to_leave(Stage::Operational).unwrap());
        let resp = t
            .on_login_request(
                Stage::Operational,
                &kv(&[
                    ("HeaderDigest", "CRC32C"),
                    ("ImmediateData", "No"),
                    ("MaxBurstLength", "8192"),
                ]),
            )
            .unwrap();
        assert!(resp.is_empty());
        assert!(t.ready_to_leave(Stage::Operational).unwrap());
        let p = t.params();
        assert_eq!(p.header_digest, DigestType::Crc32c);
        assert!(!p.immediate_data);
        assert_eq!(p.max_burst_length, 8192);
        // FirstBurstLength never exceeds MaxBurstLength (§13.14).
        assert_eq!(p.first_burst_length, 8192);
    }

    #[test]
    fn target_offer_answered_against_the_rules_fails() {
        let mut limits = TargetLimits::default();
        limits.operational.immediate_data = false;
        limits.operational.max_burst_length = 65_536;
        // §6.2.2 AND: an offered No must come back No.
        let mut t = target_after_security(limits.clone(), SessionType::Normal);
        t.on_login_request(Stage::Operational, &TextPairs::new())
            .unwrap();
        let err = t
            .on_login_request(Stage::Operational, &kv(&[("ImmediateData", "Yes")]))
            .unwrap_err();
        assert!(matches!(err, NegotiationError::BadAnswer { .. }), "{err}");
        assert_eq!(err.login_status(), (2, 0));
        // Min: the answer may not exceed the offer.
        let mut t = target_after_security(limits.clone(), SessionType::Normal);
        t.on_login_request(Stage::Operational, &TextPairs::new())
            .unwrap();
        let err = t
            .on_login_request(Stage::Operational, &kv(&[("MaxBurstLength", "131072")]))
            .unwrap_err();
        assert!(matches!(err, NegotiationError::BadAnswer { .. }), "{err}");
        // A refused offer we need fails the login.
        let mut t = target_after_security(limits, SessionType::Normal);
        t.on_login_request(Stage::Operational, &TextPairs::new())
            .unwrap();
        let err = t
            .on_login_request(Stage::Operational, &kv(&[("ImmediateData", "Reject")]))
            .unwrap_err();
        assert!(
            matches!(err, NegotiationError::OfferRefused { .. }),
            "{err}"
        );
    }

    #[test]
    fn operational_keys_in_security_stage_without_auth() {
        // RFC 7143 §6.3.3: allowed from the first request when no security
        // is proposed; the target then declares its limit at once.
        let mut t = TargetNegotiator::new(TargetLimits::default());
        let resp = t
            .on_login_request(
                Stage::Security,
                &kv(&[
                    ("InitiatorName", INITIATOR),
                    ("TargetName", TARGET),
                    ("AuthMethod", "None"),
                    ("HeaderDigest", "CRC32C"),
                ]),
            )
            .unwrap();
        assert_eq!(resp.get("HeaderDigest"), Some("CRC32C"));
        assert_eq!(resp.get("MaxRecvDataSegmentLength"), Some("262144"));
    }

    #[test]
    fn full_feature_text_negotiation() {
        let mut t = target_after_security(TargetLimits::default(), SessionType::Normal);
        t.on_login_request(
            Stage::Operational,
            &kv(&[("MaxRecvDataSegmentLength", "8192")]),
        )
        .unwrap();
        // ALL keys may be declared again after login; LO/IO keys may not.
        let reply = t
            .on_text_request(&kv(&[
                ("MaxRecvDataSegmentLength", "65536"),
                ("MaxBurstLength", "4096"),
                ("HeaderDigest", "CRC32C"),
                ("X-com.example.q", "1"),
                ("SendTargets", ""),
            ]))
            .unwrap();
        assert_eq!(
            reply.keys.to_bytes(),
            b"MaxBurstLength=Reject\0HeaderDigest=Reject\0X-com.example.q=NotUnderstood\0"
        );
        assert_eq!(reply.send_targets, Some(SendTargetsRequest::SessionTarget));
        assert_eq!(t.params().peer_max_recv_data_segment_length, 65_536);
        assert_eq!(t.params().max_burst_length, 262_144);
        // "All" belongs to discovery sessions (Appendix C).
        let reply = t.on_text_request(&kv(&[("SendTargets", "All")])).unwrap();
        assert_eq!(reply.keys.get("SendTargets"), Some("Reject"));
        assert_eq!(reply.send_targets, None);
        let err = t.on_text_request(&kv(&[("CHAP_A", "5")])).unwrap_err();
        assert!(matches!(err, NegotiationError::KeyNotAllowedInStage { .. }));
    }
}
