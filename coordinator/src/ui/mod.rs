//! The web pages under `/ui`: jobs, one job with its live log, runners.
//!
//! Rendered on the server with maud, whose `html!` escapes every value; a
//! job's log goes through [`log::render`]. The only script is `ui.js`,
//! vendored here and served from `/ui/static/`: the pages work without it
//! except for live updates. Every response carries a Content-Security-Policy
//! that allows script from this origin only (no inline script, no `eval`,
//! no event-handler attributes); inline `style` attributes are allowed
//! because the log's colours are spans with a `style` (a style cannot run
//! script in any browser the CSP level 3 `style-src-attr` exists in).
//!
//! Sign-in ([`session`]) takes the admin token or a viewer token; every
//! POST carries the session's CSRF token, and the session cookie is
//! `SameSite=Strict`.

mod job;
mod live;
pub mod log;
mod pages;
pub mod session;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY, SET_COOKIE,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use crate::AppState;
use crate::error::ApiError;
use session::{Role, Signed};

/// What the pages' responses allow the browser to load and run.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     style-src-attr 'unsafe-inline'; img-src 'none'; connect-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const UI_JS: &str = include_str!("static/ui.js");
const UI_CSS: &str = include_str!("static/ui.css");

/// Why a page could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// The API-level failure (not found, store...).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A form's CSRF token did not match the session's.
    #[error("the form is stale or came from another site: reload the page and try again")]
    Csrf,
    /// A sign-in or WebSocket from a page of another origin.
    #[error("this is only served to this server's own pages: open them at this address")]
    CrossOrigin,
    /// A session with too many live follows open.
    #[error("this sign-in follows {0} logs already: close some of its tabs")]
    TooManyFollows(usize),
    /// A viewer tried to act.
    #[error("a viewer token can only read: sign in with the admin token to cancel or revoke")]
    ReadOnly,
}

impl From<crate::store::StoreError> for UiError {
    fn from(e: crate::store::StoreError) -> Self {
        UiError::Api(e.into())
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let status = match &self {
            UiError::Api(e) => e.status(),
            UiError::Csrf | UiError::ReadOnly | UiError::CrossOrigin => StatusCode::FORBIDDEN,
            UiError::TooManyFollows(_) => StatusCode::TOO_MANY_REQUESTS,
        };
        let body = frame(
            "Error",
            None,
            html! {
                h1 { "Error " (status.as_u16()) }
                p.error role="alert" { (self.to_string()) }
                p { a href="/ui/jobs" { "Back to the jobs" } }
            },
        );
        (status, body).into_response()
    }
}

/// A page that needs a signed-in browser was asked for without one.
#[derive(Debug)]
pub struct NeedSignIn;

impl IntoResponse for NeedSignIn {
    fn into_response(self) -> Response {
        (StatusCode::SEE_OTHER, [(LOCATION, "/ui/sign-in")]).into_response()
    }
}

/// Result of a page handler.
pub type Page<T = Response> = Result<T, UiError>;

/// The pages' routes, to nest under `/ui`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { redirect("/ui/jobs") }))
        .route("/sign-in", get(sign_in_page).post(sign_in))
        .route("/sign-out", post(sign_out))
        .route(
            "/static/ui.js",
            get(|| async { asset("text/javascript", UI_JS) }),
        )
        .route(
            "/static/ui.css",
            get(|| async { asset("text/css", UI_CSS) }),
        )
        .route("/jobs", get(pages::jobs))
        .route("/jobs/{id}", get(job::page))
        .route("/jobs/{id}/log/live", get(live::follow))
        .route("/jobs/{id}/log.txt", get(job::raw))
        .route("/jobs/{id}/search", get(job::search))
        .route("/jobs/{id}/artifacts/{*name}", get(job::artifact))
        .route("/jobs/{id}/cancel", post(job::cancel))
        .route("/runners", get(pages::runners))
        .route("/runners/{id}/revoke", post(pages::revoke))
        .layer(axum::middleware::map_response(secure_headers))
}

