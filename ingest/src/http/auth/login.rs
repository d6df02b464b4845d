//! The login page, login and logout. The page is plain HTML with no script,
//! so it works before anything else is loaded.
//!
//! CSRF: the login form carries a token that must equal its cookie (a
//! cross-site form cannot read or set it); logout must send the session's
//! own token. Both refuse an `Origin` naming another host. Cookies are
//! SameSite=Strict on top.

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::session::{
    LOGIN_CSRF_COOKIE, SESSION_COOKIE, cookie, random_token, same_secret, set_cookie,
};
use super::{Auth, Peer, host_name};
use crate::http::html_page;

/// How long a login form stays valid.
const LOGIN_FORM_TTL: Duration = Duration::from_secs(3600);

/// `GET /login`.
pub async fn page(State(auth): State<Arc<Auth>>) -> Response {
    if !auth.required() {
        return Redirect::to("/").into_response();
    }
    form(&auth, StatusCode::OK, None)
}

fn form(auth: &Auth, status: StatusCode, message: Option<&str>) -> Response {
    let csrf = random_token();
    let body = if auth.has_users_file() {
        LOGIN_HTML.replace("{csrf}", &csrf).replace(
            "{message}",
            &message.map_or(String::new(), |m| {
                format!("<p class=\"error\" role=\"alert\">{m}</p>")
            }),
        )
    } else {
        PROXY_HTML.clone()
    };
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&set_cookie(
        LOGIN_CSRF_COOKIE,
        &csrf,
        LOGIN_FORM_TTL,
        auth.secure_cookies(),
    )) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The login form's fields.
#[derive(Deserialize)]
pub struct LoginForm {
    user: String,
    password: String,
    csrf: String,
}

impl std::fmt::Debug for LoginForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoginForm {{ user: {:?}, .. }}", self.user)
    }
}

/// True when `Origin` (if sent) names the request's own host and port.
/// No `Origin`, or one naming this server: not a cross-site request. The
/// port counts: a page on another port of the same host is another origin
/// (cookies do not tell ports apart, so it could plant a login CSRF cookie).
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| authority(h, None));
    let origin = origin
        .split_once("://")
        .map(|(scheme, rest)| authority(rest.trim_end_matches('/'), Some(scheme)));
    origin.is_some() && origin == host
}

/// `host[:port]`, lowercase, without the port its scheme implies (80 for
/// `http`, 443 for `https`; either for a `Host` header, which names none).
fn authority(value: &str, scheme: Option<&str>) -> String {
    let value = value.trim();
    let name = host_name(value);
    let port = (value.get(name.len()..))
        .and_then(|rest| rest.strip_prefix(':'))
        .unwrap_or("");
    let implied = match scheme.map(str::to_ascii_lowercase).as_deref() {
        Some("http") => port == "80",
        Some("https") => port == "443",
        Some(_) => false,
        None => port == "80" || port == "443",
    };
    match port.is_empty() || implied {
        true => name,
        false => format!("{name}:{port}"),
    }
}

fn peer_of(extensions: &axum::http::Extensions) -> String {
    extensions
        .get::<Peer>()
        .map(|p| p.0.ip())
        .map_or("-".to_string(), |ip: IpAddr| ip.to_string())
}

