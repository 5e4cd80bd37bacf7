//! What every peer app shares with the demo's routes: the request bodies, their validation
//! rules (the demo's, verbatim), JSON bodies whose problems are JSON 400s, and JSON errors.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

/// Largest quantity of one SKU (the demo's `MAX_QTY`).
pub const MAX_QTY: u32 = 1000;

/// The node id the peer apps report (they are single-node apps).
pub const NODE: u16 = 1;

/// `POST /login` body.
#[derive(Debug, Deserialize)]
pub struct Login {
    /// The user name.
    pub user: String,
}

/// `POST /cart/items` body.
#[derive(Debug, Deserialize)]
pub struct AddItem {
    /// The product.
    pub sku: String,
    /// How many to add.
    pub qty: u32,
}

/// An error answered as JSON `{"error": "..."}`, like the demo's.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// A 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// A 401: no user in the session.
    pub fn unauthorized() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "not logged in".into(),
        }
    }

    /// An opaque 500 for a session store failure (the cause is logged to stderr).
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        eprintln!("session store failure: {cause}");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "internal error".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// A JSON body whose problems are JSON 400/413 errors (the demo's extractor).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let status = e.status();
            ApiError {
                status: if status == StatusCode::PAYLOAD_TOO_LARGE {
                    status
                } else {
                    StatusCode::BAD_REQUEST
                },
                message: e.body_text(),
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// The demo's user-name rule.
pub fn valid_user(user: &str) -> Result<(), ApiError> {
    if user.is_empty() || user.chars().count() > 64 || user.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "user must be 1 to 64 characters without control characters",
        ));
    }
    Ok(())
}

/// The demo's SKU and quantity rules.
pub fn valid_item(item: &AddItem) -> Result<(), ApiError> {
    if item.sku.is_empty()
        || item.sku.len() > 64
        || !item
            .sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::bad_request(
            "sku must be 1 to 64 ASCII letters, digits, `-` or `_`",
        ));
    }
    if item.qty == 0 || item.qty > MAX_QTY {
        return Err(ApiError::bad_request(format!("qty must be 1 to {MAX_QTY}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_follows_the_demo() {
        assert!(valid_user("alice").is_ok());
        assert!(valid_user("").is_err());
        assert!(valid_user("a\nb").is_err());
        assert!(valid_user(&"x".repeat(65)).is_err());
        let item = |sku: &str, qty| AddItem {
            sku: sku.into(),
            qty,
        };
        assert!(valid_item(&item("book-1", 2)).is_ok());
        assert!(valid_item(&item("book 1", 2)).is_err());
        assert!(valid_item(&item("book", 0)).is_err());
        assert!(valid_item(&item("book", MAX_QTY + 1)).is_err());
    }
}