async fn secure_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // `same-origin`, not `no-referrer`: under `no-referrer` a browser sends
    // `Origin: null` with the pages' own forms, and sign-in checks Origin.
    h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [(CONTENT_TYPE, kind), (CACHE_CONTROL, "public, max-age=300")],
        body,
    )
        .into_response()
}

/// A 303 to `to` (after a form's POST, and to sign in).
pub fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, to.to_string())]).into_response()
}

/// The frame around every page: header with navigation and sign-out.
pub fn frame(title: &str, signed: Option<&Signed>, main: Markup) -> Response {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · pinfold" }
                link rel="stylesheet" href="/ui/static/ui.css";
                script src="/ui/static/ui.js" defer {}
            }
            body {
                header {
                    nav aria-label="Main" {
                        a.brand href="/ui/jobs" { "pinfold" }
                        a href="/ui/jobs" { "Jobs" }
                        a href="/ui/runners" { "Runners" }
                    }
                    @if let Some(s) = signed {
                        form.signout method="post" action="/ui/sign-out" {
                            span.role { (match s.session.role { Role::Admin => "admin", Role::Viewer => "viewer (read-only)" }) }
                            (csrf_field(s))
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                noscript { p.hint { "Live updates need JavaScript: reload the page to see new log lines and job states." } }
                main id="main" { (main) }
            }
        }
    };
    (
        [(CONTENT_TYPE, "text/html; charset=utf-8")],
        page.into_string(),
    )
        .into_response()
}

/// The hidden field that carries the session's CSRF token.
pub fn csrf_field(s: &Signed) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.session.csrf); }
}

/// A POSTed form with only its CSRF token.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

impl Signed {
    /// May this session act (cancel, revoke) with this form? Checks the
    /// CSRF token first, then the role.
    pub fn may_act(&self, form: &CsrfForm) -> Page<()> {
        if !self.check_csrf(&form.csrf) {
            return Err(UiError::Csrf);
        }
        if !self.session.role.may_act() {
            return Err(UiError::ReadOnly);
        }
        Ok(())
    }
}

async fn sign_in_page() -> Response {
    sign_in_form(None)
}

fn sign_in_form(error: Option<&str>) -> Response {
    let body = html! {
        h1 { "Sign in" }
        @if let Some(e) = error { p.error role="alert" { (e) } }
        form method="post" action="/ui/sign-in" {
            label for="token" { "Admin or viewer token" }
            input id="token" name="token" type="password" autocomplete="current-password" required autofocus;
            button type="submit" { "Sign in" }
        }
        p.hint { "A viewer token (" code { "pinfold viewer-token" } ") can read everything here and change nothing." }
    };
    frame("Sign in", None, body)
}

#[derive(Debug, Deserialize)]
struct SignInForm {
    token: String,
}

fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<SignInForm>,
) -> Response {
    // A sign-in form posted from another site would sign this browser in
    // as whoever's token that site chose (login CSRF).
    if headers
        .get(axum::http::header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_some()
        && !live::same_origin(&headers)
    {
        return UiError::CrossOrigin.into_response();
    }
    let Some(role) = session::role_of(&state, &f.token).await else {
        tracing::warn!("dashboard sign-in refused");
        let mut res = sign_in_form(Some("That token is not the admin token or a viewer token."));
        *res.status_mut() = StatusCode::UNAUTHORIZED;
        return res;
    };
    let id = state.sessions.start(role);
    tracing::info!(?role, "dashboard sign-in");
    let mut res = redirect("/ui/jobs");
    res.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_str(&session::set_cookie(Some(&id), is_https(&headers)))
            .expect("hex cookie"),
    );
    res
}

async fn sign_out(s: Signed, State(state): State<AppState>, Form(f): Form<CsrfForm>) -> Page {
    if !s.check_csrf(&f.csrf) {
        return Err(UiError::Csrf);
    }
    state.sessions.end(&s.id);
    let mut res = redirect("/ui/sign-in");
    res.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_str(&session::set_cookie(None, false)).expect("static cookie"),
    );
    Ok(res)
}
