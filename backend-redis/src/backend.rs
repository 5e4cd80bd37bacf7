//! `RedisBackend`: the `SessionBackend` implementation.
//!
//! Past 600 lines because each `SessionBackend` method is one scripted Redis operation with its
//! Redis Cluster variant, and the scripts' callers read best beside each other.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::{ConnectionInfo, IntoConnectionInfo, Value};
use session_core::{
    CoreCounters, Counters, Delta, ExpiryPolicy, KeyRing, Loaded, Metric, Saved, SessionBackend,
    SessionData, SessionError, SessionId, SessionRecord, TokenError, TokenSigner, fill_random,
    now_millis,
};

use crate::config::{RedisConfig, Topology, redact_url};
use crate::conn::{Client, Conn, SCHEME, Stats, hash_pairs, int};
use crate::layout::{self, data_field};
use crate::scripts::{self, CYCLE, DONE, FREEZE, GONE, PUT, SAVE, TAKEN, UNFREEZE};

/// How many fresh ids `create` tries before concluding the random source is broken.
const CREATE_ATTEMPTS: usize = 3;
/// How far past its deadline (by this node's clock) a session whose key has no TTL still loads.
/// Redis' own expiry (the server's clock) is what ends sessions; this only catches keys whose
/// TTL was removed, and allows for clock skew between app nodes and the Redis server.
const TTL_BACKSTOP: Duration = Duration::from_secs(30);

/// Sessions in Redis or Redis Cluster: one hash per session, deltas applied by Lua scripts,
/// expiry kept by Redis.
///
/// Every operation is one round trip (N = 1, D = 0), except an id cycle on a cluster (three:
/// freeze the old key, write the new one, delete the old one). Tokens are signed
/// ([`TokenSigner`]) and verified before any I/O, so a forged token costs nothing.
///
/// Cloning is cheap: clones share the connection and the counters.
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    topology: Topology,
    prefix: String,
    signer: TokenSigner,
    policy: ExpiryPolicy,
    counters: CoreCounters,
    stats: Stats,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("topology", &self.inner.topology)
            .field("key_prefix", &self.inner.prefix)
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

/// What a write script reported.
enum Status {
    Done(Applied),
    Gone,
    Taken,
}

struct Applied {
    version: u64,
    idle_deadline: u64,
    absolute_deadline: u64,
}

impl Applied {
    fn expires_at(&self) -> u64 {
        self.idle_deadline.min(self.absolute_deadline)
    }
}

fn parse_status(v: &Value) -> Option<Status> {
    let Value::Array(items) = v else { return None };
    let nums = |i: usize| {
        items
            .get(i)
            .and_then(int)
            .and_then(|n| u64::try_from(n).ok())
    };
    match items.first().and_then(int)? {
        DONE => Some(Status::Done(Applied {
            version: nums(1)?,
            idle_deadline: nums(3)?,
            absolute_deadline: nums(4)?,
        })),
        GONE => Some(Status::Gone),
        TAKEN => Some(Status::Taken),
        _ => None,
    }
}

fn unexpected(script: &scripts::Lua, v: &Value) -> SessionError {
    // The reply's shape only: a full reply could carry session values into the logs.
    let shape = match v {
        Value::Nil => "nil".to_owned(),
        Value::Int(i) => format!("integer {i}"),
        Value::Array(items) => format!("an array of {} elements", items.len()),
        Value::BulkString(b) => format!("a string of {} bytes", b.len()),
        other => format!("{:?}", std::mem::discriminant(other)),
    };
    SessionError::backend_msg(
        SCHEME,
        format!("unexpected reply from the {} script: {shape}", script.name),
    )
}

fn ms(d: Duration) -> Vec<u8> {
    (d.as_millis() as u64).to_string().into_bytes()
}

fn nonce() -> Vec<u8> {
    let mut b = [0u8; 12];
    fill_random(&mut b);
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<String>()
        .into_bytes()
}

/// `nset, set pairs..., removed...` as script arguments.
fn delta_args(delta: &Delta, out: &mut Vec<Vec<u8>>) {
    out.push(delta.set.len().to_string().into_bytes());
    for (k, v) in &delta.set {
        out.push(data_field(k));
        out.push(v.as_str().as_bytes().to_vec());
    }
    for k in &delta.removed {
        out.push(data_field(k));
    }
}

