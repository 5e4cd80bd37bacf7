//! Failure detection and membership dissemination: SWIM (the `foca` crate) over authenticated
//! UDP on the cluster port's number.
//!
//! Owns the foca instance and the UDP socket. One task drives both: datagrams in, timers,
//! commands from the node (announce to a member learned from a seed, leave, "this member's
//! address refused a connection"). Every datagram is sealed with the cluster secret
//! ([`PeerSeal::seal_datagram`]); one that does not open, is too old, or claims to come from
//! this node is dropped and counted, so a host without the secret can neither join nor make a
//! member believe anything. What foca concludes (members up, down, renamed) goes to the
//! [`Membership`] table.
//!
//! The probe period is `heartbeat_interval`; a member that does not answer a direct ping in a
//! third of it is pinged through three others, and one that stays suspected for
//! `failure_threshold` periods is declared down. A member declared down by mistake (a GC pause,
//! lost packets) refutes it by rejoining under a bumped identity; a member that restarted
//! announces a new generation, which wins over the old one.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use foca::{AccumulatingRuntime, Foca, Member, OwnedNotification, PostcardCodec, Timer};
use futures::StreamExt;
use session_core::now_millis;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;

use crate::config::Config;
use crate::faults::Faults;
use crate::membership::{Identity, Membership};
use crate::metrics::Count;
use crate::wire::{DATAGRAM_OVERHEAD, PeerSeal};

/// Largest UDP datagram sent (below a typical 1500-byte MTU with IP/UDP headers).
const MAX_DATAGRAM: usize = 1400;

/// What the node asks of the gossip task.
#[derive(Debug)]
pub(crate) enum GossipCmd {
    /// Announce this node to a member (learned from a seed's [`HelloAck`](crate::wire::HelloAck)).
    Announce(Identity),
    /// Tell foca a member is down (its address refused two connections): the cluster learns it
    /// faster, and a member that is in fact alive refutes it.
    Down(Identity),
    /// Leave the cluster (graceful shutdown); answered once the leave was sent.
    Leave(oneshot::Sender<()>),
}

/// Gossip traffic counters.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct GossipCounters {
    /// Datagrams sent.
    pub sent: Count,
    /// Bytes of datagrams sent.
    pub sent_bytes: Count,
    /// Datagrams received and accepted.
    pub received: Count,
    /// Bytes of datagrams received (accepted or not).
    pub received_bytes: Count,
    /// Datagrams refused: not sealed with the cluster secret, outside the replay window, or
    /// claiming to come from this node.
    pub auth_failures: Count,
    /// Datagrams that opened but that foca refused (malformed, or from an identity it knows to
    /// be stale).
    pub rejected: Count,
}

/// The smallest cluster size foca's dissemination count is tuned for.
const MIN_SIZE_HINT: u32 = 16;

/// How many times foca passes on each membership update in a cluster of `cluster_size`
/// members (at least 16): its LAN rule, about 4·log10(n + 1). A count tuned for
/// 16 members (4) let a few members of a 64- or 256-node cluster miss that a node died, until
/// their own probe reached it, tens of seconds later (found by `bench simulate`).
pub fn max_transmissions(cluster_size: usize) -> std::num::NonZeroU8 {
    let n = u32::try_from(cluster_size)
        .unwrap_or(u32::MAX)
        .max(MIN_SIZE_HINT);
    foca::Config::new_lan(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)).max_transmissions
}

/// The foca configuration for this node's settings (dissemination tuned for
/// [`MIN_SIZE_HINT`] members; the gossip task re-tunes it as members come and go).
pub(crate) fn foca_config(config: &Config) -> foca::Config {
    let mut c = foca::Config::new_lan(NonZeroU32::new(MIN_SIZE_HINT).unwrap_or(NonZeroU32::MIN));
    let period = config.heartbeat_interval;
    c.probe_period = period;
    c.probe_rtt = period / 3;
    c.suspect_to_down_after = period * config.failure_threshold;
    c.max_packet_size =
        NonZeroUsize::new(MAX_DATAGRAM - DATAGRAM_OVERHEAD).unwrap_or(NonZeroUsize::MIN);
    c.notify_down_members = true;
    // Heal partitions and find members missed at join without waiting for the seed refresh.
    c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: (period * 10).max(Duration::from_secs(1)),
        num_members: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
    });
    c.periodic_gossip = Some(foca::PeriodicParams {
        frequency: (period / 2).max(Duration::from_millis(20)),
        num_members: NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
    });
    c
}

type Swim = Foca<Identity, PostcardCodec, rand::rngs::StdRng, foca::NoCustomBroadcast>;

/// Everything the gossip task needs.
pub(crate) struct Gossip {
    pub(crate) socket: Arc<UdpSocket>,
    pub(crate) seal: Arc<PeerSeal>,
    pub(crate) members: Arc<Membership>,
    pub(crate) counters: Arc<GossipCounters>,
    pub(crate) faults: Arc<Faults>,
    pub(crate) replay_window: Duration,
}

