//! Configuration: where the database is, what the table is called, pool and timeout settings,
//! and the cleanup task. Validated before anything connects.

use std::time::Duration;

use serde::Deserialize;

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// PostgreSQL (`postgres://` or `postgresql://`).
    Postgres,
    /// SQLite (`sqlite:`).
    Sqlite,
}

impl Driver {
    /// The driver a URL's scheme names, if this build has it.
    pub fn from_url(url: &str) -> Result<Driver, ConfigError> {
        let scheme = url
            .split_once(':')
            .map(|(s, _)| s.to_ascii_lowercase())
            .unwrap_or_default();
        match scheme.as_str() {
            "postgres" | "postgresql" => {
                if cfg!(feature = "postgres") {
                    Ok(Driver::Postgres)
                } else {
                    Err(bad(
                        "url",
                        "this build of backend-sql has no PostgreSQL driver (enable the `postgres` feature)",
                    ))
                }
            }
            "sqlite" => {
                if cfg!(feature = "sqlite") {
                    Ok(Driver::Sqlite)
                } else {
                    Err(bad(
                        "url",
                        "this build of backend-sql has no SQLite driver (enable the `sqlite` feature)",
                    ))
                }
            }
            _ => Err(bad(
                "url",
                "expected a postgres://, postgresql:// or sqlite: URL",
            )),
        }
    }

    /// Lower-case name ("postgres", "sqlite").
    pub fn name(self) -> &'static str {
        match self {
            Driver::Postgres => "postgres",
            Driver::Sqlite => "sqlite",
        }
    }
}

pub use session_core::ConfigError;

/// A refused `field` of the SQL backend's settings.
pub(crate) fn bad(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::new("sql", field, reason)
}

/// Settings of the SQL backend, ready to embed in an application's TOML config.
///
/// Durations are humantime strings (`"30s"`, `"500ms"`). Secrets are not part of it: the
/// token keys come from a [`KeyRing`](session_core::KeyRing) given to
/// [`SqlBackend::connect`](crate::SqlBackend::connect), and a database password belongs in the
/// URL (read it from the environment, not from a committed file).
///
/// ```
/// use backend_sql::SqlConfig;
/// let config: SqlConfig = serde_json::from_str(r#"{
///     "url": "postgres://app@db.internal:5432/app?sslmode=require",
///     "schema": "sessions",
///     "max_connections": 20,
///     "statement_timeout": "2s",
///     "cleanup_interval": "5m"
/// }"#).unwrap();
/// config.validate().unwrap();
/// assert_eq!(config.table, "sessions");
/// ```
///
/// `Debug` shows the URL with any password replaced by `***`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct SqlConfig {
    /// Database URL: `postgres://user:password@host:5432/db?sslmode=...`, or
    /// `sqlite://path/to/file.db` (created if missing).
    pub url: String,
    /// PostgreSQL schema holding the table (created if missing). `None` means `public`. Must be
    /// unset for SQLite, which has no schemas.
    pub schema: Option<String>,
    /// Table name. The migration bookkeeping table is `<table>_migrations` next to it.
    pub table: String,
    /// Run the schema migrations at connect (takes a lock so nodes starting together do not
    /// race). Turn off where DDL is applied by a separate, privileged deployment step.
    pub migrate: bool,
    /// Largest number of pooled connections.
    pub max_connections: u32,
    /// Connections kept open even when idle.
    pub min_connections: u32,
    /// How long an operation waits for a pooled connection (including connecting) before it
    /// fails with `Unavailable`. Keep it short: a request should fail fast when the database is
    /// down.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// Longest a statement may run. PostgreSQL: the session's `statement_timeout`; SQLite: the
    /// busy timeout (waiting for the write lock). `0s` leaves the server's setting alone (needed
    /// behind PgBouncer in transaction mode, which rejects startup options). The client also
    /// gives up on an operation after `acquire_timeout + statement_timeout`.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// Idle pooled connections are closed after this long.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    /// Connections are recycled after this long.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Option<Duration>,
    /// Check a pooled connection with a round trip before each use. Off by default: a statement
    /// that fails because its connection was lost is repeated on another connection instead,
    /// which saves a round trip per operation.
    pub test_before_acquire: bool,
    /// PostgreSQL only: wait for the commit's WAL flush before a write returns. `false` sets
    /// `synchronous_commit = off` for the backend's connections: a write returns before its WAL
    /// reaches disk, so a *database crash* can lose the last few hundred milliseconds of session
    /// writes (never corrupt them; an app crash loses nothing). Often a good trade for
    /// sessions, whose writes are then a fraction of the latency.
    pub synchronous_commit: bool,
    /// `application_name` reported to PostgreSQL (visible in `pg_stat_activity`).
    pub application_name: String,
    /// Run the background task that deletes expired rows.
    pub cleanup: bool,
    /// Average time between two cleanup runs.
    #[serde(with = "humantime_serde")]
    pub cleanup_interval: Duration,
    /// Each run waits `cleanup_interval` ± this fraction (random), so nodes started together
    /// spread out.
    pub cleanup_jitter: f64,
    /// Most rows one cleanup statement deletes (short statements, short locks).
    pub cleanup_batch_size: u32,
    /// Most batches per cleanup run; what is left waits for the next run.
    pub cleanup_max_batches: u32,
}