/// The CA certificates of `tls_ca_file`, when set (for `rediss://` URLs).
fn tls_certificates(config: &RedisConfig) -> Result<Option<redis::TlsCertificates>, SessionError> {
    let Some(path) = &config.tls_ca_file else {
        return Ok(None);
    };
    let pem = std::fs::read(path).map_err(|e| {
        SessionError::backend(SCHEME, format!("reading tls_ca_file {}", path.display()), e)
    })?;
    Ok(Some(redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    }))
}

fn connection_info(url: &str, config: &RedisConfig) -> Result<ConnectionInfo, SessionError> {
    let info = url.into_connection_info().map_err(|e| {
        SessionError::backend(
            SCHEME,
            format!("parsing the Redis URL {}", redact_url(url)),
            e,
        )
    })?;
    let settings = info
        .redis_settings()
        .clone()
        .set_lib_name(&config.client_name, env!("CARGO_PKG_VERSION"));
    Ok(info.set_redis_settings(settings))
}

impl RedisBackend {
    /// Connects to the server or cluster the configuration names, enforcing `policy` and
    /// signing tokens with `keys`.
    ///
    /// Fails with [`SessionError::Backend`] naming the field for an invalid configuration, and
    /// with [`SessionError::Unavailable`] when Redis cannot be reached within the configured
    /// timeouts (the error names the redacted address). Once connected, a lost connection is
    /// re-opened by itself; requests during an outage fail fast with `Unavailable`.
    pub async fn connect(
        config: RedisConfig,
        policy: ExpiryPolicy,
        keys: &KeyRing,
    ) -> Result<Self, SessionError> {
        let topology = config.validate().map_err(|e| SessionError::Backend {
            backend: SCHEME,
            context: e.to_string(),
            source: Some(Box::new(e)),
        })?;
        let certs = tls_certificates(&config)?;
        let conn = match &topology {
            Topology::Single(url) => {
                let info = connection_info(url, &config)?;
                let client = match &certs {
                    Some(c) => redis::Client::build_with_tls(info, c.clone()),
                    None => redis::Client::open(info),
                }
                .map_err(|e| SessionError::backend(SCHEME, "building the Redis client", e))?;
                let manager = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.connection_timeout))
                    .set_response_timeout(Some(config.response_timeout))
                    .set_number_of_retries(config.reconnect_attempts as usize)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_secs(1));
                let m = ConnectionManager::new_with_config(client, manager)
                    .await
                    .map_err(|e| {
                        SessionError::unavailable(
                            SCHEME,
                            format!("connecting to Redis at {}", redact_url(url)),
                            e,
                        )
                    })?;
                Conn::Single(m)
            }
            Topology::Cluster(nodes) => {
                let infos = nodes
                    .iter()
                    .map(|u| connection_info(u, &config))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut builder = ClusterClientBuilder::new(infos);
                if let Some(c) = &certs {
                    builder = builder.certs(c.clone());
                }
                let client = builder
                    .connection_timeout(config.connection_timeout)
                    .response_timeout(config.response_timeout)
                    .retries(config.reconnect_attempts)
                    // Back off 50 ms .. 1 s between retries (the default starts at 1.28 s), so a
                    // request for a dead master fails within the response timeout.
                    .min_retry_wait(50)
                    .max_retry_wait(1000)
                    .build()
                    .map_err(|e| {
                        SessionError::backend(SCHEME, "building the Redis Cluster client", e)
                    })?;
                let c = client.get_async_connection().await.map_err(|e| {
                    SessionError::unavailable(
                        SCHEME,
                        format!(
                            "connecting to the Redis Cluster at {}",
                            nodes
                                .iter()
                                .map(|u| redact_url(u))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        e,
                    )
                })?;
                Conn::Cluster(c)
            }
        };
        Ok(RedisBackend {
            inner: Arc::new(Inner {
                conn,
                topology,
                prefix: config.key_prefix,
                signer: TokenSigner::new(keys),
                policy,
                counters: CoreCounters::default(),
                stats: Stats::default(),
            }),
        })
    }

    /// True when the backend talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.topology, Topology::Cluster(_))
    }

    /// The key prefix.
    pub fn key_prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The Redis key that holds the session with this id (`{prefix}{<id>}`), for operators and
    /// tests.
    pub fn key_of(&self, id: &SessionId) -> String {
        layout::session_key(&self.inner.prefix, id)
    }

    /// The server-side id (`CLIENT ID`) of the connection a single-server backend multiplexes
    /// its requests over, to find it in `CLIENT LIST` (Redis before 7.2 does not show the
    /// `client_name`). `None` on a cluster, which keeps one connection per node. One round trip.
    pub async fn connection_id(&self) -> Result<Option<i64>, SessionError> {
        if self.is_cluster() {
            return Ok(None);
        }
        let v = self
            .client()
            .command(
                redis::cmd("CLIENT").arg("ID"),
                "asking for the connection id",
            )
            .await?;
        int(&v)
            .map(Some)
            .ok_or_else(|| SessionError::backend_msg(SCHEME, format!("CLIENT ID answered {v:?}")))
    }

    fn client(&self) -> Client<'_> {
        Client {
            conn: &self.inner.conn,
            counters: &self.inner.counters,
            stats: &self.inner.stats,
        }
    }

    fn sign(&self, id: &SessionId) -> Result<String, SessionError> {
        Ok(self.inner.signer.sign(id, &[])?)
    }

    async fn eval_status(
        &self,
        script: &scripts::Lua,
        keys: &[&str],
        args: &[Vec<u8>],
        context: &str,
    ) -> Result<Status, SessionError> {
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let v = self.client().eval(script, keys, &refs, context).await?;
        parse_status(&v).ok_or_else(|| unexpected(script, &v))
    }

    /// Writes a new session's hash at a fresh id (`PUT`), trying another id on a collision.
    /// `Ok(Err(status))` when the script refused for another reason.
    async fn put_new(
        &self,
        data: &[(Vec<u8>, Vec<u8>)],
        context: &str,
    ) -> Result<Result<(SessionId, Applied), Status>, SessionError> {
        let policy = &self.inner.policy;
        for _ in 0..CREATE_ATTEMPTS {
            let id = SessionId::random();
            let key = self.key_of(&id);
            let mut args = Vec::with_capacity(6 + 2 * data.len());
            args.push(ms(policy.idle_timeout()));
            args.push(ms(policy.absolute_timeout()));
            args.push(Vec::new()); // absolute deadline: now + absolute timeout
            args.push(Vec::new()); // created at: now
            args.push(b"1".to_vec()); // version
            args.push(nonce());
            for (f, v) in data {
                args.push(f.clone());
                args.push(v.clone());
            }
            match self.eval_status(&PUT, &[&key], &args, context).await? {
                Status::Done(a) => return Ok(Ok((id, a))),
                Status::Taken => {
                    Stats::bump(&self.inner.stats.id_collisions);
                    tracing::warn!(
                        ?id,
                        "a fresh session id already exists in Redis; trying another"
                    );
                }
                Status::Gone => return Ok(Err(Status::Gone)),
            }
        }
        Err(SessionError::backend_msg(
            SCHEME,
            format!(
                "{context}: {CREATE_ATTEMPTS} fresh ids in a row already existed; the random source is broken"
            ),
        ))
    }

    /// Cluster id cycle. The two ids hash to different slots, so no single script can see both
    /// keys; instead:
    ///
    /// 1. `FREEZE` the old hash: it is marked as moving and returned in full. From this moment
    ///    the old token loads as `None` and saves to it fail with `Gone`, so no write can land
    ///    on the old key and be lost.
    /// 2. `PUT` the new hash: the frozen data with the delta applied, the same creation time
    ///    and absolute deadline, version + 1, fresh idle deadline and TTL.
    /// 3. `UNLINK` the old hash.
    ///
    /// If step 2 fails the mark is removed again (`UNFREEZE`), so the session keeps working
    /// under the old token. The new key always exists before the old one is deleted; if step 3
    /// fails the old key stays frozen (unloadable) until its TTL evicts it.
    async fn cycle_cluster(&self, loaded: &Loaded, delta: &Delta) -> Result<Saved, SessionError> {
        let old_key = self.key_of(&loaded.record.id);
        let new_id = SessionId::random();
        let new_id_text = new_id.to_string();
        let client = self.client();
        let frozen = client
            .eval(
                &FREEZE,
                &[&old_key],
                &[new_id_text.as_bytes()],
                "cycling a session id (freezing the old key)",
            )
            .await?;
        let Value::Array(mut items) = frozen else {
            return Err(unexpected(&FREEZE, &frozen));
        };
        match items.first().and_then(int) {
            Some(GONE) => {
                Stats::bump(&self.inner.stats.gone);
                return Err(SessionError::Gone);
            }
            Some(DONE) if items.len() == 2 => {}
            _ => return Err(unexpected(&FREEZE, &Value::Array(items))),
        }
        let pairs = hash_pairs(items.swap_remove(1)).ok_or_else(|| {
            SessionError::backend_msg(SCHEME, "the freeze script returned no hash")
        })?;
        let snapshot = match layout::decode(loaded.record.id, pairs) {
            Ok(r) => r,
            Err(why) => {
                self.drop_corrupt(&old_key, &loaded.record.id, &why.0).await;
                return Err(SessionError::Gone);
            }
        };
        let result = self.put_cycled(new_id, &snapshot, delta).await;
        match result {
            Ok(Some(applied)) => {
                if let Err(e) = client
                    .command(
                        redis::cmd("UNLINK").arg(&old_key),
                        "cycling a session id (deleting the old key)",
                    )
                    .await
                {
                    // The old key is frozen: it cannot be loaded or saved, and its TTL ends it.
                    Stats::bump(&self.inner.stats.cycle_cleanup_failures);
                    tracing::warn!(error = %e, old = ?loaded.record.id, "could not delete the old key after cycling; it stays frozen until its TTL");
                }
                self.inner.counters.cycled();
                Ok(Saved {
                    token: self.sign(&new_id)?,
                    expires_at: applied.expires_at(),
                })
            }
            Ok(None) => {
                // The absolute deadline passed while cycling.
                let _ = client
                    .command(
                        redis::cmd("UNLINK").arg(&old_key),
                        "deleting an expired session",
                    )
                    .await;
                Stats::bump(&self.inner.stats.gone);
                Err(SessionError::Gone)
            }
            Err(e) => {
                Stats::bump(&self.inner.stats.cycle_rollbacks);
                if let Err(undo) = client
                    .eval(
                        &UNFREEZE,
                        &[&old_key],
                        &[new_id_text.as_bytes()],
                        "cycling a session id (rolling back)",
                    )
                    .await
                {
                    tracing::error!(error = %undo, session = ?loaded.record.id, "could not roll back a failed id cycle; the session stays unloadable until its TTL");
                }
                Err(e)
            }
        }
    }

    /// Step 2 of the cluster cycle: `Ok(None)` when the session's absolute deadline passed.
    async fn put_cycled(
        &self,
        new_id: SessionId,
        snapshot: &SessionRecord,
        delta: &Delta,
    ) -> Result<Option<Applied>, SessionError> {
        let mut data = snapshot.data.clone();
        data.apply(delta);
        let key = self.key_of(&new_id);
        let policy = &self.inner.policy;
        let mut args = Vec::with_capacity(6 + 2 * data.len());
        args.push(ms(policy.idle_timeout()));
        args.push(ms(policy.absolute_timeout()));
        args.push(snapshot.absolute_deadline.to_string().into_bytes());
        args.push(snapshot.created_at.to_string().into_bytes());
        args.push((snapshot.version + 1).to_string().into_bytes());
        args.push(nonce());
        for (k, v) in data.iter() {
            args.push(data_field(k));
            args.push(v.as_str().as_bytes().to_vec());
        }
        match self
            .eval_status(
                &PUT,
                &[&key],
                &args,
                "cycling a session id (writing the new key)",
            )
            .await?
        {
            Status::Done(a) => Ok(Some(a)),
            Status::Gone => Ok(None),
            Status::Taken => {
                Stats::bump(&self.inner.stats.id_collisions);
                Err(SessionError::backend_msg(
                    SCHEME,
                    "cycling a session id: the fresh id already exists; the random source is broken",
                ))
            }
        }
    }

    /// Deletes a hash that cannot be read as a session, logging it once (it is gone afterwards).
    async fn drop_corrupt(&self, key: &str, id: &SessionId, why: &str) {
        Stats::bump(&self.inner.stats.corrupt_deleted);
        tracing::warn!(session = ?id, reason = why, "deleting an unreadable session from Redis");
        if let Err(e) = self
            .client()
            .command(
                redis::cmd("UNLINK").arg(key),
                "deleting an unreadable session",
            )
            .await
        {
            tracing::warn!(error = %e, "could not delete the unreadable session");
        }
    }
}

