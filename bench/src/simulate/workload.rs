//! The workload: who sends what, where and when.
//!
//! Owns the request mix of the README's write-heavy scaling runs (30% `GET /profile`, 10%
//! `GET /cart`, 45% `POST /cart/items` of 1–3 of one of 12 SKUs, 15% `DELETE
//! /cart/items/{sku}`), each request to a node chosen uniformly at random (no stickiness), and
//! the users' pacing: each user has one session and one request at a time, and after each
//! response waits an exponential think time whose mean makes the users together send
//! `rate` requests a second (a little less, since responses take time too).

use rand::RngExt;
use rand::rngs::StdRng;

use super::events::Ns;
use super::sizes::SKUS;

/// One request's route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `GET /profile`: a read.
    Profile,
    /// `GET /cart`: a read.
    Cart,
    /// `POST /cart/items`: adds `qty` of `sku` (a write).
    Add {
        /// The SKU.
        sku: u8,
        /// How many.
        qty: u8,
    },
    /// `DELETE /cart/items/{sku}`: a write when the line exists (the layer writes nothing
    /// for an unchanged session).
    Remove {
        /// The SKU.
        sku: u8,
    },
}

impl Op {
    /// True for reads.
    pub fn is_read(self) -> bool {
        matches!(self, Op::Profile | Op::Cart)
    }
}

/// The mix, in percent: profile, cart, add, remove.
pub const MIX: [u32; 4] = [30, 10, 45, 15];

/// Draws one request's route.
pub fn pick_op(rng: &mut StdRng) -> Op {
    let r = rng.random_range(0..100u32);
    if r < MIX[0] {
        Op::Profile
    } else if r < MIX[0] + MIX[1] {
        Op::Cart
    } else if r < MIX[0] + MIX[1] + MIX[2] {
        Op::Add {
            sku: rng.random_range(0..SKUS as u8),
            qty: rng.random_range(1..=3u8),
        }
    } else {
        Op::Remove {
            sku: rng.random_range(0..SKUS as u8),
        }
    }
}

/// An exponential think time of mean `mean_ns` (inverse transform of a uniform draw).
pub fn think(rng: &mut StdRng, mean_ns: f64) -> Ns {
    // In (0, 1]: never ln(0).
    let u: f64 = 1.0 - rng.random::<f64>();
    (-mean_ns * u.ln()).round().max(0.0) as Ns
}

/// One virtual user.
#[derive(Debug, Clone)]
pub struct User {
    /// Its session (an index into the cluster's sessions).
    pub session: u32,
    /// The session version its token carries (what it last saw).
    pub token_version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_mix_and_the_think_times_are_as_stated() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = [0u32; 4];
        for _ in 0..100_000 {
            let i = match pick_op(&mut rng) {
                Op::Profile => 0,
                Op::Cart => 1,
                Op::Add { sku, qty } => {
                    assert!((sku as usize) < SKUS && (1..=3).contains(&qty));
                    2
                }
                Op::Remove { .. } => 3,
            };
            counts[i] += 1;
        }
        for (c, pct) in counts.iter().zip(MIX) {
            let expected = pct * 1000;
            assert!(c.abs_diff(expected) < 700, "{counts:?}");
        }
        let n = 100_000;
        let total: u64 = (0..n).map(|_| think(&mut rng, 1000.0)).sum();
        let mean = total as f64 / n as f64;
        assert!((mean - 1000.0).abs() < 20.0, "mean think {mean}");
    }
}
