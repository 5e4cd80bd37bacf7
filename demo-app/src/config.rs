//! Configuration: a TOML file (or the embedded default) overridden by environment variables,
//! and the secrets, which only ever come from the environment or a file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use session_core::{ExpiryPolicy, KeyRing, Secret, SessionConfig, TokenTransport};

/// The embedded default configuration (one instant-copy node, development mode).
pub const DEFAULT_TOML: &str = include_str!("../default.toml");

/// Environment variable prefix for overrides; `__` separates nested keys, e.g.
/// `DEMO_BACKEND__KIND=redis`, `DEMO_BACKEND__REDIS__URL=redis://...`.
pub const ENV_PREFIX: &str = "DEMO_";

/// Which session scheme the app runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Sessions in the nodes' memory, copied between them (the paper's scheme).
    #[default]
    Instantcopy,
    /// The whole session sealed in the cookie.
    Cookie,
    /// PostgreSQL (or SQLite).
    Sql,
    /// Redis or Redis Cluster.
    Redis,
}

impl BackendKind {
    /// The name used in config and on the command line.
    pub fn as_str(&self) -> &'static str {
        match self {
            BackendKind::Instantcopy => "instantcopy",
            BackendKind::Cookie => "cookie",
            BackendKind::Sql => "sql",
            BackendKind::Redis => "redis",
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "instantcopy" => Ok(BackendKind::Instantcopy),
            "cookie" => Ok(BackendKind::Cookie),
            "sql" => Ok(BackendKind::Sql),
            "redis" => Ok(BackendKind::Redis),
            _ => Err(format!(
                "unknown backend {s:?}: expected instantcopy, cookie, sql or redis"
            )),
        }
    }
}

/// The session layer and expiry settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionSettings {
    /// Cookie name.
    pub cookie_name: String,
    /// The cookie's `Secure` attribute; unset means on, except in dev mode.
    pub secure: Option<bool>,
    /// Accept the `x-session-token` header as well as the cookie.
    pub header: bool,
    /// Sliding idle timeout.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Absolute timeout.
    #[serde(with = "humantime_serde")]
    pub absolute_timeout: Duration,
    /// Fraction of the idle window after which a read refreshes the deadline.
    pub touch_fraction: f64,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            cookie_name: "sid".into(),
            secure: None,
            header: true,
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(8 * 3600),
            touch_fraction: 0.25,
        }
    }
}

/// The backend and the settings of every backend (only the chosen one is used).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct BackendSettings {
    /// Which backend runs.
    pub kind: BackendKind,
    /// Instant-copy settings (its `node_id` is taken from the top-level `node_id`).
    pub instantcopy: backend_instantcopy::Config,
    /// Sealed-cookie settings (its `cookie_name` is taken from `session.cookie_name`).
    pub cookie: backend_cookie::CookieConfig,
    /// SQL settings (`url` also from `DATABASE_URL`).
    pub sql: backend_sql::SqlConfig,
    /// Redis settings (`url` also from `REDIS_URL`).
    pub redis: backend_redis::RedisConfig,
}

/// The whole demo configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// Development mode: a random secret is generated when none is configured, and cookies
    /// are not `Secure` unless `session.secure` says so. Never in production.
    #[serde(default)]
    pub dev: bool,
    /// This node's id (shown on every response, and the instant-copy node id).
    #[serde(default = "one")]
    pub node_id: u16,
    /// Where the app listens.
    #[serde(default = "default_app_addr")]
    pub app_addr: SocketAddr,
    /// Log filter (`RUST_LOG` syntax), e.g. `info` or `demo_app=debug,info`.
    #[serde(default = "default_log")]
    pub log: String,
    /// A file holding the session secrets, one per line (first signs); `SESSION_SECRET_FILE`
    /// overrides it.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Largest accepted request body.
    #[serde(default = "default_body_limit")]
    pub max_body_bytes: usize,
    /// Session layer and expiry.
    #[serde(default)]
    pub session: SessionSettings,
    /// The backend.
    #[serde(default)]
    pub backend: BackendSettings,
}

fn one() -> u16 {
    1
}
fn default_app_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_log() -> String {
    "info".into()
}
fn default_body_limit() -> usize {
    16 * 1024
}

