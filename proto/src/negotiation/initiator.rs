//! Initiator side of login negotiation (RFC 7143 §6.2-§6.7).

use std::collections::HashSet;

use super::engine::*;
use super::keys::*;
use super::*;
use crate::text::TextPairs;

/// Initiator side of login negotiation.
#[derive(Debug, Clone)]
pub struct InitiatorNegotiator {
    config: InitiatorConfig,
    engine: Engine,
    chap: Option<ChapInitiator>,
    offered: HashSet<Stage>,
    auth_done: bool,
}

impl InitiatorNegotiator {
    /// A negotiator offering `config`.
    pub fn new(config: InitiatorConfig) -> Self {
        let mut engine = Engine::new(
            Role::Initiator,
            Prefs::declaring(&config.operational, &config.auth_methods),
        );
        engine.params.session_type = config.session_type;
        engine.params.initiator_name = Some(config.initiator_name.clone());
        engine.params.initiator_alias = config.initiator_alias.clone();
        engine.params.target_name = config.target_name.clone();
        InitiatorNegotiator {
            config,
            engine,
            chap: None,
            offered: HashSet::new(),
            auth_done: false,
        }
    }

    /// Attaches the CHAP state (needed when `auth_methods` offers CHAP).
    pub fn set_chap(&mut self, chap: ChapInitiator) {
        self.chap = Some(chap);
    }

    fn only_none_offered(&self) -> bool {
        self.config
            .auth_methods
            .iter()
            .all(|m| *m == AuthMethod::None)
    }

    /// The keys to offer when entering `stage` (once per stage; later calls
    /// return nothing). Security: names, SessionType and AuthMethod.
    /// Operational: every operational key (for discovery sessions only the
    /// digests and MaxRecvDataSegmentLength). Merge the result with what
    /// [`InitiatorNegotiator::on_login_response`] returned.
    pub fn offer(&mut self, stage: Stage) -> TextPairs {
        let mut out = TextPairs::new();
        if stage == Stage::FullFeature || !self.offered.insert(stage) {
            return out;
        }
        let first = self.offered.len() == 1;
        if first {
            out.push("InitiatorName", self.config.initiator_name.clone());
            if let Some(alias) = &self.config.initiator_alias {
                out.push("InitiatorAlias", alias.clone());
            }
            if let Some(t) = &self.config.target_name {
                if self.config.session_type == SessionType::Normal {
                    out.push("TargetName", t.clone());
                }
            }
            out.push("SessionType", self.config.session_type.as_str());
            for k in [
                Key::InitiatorName,
                Key::InitiatorAlias,
                Key::TargetName,
                Key::SessionType,
            ] {
                self.engine.settled.insert(k);
            }
        }
        let e = &mut self.engine;
        match stage {
            Stage::Security => {
                let v = e.prefs.value(Key::AuthMethod).to_string();
                e.settled.insert(Key::AuthMethod);
                e.offer(&mut out, Key::AuthMethod, v);
            }
            Stage::Operational => {
                let discovery = e.params.session_type == SessionType::Discovery;
                let keys: &[Key] = if discovery {
                    &[Key::HeaderDigest, Key::DataDigest]
                } else {
                    &[
                        Key::HeaderDigest,
                        Key::DataDigest,
                        Key::ErrorRecoveryLevel,
                        Key::InitialR2T,
                        Key::ImmediateData,
                        Key::MaxBurstLength,
                        Key::FirstBurstLength,
                        Key::DefaultTime2Wait,
                        Key::DefaultTime2Retain,
                        Key::MaxOutstandingR2T,
                        Key::DataPduInOrder,
                        Key::DataSequenceInOrder,
                        Key::MaxConnections,
                    ]
                };
                for &k in keys {
                    if e.settled.contains(&k) {
                        continue;
                    }
                    let v = e.prefs.value(k).to_string();
                    e.settled.insert(k);
                    e.offer(&mut out, k, v);
                }
                e.declare_mrdsl(&mut out);
            }
            Stage::FullFeature => {}
        }
        out
    }

    /// Processes the keys of one (reassembled) login response in `stage`
    /// (the response's CSG): checks answers to our offers, answers the
    /// target's own offers, runs CHAP. Returns the keys for the next
    /// request (possibly empty). On `Err` drop the connection.
    pub fn on_login_response(
        &mut self,
        stage: Stage,
        keys: &TextPairs,
    ) -> Result<TextPairs, NegotiationError> {
        let (mut out, auth_keys) = self.engine.process(keys, stage, true)?;
        if self.engine.params.auth_method == AuthMethod::None
            && !self.engine.pending.contains_key(&Key::AuthMethod)
        {
            self.auth_done = true;
        }
        if self.engine.params.auth_method == AuthMethod::Chap && !self.auth_done {
            let chap = self
                .chap
                .as_mut()
                .ok_or(NegotiationError::ChapNotConfigured)?;
            if auth_keys.is_empty() {
                // AuthMethod=CHAP was just agreed: start with CHAP_A.
                if !chap.has_started() {
                    out.extend(chap.start());
                }
            } else {
                let step = chap.step(&auth_keys)?;
                if step.is_done() {
                    self.auth_done = true;
                }
                out.extend(step.keys().clone());
            }
        } else if let Some((k, _)) = auth_keys.iter().next() {
            return Err(NegotiationError::KeyNotAllowedInStage {
                key: k.to_string(),
                stage,
            });
        }
        Ok(out)
    }

