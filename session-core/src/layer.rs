//! axum integration: a tower [`Layer`] that gives every request a lazy [`Session`] and writes it
//! back after the handler, and the [`Session`] extractor.
//!
//! Past 600 lines because the layer, its configuration with the cookie-rule validation, the token
//! transports and the extractor are one request path; the last fifth is its tests.

use futures::{FutureExt as _, TryFutureExt as _};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use cookie::{Cookie, SameSite};
use http::header::{COOKIE, SET_COOKIE};
use http::request::Parts;
use http::{HeaderName, HeaderValue, Request, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use crate::backend::SessionBackend;
use crate::cost::{RequestCosts, RequestKind};
use crate::error::SessionError;
use crate::record::now_millis;
use crate::session::{Commit, Session, SessionLimits};

/// Where the client carries its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenTransport {
    /// A cookie only (browsers).
    Cookie,
    /// A request/response header only (mobile and API clients).
    Header,
    /// Both: a request that sent the header gets its token back in the header, everyone else
    /// in the cookie.
    #[default]
    CookieOrHeader,
    /// `Authorization: Bearer <token>` (or the custom header) on requests; the first token and
    /// every re-issue come back in the custom header ([`SessionConfig::header_name`]), never in
    /// a cookie (mobile and API clients, the paper's own use case). Not combined with the
    /// cookie modes, so an app whose browsers send their own `Authorization` header is not
    /// confused by it.
    Bearer,
}

/// The token of an `Authorization: Bearer <token>` value (the scheme matched without regard to
/// case, as RFC 9110 says; surrounding spaces ignored). `None` for another scheme or no token.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Most bytes a browser keeps of one cookie, counted as RFC 6265 counts them: name, value and
/// attributes together (the whole `Set-Cookie` value). A cookie over it is refused with
/// [`SessionError::TooLarge`] instead of being sent for the browser to drop silently.
pub const MAX_SET_COOKIE_LEN: usize = 4096;

/// The opt-in cross-site request check for state-changing methods (`POST`, `PUT`, `PATCH`,
/// `DELETE`): a request a browser marks as cross-site is refused with `403` before the handler
/// runs and before the session is loaded.
///
/// * `Sec-Fetch-Site` (sent by every current browser) must be `same-origin` or `none` (the
///   user typed the URL or used a bookmark); `same-site` passes only with
///   [`allow_same_site`](OriginCheck::allow_same_site).
/// * Without it, an `Origin` header must name the request's own host (its `Host` header) or one
///   of [`allowed_origins`](OriginCheck::allowed_origins); `Origin: null` is refused.
/// * A request with neither header is not from a browser form or script (curl, a mobile app, a
///   server-side client) and passes.
///
/// This complements `SameSite` cookies (which a same-site but cross-origin page, or an old
/// browser, does not stop) and a JSON-only API (which a `text/plain` form post does not reach).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginCheck {
    /// Other origins allowed to send state-changing requests, as `scheme://host[:port]`
    /// (for example a separate front-end's origin).
    pub allowed_origins: Vec<String>,
    /// Accept `Sec-Fetch-Site: same-site` (a sibling subdomain) too.
    pub allow_same_site: bool,
}

