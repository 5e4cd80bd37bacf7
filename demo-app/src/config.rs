//! Configuration: a TOML file (or the embedded default) overridden by environment variables,
//! and the secrets, which only ever come from the environment or a file.
//!
//! Past 600 lines because each setting's documentation, default and validation sit beside its
//! field (this file is the configuration reference); the last fifth is its tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use session_core::serve::ServeLimits;
use session_core::{
    ExpiryPolicy, KeyRing, OriginCheck, SameSite, Secret, SessionConfig, SessionLimits,
    TokenTransport,
};
use zeroize::Zeroizing;

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
    /// Where clients carry the token: `cookie_or_header` (the `sid` cookie, or the
    /// `x-session-token` header for clients that send it), `cookie`, `header`, or `bearer`
    /// (`Authorization: Bearer`; tokens come back in `x-session-token`, never a cookie).
    pub transport: TransportSetting,
    /// Sliding idle timeout.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Absolute timeout.
    #[serde(with = "humantime_serde")]
    pub absolute_timeout: Duration,
    /// Fraction of the idle window after which a read refreshes the deadline.
    pub touch_fraction: f64,
    /// The cookie's `SameSite` attribute: `strict`, `lax` or `none` (`none` needs `Secure`).
    pub same_site: SameSiteSetting,
    /// The cookie's `Domain` attribute (none: host-only, the safer default; a `__Host-` cookie
    /// must not have one).
    pub domain: Option<String>,
    /// `true`: the cookie's `Max-Age` follows the session's expiry; `false`: a browser-session
    /// cookie without `Max-Age`.
    pub persistent: bool,
    /// Most bytes of keys and values one session may hold (413 above).
    pub max_bytes: usize,
    /// Most keys one session may hold (413 above).
    pub max_keys: usize,
    /// Refuse cross-site `POST`/`PUT`/`PATCH`/`DELETE` (by `Sec-Fetch-Site`, else `Origin`).
    pub origin_check: bool,
    /// Other origins (`https://host[:port]`) allowed through the origin check.
    pub allowed_origins: Vec<String>,
}

/// Where the client carries its token, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TransportSetting {
    /// The cookie, or the `x-session-token` header for clients that send it.
    #[default]
    CookieOrHeader,
    /// The cookie only.
    Cookie,
    /// The `x-session-token` header only.
    Header,
    /// `Authorization: Bearer` (or `x-session-token`); tokens returned in `x-session-token`.
    Bearer,
}

/// The `SameSite` attribute as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SameSiteSetting {
    /// Never sent on cross-site requests.
    Strict,
    /// Sent on top-level cross-site navigations only (the default).
    #[default]
    Lax,
    /// Always sent (needs `Secure`).
    None,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            cookie_name: "sid".into(),
            secure: None,
            transport: TransportSetting::CookieOrHeader,
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(8 * 3600),
            touch_fraction: 0.25,
            same_site: SameSiteSetting::Lax,
            domain: None,
            persistent: true,
            max_bytes: SessionLimits::default().max_bytes,
            max_keys: SessionLimits::default().max_keys,
            origin_check: true,
            allowed_origins: Vec::new(),
        }
    }
}

/// Resource bounds of the app listener (see `session_core::serve`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Longest wait for a complete request head, also between requests on a kept-alive
    /// connection.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest time one request may take, body included (408 after it).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// A connection with no byte read or written for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Most open connections; beyond it new ones wait in the kernel's backlog.
    pub max_connections: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        let l = ServeLimits::default();
        HttpSettings {
            header_read_timeout: l.header_read_timeout,
            request_timeout: l.request_timeout,
            idle_timeout: l.idle_timeout,
            max_connections: l.max_connections,
        }
    }
}

impl HttpSettings {
    /// The limits for `session_core::serve`.
    pub fn limits(&self) -> ServeLimits {
        let mut limits = ServeLimits::default();
        limits.header_read_timeout = self.header_read_timeout;
        limits.request_timeout = self.request_timeout;
        limits.idle_timeout = self.idle_timeout;
        limits.max_connections = self.max_connections;
        limits
    }
}

