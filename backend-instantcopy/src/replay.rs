//! The replay cache: the nonces of peer requests this node accepted recently, so a request
//! captured on the wire and sent again inside the replay window is refused (`401`), not
//! applied a second time.
//!
//! Owns only the nonce sets. A request carrying time `t` is accepted while the receiver's clock
//! is within `replay_window` of `t`, a span of twice the window; every nonce is remembered for
//! at least that span. Two generations of sets, the older dropped whole at each rotation, keep
//! this to a hash lookup per request with no per-entry timers. Only requests whose head tag
//! verified are recorded (a host without the cluster secret cannot fill the cache), so its size
//! follows the legitimate peer request rate: at most rate × four windows of 12-byte nonces.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

/// Nonces seen in the last two spans of the replay window.
#[derive(Debug)]
pub(crate) struct ReplayCache {
    span_ms: u64,
    gens: Mutex<Generations>,
}

#[derive(Debug, Default)]
struct Generations {
    current: HashSet<[u8; 12]>,
    previous: HashSet<[u8; 12]>,
    since: u64,
}

impl ReplayCache {
    /// A cache for requests accepted within `window` of their send time.
    pub(crate) fn new(window: Duration) -> Self {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX / 4);
        ReplayCache {
            span_ms: window_ms.saturating_mul(2).max(1),
            gens: Mutex::new(Generations::default()),
        }
    }

    /// Records `nonce` at time `now` (ms); false if it was already recorded (a replay).
    pub(crate) fn first_time(&self, nonce: [u8; 12], now: u64) -> bool {
        let mut g = match self.gens.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let elapsed = now.saturating_sub(g.since);
        if elapsed >= self.span_ms {
            g.previous = if elapsed >= 2 * self.span_ms {
                HashSet::new()
            } else {
                std::mem::take(&mut g.current)
            };
            g.current.clear();
            g.since = now;
        }
        !g.previous.contains(&nonce) && g.current.insert(nonce)
    }

    /// Nonces remembered now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.gens
            .lock()
            .map(|g| g.current.len() + g.previous.len())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_refused_for_at_least_twice_the_window_then_forgotten() {
        let c = ReplayCache::new(Duration::from_millis(100));
        let n = [7u8; 12];
        assert!(c.first_time(n, 1_000));
        for now in [1_000, 1_050, 1_199, 1_200, 1_300, 1_399] {
            assert!(!c.first_time(n, now), "replay at {now} accepted");
        }
        // Inserted just before a rotation, still remembered a whole span later.
        let m = [8u8; 12];
        assert!(c.first_time(m, 1_399));
        assert!(!c.first_time(m, 1_400), "rotation forgot a fresh nonce");
        assert!(!c.first_time(m, 1_599));
        // Long after, the memory is gone (the time check refuses such a request anyway).
        assert!(c.first_time(n, 5_000));
        assert_eq!(c.len(), 1);
    }
}