impl OriginCheck {
    /// True when the request may go on.
    fn allows(&self, method: &http::Method, headers: &http::HeaderMap) -> bool {
        use http::Method;
        if matches!(
            *method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        ) {
            return true;
        }
        if let Some(site) = headers.get("sec-fetch-site") {
            return match site.as_bytes() {
                b"same-origin" | b"none" => true,
                b"same-site" => self.allow_same_site,
                _ => false,
            };
        }
        let Some(origin) = headers.get(http::header::ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        if self.allowed_origins.iter().any(|o| o == origin) {
            return true;
        }
        // Same origin as the request: the origin's authority equals the Host header.
        let authority = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        match (authority, headers.get(http::header::HOST)) {
            (Some(a), Some(host)) => host.as_bytes().eq_ignore_ascii_case(a.as_bytes()),
            _ => false,
        }
    }
}

/// How the layer reads and writes the token.
///
/// Defaults: cookie `sid`, `HttpOnly`, `Secure`, `SameSite=Lax`, `Path=/`, `Max-Age` following the
/// session's expiry, header `x-session-token` accepted too, sessions capped at 64 KiB and
/// 1,000 keys, no origin check.
///
/// **Recommended in production**: the cookie name `__Host-sid`. Browsers then accept the cookie
/// only with `Secure`, `Path=/` and no `Domain`, so neither a sibling subdomain nor a plain-http
/// page can set or overwrite it (cookie tossing); [`validate`](SessionConfig::validate) checks
/// those rules.
///
/// ```
/// use session_core::SessionConfig;
/// // Plain-http local development: the only default worth turning off.
/// let config = SessionConfig::default().with_secure(false).with_cookie_name("app_sid");
/// assert_eq!(config.cookie_name, "app_sid");
/// // Production: the `__Host-` prefix.
/// assert!(SessionConfig::default().with_cookie_name("__Host-sid").validate().is_ok());
/// assert!(SessionConfig::default().with_cookie_name("__Host-sid").with_secure(false).validate().is_err());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SessionConfig {
    /// Cookie name. The default `sid` does not advertise which library is in use.
    pub cookie_name: String,
    /// Header name for header transport (lower case).
    pub header_name: HeaderName,
    /// Which transports are accepted.
    pub transport: TokenTransport,
    /// The cookie's `Secure` attribute (on by default; turn off only for local plain http).
    pub secure: bool,
    /// The cookie's `SameSite` attribute.
    pub same_site: SameSite,
    /// The cookie's `Path`.
    pub path: String,
    /// The cookie's `Domain`, if any.
    pub domain: Option<String>,
    /// Give the cookie a `Max-Age` matching the session's expiry (otherwise it is a browser
    /// session cookie; the server-side deadlines apply either way).
    pub persistent: bool,
    /// Caps on the session's size and key count (64 KiB / 1,000 keys by default).
    pub limits: SessionLimits,
    /// Refuse cross-site state-changing requests (off by default; see [`OriginCheck`]).
    pub origin_check: Option<OriginCheck>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            cookie_name: "sid".into(),
            header_name: HeaderName::from_static("x-session-token"),
            transport: TokenTransport::default(),
            secure: true,
            same_site: SameSite::Lax,
            path: "/".into(),
            domain: None,
            persistent: true,
            limits: SessionLimits::default(),
            origin_check: None,
        }
    }
}

