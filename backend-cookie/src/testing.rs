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
use session_core::testing::{BackendFactory, Capabilities, Harness};
use session_core::{ExpiryPolicy, KeyRing, SessionBackend};

use crate::{CookieBackend, CookieConfig};

/// The largest single value the suite stores in a cookie session: 2048 bytes of JSON seal to
/// about 2.9 KB uncompressed, leaving room for the suite's other keys under the 4096-byte limit.
pub const SUITE_MAX_VALUE_BYTES: usize = 2048;

/// Builds cookie backends for the conformance suite.
///
/// Every build gets a fresh random key ring unless one is given, so instances are isolated
/// (a cookie from one instance does not open on another). A harness has two nodes sharing the
/// ring, as two servers behind a load balancer would, so the suite's cross-node reads are real.
///
/// The suite runs with [`Capabilities::client_side`]: the three checks that need the server to
/// kill or merge a copy held by the client (`concurrent_disjoint_writes_survive`,
/// `concurrent_same_key_converges`, `save_after_destroy_is_gone`) are skipped with that reason,
/// and `destroy`/`cycle_id` do not require the old cookie to stop loading.
#[derive(Debug, Clone)]
pub struct CookieFactory {
    config: CookieConfig,
    keys: Option<KeyRing>,
}

impl Default for CookieFactory {
    fn default() -> Self {
        CookieFactory::new(CookieConfig::default())
    }
}

impl CookieFactory {
    /// A factory building backends with `config` and a fresh random key ring per build.
    pub fn new(config: CookieConfig) -> Self {
        CookieFactory { config, keys: None }
    }

    /// Uses `keys` for every build instead of a fresh ring.
    pub fn with_keys(mut self, keys: KeyRing) -> Self {
        self.keys = Some(keys);
        self
    }
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
        Capabilities::client_side(SUITE_MAX_VALUE_BYTES)
    }

    async fn build(&self, policy: ExpiryPolicy) -> Result<Harness, String> {
        let keys = self.keys.clone().unwrap_or_else(KeyRing::generate);
        let node = || -> Result<Arc<dyn SessionBackend>, String> {
            CookieBackend::new(&self.config, policy, &keys)
                .map(|b| Arc::new(b) as Arc<dyn SessionBackend>)
                .map_err(|e| format!("cookie backend config: {e}"))
        };
        Ok(Harness {
            outage: None,
            nodes: vec![node()?, node()?],
            settle: None,
        })
    }
}
