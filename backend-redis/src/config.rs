//! The backend's configuration: where Redis is, how keys are named, how long to wait.

use std::fmt;
use std::time::Duration;

use redis::IntoConnectionInfo;
use serde::Deserialize;

/// The single server used when neither `url` nor `cluster_nodes` is set (matches
/// `docker-compose.yml` and `session_core::testing::DEFAULT_REDIS_URL`).
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// The default key prefix: a session lives at `session:{<id>}`.
pub const DEFAULT_KEY_PREFIX: &str = "session:";

/// Longest accepted key prefix, in bytes.
pub const MAX_KEY_PREFIX_LEN: usize = 128;

/// Where Redis is and how the backend talks to it.
///
/// Deserializes from the demo's TOML (or any serde format); every field has a default and
/// durations are humantime strings (`"2s"`, `"500ms"`). Exactly one of `url` (one server,
/// reached through a managed connection that reconnects by itself) or `cluster_nodes` (Redis
/// Cluster, reached through the cluster-aware async connection) may be set; with neither, the
/// backend uses [`DEFAULT_URL`].
///
/// ```
/// use backend_redis::RedisConfig;
/// let config: RedisConfig = serde_json::from_str(
///     r#"{ "cluster_nodes": ["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"],
///          "key_prefix": "shop:sess:", "response_timeout": "250ms" }"#,
/// ).unwrap();
/// assert!(config.validate().is_ok());
/// assert_eq!(config.response_timeout, std::time::Duration::from_millis(250));
/// ```
///
/// URLs may carry credentials (`redis://user:password@host:6379/0`); `Debug` and every error
/// message redact them.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct RedisConfig {
    /// A single Redis server, as a `redis://` URL (database number in the path).
    pub url: Option<String>,
    /// The seed nodes of a Redis Cluster (`redis://host:port` each); the rest of the topology
    /// is discovered from them.
    pub cluster_nodes: Vec<String>,
    /// Prepended to every key. Must not contain `{` or `}`: the session id is the key's hash
    /// tag, so everything of one session maps to one cluster slot.
    pub key_prefix: String,
    /// How long one attempt to open a connection may take before Redis counts as unavailable.
    #[serde(with = "humantime_serde")]
    pub connection_timeout: Duration,
    /// How long one command may wait for its reply before Redis counts as unavailable.
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// How many times a lost connection is re-opened (with backoff) before a request fails
    /// with `Unavailable`; later requests try again, so the backend recovers by itself.
    pub reconnect_attempts: u32,
    /// The name this backend's connections report (`CLIENT SETINFO lib-name`), visible in
    /// `CLIENT LIST` as `lib-name=...` on Redis 7.2 and later (older servers ignore it).
    /// Letters, digits and `-_.:` only.
    pub client_name: String,
    /// For `rediss://` URLs (TLS, with rustls): a PEM file of the certificate authorities to
    /// trust instead of the system's (a private CA). Unset: the system trust store. The
    /// server's certificate is always verified against the URL's host name.
    pub tls_ca_file: Option<std::path::PathBuf>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: None,
            cluster_nodes: Vec::new(),
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            connection_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
            reconnect_attempts: 3,
            client_name: "session-sync".to_owned(),
            tls_ca_file: None,
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field(
                "cluster_nodes",
                &self
                    .cluster_nodes
                    .iter()
                    .map(|u| redact_url(u))
                    .collect::<Vec<_>>(),
            )
            .field("key_prefix", &self.key_prefix)
            .field("connection_timeout", &self.connection_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("reconnect_attempts", &self.reconnect_attempts)
            .field("client_name", &self.client_name)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

/// Which kind of deployment a configuration names.
#[derive(Clone, PartialEq, Eq)]
pub enum Topology {
    /// One server (possibly behind a proxy that looks like one server).
    Single(String),
    /// A Redis Cluster, by its seed nodes.
    Cluster(Vec<String>),
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topology::Single(u) => f.debug_tuple("Single").field(&redact_url(u)).finish(),
            Topology::Cluster(n) => f
                .debug_tuple("Cluster")
                .field(&n.iter().map(|u| redact_url(u)).collect::<Vec<_>>())
                .finish(),
        }
    }
}

pub use session_core::ConfigError;

fn bad(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::new("redis", field, problem)
}

impl RedisConfig {
    /// A single-server configuration with defaults for everything else.
    pub fn single(url: impl Into<String>) -> Self {
        RedisConfig {
            url: Some(url.into()),
            ..Default::default()
        }
    }