/// Where the operator routes (`/`, `/status.json`, `/metrics`) are served.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Serve them at all.
    pub enabled: bool,
    /// A separate listener for them (for example a loopback or private address); none: on the
    /// app port.
    pub addr: Option<SocketAddr>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            enabled: true,
            addr: None,
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
    /// Most cart lines one session may hold (413 above).
    #[serde(default = "default_cart_lines")]
    pub cart_max_lines: usize,
    /// Outside dev mode, a store (PostgreSQL, Redis) on a non-loopback address without TLS is
    /// refused at startup; `true` accepts it with a loud warning (a private network you trust).
    #[serde(default)]
    pub allow_plaintext_store: bool,
    /// Resource bounds of the app listener.
    #[serde(default)]
    pub http: HttpSettings,
    /// The operator routes.
    #[serde(default)]
    pub admin: AdminSettings,
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
fn default_cart_lines() -> usize {
    100
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
        if self.cart_max_lines == 0 {
            return Err(ConfigError(
                "invalid configuration at `cart_max_lines`: at least 1".into(),
            ));
        }
        self.http.limits().validate().map_err(|e| {
            ConfigError(format!(
                "invalid configuration at `http.{}`: {}",
                e.field, e.problem
            ))
        })?;
        self.layer_config()
            .validate()
            .map_err(|e| ConfigError(format!("invalid configuration at `session`: {e}")))?;
        if self.admin.addr == Some(self.app_addr) {
            return Err(ConfigError(
                "invalid configuration at `admin.addr`: must differ from `app_addr`".into(),
            ));
        }
        if self.dev {
            let mut addrs = vec![("app_addr", self.app_addr)];
            if let Some(a) = self.admin.addr {
                addrs.push(("admin.addr", a));
            }
            if self.backend.kind == BackendKind::Instantcopy {
                addrs.push((
                    "backend.instantcopy.cluster_addr",
                    self.backend.instantcopy.cluster_addr,
                ));
            }
            for (key, addr) in addrs {
                if !addr.ip().is_loopback() {
                    return Err(ConfigError(format!(
                        "invalid configuration at `{key}`: development mode (`dev = true`: a \
                         random secret, cookies without Secure) only listens on loopback, not \
                         {addr}; set `dev = false` and a SESSION_SECRET to serve a network"
                    )));
                }
            }
        } else if !self.allow_plaintext_store
            && let Some(store) = self.plaintext_store()
        {
            return Err(ConfigError(format!(
                "invalid configuration at `backend.{}`: {store}; use TLS (`sslmode=verify-full` \
                 / `rediss://`) or set `allow_plaintext_store = true` to accept it",
                self.backend.kind.as_str()
            )));
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
        let s = &self.session;
        SessionConfig::default()
            .with_cookie_name(s.cookie_name.clone())
            .with_secure(s.secure.unwrap_or(!self.dev))
            .with_transport(match s.transport {
                TransportSetting::CookieOrHeader => TokenTransport::CookieOrHeader,
                TransportSetting::Cookie => TokenTransport::Cookie,
                TransportSetting::Header => TokenTransport::Header,
                TransportSetting::Bearer => TokenTransport::Bearer,
            })
            .with_same_site(match s.same_site {
                SameSiteSetting::Strict => SameSite::Strict,
                SameSiteSetting::Lax => SameSite::Lax,
                SameSiteSetting::None => SameSite::None,
            })
            .with_domain(s.domain.clone())
            .with_persistent(s.persistent)
            .with_limits(SessionLimits {
                max_bytes: s.max_bytes,
                max_keys: s.max_keys,
            })
            .with_origin_check(s.origin_check.then(|| OriginCheck {
                allowed_origins: s.allowed_origins.clone(),
                allow_same_site: false,
            }))
    }

    /// The chosen backend's store when it is reached over the network without TLS: a
    /// non-loopback PostgreSQL URL whose `sslmode` is not `require`, `verify-ca` or
    /// `verify-full` (the default `prefer` falls back to plaintext silently), or a non-loopback
    /// `redis://` URL. `None` when TLS is on, the store is local, or there is no store.
    pub fn plaintext_store(&self) -> Option<String> {
        match self.backend.kind {
            BackendKind::Sql => {
                let url = self.backend.sql.url.as_str();
                if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
                    return None;
                }
                let tls = query_param(url, "sslmode")
                    .is_some_and(|m| matches!(m, "require" | "verify-ca" | "verify-full"));
                let host = url_host(url);
                (!tls && !is_local_host(&host)).then(|| {
                    format!("PostgreSQL at {host} is reached without TLS (sslmode is not require/verify-ca/verify-full)")
                })
            }
            BackendKind::Redis => {
                let r = &self.backend.redis;
                let urls: Vec<&str> = match &r.url {
                    Some(u) => vec![u.as_str()],
                    None if r.cluster_nodes.is_empty() => vec![backend_redis::DEFAULT_URL],
                    None => r.cluster_nodes.iter().map(String::as_str).collect(),
                };
                urls.into_iter().find_map(|u| {
                    let host = url_host(u);
                    (u.starts_with("redis://") && !is_local_host(&host))
                        .then(|| format!("Redis at {host} is reached without TLS (redis://)"))
                })
            }
            BackendKind::Instantcopy | BackendKind::Cookie => None,
        }
    }
}