/// `url` with the password of its `user:password@` part replaced by `***`, safe to log.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let user = authority[..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        None => {
            // A password can also come as a query parameter.
            match rest.find("password=") {
                Some(_) => format!("{scheme}://{authority}/***"),
                None => url.to_owned(),
            }
        }
    }
}

impl std::fmt::Debug for SqlConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlConfig")
            .field("url", &redact_url(&self.url))
            .field("schema", &self.schema)
            .field("table", &self.table)
            .field("migrate", &self.migrate)
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("test_before_acquire", &self.test_before_acquire)
            .field("synchronous_commit", &self.synchronous_commit)
            .field("application_name", &self.application_name)
            .field("cleanup", &self.cleanup)
            .field("cleanup_interval", &self.cleanup_interval)
            .field("cleanup_jitter", &self.cleanup_jitter)
            .field("cleanup_batch_size", &self.cleanup_batch_size)
            .field("cleanup_max_batches", &self.cleanup_max_batches)
            .finish()
    }
}

impl Default for SqlConfig {
    fn default() -> Self {
        SqlConfig {
            url: "sqlite://sessions.db".into(),
            schema: None,
            table: "sessions".into(),
            migrate: true,
            max_connections: 10,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(600)),
            max_lifetime: Some(Duration::from_secs(1800)),
            test_before_acquire: false,
            synchronous_commit: true,
            application_name: "session-sync".into(),
            cleanup: true,
            cleanup_interval: Duration::from_secs(60),
            cleanup_jitter: 0.1,
            cleanup_batch_size: 1000,
            cleanup_max_batches: 100,
        }
    }
}

/// Longest schema or table name accepted (PostgreSQL's limit is 63 bytes, and the index and
/// migration-table names add a suffix).
pub const MAX_IDENT_LEN: usize = 40;

/// Checks that `name` is a plain lower-case SQL identifier (`[a-z_][a-z0-9_]*`, at most
/// [`MAX_IDENT_LEN`] bytes). Names are also always double-quoted in SQL; this check is what makes
/// quoting them safe, since nothing from the configuration is ever put into SQL unchecked.
pub fn validate_identifier(field: &'static str, name: &str) -> Result<(), ConfigError> {
    let mut bytes = name.bytes();
    let Some(first) = bytes.next() else {
        return Err(bad(field, "must not be empty"));
    };
    if name.len() > MAX_IDENT_LEN {
        return Err(bad(
            field,
            format!("{name:?} is longer than {MAX_IDENT_LEN} bytes"),
        ));
    }
    if !(first.is_ascii_lowercase() || first == b'_')
        || !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(bad(
            field,
            format!(
                "{name:?} is not a plain identifier: use lower-case ASCII letters, digits and \
                 `_`, starting with a letter or `_`"
            ),
        ));
    }
    if name.starts_with("pg_") || name.starts_with("sqlite_") {
        return Err(bad(
            field,
            format!("{name:?} uses a prefix reserved by the database"),
        ));
    }
    Ok(())
}

impl SqlConfig {
    /// Configuration for `url` with every other setting at its default.
    pub fn new(url: impl Into<String>) -> Self {
        SqlConfig {
            url: url.into(),
            ..Default::default()
        }
    }

