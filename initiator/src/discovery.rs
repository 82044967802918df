//! SendTargets discovery (RFC 7143 Appendix C): a discovery session asks
//! the portal for the targets it offers and their addresses.
//!
//! ```text
//! login SessionType=Discovery ─► Text "SendTargets=All" ─► TargetName=..., TargetAddress=host:port,tag ... ─► logout
//! ```

use busrig_proto::negotiation::parse_send_targets;
use busrig_proto::text::TextPairs;
use bytes::Bytes;
use serde::Serialize;

use crate::config::SessionConfig;
use crate::error::Error;
use crate::session::Session;
use crate::url::Portal;

/// One target a portal reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiscoveredTarget {
    pub name: String,
    /// Portal addresses (`host:port`) and their portal group tags.
    pub portals: Vec<(String, u16)>,
}

/// Parses the text of a SendTargets response.
pub fn parse(text: &[u8]) -> Result<Vec<DiscoveredTarget>, Error> {
    let pairs = TextPairs::parse_allow_repeats(text).map_err(|e| Error::Protocol(e.to_string()))?;
    let entries = parse_send_targets(&pairs).map_err(|e| Error::Protocol(e.to_string()))?;
    Ok(entries
        .into_iter()
        .map(|e| DiscoveredTarget {
            name: e.name,
            portals: e.addresses,
        })
        .collect())
}

/// Logs in to `portal` for discovery, asks `SendTargets=All` and logs out.
/// Addresses the target leaves out mean "this portal" (RFC 7143
/// Appendix C.1), so such targets get the portal we asked.
pub async fn send_targets(
    portal: &Portal,
    mut config: SessionConfig,
) -> Result<Vec<DiscoveredTarget>, Error> {
    // A discovery exchange is short; recovering it makes no sense.
    config.recovery_timeout = std::time::Duration::ZERO;
    let s = Session::connect(&portal.socket_addr_string(), None, config).await?;
    let text = s.text(Bytes::from_static(b"SendTargets=All\0")).await;
    let logout = s.logout().await;
    let mut targets = parse(&text?)?;
    if let Err(e) = logout {
        tracing::debug!(error = %e, "discovery logout");
    }
    for t in &mut targets {
        if t.portals.is_empty() {
            t.portals.push((portal.socket_addr_string(), 1));
        }
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_several_targets_with_portals() {
        let t =
            parse(b"TargetName=iqn.a\0TargetAddress=10.0.0.1:3260,1\0TargetAddress=[::1]:3260,2\0TargetName=iqn.b\0")
                .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            t[0].portals,
            vec![
                ("10.0.0.1:3260".to_string(), 1),
                ("[::1]:3260".to_string(), 2)
            ]
        );
        assert_eq!(t[1].name, "iqn.b");
        assert!(t[1].portals.is_empty());
    }

    #[test]
    fn address_before_name_is_refused() {
        assert!(parse(b"TargetAddress=1.2.3.4:3260,1\0").is_err());
    }
}
