//! Builds the configured backend behind one `Arc<dyn SessionBackend>`.

use std::sync::Arc;

use backend_instantcopy::InstantCopyNode;
use session_core::SessionBackend;

use crate::config::{BackendKind, ConfigError, DemoConfig, Keys};

/// The running backend, plus the instant-copy node handle when there is one (for the status
/// page's peer list).
#[derive(Clone)]
pub struct Backend {
    /// The backend every request uses.
    pub session: Arc<dyn SessionBackend>,
    /// The instant-copy node, when that is the backend.
    pub node: Option<InstantCopyNode>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("scheme", &self.session.scheme())
            .finish()
    }
}

/// Starts the backend the configuration names, its tokens signed with `keys.tokens` (bound to
/// the cookie name) and, for instant copy, its peer traffic sealed with `keys.cluster`. A
/// backend whose store is unreachable (database or Redis down) is an error here, so a node
/// never reports ready without its store.
pub async fn build(config: &DemoConfig, all: &Keys) -> Result<Backend, ConfigError> {
    let keys = &all.tokens;
    let policy = config.policy()?;
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        ConfigError(format!("cannot start the {what} backend: {e}"))
    };
    Ok(match config.backend.kind {
        BackendKind::Instantcopy => {
            let ic = config.instantcopy_config();
            let listener = tokio::net::TcpListener::bind(ic.cluster_addr)
                .await
                .map_err(|e| {
                    ConfigError(format!(
                        "cannot listen on backend.instantcopy.cluster_addr {}: {e}",
                        ic.cluster_addr
                    ))
                })?;
            let node = InstantCopyNode::start_with_keys(ic, policy, keys, &all.cluster, listener)
                .await
                .map_err(|e| fail("instantcopy", &e))?;
            Backend {
                session: Arc::new(node.clone()),
                node: Some(node),
            }
        }
        BackendKind::Cookie => {
            let b = backend_cookie::CookieBackend::new(&config.cookie_config(), policy, keys)
                .map_err(|e| fail("cookie", &e))?;
            Backend {
                session: Arc::new(b),
                node: None,
            }
        }
        BackendKind::Sql => {
            let b = backend_sql::SqlBackend::connect(config.backend.sql.clone(), policy, keys)
                .await
                .map_err(|e| fail("sql", &e))?;
            Backend {
                session: Arc::new(b),
                node: None,
            }
        }
        BackendKind::Redis => {
            let b =
                backend_redis::RedisBackend::connect(config.backend.redis.clone(), policy, keys)
                    .await
                    .map_err(|e| fail("redis", &e))?;
            Backend {
                session: Arc::new(b),
                node: None,
            }
        }
    })
}
