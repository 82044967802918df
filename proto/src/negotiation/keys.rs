//! The key table (RFC 7143 §13): who sends each key, when it may be
//! used, its result function and its RFC default.

use super::{MAX_DATA_LENGTH, MIN_DATA_LENGTH};

/// Who may send a key (RFC 7143 §13 "Senders").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Senders {
    Initiator,
    Target,
    Both,
}

/// When a key may be used (RFC 7143 §13 "Use").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Usage {
    /// Leading connection login only.
    LeadingOnly,
    /// Any login, never in full feature phase.
    InitializeOnly,
    /// Login and full feature phase.
    All,
    /// Full feature phase only.
    FullFeatureOnly,
    /// Security stage only (AuthMethod).
    SecurityOnly,
}

/// How a key's result is computed (RFC 7143 §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rule {
    Min(u64, u64),
    Max(u64, u64),
    And,
    Or,
    List,
    Declarative,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Key {
    HeaderDigest,
    DataDigest,
    MaxConnections,
    SendTargets,
    TargetName,
    InitiatorName,
    TargetAlias,
    InitiatorAlias,
    TargetAddress,
    TargetPortalGroupTag,
    InitialR2T,
    ImmediateData,
    MaxRecvDataSegmentLength,
    MaxBurstLength,
    FirstBurstLength,
    DefaultTime2Wait,
    DefaultTime2Retain,
    MaxOutstandingR2T,
    DataPduInOrder,
    DataSequenceInOrder,
    ErrorRecoveryLevel,
    SessionType,
    AuthMethod,
    TaskReporting,
    ProtocolLevel,
    IfMarker,
    OfMarker,
    IfMarkInt,
    OfMarkInt,
}

pub(super) const DATA_LEN: (u64, u64) = (MIN_DATA_LENGTH as u64, MAX_DATA_LENGTH as u64);

