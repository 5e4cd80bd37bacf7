//! The conformance suite must pass on the reference backend and must catch broken ones.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::sync::Arc;

use session_core::testing::{
    BackendFactory, Capabilities, Harness, MemoryFactory, Outcome, run, run_checks,
};
use session_core::{
    Counters, Delta, ExpiryPolicy, KeyRing, Loaded, MemoryBackend, Saved, SessionBackend,
    SessionData, SessionError, async_trait,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_backend_passes_every_check() {
    let report = run(Arc::new(MemoryFactory)).await;
    println!("{report}");
    report.assert_passed();
    for r in &report.results {
        match r.name {
            // An in-process map has no store to lose contact with.
            "store_outage_is_unavailable" => assert!(matches!(r.outcome, Outcome::Skipped(_))),
            _ => assert_eq!(r.outcome, Outcome::Passed, "{}", r.name),
        }
    }
}

/// The ways a backend can be wrong that the suite must notice.
#[derive(Clone, Copy, Debug)]
enum Flaw {
    /// Saves write the whole session as the request saw it (read-modify-write): lost updates.
    WholeSnapshotSave,
    /// Destroy does nothing.
    DestroyIgnored,
    /// Cycling copies the session to a new id but leaves the old one alive.
    CycleKeepsOldId,
    /// Loading writes (a touch on every read).
    WritesOnRead,
}

struct Broken {
    inner: MemoryBackend,
    flaw: Flaw,
}

#[async_trait]
impl SessionBackend for Broken {
    fn scheme(&self) -> &'static str {
        "broken"
    }
    fn policy(&self) -> &ExpiryPolicy {
        self.inner.policy()
    }
    async fn load(&self, token: &str) -> Result<Option<Loaded>, SessionError> {
        let l = self.inner.load(token).await?;
        if let (Flaw::WritesOnRead, Some(l)) = (self.flaw, &l) {
            self.inner.save(l, &Delta::default()).await?;
        }
        Ok(l)
    }
    async fn create(&self, data: SessionData) -> Result<Saved, SessionError> {
        self.inner.create(data).await
    }
    async fn save(&self, loaded: &Loaded, delta: &Delta) -> Result<Saved, SessionError> {
        if let Flaw::WholeSnapshotSave = self.flaw {
            // Overwrite the stored session with the request's view of it.
            let mut snapshot = loaded.record.data.clone();
            snapshot.apply(delta);
            let current = self
                .inner
                .load(&loaded.token)
                .await?
                .ok_or(SessionError::Gone)?;
            let mut overwrite = Delta::default();
            for k in current.record.data.keys() {
                if !snapshot.contains_key(k) {
                    overwrite.remove(k);
                }
            }
            for (k, v) in snapshot.iter() {
                overwrite.set(k, v.to_owned());
            }
            return self.inner.save(loaded, &overwrite).await;
        }
        self.inner.save(loaded, delta).await
    }
    async fn cycle_id(&self, loaded: &Loaded, delta: &Delta) -> Result<Saved, SessionError> {
        if let Flaw::CycleKeepsOldId = self.flaw {
            let mut data = loaded.record.data.clone();
            data.apply(delta);
            return self.inner.create(data).await;
        }
        self.inner.cycle_id(loaded, delta).await
    }
    async fn destroy(&self, loaded: &Loaded) -> Result<(), SessionError> {
        if let Flaw::DestroyIgnored = self.flaw {
            return Ok(());
        }
        self.inner.destroy(loaded).await
    }
    fn counters(&self) -> Counters {
        self.inner.counters()
    }
}

struct BrokenFactory(Flaw);

#[async_trait]
impl BackendFactory for BrokenFactory {
    fn name(&self) -> String {
        format!("broken: {:?}", self.0)
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::server_side().in_process()
    }
    async fn build(&self, policy: ExpiryPolicy) -> Result<Harness, String> {
        Ok(Harness::single(Arc::new(Broken {
            inner: MemoryBackend::new(policy, &KeyRing::generate()),
            flaw: self.0,
        })))
    }
}

async fn failed(flaw: Flaw, check: &'static str) -> String {
    let report = run_checks(Arc::new(BrokenFactory(flaw)), &[check]).await;
    match report.outcome(check) {
        Some(Outcome::Failed(m)) => m.clone(),
        other => panic!("{flaw:?} should fail {check}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_catches_lost_updates() {
    let m = failed(
        Flaw::WholeSnapshotSave,
        "concurrent_disjoint_writes_survive",
    )
    .await;
    assert!(m.contains("lost the write"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_catches_ignored_destroy() {
    let m = failed(Flaw::DestroyIgnored, "destroy").await;
    assert!(m.contains("destroyed session still loads"), "{m}");
    failed(Flaw::DestroyIgnored, "save_after_destroy_is_gone").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_catches_cycle_that_keeps_the_old_id() {
    let m = failed(Flaw::CycleKeepsOldId, "cycle_id").await;
    assert!(m.contains("old token still loads"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_catches_writes_on_read() {
    let m = failed(Flaw::WritesOnRead, "unchanged_request_writes_nothing").await;
    assert!(m.contains("wrote") || m.contains("version moved"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_run_reports_the_broken_checks_and_passes_the_rest() {
    let report = run(Arc::new(BrokenFactory(Flaw::DestroyIgnored))).await;
    let failed: Vec<_> = report.failures().iter().map(|r| r.name).collect();
    assert_eq!(
        failed,
        vec!["destroy", "save_after_destroy_is_gone"],
        "{report}"
    );
}
