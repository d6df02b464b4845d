//! Who may see what on the HTTP port.
//!
//! ```text
//! request -> Host allow-list -> identity: session cookie | Bearer token | trusted proxy headers
//!         -> Access (role + customers in scope) -> handler filters by it
//! ```
//!
//! | module | concern |
//! |---|---|
//! | [`users`] | users.toml: argon2id password and token hashes, the CLI's edits |
//! | [`session`] | dashboard sessions, cookies, CSRF tokens |
//! | [`proxy`] | identity from an authenticating reverse proxy |
//! | [`roles`] | admin / CSM / viewer and the customers each sees |
//! | [`login`] | the login page, login and logout |
//!
//! Every login and every denied request writes one line to the `audit`
//! tracing target: never a password, token, cookie or hash.

pub mod checks;
pub mod cli;
pub mod login;
pub mod proxy;
pub mod roles;
pub mod session;
pub mod users;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

pub use roles::{Access, Principal, Role, Scope, Via};

use self::proxy::{Proxy, ProxyIdentity};
use self::session::{SESSION_COOKIE, Sessions, cookie};
use self::users::{Users, UsersFile};
use super::Hub;
use super::api::ApiError;
use super::config::HttpConfig;
use crate::config::ConfigError;

/// The peer of a connection, put into each request by the server.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The authentication state of one HTTP server.
#[derive(Debug)]
pub struct Auth {
    /// False: no authentication configured, everyone is an admin.
    required: bool,
    users_file: Option<PathBuf>,
    users: RwLock<Arc<Users>>,
    proxy: Option<Proxy>,
    sessions: Sessions,
    secure_cookies: bool,
    hosts: Option<Vec<String>>,
}

/// Why a request was not let in (for the audit log; the client only sees
/// 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No credentials at all.
    NoCredentials,
    /// A bearer token that matches no token.
    BadToken,
    /// A session cookie that matches no live session.
    BadSession,
    /// Proxy headers from a peer that is not a trusted proxy.
    UntrustedProxy,
    /// A proxy user with no group that maps to a role.
    NoRole,
    /// A valid credential of a user that no longer exists.
    UnknownUser,
    /// A session opened with a password the user no longer has (changed,
    /// or the user removed and added again).
    PasswordChanged,
    /// Too many credentials waiting to be checked ([`checks`]).
    Busy,
}

impl Denied {
    fn as_str(self) -> &'static str {
        match self {
            Denied::NoCredentials => "no credentials",
            Denied::BadToken => "unknown token",
            Denied::BadSession => "no such session",
            Denied::UntrustedProxy => "identity headers from an untrusted peer",
            Denied::NoRole => "proxy user without a role",
            Denied::UnknownUser => "user no longer exists",
            Denied::PasswordChanged => "session opened with a password the user no longer has",
            Denied::Busy => "too many credentials to check at once",
        }
    }
}

impl Auth {
    /// From a checked `[http]`; reads the users file.
    pub fn new(config: &HttpConfig) -> Result<Self, ConfigError> {
        // A missing users file is an empty one: the service starts and
        // refuses everyone until the first admin is added (then SIGHUP).
        let users = match &config.users_file {
            Some(path) => {
                let users = UsersFile::load(path, true)?;
                if users.users.is_empty() {
                    tracing::warn!(
                        file = %path.display(),
                        "no users yet: every request gets 401; create the first admin with \
                         `fleetpulse users add NAME --role admin --file FILE`, then send SIGHUP"
                    );
                }
                users
            }
            None => UsersFile::default(),
        };
        let proxy = config
            .proxy
            .as_ref()
            .map(|p| {
                Proxy::new(p).map_err(|message| ConfigError::Invalid {
                    path: "[http]".into(),
                    field: "http.proxy.trusted".into(),
                    message,
                })
            })
            .transpose()?;
        Ok(Self {
            required: config.authenticates(),
            users_file: config.users_file.clone(),
            users: RwLock::new(Arc::new(Users::new(users))),
            proxy,
            sessions: Sessions::new(config.session_ttl),
            secure_cookies: config.tls.is_some(),
            hosts: config.host_allow_list(),
        })
    }

    /// True when requests must authenticate.
    pub fn required(&self) -> bool {
        self.required
    }

    /// Built-in users (login form) are configured.
    pub fn has_users_file(&self) -> bool {
        self.users_file.is_some()
    }

