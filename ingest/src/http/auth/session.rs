//! Dashboard sessions: a random id in an HttpOnly, SameSite=Strict cookie
//! (Secure under TLS), held in memory only (a restart logs everyone out),
//! each with its own CSRF token that a state-changing request (logout) must
//! send back. The login form itself is protected by a double-submit token:
//! a cookie set with the form, and the same value in a hidden field.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::users::random_bytes;

/// Session cookie.
pub const SESSION_COOKIE: &str = "fp_session";
/// Login-form CSRF cookie.
pub const LOGIN_CSRF_COOKIE: &str = "fp_login_csrf";
/// Sessions held at most; the oldest goes first when full.
pub const MAX_SESSIONS: usize = 10_000;

/// One logged-in user.
#[derive(Debug, Clone)]
pub struct Session {
    /// User name.
    pub user: String,
    /// Token a state-changing request must carry.
    pub csrf: String,
    /// The user's password stamp at sign-in ([`super::users::Users::password_stamp`]).
    stamp: [u8; 32],
    expires: Instant,
}

impl Session {
    /// Whether the user's password is still the one signed in with.
    pub fn signed_in_with(&self, stamp: Option<[u8; 32]>) -> bool {
        stamp == Some(self.stamp)
    }
}

/// Sessions by id.
#[derive(Debug)]
pub struct Sessions {
    ttl: Duration,
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Sessions lasting `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// How long a session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Opens a session for `user`, signed in with the password of `stamp`;
    /// returns its id.
    pub fn open(&self, user: &str, stamp: [u8; 32], now: Instant) -> String {
        let id = random_token();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| s.expires > now);
            if map.len() >= MAX_SESSIONS
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, s)| s.expires)
                    .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            id.clone(),
            Session {
                user: user.to_string(),
                csrf: random_token(),
                stamp,
                expires: now + self.ttl,
            },
        );
        id
    }

    /// The live session `id`.
    pub fn get(&self, id: &str, now: Instant) -> Option<Session> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(id) {
            Some(s) if s.expires > now => Some(s.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends every session `keep` refuses.
    pub fn retain(&self, keep: impl Fn(&Session) -> bool) {
        (self.map.lock().unwrap_or_else(|e| e.into_inner())).retain(|_, s| keep(s));
    }

    /// Ends session `id`.
    pub fn close(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// 256 random bits, URL-safe.
pub fn random_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, path `/`, Secure under
/// TLS; `max_age` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, max_age: Duration, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_close() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let id = sessions.open("alice", [1; 32], t0);
        let s = sessions.get(&id, t0 + Duration::from_secs(59)).unwrap();
        assert_eq!(s.user, "alice");
        assert!(s.signed_in_with(Some([1; 32])));
        assert!(!s.signed_in_with(Some([2; 32])) && !s.signed_in_with(None));
        assert_ne!(s.csrf, id);
        assert!(sessions.get(&id, t0 + Duration::from_secs(61)).is_none());
        let id = sessions.open("bob", [2; 32], t0);
        sessions.close(&id);
        assert!(sessions.get(&id, t0).is_none());
        assert!(sessions.get("made-up", t0).is_none());
    }

    #[test]
    fn cookies_are_read_and_written_strictly() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("cookie", "a=1; fp_session=xyz; b=2".parse().unwrap());
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&headers, "c"), None);
        let set = set_cookie(SESSION_COOKIE, "v", Duration::from_secs(5), true);
        assert_eq!(
            set,
            "fp_session=v; Path=/; HttpOnly; SameSite=Strict; Max-Age=5; Secure"
        );
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("a", "ab"));
    }
}