impl Gossip {
    /// Runs the protocol until `cancel` fires.
    pub(crate) async fn run(
        self,
        config: foca::Config,
        mut cmds: mpsc::UnboundedReceiver<GossipCmd>,
        cancel: CancellationToken,
    ) {
        let rng: rand::rngs::StdRng = rand::make_rng();
        let base = config.clone();
        let mut swim: Swim = Foca::new(self.members.identity(), config, rng, PostcardCodec);
        let mut tuned_for = 0usize;
        let mut rt: AccumulatingRuntime<Identity> = AccumulatingRuntime::new();
        let mut timers: DelayQueue<Timer<Identity>> = DelayQueue::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((len, from)) => self.receive(&mut swim, &buf[..len], from, &mut rt),
                    Err(e) => {
                        tracing::debug!(error = %e, "gossip socket receive failed");
                        Ok(())
                    }
                },
                Some(expired) = timers.next(), if !timers.is_empty() => {
                    swim.handle_timer(expired.into_inner(), &mut rt)
                }
                cmd = cmds.recv() => match cmd {
                    None => return,
                    Some(GossipCmd::Announce(to)) => swim.announce(to, &mut rt),
                    Some(GossipCmd::Down(who)) => {
                        swim.apply_many(std::iter::once(Member::down(who)), true, &mut rt)
                    }
                    Some(GossipCmd::Leave(done)) => {
                        let r = swim.leave_cluster(&mut rt);
                        self.flush(&swim, &mut rt, &mut timers).await;
                        let _ = done.send(());
                        r
                    }
                },
            };
            if let Err(e) = result {
                self.counters.rejected.inc();
                tracing::debug!(error = %e, "gossip message not applied");
            }
            self.flush(&swim, &mut rt, &mut timers).await;
            let size = swim.num_members() + 1;
            if size != tuned_for {
                // Members joined or left: pass updates on as often as this size needs.
                tuned_for = size;
                let mut c = base.clone();
                c.max_transmissions = max_transmissions(size);
                if let Err(e) = swim.set_config(c) {
                    tracing::warn!(error = %e, "could not re-tune gossip dissemination");
                }
            }
        }
    }

    fn receive(
        &self,
        swim: &mut Swim,
        datagram: &[u8],
        from: SocketAddr,
        rt: &mut AccumulatingRuntime<Identity>,
    ) -> Result<(), foca::Error> {
        self.counters.received_bytes.add(datagram.len() as u64);
        let window = self.replay_window.as_millis() as u64;
        let (sender, payload) = match self.seal.open_datagram(datagram, now_millis(), window) {
            Ok(x) => x,
            Err(e) => {
                self.counters.auth_failures.inc();
                tracing::debug!(error = %e, %from, "refused a gossip datagram");
                return Ok(());
            }
        };
        if sender == self.members.me() || self.faults.drops_from(sender) {
            if sender == self.members.me() {
                self.counters.auth_failures.inc();
            }
            return Ok(());
        }
        self.counters.received.inc();
        swim.handle_data(&payload, rt)
    }

    /// Sends what foca wants sent, schedules its timers and applies its notifications.
    async fn flush(
        &self,
        swim: &Swim,
        rt: &mut AccumulatingRuntime<Identity>,
        timers: &mut DelayQueue<Timer<Identity>>,
    ) {
        let me = self.members.me();
        while let Some((to, data)) = rt.to_send() {
            if self.faults.drops_to(to.id) {
                continue;
            }
            let sealed = self.seal.seal_datagram(me, now_millis(), &data);
            match self.socket.send_to(&sealed, to.addr).await {
                Ok(n) => {
                    self.counters.sent.inc();
                    self.counters.sent_bytes.add(n as u64);
                }
                Err(e) => tracing::debug!(error = %e, to = ?to, "gossip send failed"),
            }
        }
        while let Some((after, timer)) = rt.to_schedule() {
            timers.insert(timer, after);
        }
        while let Some(n) = rt.to_notify() {
            match n {
                OwnedNotification::MemberUp(id) => self.members.member_up(&id),
                OwnedNotification::MemberDown(id) => self.members.member_down(&id),
                OwnedNotification::Rename(_, new) => {
                    // Foca says nothing of liveness when both identities are alike (both up, or
                    // both down): ask it, so a member this node had marked down on its own (a
                    // refused connection) comes back up with its new run.
                    if swim.iter_members().any(|m| *m.id() == new) {
                        self.members.member_up(&new);
                    } else {
                        self.members.member_renamed(&new);
                    }
                }
                OwnedNotification::Rejoin(id) => {
                    tracing::warn!(identity = ?id, "this node was declared down by the cluster; rejoined");
                    self.members.set_identity(id);
                }
                OwnedNotification::Defunct => {
                    tracing::error!(
                        "this node was declared down and cannot rejoin under a new identity"
                    );
                }
                OwnedNotification::Idle => {
                    tracing::info!("no other member is alive");
                }
                OwnedNotification::Active => {
                    tracing::debug!("joined the cluster");
                }
                #[allow(unreachable_patterns)]
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod dissemination_tests {
    use super::*;

    #[test]
    fn updates_are_passed_on_more_often_as_the_cluster_grows() {
        let small = max_transmissions(3).get();
        assert_eq!(
            small,
            max_transmissions(16).get(),
            "never below the 16-member count"
        );
        assert_eq!(small, 4);
        let big = max_transmissions(256).get();
        assert!(big > small, "256 members: {big}, 16: {small}");
        assert!(max_transmissions(64).get() > small);
        assert!(max_transmissions(usize::MAX).get() >= big);
    }
}