    /// Sets the PostgreSQL schema.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Sets the table name.
    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// The driver the URL names.
    pub fn driver(&self) -> Result<Driver, ConfigError> {
        Driver::from_url(&self.url)
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<Driver, ConfigError> {
        let driver = self.driver()?;
        self.validate_for(driver)?;
        Ok(driver)
    }

    /// Checks every field but the URL, for `driver`.
    pub(crate) fn validate_for(&self, driver: Driver) -> Result<(), ConfigError> {
        validate_identifier("table", &self.table)?;
        match (&self.schema, driver) {
            (Some(s), Driver::Postgres) => validate_identifier("schema", s)?,
            (Some(_), Driver::Sqlite) => {
                return Err(bad(
                    "schema",
                    "SQLite has no schemas; leave it unset and use a separate database file or \
                     table name instead",
                ));
            }
            (None, _) => {}
        }
        if self.max_connections == 0 {
            return Err(bad("max_connections", "must be at least 1"));
        }
        if self.min_connections > self.max_connections {
            return Err(bad(
                "min_connections",
                format!(
                    "{} is more than max_connections ({})",
                    self.min_connections, self.max_connections
                ),
            ));
        }
        if self.acquire_timeout.is_zero() {
            return Err(bad("acquire_timeout", "must be greater than zero"));
        }
        if self.statement_timeout > Duration::from_secs(24 * 3600) {
            return Err(bad("statement_timeout", "must be under a day"));
        }
        if self.application_name.len() > 63
            || !self
                .application_name
                .bytes()
                .all(|b| b.is_ascii_graphic() || b == b' ')
        {
            return Err(bad(
                "application_name",
                "must be printable ASCII, at most 63 bytes",
            ));
        }
        if self.cleanup {
            if self.cleanup_interval < Duration::from_millis(10) {
                return Err(bad(
                    "cleanup_interval",
                    "must be at least 10ms (set `cleanup = false` to disable cleanup)",
                ));
            }
            if !(0.0..=0.5).contains(&self.cleanup_jitter) {
                return Err(bad(
                    "cleanup_jitter",
                    format!("{} is outside 0.0..=0.5", self.cleanup_jitter),
                ));
            }
            if self.cleanup_batch_size == 0 {
                return Err(bad("cleanup_batch_size", "must be at least 1"));
            }
            if self.cleanup_max_batches == 0 {
                return Err(bad("cleanup_max_batches", "must be at least 1"));
            }
        }
        Ok(())
    }

    /// The schema actually used on PostgreSQL.
    pub(crate) fn pg_schema(&self) -> &str {
        self.schema.as_deref().unwrap_or("public")
    }

    /// The client-side limit for one operation.
    pub(crate) fn operation_timeout(&self) -> Duration {
        let statement = if self.statement_timeout.is_zero() {
            Duration::from_secs(30)
        } else {
            self.statement_timeout
        };
        self.acquire_timeout + statement + Duration::from_millis(500)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_server_less() {
        let c = SqlConfig::default();
        assert_eq!(c.validate(), Ok(Driver::Sqlite));
    }

    #[test]
    fn identifiers_are_checked() {
        for ok in ["sessions", "_s", "s_2", "a"] {
            validate_identifier("table", ok).unwrap();
        }
        for bad in [
            "",
            "Sessions",
            "2s",
            "s-1",
            "s;drop table x",
            "s\"",
            "ключ",
            "pg_x",
            "sqlite_master",
            &"a".repeat(MAX_IDENT_LEN + 1),
        ] {
            let e = validate_identifier("table", bad).unwrap_err();
            assert_eq!(e.field, "table", "{bad:?}");
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let field = |c: SqlConfig| c.validate().unwrap_err().field;
        assert_eq!(field(SqlConfig::new("mysql://x")), "url");
        assert_eq!(field(SqlConfig::new("sessions.db")), "url");
        assert_eq!(
            field(SqlConfig::new("sqlite://x.db").with_schema("s")),
            "schema"
        );
        assert_eq!(
            field(SqlConfig::new("postgres://h/db").with_schema("Bad")),
            "schema"
        );
        assert_eq!(field(SqlConfig::default().with_table("x y")), "table");
        let c = SqlConfig {
            max_connections: 0,
            ..Default::default()
        };
        assert_eq!(field(c), "max_connections");
        let c = SqlConfig {
            min_connections: 11,
            ..Default::default()
        };
        assert_eq!(field(c), "min_connections");
        let c = SqlConfig {
            cleanup_jitter: 0.9,
            ..Default::default()
        };
        assert_eq!(field(c), "cleanup_jitter");
        let c = SqlConfig {
            cleanup_batch_size: 0,
            ..Default::default()
        };
        assert_eq!(field(c), "cleanup_batch_size");
        let c = SqlConfig {
            application_name: "a\nb".into(),
            ..Default::default()
        };
        assert_eq!(field(c), "application_name");
    }

    #[test]
    fn deserializes_humantime_and_rejects_unknown_fields() {
        let c: SqlConfig = serde_json::from_str(
            r#"{"url":"postgres://u@h/d","acquire_timeout":"250ms","idle_timeout":null,"cleanup":false}"#,
        )
        .unwrap();
        assert_eq!(c.acquire_timeout, Duration::from_millis(250));
        assert_eq!(c.idle_timeout, None);
        assert!(!c.cleanup);
        assert_eq!(c.validate(), Ok(Driver::Postgres));
        assert!(serde_json::from_str::<SqlConfig>(r#"{"tabel":"x"}"#).is_err());
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = SqlConfig {
            url: "postgres://app:hunter2@db:5432/app?sslmode=verify-full".into(),
            ..SqlConfig::default()
        };
        let d = format!("{c:?}");
        assert!(
            !d.contains("hunter2") && d.contains("app:***@db:5432"),
            "{d}"
        );
        let q = SqlConfig {
            url: "postgres://db/app?password=hunter2".into(),
            ..SqlConfig::default()
        };
        assert!(!format!("{q:?}").contains("hunter2"));
    }
}
