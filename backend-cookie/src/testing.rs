//! The conformance-suite factory for this backend (feature `testing`).
//!
//! ```
//! use std::sync::Arc;
//! use backend_cookie::testing::CookieFactory;
//! # #[tokio::main] async fn main() {
//! let report = session_core::testing::run(Arc::new(CookieFactory::default())).await;
//! report.assert_passed();
//! # }
//! ```

use std::sync::Arc;

use async_trait::async_trait;
use session_core::testing::{BackendFactory, Capabilities, Harness, RebuildFn, TimeControl};
use session_core::{ExpiryPolicy, KeyRing, SessionBackend};

use crate::{CookieBackend, CookieConfig};

/// The largest single value the suite stores in a cookie session: 2048 bytes of JSON seal to
/// about 2.9 KB uncompressed, leaving room for the suite's other keys under the 4096-byte limit.
pub const SUITE_MAX_VALUE_BYTES: usize = 2048;

/// Builds cookie backends for the conformance suite.
///
/// Every build uses the key ring the suite gives it, so instances are isolated (a cookie from
/// one instance does not open on another). A harness has two nodes sharing the ring, as two
/// servers behind a load balancer would, so the suite's cross-node reads are real; its rebuild
/// hook gives two nodes with another ring (the sessions travel in the cookies, so they share
/// them by construction).
///
/// The suite runs with [`Capabilities::client_side`]: the three checks that need the server to
/// kill or merge a copy held by the client (`concurrent_disjoint_writes_survive`,
/// `concurrent_same_key_converges`, `save_after_destroy_is_gone`) are skipped with that reason,
/// and `destroy`/`cycle_id` do not require the old cookie to stop loading. Sealing and opening
/// run in the calling task and take "now" from the session clock, so the expiry checks run
/// with tokio time paused ([`TimeControl::Paused`]).
#[derive(Debug, Clone)]
pub struct CookieFactory {
    config: CookieConfig,
}

impl Default for CookieFactory {
    fn default() -> Self {
        CookieFactory::new(CookieConfig::default())
    }
}

impl CookieFactory {
    /// A factory building backends with `config`.
    pub fn new(config: CookieConfig) -> Self {
        CookieFactory { config }
    }
}

/// Two cookie nodes with `keys`, and a hook that makes two more with another ring.
fn harness(config: CookieConfig, policy: ExpiryPolicy, keys: &KeyRing) -> Result<Harness, String> {
    let node = || -> Result<Arc<dyn SessionBackend>, String> {
        CookieBackend::new(&config, policy, keys)
            .map(|b| Arc::new(b) as Arc<dyn SessionBackend>)
            .map_err(|e| format!("cookie backend config: {e}"))
    };
    let nodes = vec![node()?, node()?];
    let rebuild: RebuildFn = Arc::new(move |keys| {
        let h = harness(config.clone(), policy, &keys);
        Box::pin(async move { h })
    });
    Ok(Harness::of(nodes).with_rebuild(rebuild))
}

#[async_trait]
impl BackendFactory for CookieFactory {
    fn name(&self) -> String {
        if self.config.compress {
            "cookie (compressed)".into()
        } else {
            "cookie".into()
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::client_side(SUITE_MAX_VALUE_BYTES).with_time(TimeControl::Paused)
    }

    async fn build(&self, policy: ExpiryPolicy, keys: &KeyRing) -> Result<Harness, String> {
        harness(self.config.clone(), policy, keys)
    }
}