impl SessionConfig {
    /// Sets the cookie name.
    pub fn with_cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = name.into();
        self
    }

    /// Sets the `Secure` attribute.
    pub fn with_secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// Sets the accepted transports.
    pub fn with_transport(mut self, transport: TokenTransport) -> Self {
        self.transport = transport;
        self
    }

    /// Sets the `SameSite` attribute (`None` needs `Secure`: see [`validate`](Self::validate)).
    pub fn with_same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = same_site;
        self
    }

    /// Sets the `Domain` attribute (`None`: host-only, the safer default).
    pub fn with_domain(mut self, domain: Option<String>) -> Self {
        self.domain = domain;
        self
    }

    /// `true`: `Max-Age` follows the session's expiry; `false`: a browser-session cookie
    /// (no `Max-Age`, gone when the browser closes).
    pub fn with_persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    /// Sets the caps on session size and key count.
    pub fn with_limits(mut self, limits: SessionLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Turns the cross-site request check on (`Some`) or off.
    pub fn with_origin_check(mut self, check: Option<OriginCheck>) -> Self {
        self.origin_check = check;
        self
    }

    /// Checks the cookie rules browsers enforce, so a misconfiguration fails at startup
    /// instead of as a cookie the browser silently drops:
    ///
    /// * the name is a valid cookie name (an HTTP token: letters, digits and
    ///   ``!#$%&'*+-.^_`|~``);
    /// * `SameSite=None` requires `Secure`;
    /// * a `__Secure-` name requires `Secure`; a `__Host-` name requires `Secure`, `Path=/`
    ///   and no `Domain`;
    /// * the path starts with `/`, the domain (if any) is a plain host name, and neither holds
    ///   `;`, control characters or spaces;
    /// * the size caps are non-zero.
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        let bad = |field: &str, m: String| Err(crate::ConfigError::new("session cookie", field, m));
        let name = &self.cookie_name;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            return bad(
                "cookie_name",
                format!("{name:?} is not a valid cookie name"),
            );
        }
        if self.same_site == SameSite::None && !self.secure {
            return bad(
                "same_site",
                "SameSite=None requires Secure (browsers drop the cookie otherwise)".into(),
            );
        }
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("__secure-") && !self.secure {
            return bad(
                "secure",
                format!("the cookie {name:?} (prefix __Secure-) requires Secure"),
            );
        }
        if lower.starts_with("__host-") {
            if !self.secure {
                return bad(
                    "secure",
                    format!("the cookie {name:?} (prefix __Host-) requires Secure"),
                );
            }
            if self.path != "/" {
                return bad(
                    "path",
                    format!("the cookie {name:?} (prefix __Host-) requires Path=/"),
                );
            }
            if self.domain.is_some() {
                return bad(
                    "domain",
                    format!("the cookie {name:?} (prefix __Host-) must not set Domain"),
                );
            }
        }
        let unsafe_char = |v: &str| {
            v.bytes()
                .any(|b| b == b';' || b == b',' || b <= b' ' || b == 0x7f)
        };
        if !self.path.starts_with('/') || unsafe_char(&self.path) {
            return bad(
                "path",
                format!(
                    "path {:?} must start with / and hold no ; , space or control characters",
                    self.path
                ),
            );
        }
        if let Some(d) = &self.domain {
            let d = d.strip_prefix('.').unwrap_or(d);
            if d.is_empty()
                || !d
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                return bad("domain", format!("domain {d:?} is not a host name"));
            }
        }
        if self.limits.max_bytes == 0 || self.limits.max_keys == 0 {
            return bad(
                "limits",
                "the session size caps must be greater than zero".into(),
            );
        }
        Ok(())
    }

    fn uses_cookie(&self) -> bool {
        matches!(
            self.transport,
            TokenTransport::Cookie | TokenTransport::CookieOrHeader
        )
    }

    fn uses_header(&self) -> bool {
        self.transport != TokenTransport::Cookie
    }

    /// Finds the token in a request's headers: the header first (when enabled), then the cookie.
    /// Returns the token and whether it came from the header.
    pub fn token_from(&self, headers: &http::HeaderMap) -> Option<(String, bool)> {
        self.find_token(headers).map(|(t, h)| (t.to_owned(), h))
    }

    /// [`token_from`](SessionConfig::token_from) without copying: the token borrowed from the
    /// header. Cookies are scanned in place (`name=value` pairs split on `;`, name and value
    /// trimmed, the first non-empty value of our name wins), as `Cookie::split_parse` reads
    /// them but without building a `Cookie` per pair: this runs on every request.
    fn find_token<'h>(&self, headers: &'h http::HeaderMap) -> Option<(&'h str, bool)> {
        if self.transport == TokenTransport::Bearer
            && let Some(token) = headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
                .and_then(bearer_token)
        {
            return Some((token, true));
        }
        if self.uses_header()
            && let Some(v) = headers
                .get(&self.header_name)
                .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
            && !v.is_empty()
        {
            return Some((v, true));
        }
        if self.uses_cookie() {
            for value in headers.get_all(COOKIE) {
                // Not `to_str`: a non-ASCII value is still a (bad) token, to be rejected and cleared.
                let Ok(value) = std::str::from_utf8(value.as_bytes()) else {
                    continue;
                };
                if let Some(token) = cookie_value(value, &self.cookie_name) {
                    return Some((token, false));
                }
            }
        }
        None
    }

    fn cookie(&self, value: String) -> Cookie<'static> {
        let mut c = Cookie::build((self.cookie_name.clone(), value))
            .http_only(true)
            .secure(self.secure)
            .same_site(self.same_site)
            .path(self.path.clone());
        if let Some(d) = &self.domain {
            c = c.domain(d.clone());
        }
        c.build()
    }

    /// The `Set-Cookie` value issuing `token`, written in one pass into one buffer (this runs on
    /// every response that changes the session). Byte for byte what the `cookie` crate writes
    /// for the same cookie: `name=token; HttpOnly; SameSite=…[; Secure]; Path=…[; Domain=…]
    /// [; Max-Age=…]`.
    fn set_cookie(&self, token: &str, max_age: Option<u64>) -> String {
        use std::fmt::Write as _;
        let same_site = match self.same_site {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        };
        // As `Cookie::domain()`: one leading dot is not part of the domain.
        let domain = self
            .domain
            .as_deref()
            .map(|d| d.strip_prefix('.').unwrap_or(d));
        let mut out = String::with_capacity(
            self.cookie_name.len()
                + token.len()
                + self.path.len()
                + domain.map_or(0, |d| d.len() + 9)
                + 72,
        );
        out.push_str(&self.cookie_name);
        out.push('=');
        out.push_str(token);
        out.push_str("; HttpOnly; SameSite=");
        out.push_str(same_site);
        if self.secure {
            out.push_str("; Secure");
        }
        out.push_str("; Path=");
        out.push_str(&self.path);
        if let Some(d) = domain {
            out.push_str("; Domain=");
            out.push_str(d);
        }
        if let Some(secs) = max_age {
            // Writing into a String cannot fail.
            let _ = write!(out, "; Max-Age={secs}");
        }
        out
    }

    /// Writes a commit's outcome into response headers.
    ///
    /// A response that issues or clears a token also gets `Cache-Control: no-store`, so no
    /// shared cache keeps (and hands another user) a response carrying someone's token.
    /// Fails, writing nothing, when the `Set-Cookie` value would pass
    /// [`MAX_SET_COOKIE_LEN`] (a browser would drop it).
    pub fn apply_commit(
        &self,
        commit: &Commit,
        via_header: bool,
        headers: &mut http::HeaderMap,
    ) -> Result<(), SessionError> {
        if *commit != Commit::Unchanged {
            headers.insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            );
        }
        match commit {
            Commit::Unchanged => {}
            Commit::Issue { token, expires_at } => {
                if via_header || !self.uses_cookie() {
                    if let Ok(v) = HeaderValue::from_str(token) {
                        headers.insert(self.header_name.clone(), v);
                    }
                } else {
                    let max_age = self
                        .persistent
                        .then(|| expires_at.saturating_sub(now_millis()) / 1000);
                    let value = self.set_cookie(token, max_age);
                    if value.len() > MAX_SET_COOKIE_LEN {
                        headers.remove(http::header::CACHE_CONTROL);
                        return Err(SessionError::TooLarge {
                            size: value.len(),
                            limit: MAX_SET_COOKIE_LEN,
                            what: "a browser cookie (name, value and attributes)",
                        });
                    }
                    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
                        headers.append(SET_COOKIE, v);
                    }
                }
            }
            Commit::Clear => {
                if via_header || !self.uses_cookie() {
                    headers.insert(self.header_name.clone(), HeaderValue::from_static(""));
                } else {
                    let mut c = self.cookie(String::new());
                    c.make_removal();
                    if let Ok(v) = HeaderValue::from_str(&c.to_string()) {
                        headers.append(SET_COOKIE, v);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The first non-empty value of cookie `name` in one `Cookie` header value.
fn cookie_value<'v>(header: &'v str, name: &str) -> Option<&'v str> {
    header.split(';').find_map(|pair| {
        let (n, v) = pair.split_once('=')?;
        let v = v.trim();
        (n.trim() == name && !v.is_empty()).then_some(v)
    })
}

/// The tower layer: wraps a service so each request carries a lazy [`Session`].
///
/// After the inner service responds: a 5xx response is passed through and nothing is saved; any
/// other response triggers [`Session::commit`], whose outcome becomes `Set-Cookie` (or the token
/// header). A failed commit replaces the response with an error response and sets no cookie, so
/// a client never holds a token for a session that was not saved.
#[derive(Clone)]
pub struct SessionLayer {
    backend: Arc<dyn SessionBackend>,
    config: Arc<SessionConfig>,
    costs: Option<Arc<RequestCosts>>,
}

impl std::fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLayer")
            .field("backend", &self.backend.scheme())
            .field("config", &self.config)
            .finish()
    }
}

