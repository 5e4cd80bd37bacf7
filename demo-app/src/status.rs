//! The status page (`GET /`) and its data (`GET /status.json`): this node, the backend, the
//! peers and their state, sessions held, and recent N/D per request.

use serde_json::{Value, json};

use crate::app::AppState;

/// The node's status as JSON.
pub(crate) fn snapshot(state: &AppState) -> Value {
    let counters = state.backend.session.counters();
    let held = counters
        .extra
        .iter()
        .find(|m| m.name == "sessions_held")
        .map(|m| m.value as u64);
    let peers: Vec<Value> = state
        .backend
        .node
        .as_ref()
        .map(|n| {
            n.peers()
                .into_iter()
                .map(|p| {
                    json!({
                        "id": p.id,
                        "addr": p.addr,
                        "up": p.up,
                        "state": p.state,
                        "generation": p.generation,
                        "queued": p.queued,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let (window_requests, n, d) = state.metrics.recent();
    let readiness = state.backend.node.as_ref().map(|n| n.readiness());
    json!({
        "node": state.node_id,
        "readiness": readiness,
        "backend": state.backend.session.scheme(),
        "uptime_secs": state.started.elapsed().as_secs(),
        "sessions_held": held,
        "peers": peers,
        "requests": state.metrics.requests(),
        "recent": {
            "window_secs": 60,
            "requests": window_requests,
            "n_per_request": n,
            "d_per_request": d,
        },
        "totals": {
            "network_calls": counters.network_calls,
            "db_calls": counters.db_calls,
            "client_bytes_mean": if counters.client_bytes_count > 0 {
                counters.client_bytes_sum as f64 / counters.client_bytes_count as f64
            } else { 0.0 },
        },
    })
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The HTML page: rendered on the server, then refreshed every two seconds from
/// `/status.json`.
pub(crate) fn page(state: &AppState) -> String {
    let s = snapshot(state);
    let peers = s["peers"].as_array().cloned().unwrap_or_default();
    let peer_rows: String = if peers.is_empty() {
        "<tr><td colspan=\"4\">no peers: this backend shares sessions through its store</td></tr>"
            .into()
    } else {
        peers
            .iter()
            .map(|p| {
                format!(
                    "<tr class=\"peer\" data-peer=\"{id}\"><td>node {id}</td><td>{addr}</td><td class=\"{cls}\">{st}</td><td>{q}</td></tr>",
                    id = p["id"],
                    addr = escape(p["addr"].as_str().unwrap_or("")),
                    cls = if p["up"].as_bool() == Some(true) { "up" } else { "down" },
                    st = if p["up"].as_bool() == Some(true) { "up" } else { "down" },
                    q = p["queued"],
                )
            })
            .collect()
    };
    let held = s["sessions_held"].as_u64().map_or_else(
        || "kept by the backend's store".to_string(),
        |n| n.to_string(),
    );
    format!(
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>session-sync node {node}</title>
<style>
body {{ font: 15px/1.4 system-ui, sans-serif; margin: 2rem; color: #222 }}
table {{ border-collapse: collapse }} td, th {{ padding: .3rem .8rem; border-bottom: 1px solid #ddd; text-align: left }}
.up {{ color: #18794e; font-weight: 600 }} .down {{ color: #c62828; font-weight: 600 }}
code {{ background: #f4f4f4; padding: 0 .3rem }}
</style></head>
<body>
<h1>session-sync demo: node <span id="node">{node}</span></h1>
<p>backend <code id="backend">{backend}</code>, up <span id="uptime">{uptime}</span> s,
sessions held <span id="held">{held}</span>, requests <span id="requests">{requests}</span></p>
<h2>Peers</h2>
<table id="peers"><thead><tr><th>peer</th><th>cluster address</th><th>state</th><th>queued updates</th></tr></thead>
<tbody>{peer_rows}</tbody></table>
<h2>Recent requests (last minute)</h2>
<p><span id="window">{wreq}</span> requests; N per request <span id="n">{n:.3}</span>,
D per request <span id="d">{d:.3}</span>; mean token the client carries
<span id="bytes">{bytes:.0}</span> bytes</p>
<p><a href="/metrics">/metrics</a> · <a href="/status.json">/status.json</a></p>
<script>
async function refresh() {{
  try {{
    const s = await (await fetch('/status.json')).json();
    document.getElementById('uptime').textContent = s.uptime_secs;
    document.getElementById('held').textContent = s.sessions_held ?? "kept by the backend's store";
    document.getElementById('requests').textContent = s.requests;
    document.getElementById('window').textContent = s.recent.requests;
    document.getElementById('n').textContent = s.recent.n_per_request.toFixed(3);
    document.getElementById('d').textContent = s.recent.d_per_request.toFixed(3);
    document.getElementById('bytes').textContent = s.totals.client_bytes_mean.toFixed(0);
    if (s.peers.length) {{
      const body = document.querySelector('#peers tbody');
      body.replaceChildren(...s.peers.map(p => {{
        const tr = document.createElement('tr');
        tr.className = 'peer'; tr.dataset.peer = p.id;
        for (const [text, cls] of [['node ' + p.id], [p.addr], [p.up ? 'up' : 'down', p.up ? 'up' : 'down'], [String(p.queued)]]) {{
          const td = document.createElement('td'); td.textContent = text; if (cls) td.className = cls; tr.append(td);
        }}
        return tr;
      }}));
    }}
    document.body.dataset.refreshed = 'yes';
  }} catch (e) {{ document.body.dataset.refreshed = 'error'; }}
}}
refresh(); setInterval(refresh, 2000);
</script>
</body></html>"##,
        node = s["node"],
        backend = escape(s["backend"].as_str().unwrap_or("")),
        uptime = s["uptime_secs"],
        requests = s["requests"],
        wreq = s["recent"]["requests"],
        n = s["recent"]["n_per_request"].as_f64().unwrap_or(0.0),
        d = s["recent"]["d_per_request"].as_f64().unwrap_or(0.0),
        bytes = s["totals"]["client_bytes_mean"].as_f64().unwrap_or(0.0),
    )
}