/// A configuration problem: one message naming the key and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        let key = if e.path.is_empty() {
            String::from("(top level)")
        } else {
            e.path.join(".")
        };
        ConfigError(format!("invalid configuration at `{key}`: {}", e.kind))
    }
}

impl DemoConfig {
    /// Loads `file` (or the embedded default when `None`), then applies `DEMO_*` environment
    /// overrides, `DATABASE_URL` and `REDIS_URL`, then validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::new();
        fig = match file {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError(format!(
                        "config file {} does not exist",
                        path.display()
                    )));
                }
                fig.merge(Toml::file(path))
            }
            None => fig.merge(Toml::string(DEFAULT_TOML)),
        };
        fig = fig
            .merge(
                Env::raw()
                    .only(&["DATABASE_URL"])
                    .map(|_| "backend.sql.url".into()),
            )
            .merge(
                Env::raw()
                    .only(&["REDIS_URL"])
                    .map(|_| "backend.redis.url".into()),
            )
            .merge(Env::prefixed(ENV_PREFIX).split("__"));
        let config: DemoConfig = fig.extract()?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML string with no environment overrides (tests, examples).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: DemoConfig = Figment::new()
            .merge(Serialized::defaults(serde_json::json!({})))
            .merge(Toml::string(text))
            .extract()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks cross-field rules and each backend's own configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(ConfigError(
                "invalid configuration at `node_id`: node ids start at 1".into(),
            ));
        }
        self.policy()?;
        if self.session.cookie_name.is_empty()
            || !self
                .session
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(ConfigError(format!(
                "invalid configuration at `session.cookie_name`: {:?} must be non-empty ASCII letters, digits, `_` or `-`",
                self.session.cookie_name
            )));
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError(
                "invalid configuration at `max_body_bytes`: at least 1024".into(),
            ));
        }
        match self.backend.kind {
            BackendKind::Instantcopy => {
                let ic = self.instantcopy_config();
                ic.validate().map_err(|e| {
                    ConfigError(format!(
                        "invalid configuration at `backend.instantcopy.{}`: {}",
                        e.field, e.problem
                    ))
                })?;
                if ic.cluster_addr == self.app_addr {
                    return Err(ConfigError(
                        "invalid configuration at `backend.instantcopy.cluster_addr`: must differ from `app_addr` (peer traffic has its own port)".into(),
                    ));
                }
            }
            BackendKind::Cookie => {
                self.cookie_config().validate().map_err(|e| {
                    ConfigError(format!("invalid configuration at `backend.cookie`: {e}"))
                })?;
            }
            BackendKind::Sql => {
                self.backend.sql.validate().map_err(|e| {
                    ConfigError(format!("invalid configuration at `backend.sql`: {e}"))
                })?;
            }
            BackendKind::Redis => {
                self.backend.redis.validate().map_err(|e| {
                    ConfigError(format!("invalid configuration at `backend.redis`: {e}"))
                })?;
            }
        }
        Ok(())
    }

    /// The expiry policy.
    pub fn policy(&self) -> Result<ExpiryPolicy, ConfigError> {
        ExpiryPolicy::new(self.session.idle_timeout, self.session.absolute_timeout)
            .and_then(|p| p.with_touch_fraction(self.session.touch_fraction))
            .map_err(|e| ConfigError(format!("invalid configuration at `session`: {e}")))
    }

    /// The instant-copy configuration with this node's id.
    pub fn instantcopy_config(&self) -> backend_instantcopy::Config {
        let mut ic = self.backend.instantcopy.clone();
        ic.node_id = backend_instantcopy::NodeId(self.node_id);
        ic
    }

    /// The cookie backend's configuration with the layer's cookie name.
    pub fn cookie_config(&self) -> backend_cookie::CookieConfig {
        let mut c = self.backend.cookie.clone();
        c.cookie_name.clone_from(&self.session.cookie_name);
        c
    }

    /// The session layer configuration.
    pub fn layer_config(&self) -> SessionConfig {
        SessionConfig::default()
            .with_cookie_name(self.session.cookie_name.clone())
            .with_secure(self.session.secure.unwrap_or(!self.dev))
            .with_transport(if self.session.header {
                TokenTransport::CookieOrHeader
            } else {
                TokenTransport::Cookie
            })
    }
}

/// Where the secrets came from (for the startup log line; never the secrets themselves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `SESSION_SECRET`.
    Env,
    /// A file.
    File(PathBuf),
    /// Generated at startup (dev mode only).
    Generated,
}