    /// Whether the initiator may set T=1 to leave `stage`. For the
    /// security stage: authentication finished on our side (or only the
    /// target's mutual CHAP answer is awaited), or only AuthMethod=None was
    /// offered (the answer cannot change anything).
    /// For the operational stage: nothing the target offered is left to
    /// answer (we answer at once, so this is true unless CHAP state is
    /// inconsistent).
    pub fn ready_to_leave(&self, stage: Stage) -> Result<bool, NegotiationError> {
        match stage {
            // With mutual CHAP the initiator may ask to transit together
            // with its challenge: the target's answer arrives in the
            // response that transits, and is verified before accepting it.
            Stage::Security => Ok(self.auth_done
                || self
                    .chap
                    .as_ref()
                    .is_some_and(ChapInitiator::awaits_mutual_response)
                || (self.only_none_offered()
                    && self.engine.params.auth_method == AuthMethod::None)),
            Stage::Operational | Stage::FullFeature => Ok(true),
        }
    }

    /// The attached CHAP state, e.g. to see whether the target's mutual
    /// response was verified ([`ChapInitiator::is_done`]).
    pub fn chap(&self) -> Option<&ChapInitiator> {
        self.chap.as_ref()
    }

    /// Whether our part of authentication is complete: AuthMethod=None
    /// agreed, our CHAP response sent (one-way), or the target's mutual
    /// response verified. Whether the target accepted our response shows
    /// only in its login status.
    pub fn is_authenticated(&self) -> bool {
        self.auth_done
    }

    /// Whether every offer we made has been answered.
    pub fn all_answered(&self) -> bool {
        self.engine.pending.is_empty()
    }

    /// The negotiated parameters so far (final once the login completed).
    pub fn params(&self) -> &SessionParams {
        &self.engine.params
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn initiator_checks_answers_against_result_functions() {
        #[rustfmt::skip]
        let rows: &[(&str, &str, &str)] = &[
            ("§6.2 min: answer above our offer", "MaxBurstLength", "524288"),
            ("§6.2 max: answer below our offer", "DefaultTime2Wait", "1"),
            ("§6.2.2 OR: our Yes answered No", "DataPDUInOrder", "No"),
            ("§6.2.1 list: value we did not offer", "HeaderDigest", "CRC32C"),
            ("§13.20 ErrorRecoveryLevel above offer", "ErrorRecoveryLevel", "1"),
        ];
        for &(clause, key, answer) in rows {
            let mut ini = InitiatorNegotiator::new(InitiatorConfig::new(INITIATOR));
            ini.offer(Stage::Operational);
            let err = ini
                .on_login_response(Stage::Operational, &kv(&[(key, answer)]))
                .unwrap_err();
            assert!(
                matches!(err, NegotiationError::BadAnswer { .. }),
                "{clause}: {err}"
            );
        }
        // AND: our No answered Yes.
        let mut config = InitiatorConfig::new(INITIATOR);
        config.operational.immediate_data = false;
        let mut ini = InitiatorNegotiator::new(config);
        ini.offer(Stage::Operational);
        assert!(ini
            .on_login_response(Stage::Operational, &kv(&[("ImmediateData", "Yes")]))
            .is_err());
    }

    #[test]
    fn initiator_answers_keys_the_target_offers_first() {
        let mut ini = InitiatorNegotiator::new(InitiatorConfig::new(INITIATOR));
        ini.offer(Stage::Security);
        let next = ini
            .on_login_response(
                Stage::Security,
                &kv(&[("AuthMethod", "None"), ("TargetPortalGroupTag", "3")]),
            )
            .unwrap();
        assert!(next.is_empty());
        assert_eq!(ini.params().target_portal_group_tag, Some(3));
        let next = ini
            .on_login_response(
                Stage::Operational,
                &kv(&[
                    ("MaxBurstLength", "65536"),
                    ("ImmediateData", "No"),
                    ("MaxRecvDataSegmentLength", "16384"),
                    ("X-vendor.key", "1"),
                ]),
            )
            .unwrap();
        assert_eq!(
            next.to_bytes(),
            b"MaxBurstLength=65536\0ImmediateData=No\0X-vendor.key=NotUnderstood\0"
        );
        let p = ini.params();
        assert_eq!(p.max_burst_length, 65_536);
        assert!(!p.immediate_data);
        assert_eq!(p.peer_max_recv_data_segment_length, 16_384);
        // Keys already negotiated are not offered again.
        let offer = ini.offer(Stage::Operational);
        assert!(!offer.contains_key("MaxBurstLength") && !offer.contains_key("ImmediateData"));
        assert!(offer.contains_key("FirstBurstLength"));
    }

    #[test]
    fn initiator_keeps_defaults_after_reject_or_irrelevant() {
        let mut ini = InitiatorNegotiator::new(InitiatorConfig::new(INITIATOR));
        ini.offer(Stage::Operational);
        ini.on_login_response(
            Stage::Operational,
            &kv(&[
                ("MaxConnections", "Reject"),
                ("FirstBurstLength", "Irrelevant"),
            ]),
        )
        .unwrap();
        assert_eq!(ini.params().max_connections, 1);
        assert_eq!(ini.params().first_burst_length, 65_536);
        // The same key again from the target is a renegotiation (§6.2).
        let err = ini
            .on_login_response(Stage::Operational, &kv(&[("MaxConnections", "1")]))
            .unwrap_err();
        assert_eq!(err, NegotiationError::Renegotiated("MaxConnections".into()));
    }
}