    /// A Redis Cluster configuration with defaults for everything else.
    pub fn cluster<S: Into<String>>(nodes: impl IntoIterator<Item = S>) -> Self {
        RedisConfig {
            cluster_nodes: nodes.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// Replaces the key prefix.
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Checks every field and says which deployment the configuration names.
    pub fn validate(&self) -> Result<Topology, ConfigError> {
        let p = &self.key_prefix;
        if p.is_empty() {
            return Err(bad(
                "key_prefix",
                "must not be empty (session keys would mix with other data)",
            ));
        }
        if p.len() > MAX_KEY_PREFIX_LEN {
            return Err(bad(
                "key_prefix",
                format!("is {} bytes, over {MAX_KEY_PREFIX_LEN}", p.len()),
            ));
        }
        if p.contains(['{', '}']) {
            return Err(bad(
                "key_prefix",
                "must not contain '{' or '}' (the session id is the key's cluster hash tag)",
            ));
        }
        if p.chars().any(char::is_control) {
            return Err(bad("key_prefix", "must not contain control characters"));
        }
        if self.connection_timeout.is_zero() {
            return Err(bad("connection_timeout", "must be greater than zero"));
        }
        if self.response_timeout.is_zero() {
            return Err(bad("response_timeout", "must be greater than zero"));
        }
        let name = &self.client_name;
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return Err(bad(
                "client_name",
                "must be 1 to 64 characters of letters, digits and -_.:",
            ));
        }
        match (&self.url, self.cluster_nodes.is_empty()) {
            (Some(_), false) => Err(bad(
                "url",
                "set either url (one server) or cluster_nodes (Redis Cluster), not both",
            )),
            (Some(url), true) => {
                check_url("url", url)?;
                Ok(Topology::Single(url.clone()))
            }
            (None, true) => Ok(Topology::Single(DEFAULT_URL.to_owned())),
            (None, false) => {
                for (i, u) in self.cluster_nodes.iter().enumerate() {
                    check_url(&format!("cluster_nodes[{i}]"), u)?;
                }
                Ok(Topology::Cluster(self.cluster_nodes.clone()))
            }
        }
    }
}

fn check_url(field: &str, url: &str) -> Result<(), ConfigError> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(bad(
            field,
            format!("{:?} is not a redis:// URL", redact_url(url)),
        ));
    }
    url.into_connection_info().map(|_| ()).map_err(|e| {
        bad(
            field,
            format!("{:?} is not a usable Redis URL: {e}", redact_url(url)),
        )
    })
}

/// The URL with any `user:password@` part replaced by `***@`, safe to log.
///
/// ```
/// assert_eq!(
///     backend_redis::redact_url("redis://app:hunter2@cache:6379/0"),
///     "redis://***@cache:6379/0"
/// );
/// assert_eq!(backend_redis::redact_url("redis://cache:6379"), "redis://cache:6379");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_a_local_single_server() {
        let c = RedisConfig::default();
        assert_eq!(c.validate(), Ok(Topology::Single(DEFAULT_URL.into())));
    }

    #[test]
    fn errors_name_the_field() {
        let both = RedisConfig {
            url: Some("redis://a:1".into()),
            cluster_nodes: vec!["redis://b:2".into()],
            ..Default::default()
        };
        assert_eq!(both.validate().unwrap_err().field, "url");
        let braces = RedisConfig::default().with_key_prefix("s:{x}:");
        assert_eq!(braces.validate().unwrap_err().field, "key_prefix");
        let empty = RedisConfig::default().with_key_prefix("");
        assert_eq!(empty.validate().unwrap_err().field, "key_prefix");
        let node = RedisConfig::cluster(["redis://a:1", "http://b:2"]);
        assert_eq!(node.validate().unwrap_err().field, "cluster_nodes[1]");
        let zero = RedisConfig {
            response_timeout: Duration::ZERO,
            ..Default::default()
        };
        assert_eq!(zero.validate().unwrap_err().field, "response_timeout");
        let name = RedisConfig {
            client_name: "has space".into(),
            ..Default::default()
        };
        assert_eq!(name.validate().unwrap_err().field, "client_name");
    }

    #[test]
    fn deserializes_with_humantime_and_refuses_unknown_fields() {
        let c: RedisConfig = serde_json::from_str(
            r#"{"url":"redis://127.0.0.1:7000/2","connection_timeout":"750ms","reconnect_attempts":5}"#,
        )
        .unwrap();
        assert_eq!(c.connection_timeout, Duration::from_millis(750));
        assert_eq!(c.reconnect_attempts, 5);
        assert_eq!(c.key_prefix, DEFAULT_KEY_PREFIX);
        assert!(matches!(c.validate(), Ok(Topology::Single(_))));
        let err = serde_json::from_str::<RedisConfig>(r#"{"urls":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn credentials_never_show() {
        let c = RedisConfig::single("redis://user:s3cret@host:6379/1");
        assert!(!format!("{c:?}").contains("s3cret"));
        let bad = RedisConfig::single("redis://user:s3cret@host:notaport");
        let e = bad.validate().unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert_eq!(redact_url("redis://:pw@h:1?x=@"), "redis://***@h:1?x=@");
        assert_eq!(redact_url("no scheme"), "no scheme");
    }
}
