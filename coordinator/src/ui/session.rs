//! Who is signed in to the pages: a session per sign-in, in this process's
//! memory, named by a random id in an `HttpOnly; SameSite=Strict` cookie,
//! with its own CSRF token that every form posts back.
//!
//! Sign-in takes the admin token or a viewer token (`pfv_`, minted by the
//! admin with `POST /api/v1/viewer-tokens`); a viewer sees everything the
//! pages show and can do nothing ([`Role::may_act`]). Sessions end after
//! [`LIFETIME`], at sign-out, and when the server restarts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::COOKIE;
use axum::http::request::Parts;

use crate::AppState;
use crate::token::{hash_token, new_token};

/// The session cookie's name.
pub const COOKIE_NAME: &str = "pinfold_session";
/// How long a session lives.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest go first.
const MAX_SESSIONS: usize = 10_000;
/// Prefix of viewer tokens.
pub const VIEWER_PREFIX: &str = "pfv_";
/// The meta key a viewer token's hash is stored under.
pub fn viewer_key(token_sha256: &str) -> String {
    format!("{VIEWER_KEY_PREFIX}{token_sha256}")
}
/// What every viewer token's meta key begins with.
pub const VIEWER_KEY_PREFIX: &str = "viewer_token:";

/// What a session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Signed in with the admin token: may cancel and revoke.
    Admin,
    /// Signed in with a viewer token: reads only.
    Viewer,
}

impl Role {
    /// Whether this role may cancel jobs and revoke runners.
    pub fn may_act(self) -> bool {
        self == Role::Admin
    }
}

/// One signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// What it may do.
    pub role: Role,
    /// The token its forms carry.
    pub csrf: String,
    /// Live log follows it has open (shared by every copy).
    pub follows: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    expires: Instant,
}

/// The live sessions, by the hash of their cookie's value.
#[derive(Debug)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    max: usize,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::with_max(MAX_SESSIONS)
    }
}

impl Sessions {
    /// Keeping at most `max` sessions.
    pub fn with_max(max: usize) -> Self {
        Sessions {
            map: Mutex::default(),
            max,
        }
    }

    /// Starts a session; returns the cookie value.
    pub fn start(&self, role: Role) -> String {
        let id = new_token("");
        let now = Instant::now();
        let mut map = self.map.lock().expect("sessions lock");
        map.retain(|_, s| s.expires > now);
        // Full: the oldest session of the same role goes, so signing in
        // again and again with a viewer token cannot sign the admin out.
        if map.len() >= self.max
            && let Some(oldest) = map
                .iter()
                .filter(|(_, s)| s.role == role)
                .min_by_key(|(_, s)| s.expires)
                .or_else(|| map.iter().min_by_key(|(_, s)| s.expires))
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            hash_token(&id),
            Session {
                role,
                csrf: new_token(""),
                follows: Default::default(),
                expires: now + LIFETIME,
            },
        );
        id
    }

    /// The session a cookie value names, if it is live.
    pub fn get(&self, id: &str) -> Option<Session> {
        let map = self.map.lock().expect("sessions lock");
        map.get(&hash_token(id))
            .filter(|s| s.expires > Instant::now())
            .cloned()
    }

    /// Ends every session of `role`; returns how many.
    pub fn end_role(&self, role: Role) -> usize {
        let mut map = self.map.lock().expect("sessions lock");
        let before = map.len();
        map.retain(|_, s| s.role != role);
        before - map.len()
    }

    /// Ends the session a cookie value names.
    pub fn end(&self, id: &str) {
        self.map
            .lock()
            .expect("sessions lock")
            .remove(&hash_token(id));
    }
}

/// The `Set-Cookie` value that starts a session (`value`) or ends one
/// (`None`). Scoped to the pages; `Secure` when the request came through
/// TLS (a proxy in front says so with `X-Forwarded-Proto: https`).
pub fn set_cookie(value: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match value {
        Some(v) => format!(
            "{COOKIE_NAME}={v}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            LIFETIME.as_secs()
        ),
        None => format!("{COOKIE_NAME}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

/// The session cookie's value in a request, if any.
pub fn cookie_value(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
        .map(|(_, v)| v.to_string())
}

/// A request from a signed-in browser (the pages' extractor). Without a
/// live session the page redirects to sign-in ([`super::NeedSignIn`]).
#[derive(Debug, Clone)]
pub struct Signed {
    /// The session.
    pub session: Session,
    /// Its cookie value (for sign-out).
    pub id: String,
}

impl FromRequestParts<AppState> for Signed {
    type Rejection = super::NeedSignIn;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let id = cookie_value(parts).ok_or(super::NeedSignIn)?;
        let session = state.sessions.get(&id).ok_or(super::NeedSignIn)?;
        Ok(Signed { session, id })
    }
}

impl Signed {
    /// Checks a form's CSRF token against the session's.
    pub fn check_csrf(&self, sent: &str) -> bool {
        // Both are hex of the same length; a constant-time compare is not
        // needed against a token that is never shown to another origin,
        // but costs nothing.
        let a = self.session.csrf.as_bytes();
        let b = sent.as_bytes();
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Which role a signed-in token has: the admin's, a viewer's, or none.
pub async fn role_of(state: &AppState, token: &str) -> Option<Role> {
    let hash = hash_token(token.trim());
    if hash == state.tokens.admin_sha256 {
        return Some(Role::Admin);
    }
    if token.trim().starts_with(VIEWER_PREFIX)
        && matches!(state.store.get_meta(&viewer_key(&hash)).await, Ok(Some(_)))
    {
        return Some(Role::Viewer);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_cookie_only_and_ends() {
        let s = Sessions::default();
        let id = s.start(Role::Viewer);
        let got = s.get(&id).unwrap();
        assert_eq!(got.role, Role::Viewer);
        assert!(!got.csrf.is_empty());
        assert!(s.get("not-a-session").is_none());
        s.end(&id);
        assert!(s.get(&id).is_none());
        assert!(!Role::Viewer.may_act() && Role::Admin.may_act());
    }

    #[test]
    fn a_viewer_signing_in_again_and_again_cannot_sign_the_admin_out() {
        let s = Sessions::with_max(3);
        let admin = s.start(Role::Admin);
        let viewers: Vec<String> = (0..10).map(|_| s.start(Role::Viewer)).collect();
        assert!(s.get(&admin).is_some(), "the admin was evicted");
        assert!(s.get(&viewers[9]).is_some() && s.get(&viewers[0]).is_none());
    }

    #[test]
    fn the_cookie_is_http_only_and_same_site_strict() {
        let c = set_cookie(Some("abc"), false);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict"));
        assert!(!c.contains("Secure"));
        assert!(set_cookie(None, true).contains("Max-Age=0; Secure"));
    }
}
