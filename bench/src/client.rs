//! A small HTTP client for the demo's contract (log in, add to the cart, read the profile,
//! log out) that keeps the `sid` cookie by hand, so one client can play many users.

use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};

use crate::error::{BenchError, Context, Result};

/// The cookie the demo and the peer apps use.
pub const COOKIE_NAME: &str = "sid";

/// A pooled keep-alive client (no proxy, 5 s timeout).
pub fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(256)
        .build()
        .context("building the HTTP client")
}

/// The `sid` value a response sets, if any (`Some("")` for a removal).
pub fn set_cookie_token(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let first = v.split(';').next()?.trim();
            let (name, value) = first.split_once('=')?;
            (name.trim() == COOKIE_NAME).then(|| value.trim().to_owned())
        })
}

/// One user's session as a client sees it.
#[derive(Debug, Clone, Default)]
pub struct UserSession {
    /// The current token (empty: none yet).
    pub token: String,
}

/// What a request returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The HTTP status.
    pub status: u16,
}

impl UserSession {
    fn request(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if self.token.is_empty() {
            rb
        } else {
            rb.header(COOKIE, format!("{COOKIE_NAME}={}", self.token))
        }
    }

    fn absorb(&mut self, res: &reqwest::Response) {
        if let Some(t) = set_cookie_token(res) {
            self.token = t;
        }
    }

    async fn send(
        &mut self,
        rb: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<(Outcome, reqwest::Response)> {
        let res = self.request(rb).send().await.context(what)?;
        self.absorb(&res);
        Ok((
            Outcome {
                status: res.status().as_u16(),
            },
            res,
        ))
    }

    /// `POST /login`.
    pub async fn login(
        &mut self,
        client: &reqwest::Client,
        base: &str,
        user: &str,
    ) -> Result<Outcome> {
        let body = serde_json::json!({ "user": user }).to_string();
        let rb = client
            .post(format!("{base}/login"))
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        let (o, res) = self.send(rb, "POST /login").await?;
        drain(res).await;
        Ok(o)
    }

    /// `POST /cart/items`.
    pub async fn add(
        &mut self,
        client: &reqwest::Client,
        base: &str,
        sku: &str,
        qty: u32,
    ) -> Result<Outcome> {
        let body = serde_json::json!({ "sku": sku, "qty": qty }).to_string();
        let rb = client
            .post(format!("{base}/cart/items"))
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        let (o, res) = self.send(rb, "POST /cart/items").await?;
        drain(res).await;
        Ok(o)
    }

    /// `GET /profile`; returns the body as JSON when the status is 200.
    pub async fn profile(
        &mut self,
        client: &reqwest::Client,
        base: &str,
    ) -> Result<(Outcome, Option<serde_json::Value>)> {
        let rb = client.get(format!("{base}/profile"));
        let (o, res) = self.send(rb, "GET /profile").await?;
        let body = if o.status == 200 {
            res.json::<serde_json::Value>().await.ok()
        } else {
            drain(res).await;
            None
        };
        Ok((o, body))
    }

    /// `GET /cart`.
    pub async fn cart(&mut self, client: &reqwest::Client, base: &str) -> Result<Outcome> {
        let rb = client.get(format!("{base}/cart"));
        let (o, res) = self.send(rb, "GET /cart").await?;
        drain(res).await;
        Ok(o)
    }

    /// `POST /logout`.
    pub async fn logout(&mut self, client: &reqwest::Client, base: &str) -> Result<Outcome> {
        let rb = client.post(format!("{base}/logout"));
        let (o, res) = self.send(rb, "POST /logout").await?;
        drain(res).await;
        Ok(o)
    }
}

async fn drain(res: reqwest::Response) {
    let _ = res.bytes().await;
}

/// Logs in `n` users on `base` (`user0`, `user1`, ...) and gives each two cart lines (`a`,
/// `b`), `concurrency` users at a time. Returns each session's latest token; `needs_token`
/// demands that the app issued one (every target but the floor).
pub async fn setup_sessions(
    client: &reqwest::Client,
    base: &str,
    n: usize,
    concurrency: usize,
    needs_token: bool,
) -> Result<Vec<String>> {
    let results: Vec<Result<String>> = futures::stream::iter(0..n)
        .map(|i| async move {
            let mut s = UserSession::default();
            let o = s.login(client, base, &format!("user{i}")).await?;
            if o.status != 200 {
                return Err(BenchError(format!("setup: login answered {}", o.status)));
            }
            if needs_token && s.token.is_empty() {
                return Err(BenchError::msg("setup: login set no `sid` cookie"));
            }
            for sku in ["a", "b"] {
                let o = s.add(client, base, sku, 1).await?;
                if o.status != 200 {
                    return Err(BenchError(format!(
                        "setup: adding to the cart answered {}",
                        o.status
                    )));
                }
            }
            Ok(s.token)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}