/// Reads the session secrets: `SESSION_SECRET` (comma-separated, first signs), else
/// `SESSION_SECRET_FILE` or `secret_file` (one per line, `#` comments). Without any, dev mode
/// generates one and any other mode refuses to start.
pub fn load_secrets(config: &DemoConfig) -> Result<(KeyRing, SecretSource), ConfigError> {
    load_secrets_with(config, |k| std::env::var(k).ok())
}

/// [`load_secrets`] with an explicit environment lookup (for tests).
pub fn load_secrets_with(
    config: &DemoConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(KeyRing, SecretSource), ConfigError> {
    let parse = |items: Vec<String>, source: &str| -> Result<KeyRing, ConfigError> {
        let secrets = items
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.parse::<Secret>()
                    .map_err(|e| ConfigError(format!("invalid secret #{} in {source}: {e}", i + 1)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        KeyRing::new(secrets).map_err(|e| ConfigError(format!("{source}: {e}")))
    };
    if let Some(v) = env("SESSION_SECRET")
        && !v.trim().is_empty()
    {
        let items = v
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        return Ok((parse(items, "SESSION_SECRET")?, SecretSource::Env));
    }
    let file = env("SESSION_SECRET_FILE")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| config.secret_file.clone());
    if let Some(path) = file {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ConfigError(format!(
                "cannot read the secret file {}: {e}",
                path.display()
            ))
        })?;
        let items = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        let ring = parse(items, &path.display().to_string())?;
        return Ok((ring, SecretSource::File(path)));
    }
    if config.dev {
        return Ok((KeyRing::generate(), SecretSource::Generated));
    }
    Err(ConfigError(
        "no session secret: set SESSION_SECRET (32+ random bytes, comma-separated for rotation) or \
         SESSION_SECRET_FILE, or run a development setup with `dev = true`"
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_a_dev_instantcopy_node() {
        let c = DemoConfig::from_toml(DEFAULT_TOML).unwrap();
        assert!(c.dev);
        assert_eq!(c.backend.kind, BackendKind::Instantcopy);
        assert!(!c.layer_config().secure, "dev cookies work over plain http");
        let (_, src) = load_secrets_with(&c, |_| None).unwrap();
        assert_eq!(src, SecretSource::Generated);
    }

    #[test]
    fn errors_name_the_key() {
        let e = DemoConfig::from_toml("node_id = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`node_id`"), "{e}");
        let e = DemoConfig::from_toml("[backend]\nkind = \"mongo\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`backend.kind`"), "{e}");
        let e = DemoConfig::from_toml("bogus = 1").unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = DemoConfig::from_toml("[session]\nidle_timeout = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`session.idle_timeout`"), "{e}");
        let e = DemoConfig::from_toml(
            "app_addr = \"127.0.0.1:7001\"\n[backend.instantcopy]\ncluster_addr = \"127.0.0.1:7001\"\nmembers = [{ id = 1, addr = \"127.0.0.1:7001\" }]",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("cluster_addr"), "{e}");
    }

    #[test]
    fn secrets_come_from_env_or_file_and_production_needs_one() {
        let c = DemoConfig::from_toml("dev = false").unwrap();
        assert!(c.layer_config().secure, "Secure cookies outside dev mode");
        let e = load_secrets_with(&c, |_| None).unwrap_err().to_string();
        assert!(e.contains("SESSION_SECRET"), "{e}");
        let good = "a-secret-that-is-long-enough-to-use-here-0123456789";
        let (ring, src) = load_secrets_with(&c, |k| {
            (k == "SESSION_SECRET").then(|| format!("{good},{good}-old"))
        })
        .unwrap();
        assert_eq!((ring.len(), src), (2, SecretSource::Env));
        let e = load_secrets_with(&c, |k| (k == "SESSION_SECRET").then(|| "short".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("secret #1"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets");
        std::fs::write(&path, format!("# current first\n{good}\n")).unwrap();
        let p = path.to_string_lossy().into_owned();
        let (ring, src) =
            load_secrets_with(&c, |k| (k == "SESSION_SECRET_FILE").then(|| p.clone())).unwrap();
        assert_eq!((ring.len(), src), (1, SecretSource::File(path)));
    }
}
