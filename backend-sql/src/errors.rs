//! Mapping driver errors to [`SessionError`]: what means "the database cannot be reached"
//! (`Unavailable`), what means "this connection died, try another" (retried once), and the rest.

use session_core::SessionError;

pub(crate) const SCHEME: &str = "sql";

/// How a failed statement should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// The connection was lost (killed, reset, server restarting): the statement can be retried
    /// once on a fresh connection, and if that fails too the database is unavailable.
    ConnectionLost,
    /// The database cannot serve us now (pool timeout, refused connections, statement timeout,
    /// too many connections, SQLite busy).
    Unavailable,
    /// Anything else: a bug, a schema problem, a constraint.
    Other,
}

/// SQLSTATE codes and SQLite result codes that mean unavailability.
fn classify_database(e: &dyn sqlx::error::DatabaseError) -> Class {
    let Some(code) = e.code() else {
        return Class::Other;
    };
    let code: &str = &code;
    match code {
        // admin_shutdown (pg_terminate_backend), crash_shutdown, cannot_connect_now
        "57P01" | "57P02" | "57P03" => Class::ConnectionLost,
        // query_canceled (statement_timeout), too_many_connections, out of memory / disk
        "57014" | "53300" | "53000" | "53100" | "53200" | "55P03" => Class::Unavailable,
        // SQLite: SQLITE_BUSY (5), SQLITE_LOCKED (6), extended codes of both
        "5" | "6" | "261" | "262" | "517" | "773" => Class::Unavailable,
        _ if code.starts_with("08") => Class::ConnectionLost,
        _ => Class::Other,
    }
}

pub(crate) fn classify(e: &sqlx::Error) -> Class {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => {
            Class::ConnectionLost
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
            Class::Unavailable
        }
        sqlx::Error::Database(db) => classify_database(db.as_ref()),
        _ => Class::Other,
    }
}

/// Converts a driver error, with what was being attempted.
pub(crate) fn to_session_error(context: &str, e: sqlx::Error) -> SessionError {
    match classify(&e) {
        Class::ConnectionLost | Class::Unavailable => SessionError::unavailable(SCHEME, context, e),
        Class::Other => {
            let nul =
                matches!(&e, sqlx::Error::Database(db) if db.code().as_deref() == Some("22P05"));
            if nul {
                return SessionError::backend(
                    SCHEME,
                    format!(
                        "{context}: PostgreSQL JSONB cannot store the character U+0000 (in a \
                         key or a string value)"
                    ),
                    e,
                );
            }
            SessionError::backend(SCHEME, context, e)
        }
    }
}

/// Converts a migration failure; a driver error inside it keeps its classification (a database
/// that cannot be reached is `Unavailable`, not a schema problem).
pub(crate) fn migrate_error(
    names: &crate::schema::Names,
    e: sqlx::migrate::MigrateError,
) -> SessionError {
    let context = format!("migrating session table {}", names.table);
    match e {
        sqlx::migrate::MigrateError::Execute(e) => to_session_error(&context, e),
        other => SessionError::backend(SCHEME, context, other),
    }
}

/// The error for an operation that did not finish within the client-side limit.
pub(crate) fn timed_out(context: &str, limit: std::time::Duration) -> SessionError {
    SessionError::unavailable(
        SCHEME,
        format!("{context}: no answer within {limit:?}"),
        std::io::Error::new(std::io::ErrorKind::TimedOut, "operation timed out"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_and_io_errors_are_unavailable() {
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), Class::Unavailable);
        assert_eq!(
            classify(&sqlx::Error::Io(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset
            ))),
            Class::ConnectionLost
        );
        assert_eq!(classify(&sqlx::Error::RowNotFound), Class::Other);
        assert!(matches!(
            to_session_error("loading", sqlx::Error::PoolTimedOut),
            SessionError::Unavailable { backend: "sql", .. }
        ));
        assert!(matches!(
            to_session_error("loading", sqlx::Error::RowNotFound),
            SessionError::Backend { backend: "sql", .. }
        ));
    }
}
