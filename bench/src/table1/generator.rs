//! The load generator: virtual users that log in and send the mixed workload to random
//! nodes, carrying their session token like a browser, and what they count (latency, errors,
//! the session header bytes up and down).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use indicatif::ProgressBar;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;

use super::*;

/// The session cookie the nodes use (the demo's default `session.cookie_name`).
pub(super) const COOKIE: &str = "sid";
/// The catalogue the virtual users shop from.
pub(super) const SKUS: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Login,
    Profile,
    Cart,
    AddItem,
    RemoveItem,
}

impl Op {
    pub(super) fn route(self) -> &'static str {
        match self {
            Op::Login => "POST /login",
            Op::Profile => "GET /profile",
            Op::Cart => "GET /cart",
            Op::AddItem => "POST /cart/items",
            Op::RemoveItem => "DELETE /cart/items/{sku}",
        }
    }

    pub(super) fn is_write(self) -> bool {
        matches!(self, Op::Login | Op::AddItem | Op::RemoveItem)
    }

    pub(super) fn from_route(route: &str) -> Option<Op> {
        [
            Op::Login,
            Op::Profile,
            Op::Cart,
            Op::AddItem,
            Op::RemoveItem,
        ]
        .into_iter()
        .find(|op| op.route() == route)
    }
}

/// Bytes of one header line on the HTTP/1.1 wire: `name: value\r\n`.
pub(super) fn header_line_len(name: &str, value_len: usize) -> u64 {
    (name.len() + 2 + value_len + 2) as u64
}

/// What one user (or the whole phase, merged) saw.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub(super) latencies: BTreeMap<&'static str, Vec<u32>>,
    pub(super) requests: u64,
    pub(super) writes: u64,
    pub(super) relogins: u64,
    pub(super) token_bytes: u64,
    /// Session header bytes on the wire, `[reads, writes]`: the `Cookie` header lines sent.
    pub(super) header_bytes_up: [u64; 2],
    /// The same for the `Set-Cookie` header lines received.
    pub(super) header_bytes_down: [u64; 2],
    pub(super) errors: ErrorReport,
}

impl Tally {
    pub(super) fn merge(&mut self, other: Tally) {
        for (route, mut l) in other.latencies {
            self.latencies.entry(route).or_default().append(&mut l);
        }
        self.requests += other.requests;
        self.writes += other.writes;
        self.relogins += other.relogins;
        self.token_bytes += other.token_bytes;
        for i in 0..2 {
            self.header_bytes_up[i] += other.header_bytes_up[i];
            self.header_bytes_down[i] += other.header_bytes_down[i];
        }
        self.errors.merge(other.errors);
    }

    /// Latencies of the reads (`false`) or the writes (`true`).
    pub(super) fn latencies_of(&self, writes: bool) -> Vec<u32> {
        self.latencies
            .iter()
            .filter(|(route, _)| Op::from_route(route).is_some_and(|op| op.is_write() == writes))
            .flat_map(|(_, l)| l.iter().copied())
            .collect()
    }

    pub(super) fn all_latencies(&self) -> Vec<u32> {
        self.latencies.values().flatten().copied().collect()
    }
}

/// What the user tasks share.
pub(super) struct Load {
    pub(super) client: reqwest::Client,
    pub(super) urls: Vec<String>,
    pub(super) bar: ProgressBar,
}

/// A browser-like user: one session token, requests one after another.
pub(super) struct VirtualUser {
    pub(super) name: String,
    pub(super) token: Option<String>,
    pub(super) rng: SmallRng,
}

/// Applies one `Set-Cookie` header to the user's token (a removal cookie clears it).
pub(super) fn apply_set_cookie(token: &mut Option<String>, header: &str) {
    let first = header.split(';').next().unwrap_or_default();
    let Some((name, value)) = first.split_once('=') else {
        return;
    };
    if name.trim() != COOKIE {
        return;
    }
    let removal = header
        .split(';')
        .skip(1)
        .any(|a| a.trim().eq_ignore_ascii_case("max-age=0"));
    let value = value.trim();
    *token = if removal || value.is_empty() {
        None
    } else {
        Some(value.to_owned())
    };
}