/// The host of a `scheme://[user[:password]@]host[:port]/...` URL (brackets kept for IPv6).
fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(end) = host_port.find(']') {
        return host_port[..=end].to_owned();
    }
    host_port.split(':').next().unwrap_or("").to_owned()
}

/// True for loopback hosts, and for an empty host or a socket path (a local Unix socket).
fn is_local_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.is_empty()
        || h.starts_with('/')
        || h.starts_with("%2F")
        || h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The value of query parameter `name` in `url`, if present.
fn query_param<'u>(url: &'u str, name: &str) -> Option<&'u str> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then_some(v)
    })
}

/// Where the secrets came from (for the startup log line; never the secrets themselves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Environment variables (`SESSION_SECRET` and its `_PREVIOUS`/`_NEXT`, or `CLUSTER_SECRET`
    /// and its).
    Env,
    /// A file.
    File(PathBuf),
    /// Generated at startup (dev mode only).
    Generated,
    /// The cluster channel's keys derived (HKDF) from the session secrets.
    Derived,
}

/// Every key the node uses, each ring signing with its first key and verifying with all.
#[derive(Debug)]
pub struct Keys {
    /// The root session ring as configured (before any derivation).
    pub session: KeyRing,
    /// Signs and verifies the clients' tokens: the session ring bound to the cookie name.
    pub tokens: KeyRing,
    /// Seals and opens peer traffic (instant copy): `CLUSTER_SECRET` when set, else derived
    /// from the session secrets.
    pub cluster: KeyRing,
    /// Where the session secrets came from.
    pub source: SecretSource,
    /// Where the cluster secrets came from.
    pub cluster_source: SecretSource,
}

impl Keys {
    /// Builds the rings from a session ring and an optional cluster ring.
    pub fn new(
        config: &DemoConfig,
        session: (KeyRing, SecretSource),
        cluster: Option<(KeyRing, SecretSource)>,
    ) -> Self {
        let tokens = session.0.for_application(&config.session.cookie_name);
        let (cluster, cluster_source) =
            cluster.unwrap_or_else(|| (session.0.derive("cluster/v1"), SecretSource::Derived));
        Keys {
            session: session.0,
            tokens,
            cluster,
            source: session.1,
            cluster_source,
        }
    }
}

/// Reads every key: [`load_secrets`] for the session ring, and `CLUSTER_SECRET` (with
/// `CLUSTER_SECRET_PREVIOUS` / `CLUSTER_SECRET_NEXT`) or `CLUSTER_SECRET_FILE` for the
/// cluster ring, derived from the session ring when neither is set.
pub fn load_keys(config: &DemoConfig) -> Result<Keys, ConfigError> {
    load_keys_with(config, |k| std::env::var(k).ok())
}