/// `POST /login`: a session cookie and the dashboard, or the form again.
pub async fn login(State(auth): State<Arc<Auth>>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let peer = peer_of(&parts.extensions);
    let request = axum::extract::Request::from_parts(parts.clone(), body);
    let Ok(Form(fields)) = Form::<LoginForm>::from_request(request, &()).await else {
        return form(
            &auth,
            StatusCode::BAD_REQUEST,
            Some("The form was incomplete."),
        );
    };
    if !auth.required() || !auth.has_users_file() {
        return Redirect::to("/").into_response();
    }
    let cookie_ok =
        cookie(&parts.headers, LOGIN_CSRF_COOKIE).is_some_and(|c| same_secret(c, &fields.csrf));
    if !cookie_ok || !same_origin(&parts.headers) {
        super::audit_denied(
            &parts,
            StatusCode::FORBIDDEN,
            "login form CSRF check failed",
            None,
        );
        return form(
            &auth,
            StatusCode::FORBIDDEN,
            Some("The form expired; please sign in again."),
        );
    }
    let users = auth.users();
    let (user, password) = (fields.user.clone(), fields.password);
    // argon2 takes tens of milliseconds of CPU and 19 MiB: off the async
    // threads, a few at a time.
    let checking = users.clone();
    let checked = super::checks::checks()
        .run(move || checking.check_password(&user, &password))
        .await;
    let Some(principal) = checked else {
        tracing::warn!(target: "audit", event = "login", outcome = "busy", peer, "login refused: too many sign-ins at once");
        return form(
            &auth,
            StatusCode::SERVICE_UNAVAILABLE,
            Some("Too many sign-ins at once; please try again in a moment."),
        );
    };
    let stamp = (principal.as_ref()).and_then(|p| users.password_stamp(&p.name));
    let (Some(principal), Some(stamp)) = (principal, stamp) else {
        // The name only when it is a user's (escaped): a password typed in
        // the name field is not logged, nor a forged log line.
        let user = match users.has(&fields.user) {
            true => fields.user.as_str(),
            false => "(not a user)",
        };
        tracing::warn!(target: "audit", event = "login", outcome = "failed", user = ?user, peer, "login failed");
        return form(
            &auth,
            StatusCode::UNAUTHORIZED,
            Some("Wrong user name or password."),
        );
    };
    tracing::info!(target: "audit", event = "login", outcome = "ok", user = %principal.name, role = %principal.role, peer, "login");
    let id = auth.sessions().open(&principal.name, stamp, Instant::now());
    let mut response = Redirect::to("/").into_response();
    let headers = response.headers_mut();
    for value in [
        set_cookie(
            SESSION_COOKIE,
            &id,
            auth.sessions().ttl(),
            auth.secure_cookies(),
        ),
        set_cookie(LOGIN_CSRF_COOKIE, "", Duration::ZERO, auth.secure_cookies()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    response
}

/// The logout form's field.
#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    csrf: String,
}

/// `POST /logout` with the session's CSRF token (form field `csrf`).
pub async fn logout(State(auth): State<Arc<Auth>>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let request = axum::extract::Request::from_parts(parts.clone(), body);
    let token = Form::<LogoutForm>::from_request(request, &())
        .await
        .ok()
        .map(|Form(f)| f.csrf);
    let session = cookie(&parts.headers, SESSION_COOKIE)
        .and_then(|id| auth.sessions().get(id, Instant::now()).map(|s| (id, s)));
    let Some((id, session)) = session else {
        return Redirect::to("/login").into_response();
    };
    if !token.is_some_and(|t| same_secret(&t, &session.csrf)) || !same_origin(&parts.headers) {
        super::audit_denied(
            &parts,
            StatusCode::FORBIDDEN,
            "logout CSRF check failed",
            Some(&session.user),
        );
        return super::ApiError::new(StatusCode::FORBIDDEN, "CSRF token missing or wrong")
            .into_response();
    }
    auth.sessions().close(id);
    tracing::info!(target: "audit", event = "logout", user = %session.user, peer = peer_of(&parts.extensions), "logout");
    let mut response = Redirect::to("/login").into_response();
    if let Ok(value) = HeaderValue::from_str(&set_cookie(
        SESSION_COOKIE,
        "",
        Duration::ZERO,
        auth.secure_cookies(),
    )) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

use axum::extract::FromRequest as _;

/// The login form, in the dashboard's `<head>`.
static LOGIN_HTML: LazyLock<String> = LazyLock::new(|| html_page(TITLE, LOGIN_BODY));

/// What a server that signs users in through its proxy shows instead.
static PROXY_HTML: LazyLock<String> = LazyLock::new(|| html_page(TITLE, PROXY_BODY));

const TITLE: &str = "fleetpulse: sign in";

const LOGIN_BODY: &str = r#"<body class="login">
<main>
<h1>fleetpulse</h1>
<form id="login" method="post" action="/login">
{message}
<label>User <input name="user" id="user" autocomplete="username" required autofocus></label>
<label>Password <input name="password" id="password" type="password" autocomplete="current-password" required></label>
<input type="hidden" name="csrf" value="{csrf}">
<button type="submit" id="sign-in">Sign in</button>
</form>
</main>
</body>
</html>
"#;

const PROXY_BODY: &str = r#"<body class="login"><main><h1>fleetpulse</h1>
<p>This server signs users in through its reverse proxy. Open it through the proxy's address.</p>
</main></body></html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_pages_have_the_dashboards_head() {
        for html in [&*LOGIN_HTML, &*PROXY_HTML] {
            assert!(html.starts_with("<!doctype html>\n<html lang=\"en\">\n<head>\n"));
            assert!(html.contains("<meta name=\"viewport\""), "{html}");
            assert!(html.contains(
                "<title>fleetpulse: sign in</title>\n\
                 <link rel=\"stylesheet\" href=\"/assets/app.css\">\n</head>\n<body class=\"login\">"
            ));
            assert!(html.ends_with("</html>\n"));
        }
        assert!(LOGIN_HTML.contains("{csrf}") && LOGIN_HTML.contains("{message}"));
    }

    #[test]
    fn origin_must_be_the_host() {
        let mut headers = HeaderMap::new();
        headers.insert("host", "localhost:8080".parse().unwrap());
        assert!(same_origin(&headers));
        headers.insert("origin", "http://localhost:8080".parse().unwrap());
        assert!(same_origin(&headers));
        headers.insert("origin", "https://attacker.example".parse().unwrap());
        assert!(!same_origin(&headers));
        headers.insert("origin", "null".parse().unwrap());
        assert!(!same_origin(&headers));
        // Another port or scheme of the same host is another origin.
        headers.insert("origin", "http://localhost:9999".parse().unwrap());
        assert!(!same_origin(&headers));
        headers.insert("origin", "https://localhost".parse().unwrap());
        assert!(!same_origin(&headers));
        headers.insert("origin", "http://LOCALHOST:8080/".parse().unwrap());
        assert!(same_origin(&headers));
        // Behind a proxy on the default port: no port on either side, or
        // the one the scheme implies.
        headers.insert("host", "fleet.example.com".parse().unwrap());
        headers.insert("origin", "https://fleet.example.com".parse().unwrap());
        assert!(same_origin(&headers));
        headers.insert("origin", "https://fleet.example.com:443".parse().unwrap());
        assert!(same_origin(&headers));
        headers.insert("origin", "https://fleet.example.com:8443".parse().unwrap());
        assert!(!same_origin(&headers));
        headers.insert("host", "[::1]:8080".parse().unwrap());
        headers.insert("origin", "http://[::1]:8080".parse().unwrap());
        assert!(same_origin(&headers));
        headers.insert("origin", "http://[::1]:8081".parse().unwrap());
        assert!(!same_origin(&headers));
    }
}
