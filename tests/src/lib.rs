//! Shared pieces of the cross-backend integration tests.
//!
//! The test files under `tests/tests/` check what spans crates (the deployment files against
//! the defaults, telemetry across backends, the test command's tool and disk checks); each
//! backend crate runs the session-core conformance suite itself. This library holds what they
//! share.
//!
//! ```
//! let prefix = tests::isolated("doc");
//! assert!(prefix.starts_with("doc_"));
//! ```

pub use session_core::testing::{database_url, redis_url, unique_name};

/// A unique, lower-case name for this run's schema or key prefix (see
/// [`session_core::testing::unique_name`]).
pub fn isolated(what: &str) -> String {
    unique_name(what)
}
