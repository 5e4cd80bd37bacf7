//! The second opinion after a failed call (Tomcat's `TcpFailureDetector` lesson: one lost
//! packet must not kill a peer).
//!
//! Owns one decision: a call to a peer failed — is that run of the peer dead? Only a refused
//! (or reset) connection, confirmed by a refused probe on a fresh connection, says so here; the member is then marked
//! down at once (so requests route around it) and the cluster is told through gossip (where a
//! peer that is in fact alive refutes it). A timeout or a broken connection proves nothing: the
//! failure detector (SWIM) decides those.

use tokio::sync::mpsc;

use crate::client::{CallError, PeerClient};
use crate::gossip::GossipCmd;
use crate::membership::{Membership, Peer};

/// Reacts to a failed call to `peer`. Returns whether the peer is still considered alive.
pub(crate) async fn after_failed_call(
    members: &Membership,
    client: &PeerClient,
    gossip: &mpsc::UnboundedSender<GossipCmd>,
    peer: &Peer,
    error: &CallError,
) -> bool {
    // A refused connection, or a broken one (a pooled keep-alive connection to a killed
    // process fails as a reset, not as a refused connect): check with a fresh connection. A
    // timeout says nothing a probe could settle quickly; SWIM decides those.
    let worth_probing = match error {
        CallError::Refused => true,
        CallError::Unreachable(e) => !e.is_timeout(),
        _ => false,
    };
    if !worth_probing {
        return peer.is_up();
    }
    if !peer.is_up() {
        // Already down as far as this node knows: a refused connection settles that nothing
        // listens there any more (no second opinion needed to avoid a false alarm).
        if matches!(error, CallError::Refused) {
            members.member_refused(peer);
        }
        return false;
    }
    match client.ping(peer.addr(), peer.id).await {
        Ok(pong) if pong.node == peer.id => {
            members.member_answered(peer);
            true
        }
        Err(CallError::Refused) => {
            tracing::warn!(peer = %peer.id, addr = %peer.addr(), "peer refuses connections: marked down");
            members.member_refused(peer);
            if let Some(identity) = members.identity_of(peer.id) {
                let _ = gossip.send(GossipCmd::Down(identity));
            }
            false
        }
        _ => peer.is_up(),
    }
}