impl SessionLayer {
    /// A layer over `backend` with the default [`SessionConfig`].
    pub fn new(backend: Arc<dyn SessionBackend>) -> Self {
        Self::with_config(backend, SessionConfig::default())
    }

    /// A layer over `backend` with `config`.
    pub fn with_config(backend: Arc<dyn SessionBackend>, config: SessionConfig) -> Self {
        SessionLayer {
            backend,
            config: Arc::new(config),
            costs: None,
        }
    }

    /// Also measures each request's network and database calls ([`cost::measure`]) and adds
    /// them to `costs` as a read or a write, so N and D can be reported per read and per write
    /// (the demo exports them as `session_request_*_total{kind}`). Off by default; when on,
    /// each request runs inside one task-local scope.
    ///
    /// [`cost::measure`]: crate::cost::measure
    pub fn with_request_costs(mut self, costs: Arc<RequestCosts>) -> Self {
        self.costs = Some(costs);
        self
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            backend: self.backend.clone(),
            config: self.config.clone(),
            costs: self.costs.clone(),
        }
    }
}

/// The service [`SessionLayer`] produces.
#[derive(Clone)]
pub struct SessionService<S> {
    inner: S,
    backend: Arc<dyn SessionBackend>,
    config: Arc<SessionConfig>,
    costs: Option<Arc<RequestCosts>>,
}

