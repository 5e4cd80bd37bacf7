//! The table, its index, and the migrations that create them.
//!
//! Migrations run through sqlx's migrator (`sqlx::migrate::Migrator`), built at run time because
//! the schema and table names come from the configuration: the names are validated as plain
//! identifiers ([`validate_identifier`](crate::config::validate_identifier)) and then
//! double-quoted into the SQL. The bookkeeping table is `<table>_migrations` beside the
//! sessions table, so several deployments can share one database under different names.
//!
//! Concurrency: on PostgreSQL the migrator holds an advisory lock for the whole run, so nodes
//! that start together migrate one after the other; it runs on a dedicated connection that is
//! closed afterwards, so a failed run can never leave the lock held by a pooled connection. On
//! SQLite the file's write lock serializes the DDL and a run that lost a race is retried.
//!
//! Migrations are append-only: a shipped migration's SQL is never edited (sqlx checks its
//! checksum); a change to the table is a new migration with the next version.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, SqlSafeStr};

use crate::config::{ConfigError, Driver, SqlConfig};

/// The quoted names used in SQL, derived once from a validated config.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    /// Schema-qualified, quoted table name (`"public"."sessions"`, or `"sessions"` on SQLite).
    pub table: String,
    /// Quoted name of the migrations bookkeeping table.
    pub migrations: String,
    /// Quoted name of the expiry index (unqualified: PostgreSQL puts it in the table's schema).
    pub index: String,
    /// The unquoted schema (PostgreSQL only).
    pub schema: Option<String>,
}

impl Names {
    pub(crate) fn new(config: &SqlConfig, driver: Driver) -> Result<Names, ConfigError> {
        config.validate()?;
        Self::new_for(config, driver)
    }

    /// Names for `driver`, whatever the URL says (for a pool handed in by the application).
    pub(crate) fn new_for(config: &SqlConfig, driver: Driver) -> Result<Names, ConfigError> {
        // Validation is what makes the quoting below safe.
        config.validate_for(driver)?;
        let t = &config.table;
        Ok(match driver {
            Driver::Postgres => {
                let s = config.pg_schema();
                Names {
                    table: format!("\"{s}\".\"{t}\""),
                    migrations: format!("\"{s}\".\"{t}_migrations\""),
                    index: format!("\"{t}_expires_at_idx\""),
                    schema: Some(s.to_owned()),
                }
            }
            Driver::Sqlite => Names {
                table: format!("\"{t}\""),
                migrations: format!("\"{t}_migrations\""),
                index: format!("\"{t}_expires_at_idx\""),
                schema: None,
            },
        })
    }
}

/// The SQL of every migration, in order, for a driver and names.
pub(crate) fn migration_sql(driver: Driver, names: &Names) -> Vec<(i64, &'static str, String)> {
    let Names { table, index, .. } = names;
    match driver {
        Driver::Postgres => vec![(
            1,
            "create the sessions table and its expiry index",
            format!(
                "CREATE TABLE IF NOT EXISTS {table} (\n\
                 \x20   id BYTEA PRIMARY KEY,\n\
                 \x20   data JSONB NOT NULL,\n\
                 \x20   version BIGINT NOT NULL,\n\
                 \x20   created_at BIGINT NOT NULL,\n\
                 \x20   last_access BIGINT NOT NULL,\n\
                 \x20   expires_at BIGINT NOT NULL,\n\
                 \x20   absolute_deadline BIGINT NOT NULL\n\
                 );\n\
                 CREATE INDEX IF NOT EXISTS {index} ON {table} (expires_at);\n"
            ),
        )],
        Driver::Sqlite => vec![(
            1,
            "create the sessions table and its expiry index",
            format!(
                "CREATE TABLE IF NOT EXISTS {table} (\n\
                 \x20   id BLOB PRIMARY KEY NOT NULL,\n\
                 \x20   data TEXT NOT NULL,\n\
                 \x20   version INTEGER NOT NULL,\n\
                 \x20   created_at INTEGER NOT NULL,\n\
                 \x20   last_access INTEGER NOT NULL,\n\
                 \x20   expires_at INTEGER NOT NULL,\n\
                 \x20   absolute_deadline INTEGER NOT NULL\n\
                 );\n\
                 CREATE INDEX IF NOT EXISTS {index} ON {table} (expires_at);\n"
            ),
        )],
    }
}

/// The DDL the backend applies, as one script, for operators who run migrations by hand
/// (`migrate = false`). Times are milliseconds since the Unix epoch; `expires_at` is the sliding
/// deadline (never past `absolute_deadline`) and is what the index and the cleanup use.
///
/// ```
/// use backend_sql::{schema_sql, SqlConfig};
/// let sql = schema_sql(&SqlConfig::new("postgres://db/app").with_schema("web")).unwrap();
/// assert!(sql.contains(r#"CREATE TABLE IF NOT EXISTS "web"."sessions""#));
/// assert!(sql.contains("JSONB"));
/// ```
pub fn schema_sql(config: &SqlConfig) -> Result<String, ConfigError> {
    let driver = config.validate()?;
    let names = Names::new(config, driver)?;
    let mut out = String::new();
    if let (Driver::Postgres, Some(s)) = (driver, &names.schema) {
        out.push_str(&format!("CREATE SCHEMA IF NOT EXISTS \"{s}\";\n"));
    }
    for (_, _, sql) in migration_sql(driver, &names) {
        out.push_str(&sql);
    }
    Ok(out)
}

/// A sqlx migrator for the driver and names.
pub(crate) fn migrator(driver: Driver, names: &Names, create_schema: bool) -> Migrator {
    let migrations = migration_sql(driver, names)
        .into_iter()
        .map(|(version, description, sql)| {
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                AssertSqlSafe(sql).into_sql_str(),
                false,
            )
        })
        .collect();
    let mut m = Migrator::with_migrations(migrations);
    m.dangerous_set_table_name(names.migrations.clone());
    if let (true, Some(s)) = (create_schema, &names.schema) {
        m.create_schema(format!("\"{s}\""));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_and_qualified() {
        let c = SqlConfig::new("postgres://h/db").with_table("web_sessions");
        let n = Names::new(&c, Driver::Postgres).unwrap();
        assert_eq!(n.table, r#""public"."web_sessions""#);
        assert_eq!(n.migrations, r#""public"."web_sessions_migrations""#);
        assert_eq!(n.index, r#""web_sessions_expires_at_idx""#);
        let c = SqlConfig::new("sqlite://x.db");
        let n = Names::new(&c, Driver::Sqlite).unwrap();
        assert_eq!(n.table, r#""sessions""#);
    }

    #[test]
    fn unsafe_names_never_reach_sql() {
        let c = SqlConfig::new("postgres://h/db").with_table("x\"; DROP TABLE y; --");
        assert_eq!(schema_sql(&c).unwrap_err().field, "table");
    }

    #[test]
    fn both_drivers_index_the_expiry_column() {
        for url in ["postgres://h/db", "sqlite://x.db"] {
            let sql = schema_sql(&SqlConfig::new(url)).unwrap();
            assert!(
                sql.contains(r#"CREATE INDEX IF NOT EXISTS "sessions_expires_at_idx" ON"#),
                "{sql}"
            );
            assert!(sql.contains("(expires_at)"), "{sql}");
        }
    }
}
