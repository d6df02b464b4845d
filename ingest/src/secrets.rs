//! Secrets never reach a log, an error or an API.
//!
//! Two layers, because one is easy to forget:
//!
//! - **Types.** A configured secret is held as a [`Secret`] (or a
//!   [`SecretUrl`] for a URL whose path is the secret, like a Slack webhook):
//!   `Debug` and `Display` print `***`, only [`Secret::expose`] gives the
//!   value, at the one place that sends it.
//! - **Text.** Every secret is registered in a process-wide list when it is
//!   read (from the config file or the environment). [`redact`] replaces
//!   each registered secret in any text by `***`; it is applied to error
//!   chains that can carry one (HTTP client errors, which print the request
//!   URL; response bodies, which may echo it; MQTT client errors), and the
//!   service's log output goes through [`RedactingWriter`], so a log line
//!   that still held a secret is cleaned before it is written.
//!
//! Secrets shorter than [`MIN_REDACTED_LEN`] characters are not redacted as
//! text: replacing every occurrence of two letters would garble the log, and
//! the types above still keep them out of it.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Write};
use std::sync::RwLock;

use serde::{Deserialize, Deserializer};

/// Shorter secrets are not replaced in text (see the module docs).
pub const MIN_REDACTED_LEN: usize = 4;

/// What a secret is replaced by.
pub const REDACTED: &str = "***";

/// Registered secrets, longest first, so a whole URL is replaced before its
/// parts.
static KNOWN: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers `secret` so that [`redact`] hides it from now on. Idempotent.
pub fn register(secret: &str) {
    if secret.chars().count() < MIN_REDACTED_LEN {
        return;
    }
    let mut known = KNOWN.write().unwrap_or_else(|e| e.into_inner());
    if known.iter().any(|k| k == secret) {
        return;
    }
    known.push(secret.to_owned());
    known.sort_by_key(|k| std::cmp::Reverse(k.len()));
}

/// Registers the secret parts of `url`: the whole URL, its password, and its
/// path and query (a Slack-style webhook keeps its secret in the path), as
/// well as the last path segment and the query on their own (when 8
/// characters or more), in case an error shows only a part.
pub fn register_url(url: &reqwest::Url) {
    register(url.as_str());
    if let Some(password) = url.password() {
        register(password);
    }
    if !url.username().is_empty() {
        register(&format!("{}:", url.username()));
    }
    let path = url.path();
    if path != "/" {
        register(path);
        if let Some(query) = url.query() {
            register(&format!("{path}?{query}"));
        }
        if let Some(last) = url
            .path_segments()
            .and_then(|mut segments| segments.rfind(|s| !s.is_empty()))
        {
            register_part(last);
        }
    }
    if let Some(query) = url.query() {
        register_part(query);
    }
}

/// Parts of a URL on their own are registered only when long enough to be a
/// secret rather than a word like `hook` (the whole path always is).
fn register_part(part: &str) {
    if part.chars().count() >= MIN_URL_PART_LEN {
        register(part);
    }
}

/// Shortest URL part (last path segment, query) redacted on its own.
const MIN_URL_PART_LEN: usize = 8;

/// `text` with every registered secret replaced by `***`.
pub fn redact(text: &str) -> Cow<'_, str> {
    let known = KNOWN.read().unwrap_or_else(|e| e.into_inner());
    redact_with(text, &known)
}

fn redact_with<'a>(text: &'a str, known: &[String]) -> Cow<'a, str> {
    let mut out = Cow::Borrowed(text);
    for secret in known {
        if out.contains(secret.as_str()) {
            out = Cow::Owned(out.replace(secret.as_str(), REDACTED));
        }
    }
    out
}

/// An error and its chain of causes (`a: b: c`), redacted: for logging or
/// wrapping an error from a library that may print a secret.
pub fn redact_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        // Some errors repeat their cause in their own message.
        if !text.ends_with(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    redact(&text).into_owned()
}

/// A reqwest error as text without its URL (which may hold a webhook
/// secret), with its causes, redacted.
pub fn http_error(error: reqwest::Error) -> String {
    redact_error(&error.without_url())
}

/// A configured secret: `Debug` and `Display` print `***`. Deserializing one
/// registers it for [`redact`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps and registers `value`.
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        register(&value);
        Self(value)
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

/// A URL whose path, query or password is a secret (a Slack-style webhook).
/// Shown as `scheme://host:port/***`; building one registers its parts.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(reqwest::Url);

impl SecretUrl {
    /// Wraps `url` and registers its secret parts ([`register_url`]).
    pub fn new(url: reqwest::Url) -> Self {
        register_url(&url);
        Self(url)
    }

    /// The URL, for the one place that sends to it.
    pub fn expose(&self) -> &reqwest::Url {
        &self.0
    }

    /// `scheme://host[:port]`: what may be logged.
    pub fn origin(&self) -> String {
        let url = &self.0;
        match url.port() {
            Some(port) => format!(
                "{}://{}:{port}",
                url.scheme(),
                url.host_str().unwrap_or("?")
            ),
            None => format!("{}://{}", url.scheme(), url.host_str().unwrap_or("?")),
        }
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{REDACTED}", self.origin())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({self})")
    }
}

/// A `tracing_subscriber` writer that redacts every registered secret from
/// each log line before writing it to `inner`. The fmt layer writes one
/// event per writer, so a line is redacted whole.
#[derive(Debug, Clone)]
pub struct RedactingWriter<M> {
    inner: M,
}

