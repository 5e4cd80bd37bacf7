//! The axum-login app the example runs and the tests drive: users log in with a password, a
//! protected `/me` and a cart kept in the tower-sessions session, `/logout`. Nothing in it
//! knows which store is underneath.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_login::{AuthManagerLayerBuilder, AuthSession, AuthUser, AuthnBackend, login_required};
use serde::Deserialize;
use session_tower::SyncStore;
use tower_sessions::{Session, SessionManagerLayer};

/// A user (the password stands in for a password hash).
#[derive(Clone, Debug)]
pub(crate) struct User {
    id: i64,
    name: String,
    password: String,
}

impl AuthUser for User {
    type Id = i64;

    fn id(&self) -> i64 {
        self.id
    }

    fn session_auth_hash(&self) -> &[u8] {
        self.password.as_bytes()
    }
}

/// What `/login` takes.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Credentials {
    name: String,
    password: String,
}

/// The user directory: alice and bob.
#[derive(Clone, Debug)]
pub(crate) struct Users(Arc<HashMap<i64, User>>);

impl Default for Users {
    fn default() -> Self {
        let users = [(1, "alice", "wonderland"), (2, "bob", "builder")]
            .into_iter()
            .map(|(id, name, password)| {
                (
                    id,
                    User {
                        id,
                        name: name.into(),
                        password: password.into(),
                    },
                )
            })
            .collect();
        Users(Arc::new(users))
    }
}

impl AuthnBackend for Users {
    type User = User;
    type Credentials = Credentials;
    type Error = Infallible;

    async fn authenticate(&self, c: Credentials) -> Result<Option<User>, Infallible> {
        Ok(self
            .0
            .values()
            .find(|u| u.name == c.name && u.password == c.password)
            .cloned())
    }

    async fn get_user(&self, id: &i64) -> Result<Option<User>, Infallible> {
        Ok(self.0.get(id).cloned())
    }
}

async fn login(mut auth: AuthSession<Users>, Json(c): Json<Credentials>) -> StatusCode {
    match auth.authenticate(c).await {
        Ok(Some(user)) => match auth.login(&user).await {
            Ok(()) => StatusCode::OK,
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
        },
        Ok(None) => StatusCode::UNAUTHORIZED,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn logout(mut auth: AuthSession<Users>) -> StatusCode {
    match auth.logout().await {
        Ok(_) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn me(auth: AuthSession<Users>) -> Result<String, StatusCode> {
    auth.user.map(|u| u.name).ok_or(StatusCode::UNAUTHORIZED)
}

async fn add(session: Session, Path(sku): Path<String>) -> Result<StatusCode, StatusCode> {
    let key = format!("cart:{sku}");
    let n: u32 = session
        .get(&key)
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
        .unwrap_or(0);
    session
        .insert(&key, n + 1)
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(StatusCode::OK)
}

async fn count(session: Session, Path(sku): Path<String>) -> Result<String, StatusCode> {
    let n: u32 = session
        .get(&format!("cart:{sku}"))
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
        .unwrap_or(0);
    Ok(n.to_string())
}

/// The app over `store`.
pub(crate) fn router(store: SyncStore) -> Router {
    // Plain http on loopback; keep Secure cookies in production.
    let sessions = SessionManagerLayer::new(store).with_secure(false);
    let auth = AuthManagerLayerBuilder::new(Users::default(), sessions).build();
    Router::new()
        .route("/me", get(me))
        .route("/cart/{sku}", post(add).get(count))
        .route_layer(login_required!(Users))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .layer(auth)
}
