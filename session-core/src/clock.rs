//! What time it is, for session deadlines: the one clock every backend asks when it stamps or
//! checks a deadline ([`now_millis`], also at the crate root as
//! [`session_core::now_millis`](crate::now_millis)).
//!
//! In production it is the system clock, behind one relaxed atomic load.
//!
//! A test can put a [`TestClock`] in charge of one task ([`TestClock::scope`]). Inside it, "now"
//! is the wall-clock time at which the clock was made, plus the tokio time elapsed since, plus
//! whatever [`TestClock::advance`] added:
//!
//! * on a runtime with paused time (`tokio::time::pause()`, `start_paused`), sleeping or
//!   `tokio::time::advance` moves session time too, so an expiry test takes no real time;
//! * on a runtime that must keep real time, because the backend talks to a server and paused
//!   time would auto-advance past its I/O timeouts, [`TestClock::advance`] moves session time
//!   alone.
//!
//! The clock is task-local: it reaches the code that runs as part of the scoped future (a
//! backend's `load`, `save`, ... called from it), not tasks spawned elsewhere, other runtimes or
//! a database server, which keep the system clock.
//!
//! ```
//! use std::time::Duration;
//! use session_core::clock::{TestClock, now_millis};
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let clock = TestClock::new();
//! let (before, after) = clock
//!     .scope(async {
//!         let before = now_millis();
//!         clock.advance(Duration::from_secs(3600));
//!         (before, now_millis())
//!     })
//!     .await;
//! assert!(after >= before + 3_600_000);
//! assert!(now_millis() < after, "outside the scope it is the system clock again");
//! # }
//! ```

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Set once any [`TestClock`] scope was entered in this process; until then [`now_millis`] does
/// not even look for one.
static IN_USE: AtomicBool = AtomicBool::new(false);

tokio::task_local! {
    static CURRENT: TestClock;
}

/// Milliseconds since the Unix epoch by the session clock: the system clock, or the
/// [`TestClock`] the current task runs under.
pub fn now_millis() -> u64 {
    if IN_USE.load(Ordering::Relaxed)
        && let Ok(now) = CURRENT.try_with(TestClock::now_millis)
    {
        return now;
    }
    system_millis()
}

/// Milliseconds since the Unix epoch by the system clock, whatever clock the task runs under.
pub fn system_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A session clock for tests: the wall-clock time when it was made, moved on by tokio time
/// (paused or not) and by [`advance`](TestClock::advance). Clones share one clock.
#[derive(Clone, Debug)]
pub struct TestClock(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// The system clock when the clock was made (ms since the epoch).
    wall: u64,
    /// Tokio's clock at the same moment (the paused clock, on a paused runtime).
    start: tokio::time::Instant,
    /// Milliseconds added by `advance`.
    skipped: AtomicU64,
}

impl Default for TestClock {
    fn default() -> Self {
        TestClock::new()
    }
}

impl TestClock {
    /// A clock showing the system time now, that moves with tokio time from here. Make it on
    /// the runtime whose time it should follow (tokio's clock is per runtime).
    pub fn new() -> Self {
        TestClock(Arc::new(Inner {
            wall: system_millis(),
            start: tokio::time::Instant::now(),
            skipped: AtomicU64::new(0),
        }))
    }

    /// The clock's time, in milliseconds since the Unix epoch.
    pub fn now_millis(&self) -> u64 {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.0.start);
        self.0
            .wall
            .saturating_add(elapsed.as_millis() as u64)
            .saturating_add(self.0.skipped.load(Ordering::Relaxed))
    }

    /// Moves session time forward by `by` (whole milliseconds), without moving tokio time.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.0.skipped.fetch_add(ms, Ordering::Relaxed);
    }

    /// Runs `f` with this clock as the session clock of the task.
    pub async fn scope<F: Future>(&self, f: F) -> F::Output {
        IN_USE.store(true, Ordering::Relaxed);
        CURRENT.scope(self.clone(), f).await
    }

    /// Runs `f` (synchronous code) with this clock as the session clock.
    pub fn sync_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        IN_USE.store(true, Ordering::Relaxed);
        CURRENT.sync_scope(self.clone(), f)
    }

    /// The clock the current task runs under, if any.
    pub fn current() -> Option<TestClock> {
        CURRENT.try_with(Clone::clone).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_scope_it_is_the_system_clock() {
        let before = system_millis();
        let now = now_millis();
        assert!(now >= before && now <= system_millis());
        assert!(TestClock::current().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn paused_tokio_time_moves_session_time() {
        let clock = TestClock::new();
        clock
            .scope(async {
                let t0 = now_millis();
                tokio::time::sleep(Duration::from_secs(30 * 60)).await;
                assert_eq!(now_millis() - t0, 30 * 60 * 1000);
                tokio::time::advance(Duration::from_millis(1_500)).await;
                assert_eq!(now_millis() - t0, 30 * 60 * 1000 + 1_500);
                assert!(TestClock::current().is_some());
            })
            .await;
    }

    #[tokio::test]
    async fn advance_moves_only_the_scoped_task() {
        // Read the outside time before the clock is made: the clock starts at the wall time
        // truncated to a millisecond and adds tokio time truncated to a millisecond, so a reading
        // taken after it was made may be up to a millisecond ahead of it.
        let outside = tokio::spawn(async { now_millis() }).await.unwrap();
        let clock = TestClock::new();
        let inside = clock
            .scope(async {
                clock.advance(Duration::from_secs(3_600));
                // A task spawned from the scope does not inherit the clock.
                let spawned = tokio::spawn(async { now_millis() }).await.unwrap();
                (now_millis(), spawned)
            })
            .await;
        assert!(inside.0 >= outside + 3_600_000);
        assert!(inside.1 < inside.0 - 3_000_000);
        assert!(clock.sync_scope(now_millis) >= inside.0);
    }
}
