//! The connection to Redis (one server or a cluster), script calls with the `NOSCRIPT`
//! fallback, one retry on a dropped connection, and the mapping of driver errors.

use std::sync::atomic::{AtomicU64, Ordering};

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, RedisError, ServerErrorKind, Value};
use session_core::{CoreCounters, SessionError};

use crate::scripts::Lua;

/// The scheme name used in errors.
pub(crate) const SCHEME: &str = "redis";

/// A cheap-to-clone handle on either kind of deployment. Both reconnect by themselves: the
/// connection manager re-opens its multiplexed connection after an I/O error, the cluster
/// connection re-opens per-node connections and refreshes its slot map.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn send(&self, cmd: &Cmd) -> Result<Value, RedisError> {
        match self {
            Conn::Single(c) => cmd.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }
    }
}

/// Backend-specific counters (exported as `counters().extra`).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) script_loads: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) unavailable: AtomicU64,
    pub(crate) gone: AtomicU64,
    pub(crate) corrupt_deleted: AtomicU64,
    pub(crate) id_collisions: AtomicU64,
    pub(crate) cycle_rollbacks: AtomicU64,
    pub(crate) cycle_cleanup_failures: AtomicU64,
}

impl Stats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// True when the error means Redis cannot be reached or cannot serve right now, as opposed to
/// a bug or a refused command. A cluster redirect (`MOVED`/`ASK`) that reaches us means the
/// cluster client ran out of retries following it: the slot's master is unreachable or the
/// topology is changing.
pub(crate) fn is_unavailable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_cluster_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || matches!(
            e.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::BusyLoading
                        | ServerErrorKind::ReadOnly
                )
        )
}

/// The connection plus the counters every call updates.
pub(crate) struct Client<'a> {
    pub(crate) conn: &'a Conn,
    pub(crate) counters: &'a CoreCounters,
    pub(crate) stats: &'a Stats,
}

impl Client<'_> {
    /// Maps a driver error to the trait's error, counting unavailability.
    pub(crate) fn error(&self, e: RedisError, context: &str) -> SessionError {
        if is_unavailable(&e) {
            Stats::bump(&self.stats.unavailable);
            SessionError::unavailable(SCHEME, context, e)
        } else {
            SessionError::backend(SCHEME, context, e)
        }
    }

    /// Sends one command (one round trip, counted), retrying once if the connection had
    /// dropped: the connection manager has re-opened it by then. Every command and script the
    /// backend sends is safe to repeat (see the write nonce in the scripts).
    async fn send(&self, cmd: &Cmd) -> Result<Value, RedisError> {
        self.counters.network(1);
        match self.conn.send(cmd).await {
            Err(e) if e.is_connection_dropped() => {
                tracing::debug!(error = %e, "redis connection dropped; retrying once");
                Stats::bump(&self.stats.retries);
                self.counters.network(1);
                self.conn.send(cmd).await
            }
            other => other,
        }
    }

    /// Runs a plain command.
    pub(crate) async fn command(&self, cmd: &Cmd, context: &str) -> Result<Value, SessionError> {
        self.send(cmd).await.map_err(|e| self.error(e, context))
    }

    /// Runs a script by SHA, falling back to sending its source when the server does not have
    /// it cached (first use, or after a restart or failover).
    pub(crate) async fn eval(
        &self,
        script: &Lua,
        keys: &[&str],
        args: &[&[u8]],
        context: &str,
    ) -> Result<Value, SessionError> {
        let build = |verb: &str, body: &str| {
            let mut c = redis::cmd(verb);
            c.arg(body).arg(keys.len()).arg(keys);
            for a in args {
                c.arg(*a);
            }
            c
        };
        match self.send(&build("EVALSHA", &script.sha)).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                tracing::debug!(
                    script = script.name,
                    "script not cached on the server; sending its source"
                );
                Stats::bump(&self.stats.script_loads);
                self.send(&build("EVAL", script.code))
                    .await
                    .map_err(|e| self.error(e, context))
            }
            other => other.map_err(|e| self.error(e, context)),
        }
    }
}

/// Reads an integer out of a reply element.
pub(crate) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// The field/value pairs of a hash reply (a flat array, or a RESP3 map). `None` for nil.
pub(crate) fn hash_pairs(v: Value) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    fn bytes(v: Value) -> Option<Vec<u8>> {
        match v {
            Value::BulkString(b) => Some(b),
            Value::SimpleString(s) => Some(s.into_bytes()),
            Value::Int(i) => Some(i.to_string().into_bytes()),
            _ => None,
        }
    }
    match v {
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(f), Some(x)) = (it.next(), it.next()) {
                out.push((bytes(f)?, bytes(x)?));
            }
            Some(out)
        }
        Value::Map(items) => items
            .into_iter()
            .map(|(f, x)| Some((bytes(f)?, bytes(x)?)))
            .collect(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_replies() {
        assert_eq!(int(&Value::Int(4)), Some(4));
        assert_eq!(int(&Value::BulkString(b"12".to_vec())), Some(12));
        assert_eq!(int(&Value::Nil), None);
        let flat = Value::Array(vec![
            Value::BulkString(b"d:a".to_vec()),
            Value::BulkString(b"1".to_vec()),
        ]);
        assert_eq!(
            hash_pairs(flat),
            Some(vec![(b"d:a".to_vec(), b"1".to_vec())])
        );
        assert_eq!(hash_pairs(Value::Nil), None);
        let map = Value::Map(vec![(Value::SimpleString("m:v".into()), Value::Int(3))]);
        assert_eq!(
            hash_pairs(map),
            Some(vec![(b"m:v".to_vec(), b"3".to_vec())])
        );
    }

    #[test]
    fn classifies_errors() {
        let io: RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into();
        assert!(is_unavailable(&io));
        let client: RedisError = (ErrorKind::Client, "bad call").into();
        assert!(!is_unavailable(&client));
    }
}
