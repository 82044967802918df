//! Text requests in full feature phase (RFC 7143 §11.10, §11.11, §6.6),
//! SendTargets in particular (Appendix C).
//!
//! ```text
//! Text Request  SendTargets=All                    ---->
//!               <----  TargetName=iqn...:bus0
//!                      TargetAddress=127.0.0.1:3260,1      (one per portal)
//! ```
//!
//! Requests may span PDUs (C bit); answers longer than the initiator's
//! MaxRecvDataSegmentLength go out in pieces, each acknowledged by an empty
//! Text Request carrying our Target Transfer Tag (RFC 7143 §11.10.4).

use std::net::SocketAddr;
use std::sync::Arc;

use busrig_proto::negotiation::{
    send_targets_response, SendTargetsEntry, SendTargetsRequest, TargetNegotiator,
};
use busrig_proto::pdu::{TextRequest, TextResponse, RESERVED_TAG};
use busrig_proto::text::TextAccumulator;
use bytes::Bytes;

use super::{Portal, PortalTarget};

/// What a text answer depends on.
pub struct TextCtx<'a> {
    pub portal: &'a Arc<Portal>,
    pub initiator: &'a str,
    /// The session's target; `None` in a discovery session.
    pub session_target: Option<usize>,
    /// The connection's local address, reported as the portal address.
    pub local: Option<SocketAddr>,
    pub peer_mrdsl: u32,
}

/// A text exchange in progress on a connection.
#[derive(Debug, Default)]
pub struct TextState {
    acc: TextAccumulator,
    /// The ITT of a request still arriving (C bit).
    incoming_itt: Option<u32>,
    /// The rest of an answer: (ITT, our TTT, bytes not yet sent).
    outgoing: Option<(u32, u32, Bytes)>,
}

impl TextState {
    /// Handles one Text Request PDU; returns the Text Response header and
    /// data, or why the request is rejected.
    pub fn on_request(
        &mut self,
        ctx: &TextCtx<'_>,
        negotiator: &mut TargetNegotiator,
        h: &TextRequest,
        data: &[u8],
        alloc_ttt: impl FnOnce() -> u32,
    ) -> Result<(TextResponse, Bytes), String> {
        if h.ttt != RESERVED_TAG {
            // The initiator asks for the next piece of our answer.
            return match self.outgoing.take() {
                Some((itt, ttt, rest)) if itt == h.itt && ttt == h.ttt => {
                    Ok(self.piece(ctx, itt, rest, alloc_ttt))
                }
                other => {
                    self.outgoing = other;
                    Err(format!("unexpected target transfer tag {:#x}", h.ttt))
                }
            };
        }
        // A new request ends any earlier exchange (RFC 7143 §11.10.4: a
        // request with TTT 0xffffffff starts a new one).
        self.outgoing = None;
        if self.incoming_itt.is_some_and(|itt| itt != h.itt) {
            self.acc.reset();
        }
        let keys = match self.acc.push(data, h.continue_) {
            Err(e) => {
                self.incoming_itt = None;
                return Err(format!("text: {e}"));
            }
            Ok(None) => {
                // More request text follows: acknowledge with an empty
                // response (RFC 7143 §11.10.2).
                self.incoming_itt = Some(h.itt);
                let r = TextResponse {
                    final_: false,
                    continue_: false,
                    lun: h.lun,
                    itt: h.itt,
                    ttt: alloc_ttt(),
                    ..Default::default()
                };
                return Ok((r, Bytes::new()));
            }
            Ok(Some(keys)) => keys,
        };
        self.incoming_itt = None;
        let reply = negotiator
            .on_text_request(&keys)
            .map_err(|e| format!("negotiation: {e}"))?;
        let mut out = reply.keys;
        if let Some(req) = reply.send_targets {
            out.extend(send_targets_response(&send_targets(ctx, &req)));
        }
        let encoded = Bytes::from(out.to_bytes());
        Ok(self.piece(ctx, h.itt, encoded, alloc_ttt))
    }

    /// The next piece of an answer: all of it with F=1, or as much as the
    /// initiator accepts with C=1 and a TTT to ask for the rest.
    fn piece(
        &mut self,
        ctx: &TextCtx<'_>,
        itt: u32,
        text: Bytes,
        alloc_ttt: impl FnOnce() -> u32,
    ) -> (TextResponse, Bytes) {
        let max = ctx.peer_mrdsl.max(512) as usize;
        if text.len() <= max {
            let r = TextResponse {
                final_: true,
                continue_: false,
                itt,
                ttt: RESERVED_TAG,
                ..Default::default()
            };
            return (r, text);
        }
        let ttt = alloc_ttt();
        let rest = text.slice(max..);
        self.outgoing = Some((itt, ttt, rest));
        let r = TextResponse {
            final_: false,
            continue_: true,
            itt,
            ttt,
            ..Default::default()
        };
        (r, text.slice(..max))
    }
}

/// The targets a SendTargets request lists for this initiator: those whose
/// ACL admits it (RFC 7143 Appendix C: "the targets the initiator is
/// allowed to access").
fn send_targets(ctx: &TextCtx<'_>, req: &SendTargetsRequest) -> Vec<SendTargetsEntry> {
    let portal = ctx.portal;
    let address = ctx.local.filter(|a| !a.ip().is_unspecified()).or_else(|| {
        portal
            .advertised_address()
            .filter(|a| !a.ip().is_unspecified())
    });
    let visible = |pt: &Arc<PortalTarget>| pt.def.admits(ctx.initiator);
    let chosen: Vec<Arc<PortalTarget>> = match req {
        SendTargetsRequest::All => portal.targets().into_iter().filter(visible).collect(),
        SendTargetsRequest::Target(name) => portal
            .target_index(name)
            .and_then(|i| portal.target(i))
            .filter(visible)
            .into_iter()
            .collect(),
        SendTargetsRequest::SessionTarget => ctx
            .session_target
            .and_then(|i| portal.target(i))
            .into_iter()
            .collect(),
    };
    chosen
        .into_iter()
        .map(|pt| {
            let def = &pt.def;
            SendTargetsEntry {
                name: def.name.clone(),
                addresses: address
                    .map(|a| vec![(a.to_string(), def.tpgt)])
                    .unwrap_or_default(),
            }
        })
        .collect()
}