    /// Rereads the users file (SIGHUP); on error the old users stay.
    pub fn reload_users(&self) -> Result<usize, ConfigError> {
        let Some(path) = &self.users_file else {
            return Ok(0);
        };
        let users = Users::new(UsersFile::load(path, true)?);
        let n = users.len();
        // A session of a user the file no longer has, or whose password it
        // changed, ends now, not at its next request: idle until the entry
        // is put back (a backup restored), it would live again.
        (self.sessions).retain(|s| s.signed_in_with(users.password_stamp(&s.user)));
        *self.users.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(users);
        Ok(n)
    }

    /// The current users.
    pub fn users(&self) -> Arc<Users> {
        self.users.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The sessions.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Whether cookies get `Secure`.
    pub fn secure_cookies(&self) -> bool {
        self.secure_cookies
    }

    /// Who sent `headers` on a connection from `peer`, and the session's
    /// CSRF token when by session.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<(Principal, Option<String>), Denied> {
        if !self.required {
            return Ok((Principal::anonymous(), None));
        }
        if let Some(proxy) = &self.proxy {
            match proxy.identify(headers, peer) {
                ProxyIdentity::User(p) => return Ok((p, None)),
                ProxyIdentity::NoRole(_) => return Err(Denied::NoRole),
                ProxyIdentity::Untrusted => return Err(Denied::UntrustedProxy),
                ProxyIdentity::Absent => {}
            }
        }
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or(Denied::BadToken)?;
            let users = self.users();
            // A token checked before is known at once; another costs an
            // argon2 check, on the checking threads.
            let checked = match users.cached_token(token) {
                Some(found) => found,
                None => {
                    let token = token.to_string();
                    let checked = checks::checks().run(move || users.check_token(&token));
                    checked.await.ok_or(Denied::Busy)?
                }
            };
            let (principal, _id) = checked.ok_or(Denied::BadToken)?;
            return Ok((principal, None));
        }
        if let Some(id) = cookie(headers, SESSION_COOKIE) {
            let session = self
                .sessions
                .get(id, Instant::now())
                .ok_or(Denied::BadSession)?;
            let users = self.users();
            // A user taken out of the file ends its sessions for good: the
            // same entry put back (a backup restored) does not revive them.
            let Some(principal) = users.principal(&session.user, Via::Session) else {
                self.sessions.close(id);
                return Err(Denied::UnknownUser);
            };
            if !session.signed_in_with(users.password_stamp(&session.user)) {
                self.sessions.close(id);
                return Err(Denied::PasswordChanged);
            }
            return Ok((principal, Some(session.csrf)));
        }
        Err(Denied::NoCredentials)
    }

    /// Whether the `Host` of a request is allowed.
    pub fn host_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(hosts) = &self.hosts else {
            return true;
        };
        let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
            return false;
        };
        hosts.iter().any(|h| h == &host_name(host))
    }
}

/// `Host` without its port, lowercase (`[::1]:80` -> `[::1]`).
pub fn host_name(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or("").to_string();
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name.to_string(),
        _ => host,
    }
}

/// What a path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Health checks, static assets, the login page: no identity.
    Open,
    /// The dashboard page: anonymous users are sent to the login page.
    Page,
    /// The API, `/metrics` and anything else: anonymous users get 401.
    Api,
}

fn gate(method: &Method, path: &str) -> Gate {
    match path {
        "/healthz" | "/readyz" | "/login" | "/logout" | "/assets/app.css" => Gate::Open,
        "/" | "/index.html" if method == Method::GET || method == Method::HEAD => Gate::Page,
        _ => Gate::Api,
    }
}

/// What the guard needs.
#[derive(Debug, Clone)]
pub struct Guard {
    /// Authentication.
    pub auth: Arc<Auth>,
    /// The data, for the scope of a CSM.
    pub hub: Arc<Hub>,
}

/// One audit line for a refused request.
pub fn audit_denied(
    request: &axum::http::request::Parts,
    status: StatusCode,
    reason: &str,
    user: Option<&str>,
) {
    let peer = request.extensions.get::<Peer>().map(|p| p.0.ip());
    tracing::warn!(
        target: "audit",
        event = "denied",
        status = status.as_u16(),
        method = %request.method,
        path = request.uri.path(),
        user = user.unwrap_or("-"),
        peer = %peer.map_or("-".to_string(), |p| p.to_string()),
        reason,
        "request denied"
    );
}