impl VirtualUser {
    /// Sends one request to a random node and records what happened.
    pub(super) async fn send(&mut self, load: &Load, op: Op, tally: &mut Tally) {
        let node = self.rng.random_range(0..load.urls.len());
        let base = &load.urls[node];
        let client = &load.client;
        let req = match op {
            Op::Login => client
                .post(format!("{base}/login"))
                .json(&json!({ "user": self.name })),
            Op::Profile => client.get(format!("{base}/profile")),
            Op::Cart => client.get(format!("{base}/cart")),
            Op::AddItem => {
                let sku = self.rng.random_range(0..SKUS);
                let qty = self.rng.random_range(1..=3u32);
                client
                    .post(format!("{base}/cart/items"))
                    .json(&json!({ "sku": format!("sku-{sku:02}"), "qty": qty }))
            }
            Op::RemoveItem => {
                let sku = self.rng.random_range(0..SKUS);
                client.delete(format!("{base}/cart/items/sku-{sku:02}"))
            }
        };
        let had_token = self.token.is_some();
        let kind = usize::from(op.is_write());
        let req = match &self.token {
            Some(t) => {
                tally.token_bytes += t.len() as u64;
                let value = format!("{COOKIE}={t}");
                tally.header_bytes_up[kind] += header_line_len("Cookie", value.len());
                req.header(reqwest::header::COOKIE, value)
            }
            None => req,
        };
        tally.requests += 1;
        if op.is_write() {
            tally.writes += 1;
        }
        let start = Instant::now();
        let result = async {
            let res = req.send().await?;
            let status = res.status().as_u16();
            let cookies: Vec<String> = res
                .headers()
                .get_all(reqwest::header::SET_COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_owned))
                .collect();
            res.bytes().await?;
            Ok::<_, reqwest::Error>((status, cookies))
        }
        .await;
        let took = start.elapsed();
        load.bar.inc(1);
        let route = op.route();
        let node_id = node + 1;
        match result {
            Err(e) => {
                tally.errors.transport += 1;
                tally.errors.add(
                    format!("{route}: transport"),
                    format!("{route} on node {node_id}: {e}"),
                );
            }
            Ok((status, cookies)) => {
                let micros = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
                tally.latencies.entry(route).or_default().push(micros);
                for c in &cookies {
                    tally.header_bytes_down[kind] += header_line_len("Set-Cookie", c.len());
                    apply_set_cookie(&mut self.token, c);
                }
                if status != 200 {
                    tally.errors.add(
                        format!("{route} → {status}"),
                        format!("{route} on node {node_id} answered {status}"),
                    );
                    if status == 401 && op != Op::Login && had_token {
                        tally.errors.lost_sessions += 1;
                        self.token = None;
                    }
                } else if op == Op::Login && self.token.is_none() {
                    tally.errors.add(
                        format!("{route}: no cookie"),
                        format!("{route} on node {node_id} answered 200 without a session cookie"),
                    );
                }
            }
        }
    }
}

