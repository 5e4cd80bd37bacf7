//! What each request cost: the network calls (the paper's N) and database calls (its D) a
//! backend made while serving one request, attributed to that request and classified as a read
//! or a write.
//!
//! A backend counts every call through [`CoreCounters::network`](crate::CoreCounters::network)
//! and [`CoreCounters::db`](crate::CoreCounters::db), which feed the node-wide totals. When the
//! call happens inside [`measure`] (the [`SessionLayer`](crate::SessionLayer) wraps each request
//! in it once it is given a [`RequestCosts`]), it is also added to that request's
//! [`RequestCost`]: a task-local meter, so concurrent requests never see each other's calls.
//! After the response, the layer adds the request's cost to the [`RequestCosts`] totals under
//! [`RequestKind::Read`] or [`RequestKind::Write`].
//!
//! Only calls made by the request's own task are attributed: work a backend does in background
//! tasks (instant copy's replication pushes, anti-entropy, gossip; a pool opening connections)
//! is in the node-wide totals only, and a reader dividing it over the requests has to say so.
//!
//! ```
//! use session_core::cost::{self, RequestCost, RequestCosts, RequestKind};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let counters = session_core::CoreCounters::default();
//! let ((), cost) = cost::measure(async {
//!     counters.network(1); // e.g. one round trip to Redis
//! })
//! .await;
//! assert_eq!(cost, RequestCost { network: 1, db: 0 });
//!
//! let totals = RequestCosts::default();
//! totals.record(RequestKind::Read, cost);
//! assert_eq!(totals.snapshot().reads.network_calls, 1);
//! # }
//! ```

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::FutureExt as _;

/// The calls one request made, counted by [`measure`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCost {
    /// Calls to other nodes or to a cache server (N).
    pub network: u64,
    /// Calls to a database (D).
    pub db: u64,
}

/// The running count of the request being served (one per task, see [`measure`]).
#[derive(Debug, Default)]
struct Meter {
    network: Cell<u64>,
    db: Cell<u64>,
}

tokio::task_local! {
    static METER: Meter;
}

/// Runs `fut` and returns its output with the calls counted while it ran (in its own task).
/// Nested calls measure separately: the inner future's calls count for the inner scope only.
///
/// A combinator rather than an `async fn`: an `async fn` keeps its argument and the future it
/// awaits in separate slots, so wrapping a request's future this way doubled its size (the
/// layer's per-request future went from 664 to 2,736 bytes with costs on, past the allocator's
/// per-thread cache for small blocks: glibc then took its slow path on every request).
pub fn measure<F: Future>(fut: F) -> impl Future<Output = (F::Output, RequestCost)> {
    // The closure runs inside the scope's poll, so the meter is still this request's.
    METER.scope(
        Meter::default(),
        fut.map(|out| {
            let cost = METER
                .try_with(|m| RequestCost {
                    network: m.network.get(),
                    db: m.db.get(),
                })
                .unwrap_or_default();
            (out, cost)
        }),
    )
}

/// Adds `n` network calls to the request being measured, if any.
pub(crate) fn add_network(n: u64) {
    let _ = METER.try_with(|m| m.network.set(m.network.get() + n));
}

/// Adds `n` database calls to the request being measured, if any.
pub(crate) fn add_db(n: u64) {
    let _ = METER.try_with(|m| m.db.set(m.db.get() + n));
}

/// How the layer classifies a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// The session was only read (or not used at all); a throttled idle-deadline touch and a
    /// token re-issue count here too, as the cost of reading with a sliding expiry.
    Read,
    /// The request created, changed, re-keyed (id cycle) or destroyed its session.
    Write,
}

impl RequestKind {
    /// `"read"` or `"write"` (the `kind` label of the exported series).
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Read => "read",
            RequestKind::Write => "write",
        }
    }
}

/// Totals of one kind of request.
#[derive(Debug, Default)]
struct KindTotals {
    requests: AtomicU64,
    network_calls: AtomicU64,
    db_calls: AtomicU64,
}

impl KindTotals {
    fn snapshot(&self) -> KindSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        KindSnapshot {
            requests: r(&self.requests),
            network_calls: r(&self.network_calls),
            db_calls: r(&self.db_calls),
        }
    }
}

