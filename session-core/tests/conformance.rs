//! The conformance suite must pass on the reference backend and must catch broken ones.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};

use session_core::testing::{
    BackendFactory, Capabilities, Harness, MemoryFactory, Outcome, RebuildFn, TimeControl, run,
    run_checks,
};
use session_core::{
    Counters, Delta, ExpiryPolicy, KeyRing, Loaded, MemoryBackend, Saved, SessionBackend,
    SessionData, SessionError, TokenSigner, async_trait,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_backend_passes_every_check() {
    let report = run(Arc::new(MemoryFactory)).await;
    println!("{report}");
    report.assert_passed();
    for r in &report.results {
        match r.name {
            // An in-process map has no store to lose contact with, and a MemoryBackend cannot
            // share its sessions with one of another key ring (`ReKeyed` below runs that check).
            "store_outage_is_unavailable" | "key_rotation" => {
                assert!(matches!(r.outcome, Outcome::Skipped(_)), "{}", r.name)
            }
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
    /// A save to a session that expired meanwhile creates it again instead of failing.
    SaveRevivesExpired,
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
        match self.inner.save(loaded, delta).await {
            Err(SessionError::Gone) if matches!(self.flaw, Flaw::SaveRevivesExpired) => {
                let mut data = loaded.record.data.clone();
                data.apply(delta);
                self.inner.create(data).await
            }
            other => other,
        }
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
        MemoryFactory.capabilities()
    }
    async fn build(&self, policy: ExpiryPolicy, keys: &KeyRing) -> Result<Harness, String> {
        Ok(Harness::single(Arc::new(Broken {
            inner: MemoryBackend::new(policy, keys),
            flaw: self.0,
        })))
    }
}

async fn failed_on(factory: impl BackendFactory, check: &'static str) -> String {
    let name = factory.name();
    let report = run_checks(Arc::new(factory), &[check]).await;
    match report.outcome(check) {
        Some(Outcome::Failed(m)) => m.clone(),
        other => panic!("{name} should fail {check}, got {other:?}"),
    }
}

async fn failed(flaw: Flaw, check: &'static str) -> String {
    failed_on(BrokenFactory(flaw), check).await
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_catches_a_save_that_revives_an_expired_session() {
    let m = failed(Flaw::SaveRevivesExpired, "save_after_expiry_is_gone").await;
    assert!(m.contains("not Gone"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_checks_of_an_in_process_backend_take_no_real_time() {
    // Paused tokio time: idle, absolute and save-after-expiry wait 1.5 s to 3.6 s each.
    let start = std::time::Instant::now();
    let report = run_checks(
        Arc::new(MemoryFactory),
        &[
            "idle_expiry",
            "reads_keep_session_alive",
            "absolute_expiry",
            "save_after_expiry_is_gone",
            "touch_when_due",
        ],
    )
    .await;
    report.assert_passed();
    assert!(
        start.elapsed() < std::time::Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// key rotation: the reference backend behind a ring that can change while the sessions stay

/// How a re-keyed backend can get rotation wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RotationFlaw {
    /// A token signed with a retired (second) key is served but never re-issued.
    NoReissue,
    /// A token that fails verification is looked up anyway (one network call).
    LooksUpForeignTokens,
}

/// One shared `MemoryBackend` (its own fixed key) behind tokens signed with `ring`: nodes with
/// different rings see the same sessions, as nodes of one store do.
struct ReKeyed {
    store: Arc<MemoryBackend>,
    store_signer: TokenSigner,
    signer: TokenSigner,
    flaw: Option<RotationFlaw>,
    lookups: AtomicU64,
}

impl ReKeyed {
    fn outer(&self, saved: Saved) -> Result<Saved, SessionError> {
        let id = self.store_signer.verify(&saved.token)?.id;
        Ok(Saved {
            token: self.signer.sign(&id, &[])?,
            ..saved
        })
    }
}

#[async_trait]
impl SessionBackend for ReKeyed {
    fn scheme(&self) -> &'static str {
        "rekeyed"
    }
    fn policy(&self) -> &ExpiryPolicy {
        self.store.policy()
    }
    async fn load(&self, token: &str) -> Result<Option<Loaded>, SessionError> {
        let verified = match self.signer.verify(token) {
            Ok(v) => v,
            Err(e) => {
                if self.flaw == Some(RotationFlaw::LooksUpForeignTokens) {
                    self.lookups.fetch_add(1, Ordering::SeqCst);
                }
                return Err(e.into());
            }
        };
        let inner = self.store_signer.sign(&verified.id, &[])?;
        Ok(self.store.load(&inner).await?.map(|l| Loaded {
            token: Arc::from(token),
            reissue: verified.key_index > 0 && self.flaw != Some(RotationFlaw::NoReissue),
            ..l
        }))
    }
    async fn create(&self, data: SessionData) -> Result<Saved, SessionError> {
        self.outer(self.store.create(data).await?)
    }
    async fn save(&self, loaded: &Loaded, delta: &Delta) -> Result<Saved, SessionError> {
        self.outer(self.store.save(loaded, delta).await?)
    }
    async fn cycle_id(&self, loaded: &Loaded, delta: &Delta) -> Result<Saved, SessionError> {
        self.outer(self.store.cycle_id(loaded, delta).await?)
    }
    async fn destroy(&self, loaded: &Loaded) -> Result<(), SessionError> {
        self.store.destroy(loaded).await
    }
    fn counters(&self) -> Counters {
        let mut c = self.store.counters();
        c.network_calls += self.lookups.load(Ordering::SeqCst);
        c
    }
}

/// Two `ReKeyed` nodes with `ring` on `store`, rebuildable with any other ring.
fn rekeyed_harness(
    store: Arc<MemoryBackend>,
    store_keys: KeyRing,
    ring: KeyRing,
    flaw: Option<RotationFlaw>,
) -> Harness {
    let node = || -> Arc<dyn SessionBackend> {
        Arc::new(ReKeyed {
            store: store.clone(),
            store_signer: TokenSigner::new(&store_keys),
            signer: TokenSigner::new(&ring),
            flaw,
            lookups: AtomicU64::new(0),
        })
    };
    let nodes = vec![node(), node()];
    let rebuild: RebuildFn = Arc::new(move |ring| {
        let h = rekeyed_harness(store.clone(), store_keys.clone(), ring, flaw);
        Box::pin(async move { Ok(h) })
    });
    Harness::of(nodes).with_rebuild(rebuild)
}

struct ReKeyedFactory(Option<RotationFlaw>);

#[async_trait]
impl BackendFactory for ReKeyedFactory {
    fn name(&self) -> String {
        format!("re-keyed memory ({:?})", self.0)
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::server_side()
            .in_process()
            .with_time(TimeControl::Paused)
    }
    async fn build(&self, policy: ExpiryPolicy, keys: &KeyRing) -> Result<Harness, String> {
        let store_keys = KeyRing::generate();
        let store = Arc::new(MemoryBackend::new(policy, &store_keys));
        Ok(rekeyed_harness(store, store_keys, keys.clone(), self.0))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_rotates_keys_passes_every_check() {
    let report = run(Arc::new(ReKeyedFactory(None))).await;
    println!("{report}");
    report.assert_passed();
    assert_eq!(report.outcome("key_rotation"), Some(&Outcome::Passed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_catches_old_key_tokens_that_are_not_reissued() {
    let m = failed_on(
        ReKeyedFactory(Some(RotationFlaw::NoReissue)),
        "key_rotation",
    )
    .await;
    assert!(m.contains("not flagged for re-issue"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_catches_foreign_key_tokens_that_cost_io() {
    let m = failed_on(
        ReKeyedFactory(Some(RotationFlaw::LooksUpForeignTokens)),
        "key_rotation",
    )
    .await;
    assert!(m.contains("caused I/O"), "{m}");
}