/// Logs `users` users in, then sends `requests` requests of `mix`, and measures.
pub(super) async fn workload(
    ctx: &Ctx<'_>,
    run: &str,
    urls: &[String],
    wire: &WireTargets,
    users: usize,
    requests: usize,
    mix: Mix,
) -> Result<Measured, Table1Error> {
    let load = Arc::new(Load {
        client: ctx.client.clone(),
        urls: urls.to_vec(),
        bar: ctx.bar.clone(),
    });
    let join_err = |e: tokio::task::JoinError| Table1Error::Load {
        run: run.to_owned(),
        message: format!("a virtual user task failed: {e}"),
    };
    // Phase 1: every user logs in on a random node.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..users {
        let load = load.clone();
        let mut user = VirtualUser {
            name: format!("user-{i}"),
            token: None,
            rng: SmallRng::seed_from_u64(ctx.opts.seed.wrapping_add(i as u64)),
        };
        set.spawn(async move {
            let mut tally = Tally::default();
            user.send(&load, Op::Login, &mut tally).await;
            (i, user, tally)
        });
    }
    let mut logged_in: Vec<(usize, VirtualUser)> = Vec::with_capacity(users);
    let mut logins = Tally::default();
    while let Some(r) = set.join_next().await {
        let (i, user, tally) = r.map_err(join_err)?;
        logins.merge(tally);
        logged_in.push((i, user));
    }
    logged_in.sort_by_key(|(i, _)| *i);
    let before = scrape_settled(ctx, urls, run).await?;
    let sampler = wire.sampler();

    // Phase 2: the workload, each user's share sent one request after another.
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (i, mut user) in logged_in {
        let share = requests / users + usize::from(i < requests % users);
        let load = load.clone();
        set.spawn(async move {
            let mut tally = Tally::default();
            for _ in 0..share {
                if user.token.is_none() {
                    tally.relogins += 1;
                    user.send(&load, Op::Login, &mut tally).await;
                }
                let op = mix.pick(user.rng.random_range(0..mix.total()));
                user.send(&load, op, &mut tally).await;
            }
            tally
        });
    }
    let mut tally = Tally::default();
    while let Some(r) = set.join_next().await {
        tally.merge(r.map_err(join_err)?);
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = scrape_settled(ctx, urls, run).await?;
    let wire_delta = sampler.and_then(sockets::Sampler::finish);

    let reqs = tally.requests.max(1) as f64;
    let d = |name: &str| delta(&before, &after, name);
    let kind_stats = |write: bool| {
        let kind = if write { "write" } else { "read" };
        let i = usize::from(write);
        let series = |name: &str| d(&format!("{name}{{kind=\"{kind}\"}}"));
        let layer = series("session_requests_total");
        let requests = if write {
            tally.writes
        } else {
            tally.requests - tally.writes
        };
        let per = |v: f64, n: f64| if n > 0.0 { v / n } else { 0.0 };
        KindStats {
            requests,
            latency: LatencyStats::from_micros(&mut tally.latencies_of(write)),
            layer_requests: layer,
            n_per_request: per(series("session_request_network_calls_total"), layer),
            d_per_request: per(series("session_request_db_calls_total"), layer),
            client_bytes_up: per(tally.header_bytes_up[i] as f64, requests as f64),
            client_bytes_down: per(tally.header_bytes_down[i] as f64, requests as f64),
        }
    };
    let reads = kind_stats(false);
    let writes_stats = kind_stats(true);
    // Replication is divided over the writes the layer counted (the writes that changed a
    // session, which are what replicates), else over the writes sent.
    let write_count = if writes_stats.layer_requests > 0.0 {
        writes_stats.layer_requests
    } else {
        tally.writes.max(1) as f64
    };
    let (backend_wire, backend_wire_error) = match wire_delta {
        Ok(delta) => {
            let gossip = d("session_instantcopy_gossip_sent_bytes_total");
            let total = delta.bytes as f64 + gossip;
            (
                Some(BackendWire {
                    target: wire.target,
                    tcp_bytes: delta.bytes,
                    gossip_bytes: gossip,
                    connections: delta.connections,
                    closed_connections: delta.closed,
                    bytes_per_request: total / reqs,
                    bytes_per_write: total / write_count,
                }),
                None,
            )
        }
        Err(e) => (None, Some(e)),
    };
    let network_calls = delta(&before, &after, "session_network_calls_total");
    let db_calls = delta(&before, &after, "session_db_calls_total");
    let bytes_count = delta(&before, &after, "session_client_bytes_count");
    let replication = after
        .contains_key("session_instantcopy_push_updates_total")
        .then(|| {
            let writes = write_count;
            let queued = delta(&before, &after, "session_instantcopy_push_queued_total");
            let updates = delta(&before, &after, "session_instantcopy_push_updates_total");
            let batches = delta(&before, &after, "session_instantcopy_push_batches_total");
            let bytes = delta(&before, &after, "session_instantcopy_push_bytes_total");
            ReplicationStats {
                queued,
                queued_per_write: queued / writes,
                updates,
                batches,
                bytes,
                messages_per_write: updates / writes,
                batches_per_write: batches / writes,
                bytes_per_write: bytes / writes,
            }
        });
    let counter_deltas = after
        .keys()
        .map(|k| (k.clone(), delta(&before, &after, k)))
        .collect();
    let mut errors = logins.errors.clone();
    errors.merge(tally.errors.clone());
    let routes = tally
        .latencies
        .iter_mut()
        .map(|(r, l)| ((*r).to_owned(), LatencyStats::from_micros(l)))
        .collect();
    Ok(Measured {
        nodes: urls.len(),
        users,
        requests: tally.requests,
        writes: tally.writes,
        relogins: tally.relogins,
        seconds,
        throughput_rps: tally.requests as f64 / seconds.max(1e-9),
        latency: LatencyStats::from_micros(&mut tally.all_latencies()),
        routes,
        login_latency: LatencyStats::from_micros(&mut logins.all_latencies()),
        client_bytes_mean: tally.token_bytes as f64 / reqs,
        server_client_bytes_mean: (bytes_count > 0.0)
            .then(|| delta(&before, &after, "session_client_bytes_sum") / bytes_count),
        n_per_request: network_calls / reqs,
        d_per_request: db_calls / reqs,
        network_calls,
        db_calls,
        n_per_write_total: writes_stats.n_per_request
            + replication.as_ref().map_or(0.0, |r| r.batches_per_write),
        replication,
        reads,
        writes_stats,
        backend_wire,
        backend_wire_error,
        errors,
        counter_deltas,
        cluster_start_secs: 0.0,
    })
}
