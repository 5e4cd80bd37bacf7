//! # demo-api
//!
//! The demo's HTTP contract, written once: the `POST /login` and `POST /cart/items` bodies,
//! their validation rules, the JSON body extractor whose problems are JSON 400/413/415 errors,
//! and the JSON error type. `demo-app` serves it on every backend; the bench's tower-sessions
//! peer apps serve the very same code, so a side-by-side benchmark compares the same work.
//! No database driver, no session backend (the `session` feature adds only the conversion
//! from `session_core::SessionError`).
//!
//! ```
//! use axum::{Json, Router, routing::post};
//! use demo_api::{ApiError, JsonBody, Login, valid_user};
//! use serde_json::{Value, json};
//!
//! async fn login(JsonBody(req): JsonBody<Login>) -> Result<Json<Value>, ApiError> {
//!     valid_user(&req.user)?;
//!     Ok(Json(json!({ "user": req.user })))
//! }
//! let app: Router = Router::new().route("/login", post(login));
//! # let _ = app;
//! assert!(valid_user("alice").is_ok());
//! assert!(valid_user("").is_err());
//! ```

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

/// Largest quantity of one SKU in a cart.
pub const MAX_QTY: u32 = 1000;

/// Longest user name and SKU, in characters (user) or bytes (SKU, which is ASCII).
pub const MAX_NAME_LEN: usize = 64;

/// `POST /login` body.
#[derive(Debug, Clone, Deserialize)]
pub struct Login {
    /// The user name ([`valid_user`]).
    pub user: String,
}

/// `POST /cart/items` body.
#[derive(Debug, Clone, Deserialize)]
pub struct AddItem {
    /// The product ([`valid_sku`]).
    pub sku: String,
    /// How many to add (1 to [`MAX_QTY`]).
    pub qty: u32,
}

/// An error answered as JSON `{"error": "..."}`, with `Retry-After` when it says to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// A 400 with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// A 401: no user in the session.
    pub fn unauthorized() -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "not logged in")
    }

    /// A 404 for a route that does not exist.
    pub fn no_such_route() -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "no such route")
    }

    /// An opaque 500 (the cause goes to stderr, never to the client).
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        eprintln!("internal error: {cause}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }

    /// Adds `Retry-After: secs` to the answer.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message the client sees.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(json!({ "error": self.message }))).into_response();
        if let Some(secs) = self.retry_after_secs {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

#[cfg(feature = "session")]
impl From<session_core::SessionError> for ApiError {
    /// Keeps the session layer's mapping (503 with `Retry-After` for an unreachable store, an
    /// opaque 500, clear messages for too large and expired), as JSON.
    fn from(e: session_core::SessionError) -> Self {
        let too_large =
            matches!(e, session_core::SessionError::TooLarge { .. }).then(|| e.to_string());
        let status = e.into_response().status();
        let message = match status {
            StatusCode::PAYLOAD_TOO_LARGE => too_large.unwrap_or_else(|| "too large".into()),
            StatusCode::INTERNAL_SERVER_ERROR => "internal error".to_string(),
            StatusCode::CONFLICT => "the session expired during the request".to_string(),
            StatusCode::SERVICE_UNAVAILABLE => {
                "the session store is temporarily unavailable; retry shortly".to_string()
            }
            other => other.canonical_reason().unwrap_or("error").to_string(),
        };
        let error = ApiError::new(status, message);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            error.with_retry_after(session_core::RETRY_AFTER_SECS)
        } else {
            error
        }
    }
}

/// A JSON body whose problems are 400/413/415 JSON errors (axum's own rejections are plain
/// text and use 422 for missing fields).
///
/// The request must say `Content-Type: application/json` (parameters such as `charset`
/// allowed), else `415`: a cross-site HTML form can post `text/plain`,
/// `application/x-www-form-urlencoded` or `multipart/form-data` without a CORS preflight, but
/// never `application/json`, so a JSON-only endpoint cannot be driven by a forged form (login
/// CSRF).
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

/// True for `application/json`, with or without parameters, in any letter case.
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the body must be JSON sent as Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let status = match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            };
            ApiError::new(status, e.body_text())
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// The user-name rule: 1 to [`MAX_NAME_LEN`] characters, no control characters.
pub fn valid_user(user: &str) -> Result<(), ApiError> {
    if user.is_empty() || user.chars().count() > MAX_NAME_LEN || user.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            "user must be 1 to 64 characters without control characters",
        ));
    }
    Ok(())
}