impl<S> std::fmt::Debug for SessionService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionService")
            .field("backend", &self.backend.scheme())
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // Take the service that was driven to readiness, leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = self.config.clone();
        if let Some(check) = &config.origin_check
            && !check.allows(req.method(), req.headers())
        {
            tracing::debug!(method = %req.method(), "cross-site state-changing request refused");
            return Box::pin(async move { Ok(cross_site_refused()) });
        }
        let (token, via_header) = match config.find_token(req.headers()) {
            Some((t, h)) => (Some(Arc::<str>::from(t)), h),
            None => (None, false),
        };
        let session = Session::with_limits(self.backend.clone(), token, config.limits);
        req.extensions_mut().insert(session.clone());
        // With cost accounting on, the session handle says afterwards whether it wrote.
        let metered = self.costs.clone().map(|costs| (costs, session.clone()));
        // Combinators, not `async` blocks around `inner.call(req).await`: an `async` block keeps
        // what it captures and the future it awaits in separate slots, so each level of wrapping
        // copied the request and the handler's future once more (2,736 bytes per request with
        // costs on, 664 without; now under 600 either way, below glibc's per-thread cache for
        // small blocks, which larger ones bypass into its slow path).
        let serve = inner.call(req).and_then(move |res| async move {
            let res = res.map(Body::new);
            if res.status().is_server_error() {
                return Ok(res);
            }
            let applied = match session.commit().await {
                Ok(commit) => {
                    let mut res = res;
                    config
                        .apply_commit(&commit, via_header, res.headers_mut())
                        .map(|()| {
                            if session.is_stale() {
                                res.headers_mut()
                                    .insert(STALE_HEADER, HeaderValue::from_static("1"));
                            }
                            res
                        })
                }
                Err(e) => Err(e),
            };
            match applied {
                Ok(res) => Ok(res),
                Err(e) => {
                    let mut err = e.into_response();
                    if matches!(
                        err.status(),
                        StatusCode::CONFLICT | StatusCode::UNAUTHORIZED
                    ) {
                        let _ = config.apply_commit(&Commit::Clear, via_header, err.headers_mut());
                    }
                    Ok(err)
                }
            }
        });
        match metered {
            Some((costs, wrote)) => {
                Box::pin(crate::cost::measure(serve).map(move |(res, cost)| {
                    let kind = if wrote.has_written() {
                        RequestKind::Write
                    } else {
                        RequestKind::Read
                    };
                    costs.record(kind, cost);
                    res
                }))
            }
            None => Box::pin(serve),
        }
    }
}

/// The `403` for a request the [`OriginCheck`] refused.
fn cross_site_refused() -> Response {
    (
        StatusCode::FORBIDDEN,
        [(http::header::CONTENT_TYPE, "application/json")],
        r#"{"error":"cross-site request refused"}"#,
    )
        .into_response()
}

/// Response header set when the session was served from a copy that may be older than the
/// client's last write (see [`Loaded::stale`](crate::Loaded::stale)).
pub const STALE_HEADER: HeaderName = HeaderName::from_static("x-session-stale");

/// Seconds a client is told to wait (`Retry-After`) when the session store is unavailable.
pub const RETRY_AFTER_SECS: u64 = 1;

/// Why the [`Session`] extractor failed: the route is not behind a [`SessionLayer`].
#[derive(Debug, Clone, Copy)]
pub struct MissingSessionLayer;

impl IntoResponse for MissingSessionLayer {
    fn into_response(self) -> Response {
        tracing::error!("Session extractor used on a route without SessionLayer");
        (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = MissingSessionLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(MissingSessionLayer)
    }
}

/// A short JSON error body, `{"error": "..."}`, with its status.
fn json_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(http::header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "error": message }).to_string(),
    )
        .into_response()
}

/// The error and its causes, for the log line.
fn cause_chain(e: &SessionError) -> String {
    let mut chain = String::new();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        src = s.source();
    }
    chain
}