/// Per-request costs summed by kind: what a node exports so that N and D can be reported per
/// read and per write, from calls attributed to each request rather than from node-wide totals
/// divided by a request count.
#[derive(Debug, Default)]
pub struct RequestCosts {
    reads: KindTotals,
    writes: KindTotals,
}

impl RequestCosts {
    /// Adds one request of `kind` that cost `cost`.
    pub fn record(&self, kind: RequestKind, cost: RequestCost) {
        let t = match kind {
            RequestKind::Read => &self.reads,
            RequestKind::Write => &self.writes,
        };
        t.requests.fetch_add(1, Ordering::Relaxed);
        t.network_calls.fetch_add(cost.network, Ordering::Relaxed);
        t.db_calls.fetch_add(cost.db, Ordering::Relaxed);
    }

    /// The totals so far.
    pub fn snapshot(&self) -> RequestCostsSnapshot {
        RequestCostsSnapshot {
            reads: self.reads.snapshot(),
            writes: self.writes.snapshot(),
        }
    }
}

/// Totals of one kind of request, as read by [`RequestCosts::snapshot`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindSnapshot {
    /// Requests of this kind that went through the layer.
    pub requests: u64,
    /// Network calls those requests made (N).
    pub network_calls: u64,
    /// Database calls those requests made (D).
    pub db_calls: u64,
}

/// [`RequestCosts`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestCostsSnapshot {
    /// Requests that only read their session.
    pub reads: KindSnapshot,
    /// Requests that wrote their session.
    pub writes: KindSnapshot,
}

impl RequestCostsSnapshot {
    /// `(kind, totals)` for both kinds, reads first.
    pub fn by_kind(&self) -> [(RequestKind, KindSnapshot); 2] {
        [
            (RequestKind::Read, self.reads),
            (RequestKind::Write, self.writes),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CoreCounters;

    #[tokio::test]
    async fn calls_count_for_the_request_that_made_them_only() {
        let counters = std::sync::Arc::new(CoreCounters::default());
        // Outside any request: node-wide only.
        counters.network(5);
        let c1 = counters.clone();
        let c2 = counters.clone();
        let (a, b) = tokio::join!(
            measure(async move {
                c1.network(1);
                tokio::task::yield_now().await;
                c1.db(2);
            }),
            measure(async move {
                tokio::task::yield_now().await;
                c2.network(3);
            })
        );
        assert_eq!(a.1, RequestCost { network: 1, db: 2 });
        assert_eq!(b.1, RequestCost { network: 3, db: 0 });
        let all = counters.snapshot(Vec::new());
        assert_eq!((all.network_calls, all.db_calls), (9, 2));
    }

    #[tokio::test]
    async fn spawned_work_is_not_attributed_and_scopes_nest() {
        let counters = std::sync::Arc::new(CoreCounters::default());
        let c = counters.clone();
        let ((inner, ()), outer) = measure(async move {
            c.db(1);
            let c2 = c.clone();
            let _ = tokio::spawn(async move { c2.network(7) }).await;
            let inner = measure(async { c.network(1) }).await;
            (inner.1, ())
        })
        .await;
        assert_eq!(inner, RequestCost { network: 1, db: 0 });
        assert_eq!(outer, RequestCost { network: 0, db: 1 });
    }

    #[test]
    fn totals_are_kept_by_kind() {
        let t = RequestCosts::default();
        t.record(RequestKind::Read, RequestCost { network: 1, db: 0 });
        t.record(RequestKind::Read, RequestCost { network: 0, db: 0 });
        t.record(RequestKind::Write, RequestCost { network: 2, db: 3 });
        let s = t.snapshot();
        assert_eq!(
            s.reads,
            KindSnapshot {
                requests: 2,
                network_calls: 1,
                db_calls: 0
            }
        );
        assert_eq!(
            s.writes,
            KindSnapshot {
                requests: 1,
                network_calls: 2,
                db_calls: 3
            }
        );
        assert_eq!(s.by_kind()[1].0.as_str(), "write");
    }
}