impl Key {
    pub(super) const ALL: [Key; 29] = [
        Key::HeaderDigest,
        Key::DataDigest,
        Key::MaxConnections,
        Key::SendTargets,
        Key::TargetName,
        Key::InitiatorName,
        Key::TargetAlias,
        Key::InitiatorAlias,
        Key::TargetAddress,
        Key::TargetPortalGroupTag,
        Key::InitialR2T,
        Key::ImmediateData,
        Key::MaxRecvDataSegmentLength,
        Key::MaxBurstLength,
        Key::FirstBurstLength,
        Key::DefaultTime2Wait,
        Key::DefaultTime2Retain,
        Key::MaxOutstandingR2T,
        Key::DataPduInOrder,
        Key::DataSequenceInOrder,
        Key::ErrorRecoveryLevel,
        Key::SessionType,
        Key::AuthMethod,
        Key::TaskReporting,
        Key::ProtocolLevel,
        Key::IfMarker,
        Key::OfMarker,
        Key::IfMarkInt,
        Key::OfMarkInt,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Key::HeaderDigest => "HeaderDigest",
            Key::DataDigest => "DataDigest",
            Key::MaxConnections => "MaxConnections",
            Key::SendTargets => "SendTargets",
            Key::TargetName => "TargetName",
            Key::InitiatorName => "InitiatorName",
            Key::TargetAlias => "TargetAlias",
            Key::InitiatorAlias => "InitiatorAlias",
            Key::TargetAddress => "TargetAddress",
            Key::TargetPortalGroupTag => "TargetPortalGroupTag",
            Key::InitialR2T => "InitialR2T",
            Key::ImmediateData => "ImmediateData",
            Key::MaxRecvDataSegmentLength => "MaxRecvDataSegmentLength",
            Key::MaxBurstLength => "MaxBurstLength",
            Key::FirstBurstLength => "FirstBurstLength",
            Key::DefaultTime2Wait => "DefaultTime2Wait",
            Key::DefaultTime2Retain => "DefaultTime2Retain",
            Key::MaxOutstandingR2T => "MaxOutstandingR2T",
            Key::DataPduInOrder => "DataPDUInOrder",
            Key::DataSequenceInOrder => "DataSequenceInOrder",
            Key::ErrorRecoveryLevel => "ErrorRecoveryLevel",
            Key::SessionType => "SessionType",
            Key::AuthMethod => "AuthMethod",
            Key::TaskReporting => "TaskReporting",
            Key::ProtocolLevel => "iSCSIProtocolLevel",
            Key::IfMarker => "IFMarker",
            Key::OfMarker => "OFMarker",
            Key::IfMarkInt => "IFMarkInt",
            Key::OfMarkInt => "OFMarkInt",
        }
    }

    pub(super) fn from_name(name: &str) -> Option<Key> {
        Key::ALL.iter().copied().find(|k| k.name() == name)
    }

    pub(super) fn rule(self) -> Rule {
        match self {
            Key::HeaderDigest | Key::DataDigest | Key::AuthMethod | Key::TaskReporting => {
                Rule::List
            }
            Key::MaxConnections | Key::MaxOutstandingR2T => Rule::Min(1, 65535),
            Key::MaxBurstLength | Key::FirstBurstLength => Rule::Min(DATA_LEN.0, DATA_LEN.1),
            Key::DefaultTime2Wait => Rule::Max(0, 3600),
            Key::DefaultTime2Retain => Rule::Min(0, 3600),
            Key::ErrorRecoveryLevel => Rule::Min(0, 2),
            // RFC 7144 §13.24 (referenced by RFC 7143): 0..31, minimum.
            Key::ProtocolLevel => Rule::Min(0, 31),
            Key::InitialR2T | Key::DataPduInOrder | Key::DataSequenceInOrder => Rule::Or,
            Key::ImmediateData => Rule::And,
            // The obsolete marker keys are booleans/ranges, but RFC 7143
            // §13.25 fixes the answer; treat them specially.
            Key::IfMarker | Key::OfMarker => Rule::And,
            Key::IfMarkInt | Key::OfMarkInt => Rule::Declarative,
            Key::SendTargets
            | Key::TargetName
            | Key::InitiatorName
            | Key::TargetAlias
            | Key::InitiatorAlias
            | Key::TargetAddress
            | Key::TargetPortalGroupTag
            | Key::MaxRecvDataSegmentLength
            | Key::SessionType => Rule::Declarative,
        }
    }

    pub(super) fn usage(self) -> Usage {
        match self {
            Key::AuthMethod => Usage::SecurityOnly,
            Key::SendTargets => Usage::FullFeatureOnly,
            Key::HeaderDigest
            | Key::DataDigest
            | Key::InitiatorName
            | Key::TargetName
            | Key::TargetPortalGroupTag => Usage::InitializeOnly,
            Key::TargetAlias
            | Key::InitiatorAlias
            | Key::TargetAddress
            | Key::MaxRecvDataSegmentLength => Usage::All,
            _ => Usage::LeadingOnly,
        }
    }

    pub(super) fn senders(self) -> Senders {
        match self {
            Key::SendTargets | Key::InitiatorName | Key::InitiatorAlias | Key::SessionType => {
                Senders::Initiator
            }
            Key::TargetAlias | Key::TargetAddress | Key::TargetPortalGroupTag => Senders::Target,
            _ => Senders::Both,
        }
    }

    /// "Irrelevant when: SessionType=Discovery" (RFC 7143 §13).
    pub(super) fn irrelevant_in_discovery(self) -> bool {
        matches!(
            self,
            Key::MaxConnections
                | Key::InitialR2T
                | Key::ImmediateData
                | Key::MaxBurstLength
                | Key::FirstBurstLength
                | Key::MaxOutstandingR2T
                | Key::DataPduInOrder
                | Key::DataSequenceInOrder
                | Key::TaskReporting
                | Key::ProtocolLevel
        )
    }

    /// Keys that shape the operational stage (refused while authentication
    /// is under way, RFC 7143 §6.3.3).
    pub(super) fn is_operational(self) -> bool {
        !matches!(
            self,
            Key::AuthMethod
                | Key::InitiatorName
                | Key::TargetName
                | Key::InitiatorAlias
                | Key::TargetAlias
                | Key::SessionType
                | Key::TargetPortalGroupTag
                | Key::TargetAddress
        )
    }

    /// The RFC 7143 §13 default value, as it would appear on the wire.
    pub(super) fn default_value(self) -> &'static str {
        match self {
            Key::HeaderDigest | Key::DataDigest | Key::AuthMethod => "None",
            Key::MaxConnections | Key::MaxOutstandingR2T => "1",
            Key::InitialR2T
            | Key::ImmediateData
            | Key::DataPduInOrder
            | Key::DataSequenceInOrder => "Yes",
            Key::MaxBurstLength => "262144",
            Key::FirstBurstLength => "65536",
            Key::DefaultTime2Wait => "2",
            Key::DefaultTime2Retain => "20",
            Key::ErrorRecoveryLevel => "0",
            Key::MaxRecvDataSegmentLength => "8192",
            Key::TaskReporting => "RFC3720",
            Key::ProtocolLevel => "1",
            Key::SessionType => "Normal",
            _ => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_name_reads_back_and_numbers_have_rfc_ranges() {
        for k in Key::ALL {
            assert_eq!(Key::from_name(k.name()), Some(k), "{}", k.name());
        }
        assert_eq!(Key::from_name("X-com.example.private"), None);
        // RFC 7143 §13.12-§13.14: 512..2^24-1 for the data lengths.
        for k in [
            Key::MaxRecvDataSegmentLength,
            Key::MaxBurstLength,
            Key::FirstBurstLength,
        ] {
            assert!(matches!(
                k.rule(),
                Rule::Min(512, 16_777_215) | Rule::Declarative
            ));
        }
        // RFC 7143 §13.5: AuthMethod only in the security stage.
        assert_eq!(Key::AuthMethod.usage(), Usage::SecurityOnly);
        assert_eq!(Key::TargetPortalGroupTag.senders(), Senders::Target);
    }
}