/// The SKU rule: 1 to [`MAX_NAME_LEN`] ASCII letters, digits, `-` or `_`.
pub fn valid_sku(sku: &str) -> Result<(), ApiError> {
    if sku.is_empty()
        || sku.len() > MAX_NAME_LEN
        || !sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::bad_request(
            "sku must be 1 to 64 ASCII letters, digits, `-` or `_`",
        ));
    }
    Ok(())
}

/// The `POST /cart/items` rules: a [valid SKU](valid_sku) and a quantity of 1 to [`MAX_QTY`].
pub fn valid_item(item: &AddItem) -> Result<(), ApiError> {
    valid_sku(&item.sku)?;
    if item.qty == 0 || item.qty > MAX_QTY {
        return Err(ApiError::bad_request(format!("qty must be 1 to {MAX_QTY}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is a failed test

    use super::*;
    use axum::body::Body;

    #[test]
    fn names_and_items_follow_the_rules() {
        assert!(valid_user("alice").is_ok());
        assert!(
            valid_user(&"é".repeat(64)).is_ok(),
            "64 characters, 128 bytes"
        );
        assert!(valid_user("").is_err());
        assert!(valid_user("a\nb").is_err());
        assert!(valid_user(&"x".repeat(65)).is_err());
        let item = |sku: &str, qty| AddItem {
            sku: sku.into(),
            qty,
        };
        assert!(valid_item(&item("book-1_a", 2)).is_ok());
        assert!(valid_item(&item("book 1", 2)).is_err());
        assert!(valid_item(&item("bøk", 2)).is_err());
        assert!(valid_item(&item(&"x".repeat(65), 2)).is_err());
        assert!(valid_item(&item("book", 0)).is_err());
        assert!(valid_item(&item("book", MAX_QTY)).is_ok());
        assert!(valid_item(&item("book", MAX_QTY + 1)).is_err());
    }

    async fn extract(content_type: Option<&str>, body: &str) -> Result<Login, ApiError> {
        let mut req = Request::builder().method("POST").uri("/login");
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let req = req.body(Body::from(body.to_owned())).unwrap();
        JsonBody::<Login>::from_request(req, &())
            .await
            .map(|JsonBody(l)| l)
    }

    #[tokio::test]
    async fn json_bodies_need_the_json_content_type_and_bad_ones_are_json_400s() {
        let ok = extract(Some("Application/JSON; charset=utf-8"), r#"{"user":"a"}"#).await;
        assert_eq!(ok.unwrap().user, "a");
        for ct in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
        ] {
            let e = extract(ct, r#"{"user":"a"}"#).await.unwrap_err();
            assert_eq!(e.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        }
        for body in ["", "{", r#"{"user":1}"#, r#"{"name":"a"}"#, "\u{0}"] {
            let e = extract(Some("application/json"), body).await.unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{body:?}");
            assert!(
                e.message().starts_with("invalid JSON body"),
                "{}",
                e.message()
            );
        }
    }

    #[test]
    fn errors_are_json_and_retry_after_is_sent_when_set() {
        let res = ApiError::unauthorized().into_response();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert!(res.headers().get(header::RETRY_AFTER).is_none());
        let res = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "later")
            .with_retry_after(2)
            .into_response();
        assert_eq!(res.headers()[header::RETRY_AFTER], "2");
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[cfg(feature = "session")]
    #[test]
    fn session_errors_keep_the_layer_mapping() {
        let e = ApiError::from(session_core::SessionError::unavailable(
            "redis",
            "loading",
            "connection refused",
        ));
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        let res = e.into_response();
        assert!(res.headers().get(header::RETRY_AFTER).is_some());
    }
}