#[async_trait]
impl SessionBackend for RedisBackend {
    fn scheme(&self) -> &'static str {
        SCHEME
    }

    fn policy(&self) -> &ExpiryPolicy {
        &self.inner.policy
    }

    async fn load(&self, token: &str) -> Result<Option<Loaded>, SessionError> {
        let result: Result<Option<Loaded>, SessionError> = async {
            let counters = &self.inner.counters;
            counters.loaded_token(token.len());
            let verified = self
                .inner
                .signer
                .verify(token)
                .and_then(|v| {
                    if v.routing.is_empty() {
                        Ok(v)
                    } else {
                        Err(TokenError::BadRouting(
                            "a Redis session token carries no routing data",
                        ))
                    }
                })
                .inspect_err(|_| counters.invalid_token())?;
            let key = self.key_of(&verified.id);
            // A plain HGETALL, not a script: Redis never returns a key past its PEXPIREAT (which
            // every write sets to the earlier deadline, on the server's clock), and a script costs
            // the server about a third more per load (redis-benchmark, same hash).
            let reply = self
                .client()
                .command(redis::cmd("HGETALL").arg(&key), "loading a session")
                .await?;
            if matches!(reply, Value::Nil) {
                return Ok(None);
            }
            let pairs = hash_pairs(reply)
                .ok_or_else(|| SessionError::backend_msg(SCHEME, "HGETALL returned no hash"))?;
            if pairs.is_empty() || pairs.iter().any(|(field, _)| field == layout::MOVED) {
                // Missing, evicted, or frozen by a cluster id cycle (it is gone under this id).
                return Ok(None);
            }
            match layout::decode(verified.id, pairs) {
                // A key that lost its TTL (an operator's PERSIST, a restored dump) would otherwise
                // live forever: past its deadline plus a generous clock-skew allowance it is dead
                // here too, and saves to it already fail with Gone (the save script checks).
                Ok(record)
                    if record.is_expired(
                        now_millis().saturating_sub(TTL_BACKSTOP.as_millis() as u64),
                    ) =>
                {
                    Ok(None)
                }
                Ok(record) => Ok(Some(Loaded {
                    // A token signed with a retired key gets a fresh one on the next save.
                    reissue: verified.key_index > 0,
                    ..Loaded::new(Arc::new(record), token, Vec::new())
                })),
                Err(why) => {
                    self.drop_corrupt(&key, &verified.id, &why.0).await;
                    Ok(None)
                }
            }
        }
        .await;
        self.inner.counters.read_result(result)
    }

    async fn create(&self, data: SessionData) -> Result<Saved, SessionError> {
        let result: Result<Saved, SessionError> = async {
            let fields: Vec<(Vec<u8>, Vec<u8>)> = data
                .iter()
                .map(|(k, v)| (data_field(k), v.as_str().as_bytes().to_vec()))
                .collect();
            match self.put_new(&fields, "creating a session").await? {
                Ok((id, applied)) => {
                    self.inner.counters.created();
                    Ok(Saved {
                        token: self.sign(&id)?,
                        expires_at: applied.expires_at(),
                    })
                }
                Err(_) => Err(SessionError::backend_msg(
                    SCHEME,
                    "creating a session: Redis reported the new session already expired",
                )),
            }
        }
        .await;
        self.inner.counters.write_result(result)
    }

    async fn save(&self, loaded: &Loaded, delta: &Delta) -> Result<Saved, SessionError> {
        let result: Result<Saved, SessionError> = async {
            let key = self.key_of(&loaded.record.id);
            let mut args = Vec::with_capacity(2 + 2 * delta.set.len() + delta.removed.len());
            args.push(ms(self.inner.policy.idle_timeout()));
            delta_args(delta, &mut args);
            match self
                .eval_status(&SAVE, &[&key], &args, "saving a session")
                .await?
            {
                Status::Done(applied) => {
                    self.inner.counters.saved();
                    tracing::trace!(session = ?loaded.record.id, version = applied.version, "saved");
                    let token = if loaded.reissue {
                        self.sign(&loaded.record.id)?
                    } else {
                        loaded.token.to_string()
                    };
                    Ok(Saved {
                        token,
                        expires_at: applied.expires_at(),
                    })
                }
                Status::Gone | Status::Taken => {
                    Stats::bump(&self.inner.stats.gone);
                    Err(SessionError::Gone)
                }
            }
        }
        .await;
        self.inner.counters.write_result(result)
    }

    async fn cycle_id(&self, loaded: &Loaded, delta: &Delta) -> Result<Saved, SessionError> {
        let result: Result<Saved, SessionError> = async {
            if self.is_cluster() {
                return self.cycle_cluster(loaded, delta).await;
            }
            let old_key = self.key_of(&loaded.record.id);
            for _ in 0..CREATE_ATTEMPTS {
                let new_id = SessionId::random();
                let new_key = self.key_of(&new_id);
                let mut args = vec![ms(self.inner.policy.idle_timeout()), nonce()];
                delta_args(delta, &mut args);
                match self
                    .eval_status(&CYCLE, &[&old_key, &new_key], &args, "cycling a session id")
                    .await?
                {
                    Status::Done(applied) => {
                        self.inner.counters.cycled();
                        return Ok(Saved {
                            token: self.sign(&new_id)?,
                            expires_at: applied.expires_at(),
                        });
                    }
                    Status::Gone => {
                        Stats::bump(&self.inner.stats.gone);
                        return Err(SessionError::Gone);
                    }
                    Status::Taken => {
                        Stats::bump(&self.inner.stats.id_collisions);
                        tracing::warn!("a fresh session id already exists in Redis; trying another");
                    }
                }
            }
            Err(SessionError::backend_msg(
                SCHEME,
                format!(
                    "cycling a session id: {CREATE_ATTEMPTS} fresh ids in a row already existed; the random source is broken"
                ),
            ))
        }
        .await;
        self.inner.counters.write_result(result)
    }

    async fn destroy(&self, loaded: &Loaded) -> Result<(), SessionError> {
        let result: Result<(), SessionError> = async {
            let key = self.key_of(&loaded.record.id);
            self.client()
                .command(redis::cmd("UNLINK").arg(&key), "destroying a session")
                .await?;
            self.inner.counters.destroyed();
            Ok(())
        }
        .await;
        self.inner.counters.write_result(result)
    }

    fn counters(&self) -> Counters {
        let s = &self.inner.stats;
        let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let topology = if self.is_cluster() {
            "cluster"
        } else {
            "single"
        };
        let extra = vec![
            Metric::counter(
                "script_loads",
                "Scripts sent in full after the server answered NOSCRIPT (restart, failover, new node)",
                r(&s.script_loads),
            ),
            Metric::counter(
                "connection_retries",
                "Commands repeated once because the connection had dropped",
                r(&s.retries),
            ),
            Metric::counter(
                "unavailable_errors",
                "Operations that failed because Redis could not be reached",
                r(&s.unavailable),
            ),
            Metric::counter(
                "gone_on_write",
                "Saves and cycles refused because the session had expired or been destroyed",
                r(&s.gone),
            ),
            Metric::counter(
                "corrupt_sessions_deleted",
                "Stored hashes that could not be read as sessions and were deleted",
                r(&s.corrupt_deleted),
            ),
            Metric::counter(
                "id_collisions",
                "Fresh session ids that already existed (should stay 0)",
                r(&s.id_collisions),
            ),
            Metric::counter(
                "cycle_rollbacks",
                "Cluster id cycles undone because writing the new key failed",
                r(&s.cycle_rollbacks),
            ),
            Metric::counter(
                "cycle_cleanup_failures",
                "Cluster id cycles whose old key could not be deleted (it expires by TTL)",
                r(&s.cycle_cleanup_failures),
            ),
        ]
        .into_iter()
        .map(|m| m.with_label("topology", topology))
        .collect();
        self.inner.counters.snapshot(extra)
    }
}
