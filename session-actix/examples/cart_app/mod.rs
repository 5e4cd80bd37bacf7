//! The actix-web app the example runs and the tests drive: log in (a fresh session id), a
//! cart in the session, who am I, log out. Nothing in it knows which store is underneath.

use actix_session::Session;
use actix_web::{HttpResponse, web};

async fn login(session: Session, user: web::Path<String>) -> actix_web::Result<HttpResponse> {
    // A new key at login defeats session fixation.
    session.renew();
    session.insert("user", user.into_inner())?;
    Ok(HttpResponse::Ok().finish())
}

async fn me(session: Session) -> actix_web::Result<HttpResponse> {
    Ok(match session.get::<String>("user")? {
        Some(user) => HttpResponse::Ok().body(user),
        None => HttpResponse::Unauthorized().finish(),
    })
}

async fn add(session: Session, sku: web::Path<String>) -> actix_web::Result<HttpResponse> {
    let key = format!("cart:{sku}");
    let n = session.get::<u32>(&key)?.unwrap_or(0);
    session.insert(key, n + 1)?;
    Ok(HttpResponse::Ok().finish())
}

async fn count(session: Session, sku: web::Path<String>) -> actix_web::Result<HttpResponse> {
    let n = session.get::<u32>(&format!("cart:{sku}"))?.unwrap_or(0);
    Ok(HttpResponse::Ok().body(n.to_string()))
}

async fn logout(session: Session) -> HttpResponse {
    session.purge();
    HttpResponse::NoContent().finish()
}

/// The app's routes (wrap them in `SessionMiddleware`).
pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/login/{user}", web::post().to(login))
        .route("/me", web::get().to(me))
        .route("/cart/{sku}", web::post().to(add))
        .route("/cart/{sku}", web::get().to(count))
        .route("/logout", web::post().to(logout));
}