/// [`load_keys`] with an explicit environment lookup (for tests).
pub fn load_keys_with(
    config: &DemoConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Keys, ConfigError> {
    let session = load_secrets_with(config, &env)?;
    let cluster = load_ring(&env, "CLUSTER_SECRET", None)?;
    Ok(Keys::new(config, session, cluster))
}

/// Reads the session secrets: `SESSION_SECRET` (the signing key; several comma-separated for
/// compatibility, the first signs) plus the verify-only keys of `SESSION_SECRET_PREVIOUS` and
/// `SESSION_SECRET_NEXT` (comma-separated), else `SESSION_SECRET_FILE` or `secret_file` (a key
/// ring file, see [`parse_ring_file`]). Every secret is hex or base64 of 32+ bytes. Without
/// any, dev mode generates one and any other mode refuses to start.
pub fn load_secrets(config: &DemoConfig) -> Result<(KeyRing, SecretSource), ConfigError> {
    load_secrets_with(config, |k| std::env::var(k).ok())
}

/// [`load_secrets`] with an explicit environment lookup (for tests).
pub fn load_secrets_with(
    config: &DemoConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(KeyRing, SecretSource), ConfigError> {
    if let Some(found) = load_ring(&env, "SESSION_SECRET", config.secret_file.clone())? {
        return Ok(found);
    }
    if config.dev {
        return Ok((KeyRing::generate(), SecretSource::Generated));
    }
    Err(ConfigError(
        "no session secret: set SESSION_SECRET (32+ random bytes as hex or base64, e.g. \
         `openssl rand -hex 32`) or SESSION_SECRET_FILE, or run a development setup with \
         `dev = true`"
            .into(),
    ))
}

/// One ring from `<VAR>` (+ `<VAR>_PREVIOUS`, `<VAR>_NEXT`) or `<VAR>_FILE` / `file`.
fn load_ring(
    env: &impl Fn(&str) -> Option<String>,
    var: &str,
    file: Option<PathBuf>,
) -> Result<Option<(KeyRing, SecretSource)>, ConfigError> {
    let list = |name: &str| -> Zeroizing<Vec<String>> {
        let v = Zeroizing::new(env(name).unwrap_or_default());
        Zeroizing::new(
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        )
    };
    let signing = list(var);
    if !signing.is_empty() {
        let mut secrets = Vec::new();
        for (name, items) in [
            (var.to_owned(), signing),
            (format!("{var}_PREVIOUS"), list(&format!("{var}_PREVIOUS"))),
            (format!("{var}_NEXT"), list(&format!("{var}_NEXT"))),
        ] {
            for (i, s) in items.iter().enumerate() {
                secrets.push(s.parse::<Secret>().map_err(|e| {
                    ConfigError(format!("invalid secret #{} in {name}: {e}", i + 1))
                })?);
            }
        }
        let ring = KeyRing::new(secrets).map_err(|e| ConfigError(format!("{var}: {e}")))?;
        return Ok(Some((ring, SecretSource::Env)));
    }
    let file = env(&format!("{var}_FILE"))
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or(file);
    let Some(path) = file else {
        return Ok(None);
    };
    let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| {
        ConfigError(format!(
            "cannot read the secret file {}: {e}",
            path.display()
        ))
    })?);
    let ring =
        parse_ring_file(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
    Ok(Some((ring, SecretSource::File(path))))
}

/// Parses a key ring file: one secret per line (hex or base64), `#` comments and blank lines
/// ignored. A line may start with a role: `sign <secret>` (exactly one such line, the signing
/// key) or `verify <secret>` (verify-only). A file without roles keeps the old rule: the first
/// secret signs, the rest verify.
///
/// ```
/// let a = "11".repeat(16) + &"22".repeat(16);
/// let b = "33".repeat(16) + &"44".repeat(16);
/// let ring = demo_app::config::parse_ring_file(&format!("verify {b}\nsign {a}\n")).unwrap();
/// assert_eq!(ring.len(), 2);
/// assert!(demo_app::config::parse_ring_file(&format!("verify {b}\n")).is_err());
/// ```
pub fn parse_ring_file(text: &str) -> Result<KeyRing, String> {
    let mut signing: Vec<Secret> = Vec::new();
    let mut verify: Vec<Secret> = Vec::new();
    let mut roles = false;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (role, value) = match line.split_once(char::is_whitespace) {
            Some(("sign", v)) => (Some(true), v.trim()),
            Some(("verify", v)) => (Some(false), v.trim()),
            _ => (None, line),
        };
        let secret = value
            .parse::<Secret>()
            .map_err(|e| format!("line {}: {e}", n + 1))?;
        match role {
            Some(true) => {
                roles = true;
                signing.push(secret);
            }
            Some(false) => {
                roles = true;
                verify.push(secret);
            }
            None if roles => {
                return Err(format!(
                    "line {}: give every secret a role (sign or verify) once one has one",
                    n + 1
                ));
            }
            None if signing.is_empty() => signing.push(secret),
            None => verify.push(secret),
        }
    }
    if roles && signing.len() != 1 {
        return Err(format!(
            "exactly one `sign` key is needed, found {}",
            signing.len()
        ));
    }
    if signing.is_empty() {
        return Err("no secret in the file".into());
    }
    KeyRing::new(signing.into_iter().chain(verify)).map_err(|e| e.to_string())
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
        let good = "5ec2e7a1".repeat(9);
        let good = good.as_str();
        let old = "01d5ec2e".repeat(9);
        let (ring, src) = load_secrets_with(&c, |k| {
            (k == "SESSION_SECRET").then(|| format!("{good},{old}"))
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

    #[test]
    fn verify_only_keys_follow_the_signing_key_and_cluster_keys_are_separate() {
        let c = DemoConfig::from_toml("dev = false").unwrap();
        let new = "a1b2c3d4".repeat(8);
        let old = "0f1e2d3c".repeat(8);
        let signed_by = |ring: &KeyRing| ring.derive("t").sign(&[b"m"]);
        // Phase 1: old signs, new verifies.
        let phase1 = load_keys_with(&c, |k| match k {
            "SESSION_SECRET" => Some(old.clone()),
            "SESSION_SECRET_NEXT" => Some(new.clone()),
            _ => None,
        })
        .unwrap();
        // Phase 2: new signs, old verifies.
        let phase2 = load_keys_with(&c, |k| match k {
            "SESSION_SECRET" => Some(new.clone()),
            "SESSION_SECRET_PREVIOUS" => Some(old.clone()),
            _ => None,
        })
        .unwrap();
        assert_eq!((phase1.tokens.len(), phase2.tokens.len()), (2, 2));
        let t1 = signed_by(&phase1.tokens);
        let t2 = signed_by(&phase2.tokens);
        assert_eq!(phase2.tokens.derive("t").verify(&[b"m"], &t1), Some(1));
        assert_eq!(phase1.tokens.derive("t").verify(&[b"m"], &t2), Some(1));
        // The cluster ring is derived, never the token ring itself, unless set on its own.
        assert_eq!(phase1.cluster_source, SecretSource::Derived);
        assert_eq!(phase1.cluster.derive("t").verify(&[b"m"], &t1), None);
        let own = load_keys_with(&c, |k| match k {
            "SESSION_SECRET" => Some(old.clone()),
            "CLUSTER_SECRET" => Some(new.clone()),
            _ => None,
        })
        .unwrap();
        assert_eq!(own.cluster_source, SecretSource::Env);
        assert_ne!(own.cluster.keys(), phase1.cluster.keys());
        // The token ring is bound to the cookie name.
        let other_app =
            DemoConfig::from_toml("dev = false\n[session]\ncookie_name = \"shop\"").unwrap();
        let other =
            load_keys_with(&other_app, |k| (k == "SESSION_SECRET").then(|| old.clone())).unwrap();
        assert_eq!(other.tokens.derive("t").verify(&[b"m"], &t1), None);
        // Not hex or base64: a clear error naming the variable.
        let e = load_keys_with(&c, |k| {
            (k == "SESSION_SECRET_PREVIOUS" || k == "SESSION_SECRET")
                .then(|| "a passphrase, not a secret!".into())
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("SESSION_SECRET") && e.contains("hex"), "{e}");
        assert!(!format!("{phase1:?}").contains(&old));
    }

    #[test]
    fn ring_files_have_roles() {
        let a = "11223344".repeat(8);
        let b = "55667788".repeat(8);
        assert_eq!(
            parse_ring_file(&format!("# rotation\nverify {b}\nsign {a}\n"))
                .unwrap()
                .len(),
            2
        );
        assert!(parse_ring_file(&format!("sign {a}\nsign {b}\n")).is_err());
        assert!(parse_ring_file(&format!("sign {a}\n{b}\n")).is_err());
        assert!(parse_ring_file("").is_err());
        assert!(parse_ring_file("sign nope").unwrap_err().contains("line 1"));
    }

    #[test]
    fn dev_mode_listens_on_loopback_only() {
        let e = DemoConfig::from_toml("dev = true\napp_addr = \"0.0.0.0:8080\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`app_addr`") && e.contains("loopback"), "{e}");
        let e = DemoConfig::from_toml(
            "dev = true\n[backend.instantcopy]\ncluster_addr = \"0.0.0.0:7001\"",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("cluster_addr"), "{e}");
        let e = DemoConfig::from_toml("dev = true\n[admin]\naddr = \"0.0.0.0:9000\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("admin.addr"), "{e}");
        assert!(DemoConfig::from_toml("dev = false\napp_addr = \"0.0.0.0:8080\"").is_ok());
    }

    #[test]
    fn plaintext_stores_off_loopback_are_refused_outside_dev_mode() {
        let sql = |url: &str, extra: &str| {
            DemoConfig::from_toml(&format!(
                "dev = false\n{extra}\n[backend]\nkind = \"sql\"\n[backend.sql]\nurl = \"{url}\""
            ))
        };
        let e = sql("postgres://app:pw@db.internal:5432/app", "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("without TLS") && !e.contains("pw"), "{e}");
        assert!(sql("postgres://app:pw@db.internal:5432/app?sslmode=prefer", "").is_err());
        assert!(sql("postgres://app@db.internal/app?sslmode=verify-full", "").is_ok());
        assert!(sql("postgres://postgres@127.0.0.1:5432/postgres", "").is_ok());
        assert!(sql("postgres://postgres@localhost/postgres", "").is_ok());
        assert!(
            sql(
                "postgres://app@db.internal/app",
                "allow_plaintext_store = true"
            )
            .is_ok()
        );
        let redis = |url: &str| {
            DemoConfig::from_toml(&format!(
                "dev = false\n[backend]\nkind = \"redis\"\n[backend.redis]\nurl = \"{url}\""
            ))
        };
        assert!(redis("redis://cache.internal:6379").is_err());
        assert!(redis("rediss://cache.internal:6380").is_ok());
        assert!(redis("redis://127.0.0.1:6379").is_ok());
        assert!(redis("redis://[::1]:6379").is_ok());
    }

    #[test]
    fn cookie_rules_and_http_limits_are_checked() {
        let e =
            DemoConfig::from_toml("dev = false\n[session]\nsame_site = \"none\"\nsecure = false")
                .unwrap_err()
                .to_string();
        assert!(e.contains("SameSite=None"), "{e}");
        let e = DemoConfig::from_toml(
            "dev = false\n[session]\ncookie_name = \"__Host-sid\"\ndomain = \"example.com\"",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("__Host-"), "{e}");
        assert!(
            DemoConfig::from_toml("dev = false\n[session]\ncookie_name = \"__Host-sid\"").is_ok()
        );
        let e = DemoConfig::from_toml("[http]\nmax_connections = 0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`http.max_connections`"), "{e}");
        let c = DemoConfig::from_toml("[http]\nheader_read_timeout = \"2s\"").unwrap();
        assert_eq!(c.http.limits().header_read_timeout, Duration::from_secs(2));
        assert_eq!(c.http.limits().max_connections, 1024);
    }
}