/// The middleware in front of every route: Host allow-list, identity,
/// role, scope. Puts the request's [`Access`] in its extensions.
pub async fn guard(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let health = path == "/healthz" || path == "/readyz";
    if !health && !guard.auth.host_allowed(&parts.headers) {
        // A page on another site reaching a loopback port through DNS
        // rebinding names its own host.
        audit_denied(&parts, StatusCode::BAD_REQUEST, "host not allowed", None);
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "the Host of this request is not in http.allowed_hosts",
        )
        .into_response();
    }
    let gate = gate(&parts.method, &path);
    if gate == Gate::Open {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let peer = parts.extensions.get::<Peer>().map(|p| p.0.ip());
    let (principal, csrf) = match guard.auth.authenticate(&parts.headers, peer).await {
        Ok(found) => found,
        Err(Denied::Busy) => {
            audit_denied(
                &parts,
                StatusCode::SERVICE_UNAVAILABLE,
                Denied::Busy.as_str(),
                None,
            );
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many credentials to check at once; try again in a moment",
            )
            .into_response();
        }
        Err(denied) => {
            audit_denied(&parts, StatusCode::UNAUTHORIZED, denied.as_str(), None);
            return match gate {
                Gate::Page => Redirect::to("/login").into_response(),
                _ => unauthorized(),
            };
        }
    };
    let access = {
        let csm = guard.hub.csm_assignments();
        let view = guard.hub.read_view();
        Access::resolve(principal, &view, &csm).with_csrf(csrf)
    };
    if !access.lists_customers() {
        // A viewer sees the portfolio only; one customer is "not found"
        // like any other, so nothing about ids leaks.
        let refused = if path.starts_with("/api/customers/") {
            Some(ApiError::not_found("no such customer"))
        } else if path == "/api/customers" || path == "/api/alerts" {
            Some(ApiError::new(
                StatusCode::FORBIDDEN,
                "the viewer role sees the portfolio only",
            ))
        } else {
            None
        };
        if let Some(error) = refused {
            audit_denied(&parts, error.status(), "role", Some(&access.principal.name));
            return error.into_response();
        }
    }
    parts.extensions.insert(access);
    next.run(Request::from_parts(parts, body)).await
}

/// 401 with the scheme to use.
pub fn unauthorized() -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "authentication required").into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"fleetpulse\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_their_port() {
        assert_eq!(host_name("LocalHost:8080"), "localhost");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        assert_eq!(host_name("[::1]:80"), "[::1]");
        assert_eq!(host_name("attacker.example:80"), "attacker.example");
    }

    #[test]
    fn paths_are_gated() {
        assert_eq!(gate(&Method::GET, "/healthz"), Gate::Open);
        assert_eq!(gate(&Method::POST, "/login"), Gate::Open);
        assert_eq!(gate(&Method::GET, "/"), Gate::Page);
        assert_eq!(gate(&Method::GET, "/api/customers"), Gate::Api);
        assert_eq!(gate(&Method::GET, "/metrics"), Gate::Api);
        assert_eq!(gate(&Method::GET, "/assets/app.js"), Gate::Api);
        assert_eq!(gate(&Method::GET, "/no/such/route"), Gate::Api);
    }

    #[tokio::test]
    async fn without_configuration_everyone_is_an_admin_and_with_it_nobody_is() {
        let open = Auth::new(&HttpConfig::default()).unwrap();
        let (p, _) = open.authenticate(&HeaderMap::new(), None).await.unwrap();
        assert_eq!((p.role, p.via), (Role::Admin, Via::Anonymous));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        std::fs::write(&path, "").unwrap();
        let closed = Auth::new(&HttpConfig {
            users_file: Some(path),
            ..HttpConfig::default()
        })
        .unwrap();
        assert_eq!(
            closed
                .authenticate(&HeaderMap::new(), None)
                .await
                .unwrap_err(),
            Denied::NoCredentials
        );
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer fp_x_y".parse().unwrap());
        assert_eq!(
            closed.authenticate(&headers, None).await.unwrap_err(),
            Denied::BadToken
        );
        let mut headers = HeaderMap::new();
        headers.insert("cookie", "fp_session=forged".parse().unwrap());
        assert_eq!(
            closed.authenticate(&headers, None).await.unwrap_err(),
            Denied::BadSession
        );
        let mut headers = HeaderMap::new();
        headers.insert("host", "attacker.example".parse().unwrap());
        assert!(!closed.host_allowed(&headers));
        headers.insert("host", "localhost:8080".parse().unwrap());
        assert!(closed.host_allowed(&headers));
    }
}