impl IntoResponse for SessionError {
    /// A short JSON body `{"error": "..."}` in every case: `503` with `Retry-After` when the
    /// store (or the newest copy of the session) cannot be reached: the client keeps its token
    /// and may retry; an opaque 500 for other backend failures (cause logged); `413` with a
    /// clear message for a session that is too large (nothing was saved); 409 for a session
    /// that expired during the request.
    fn into_response(self) -> Response {
        match &self {
            SessionError::Unavailable { .. } => {
                tracing::warn!(error = %self, cause = %cause_chain(&self), "session store unavailable");
                let mut res = json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the session store is temporarily unavailable; retry shortly",
                );
                res.headers_mut().insert(
                    http::header::RETRY_AFTER,
                    HeaderValue::from(RETRY_AFTER_SECS),
                );
                res
            }
            SessionError::TooLarge { .. } => {
                tracing::info!(error = %self, "session write refused: too large");
                json_error(StatusCode::PAYLOAD_TOO_LARGE, &self.to_string())
            }
            SessionError::Gone => json_error(
                StatusCode::CONFLICT,
                "the session expired during the request; sign in again",
            ),
            SessionError::InvalidToken(_) => {
                json_error(StatusCode::UNAUTHORIZED, "invalid session")
            }
            _ => {
                tracing::error!(error = %self, cause = %cause_chain(&self), "session backend failure");
                json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::AUTHORIZATION;

    /// What the layer did before it scanned cookies itself: `cookie`'s parser.
    fn with_cookie_crate(header: &str, name: &str) -> Option<String> {
        Cookie::split_parse(header)
            .flatten()
            .find(|c| c.name() == name && !c.value().is_empty())
            .map(|c| c.value().to_owned())
    }

    #[test]
    fn cookie_scan_reads_headers_like_the_cookie_crate() {
        let cases = [
            "sid=tok",
            "a=1; sid=tok; b=2",
            "  sid =  tok  ;x=y",
            "sid=; sid=second",
            "sid=\"quoted\"",
            "sid=a=b=c",
            "sidx=1; xsid=2",
            "sid",
            "=sid; sid",
            ";;; sid=last;",
            "a=1;sid=tok;sid=other",
            "",
            " ; ",
            "SID=upper",
            "sid=t\u{e9}l\u{e9}",
        ];
        for header in cases {
            assert_eq!(
                cookie_value(header, "sid").map(str::to_owned),
                with_cookie_crate(header, "sid"),
                "header {header:?}"
            );
        }
    }

    #[test]
    fn set_cookie_is_what_the_cookie_crate_writes() {
        let configs = [
            SessionConfig::default(),
            SessionConfig::default()
                .with_secure(false)
                .with_cookie_name("app_sid"),
            SessionConfig {
                same_site: SameSite::Strict,
                domain: Some(".example.com".into()),
                path: "/app".into(),
                ..SessionConfig::default()
            },
            SessionConfig {
                same_site: SameSite::None,
                secure: false,
                domain: Some("example.com".into()),
                persistent: false,
                ..SessionConfig::default()
            },
        ];
        for config in configs {
            for max_age in [None, Some(0), Some(1800)] {
                let token = "AbC-123_xyz";
                let mut c = config.cookie(token.to_owned());
                if let Some(secs) = max_age {
                    c.set_max_age(cookie::time::Duration::seconds(secs as i64));
                }
                assert_eq!(
                    config.set_cookie(token, max_age),
                    c.to_string(),
                    "{config:?} max-age {max_age:?}"
                );
            }
        }
    }

    #[test]
    fn issued_cookies_carry_the_attributes_and_expiry() {
        let config = SessionConfig::default();
        let mut h = http::HeaderMap::new();
        let commit = Commit::Issue {
            token: "tok".into(),
            expires_at: now_millis() + 60_000,
        };
        config.apply_commit(&commit, false, &mut h).unwrap();
        assert_eq!(h.get(http::header::CACHE_CONTROL).unwrap(), "no-store");
        let v = h.get(SET_COOKIE).unwrap().to_str().unwrap();
        assert!(
            v.starts_with("sid=tok; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age="),
            "{v}"
        );
        let secs: u64 = v.rsplit('=').next().unwrap().parse().unwrap();
        assert!((58..=60).contains(&secs), "{v}");
        // A token that cannot be a header value is not sent (never a panic).
        let mut h = http::HeaderMap::new();
        let bad = Commit::Issue {
            token: "a\nb".into(),
            expires_at: 0,
        };
        config.apply_commit(&bad, false, &mut h).unwrap();
        assert!(h.get(SET_COOKIE).is_none());
        // Name, value and attributes over 4096 bytes: refused, nothing written.
        let mut h = http::HeaderMap::new();
        let big = Commit::Issue {
            token: "a".repeat(4096 - "sid=".len()),
            expires_at: now_millis() + 60_000,
        };
        let e = config.apply_commit(&big, false, &mut h).unwrap_err();
        assert!(
            matches!(e, SessionError::TooLarge { limit: 4096, .. }),
            "{e}"
        );
        assert!(h.is_empty());
        let mut h = http::HeaderMap::new();
        config
            .apply_commit(&Commit::Unchanged, false, &mut h)
            .unwrap();
        assert!(
            h.is_empty(),
            "nothing issued: cacheable as the handler says"
        );
    }

    #[test]
    fn token_from_prefers_the_header_then_any_cookie_header() {
        let config = SessionConfig::default();
        let mut h = http::HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1"));
        h.append(COOKIE, HeaderValue::from_static("sid=from-cookie"));
        assert_eq!(
            config.token_from(&h),
            Some(("from-cookie".to_string(), false))
        );
        h.insert("x-session-token", HeaderValue::from_static("from-header"));
        assert_eq!(
            config.token_from(&h),
            Some(("from-header".to_string(), true))
        );
        let cookie_only = SessionConfig::default().with_transport(TokenTransport::Cookie);
        assert_eq!(
            cookie_only.token_from(&h),
            Some(("from-cookie".to_string(), false))
        );
        let header_only = SessionConfig::default().with_transport(TokenTransport::Header);
        h.remove("x-session-token");
        assert_eq!(header_only.token_from(&h), None);
    }

    #[test]
    fn bearer_mode_reads_authorization_and_answers_in_the_header_only() {
        let bearer = SessionConfig::default().with_transport(TokenTransport::Bearer);
        let mut h = http::HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("sid=from-cookie"));
        assert_eq!(bearer.token_from(&h), None, "cookies are not read");
        for (value, want) in [
            ("Bearer abc", Some("abc")),
            ("bearer   abc  ", Some("abc")),
            ("BEARER abc", Some("abc")),
            ("Basic abc", None),
            ("Bearer", None),
            ("Bearer ", None),
        ] {
            h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            assert_eq!(
                bearer.token_from(&h).map(|(t, _)| t),
                want.map(str::to_owned),
                "{value:?}"
            );
        }
        // The custom header works too.
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        h.insert("x-session-token", HeaderValue::from_static("from-header"));
        assert_eq!(
            bearer.token_from(&h),
            Some(("from-header".to_string(), true))
        );
        // The default mode ignores Authorization (an app's own auth header is not a token).
        h.remove("x-session-token");
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(
            SessionConfig::default().token_from(&h),
            Some(("from-cookie".to_string(), false))
        );
        // A first token (the request carried none) comes back in the header, not a cookie.
        let mut out = http::HeaderMap::new();
        bearer
            .apply_commit(
                &Commit::Issue {
                    token: "tok".into(),
                    expires_at: now_millis() + 60_000,
                },
                false,
                &mut out,
            )
            .unwrap();
        assert_eq!(out.get("x-session-token").unwrap(), "tok");
        assert!(out.get(SET_COOKIE).is_none());
    }

    /// The future the layer boxes per request stays below 1 KiB, with or without cost
    /// accounting: glibc serves blocks up to 1,032 bytes from a per-thread cache, and larger
    /// ones through its slow path, which on a node holding many sessions cost more than the
    /// whole session lookup (wrapping it in `async` blocks once made it 2,736 bytes).
    #[tokio::test]
    async fn the_per_request_future_stays_small() {
        use tower::{Layer as _, Service as _};
        let backend: Arc<dyn SessionBackend> = Arc::new(crate::MemoryBackend::default());
        for costs in [false, true] {
            let mut layer = SessionLayer::new(backend.clone());
            if costs {
                layer = layer.with_request_costs(Arc::new(RequestCosts::default()));
            }
            let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
            let mut svc = layer.layer(app);
            let fut = svc.call(Request::new(Body::empty()));
            let size = std::mem::size_of_val(&*fut);
            assert!(size <= 1024, "costs {costs}: {size} bytes per request");
            assert_eq!(fut.await.unwrap().status(), StatusCode::OK);
        }
    }
}