impl<M> RedactingWriter<M> {
    /// Redacts what goes to `inner` (e.g. `std::io::stderr`).
    pub fn new(inner: M) -> Self {
        Self { inner }
    }
}

impl<'a, M> tracing_subscriber::fmt::MakeWriter<'a> for RedactingWriter<M>
where
    M: tracing_subscriber::fmt::MakeWriter<'a>,
{
    type Writer = RedactingLine<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingLine {
            inner: self.inner.make_writer(),
            buffer: Vec::new(),
        }
    }
}

/// One log event, buffered and written redacted when flushed or dropped.
#[derive(Debug)]
pub struct RedactingLine<W: Write> {
    inner: W,
    buffer: Vec<u8>,
}

impl<W: Write> RedactingLine<W> {
    fn write_out(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&self.buffer);
        let clean = redact(&text);
        let result = self.inner.write_all(clean.as_bytes());
        self.buffer.clear();
        result
    }
}

impl<W: Write> Write for RedactingLine<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.inner.flush()
    }
}

impl<W: Write> Drop for RedactingLine<W> {
    fn drop(&mut self) {
        let _ = self.write_out();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn registered_secrets_are_replaced_longest_first() {
        register("pw-redact-unit-0001");
        register("pw-redact-unit-0001-longer");
        let text = "a pw-redact-unit-0001-longer and a pw-redact-unit-0001.";
        assert_eq!(redact(text), "a *** and a ***.");
        assert!(matches!(redact("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn short_secrets_are_not_replaced_in_text() {
        register("ab");
        assert_eq!(redact("abc cab"), "abc cab");
    }

    #[test]
    fn a_webhook_url_is_redacted_whole_and_in_parts() {
        let url: reqwest::Url =
            "https://hooks.example.com/services/T0UNIT/B0UNIT/SECRETunit42?token=qTOKENunit"
                .parse()
                .unwrap();
        let wrapped = SecretUrl::new(url.clone());
        assert_eq!(wrapped.to_string(), "https://hooks.example.com/***");
        assert_eq!(
            format!("{wrapped:?}"),
            "SecretUrl(https://hooks.example.com/***)"
        );
        for text in [
            format!("error sending request for url ({url})"),
            "404 no such hook /services/T0UNIT/B0UNIT/SECRETunit42".to_string(),
            "bad token SECRETunit42 and token=qTOKENunit".to_string(),
        ] {
            let clean = redact(&text);
            assert!(!clean.contains("SECRETunit42"), "{clean}");
            assert!(!clean.contains("qTOKENunit"), "{clean}");
        }
        assert_eq!(
            redact(&format!("for url ({url})")),
            "for url (***)",
            "the whole URL goes as one"
        );
    }

    #[test]
    fn basic_auth_in_a_url_is_redacted() {
        let url: reqwest::Url = "http://cs:pAssWord-unit@127.0.0.1:9/x".parse().unwrap();
        register_url(&url);
        let clean = redact("connect to cs:pAssWord-unit@127.0.0.1:9 failed");
        assert!(!clean.contains("pAssWord-unit"), "{clean}");
    }

    #[test]
    fn a_secret_prints_stars_and_registers_when_deserialized() {
        #[derive(Deserialize, Debug)]
        struct Config {
            token: Secret,
        }
        let config: Config = toml::from_str("token = \"tok-unit-deserialized\"").unwrap();
        assert_eq!(config.token.expose(), "tok-unit-deserialized");
        assert_eq!(format!("{config:?}"), "Config { token: *** }");
        assert_eq!(config.token.to_string(), "***");
        assert_eq!(redact("got tok-unit-deserialized"), "got ***");
    }

    #[derive(Debug)]
    struct Outer(Inner);
    #[derive(Debug)]
    struct Inner;
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("request failed")
        }
    }
    impl fmt::Display for Inner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("peer said chain-secret-unit")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    impl std::error::Error for Inner {}

    #[test]
    fn the_whole_error_chain_is_redacted() {
        register("chain-secret-unit");
        assert_eq!(redact_error(&Outer(Inner)), "request failed: peer said ***");
    }

    #[tokio::test]
    async fn reqwest_errors_lose_their_url() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        // Not registered: `http_error` must drop the URL by itself.
        let url = format!("http://127.0.0.1:{port}/hooks/T/B/unregistered-unit-secret");
        let error = reqwest::Client::new().post(&url).send().await.unwrap_err();
        assert!(error.to_string().contains("unregistered-unit-secret"));
        let text = http_error(error);
        assert!(!text.contains("unregistered-unit-secret"), "{text}");
        assert!(!text.is_empty());
    }

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_log_writer_redacts_each_line() {
        use tracing_subscriber::fmt::MakeWriter;
        register("log-secret-unit-77");
        let sink = Sink::default();
        let make = RedactingWriter::new({
            let sink = sink.clone();
            move || sink.clone()
        });
        {
            let mut line = make.make_writer();
            // The fmt layer may write an event in pieces: a secret split
            // across two writes is still found.
            line.write_all(b"post failed: log-secr").unwrap();
            line.write_all(b"et-unit-77 gone\n").unwrap();
        }
        let written = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(written, "post failed: *** gone\n");

        let subscriber = tracing_subscriber::fmt()
            .with_writer(RedactingWriter::new({
                let sink = sink.clone();
                move || sink.clone()
            }))
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                url = "http://x/log-secret-unit-77",
                "failed: log-secret-unit-77"
            );
        });
        let written = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(!written.contains("log-secret-unit-77"), "{written}");
        assert!(written.contains("failed: ***"), "{written}");
    }
}
