//! Users of the HTTP port, made with the real `fleetpulse users` and signed
//! in through the real login form.

use std::io::Write as _;
use std::process::{Command, Stdio};

/// `fleetpulse users ARGS`; its stdout. `stdin` is the password, if any.
pub fn users(args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetpulse"))
        .arg("users")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        writeln!(input, "{text}").unwrap();
    }
    drop(input);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "users {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// `fleetpulse users add NAME --role ROLE` into `file`: with a password on
/// stdin, or `password` `None` for `--no-password` (token only).
pub fn add_user(file: &str, name: &str, role: &str, password: Option<&str>) {
    let how = if password.is_some() {
        "--password-stdin"
    } else {
        "--no-password"
    };
    users(
        &["add", name, "--role", role, how, "--file", file],
        password,
    );
}

/// A token for a new user `name` with `role` (and its scope) in `file`.
pub fn token(file: &str, name: &str, role: &str) -> String {
    add_user(file, name, role, None);
    let out = users(&["token", name, "--file", file], None);
    out.split_whitespace()
        .find(|w| w.starts_with("fp_"))
        .unwrap_or_else(|| panic!("no token in `{out}`"))
        .to_string()
}

/// Sends the login form at `base` for `user` (its CSRF cookie and token
/// as a browser sends them); the answer, redirects not followed.
pub async fn log_in(base: &str, user: &str, password: &str) -> reqwest::Response {
    let client = (reqwest::Client::builder())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = client.get(format!("{base}/login")).send().await.unwrap();
    let set = page.headers()["set-cookie"].to_str().unwrap().to_string();
    let csrf_cookie = set.split(';').next().unwrap().to_string();
    let csrf = csrf_cookie.split_once('=').unwrap().1.to_string();
    client
        .post(format!("{base}/login"))
        .header("cookie", &csrf_cookie)
        .form(&[("user", user), ("password", password), ("csrf", &csrf)])
        .send()
        .await
        .unwrap()
}

/// Signs `user` in through the login form at `base`; the session cookie
/// (`fp_session=...`).
pub async fn sign_in(base: &str, user: &str, password: &str) -> String {
    let login = log_in(base, user, password).await;
    assert_eq!(
        login.status(),
        reqwest::StatusCode::SEE_OTHER,
        "{user} signs in"
    );
    let session = (login.headers().get_all("set-cookie").iter())
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("fp_session="))
        .expect("a session cookie");
    session.split(';').next().unwrap().to_string()
}
