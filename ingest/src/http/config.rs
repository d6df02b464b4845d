//! `[http]`: the service's HTTP port (API, dashboard, `/metrics`, health
//! checks), who may use it, and how it defends itself.
//!
//! ```toml
//! [http]
//! enabled = true
//! listen = "0.0.0.0:8443"
//! users_file = "users.toml"          # `fleetpulse users add` writes it
//! allowed_hosts = ["fleetpulse.example.com"]
//!
//! [http.tls]
//! cert_file = "/etc/fleetpulse/tls/cert.pem"
//! key_file = "/etc/fleetpulse/tls/key.pem"
//! ```
//!
//! The rule for anonymous access (docs/SECURITY.md): when neither
//! `users_file` nor `[http.proxy]` is set, nobody is asked who they are, and
//! every request acts as an admin. That is only allowed on a loopback
//! address (the demo, a laptop) or with `allow_anonymous = true`, which the
//! service then warns about at every start. As soon as authentication is
//! configured, an anonymous request gets 401.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;

/// HTTP port settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Serve the HTTP port. Off unless the file says so, like any port a
    /// service opens; `fleetpulse demo` always serves its dashboard.
    #[serde(default)]
    pub enabled: bool,
    /// Address and port to listen on. Port 0 picks a free port (the service
    /// logs the one it got). A non-loopback address needs authentication
    /// (`users_file` or `[http.proxy]`) or `allow_anonymous = true`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Serve without authentication on a non-loopback address: every
    /// request may read every customer. Warned about at every start.
    #[serde(default)]
    pub allow_anonymous: bool,
    /// Built-in users and their API tokens (argon2 hashes), written by
    /// `fleetpulse users add` / `fleetpulse users token`. Reread on SIGHUP.
    #[serde(default)]
    pub users_file: Option<PathBuf>,
    /// Identity from a trusted authenticating reverse proxy (oauth2-proxy).
    #[serde(default)]
    pub proxy: Option<ProxyConfig>,
    /// TLS on the port; plain HTTP when absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Host names (without port) a request's `Host` header may carry.
    /// Empty: the loopback names when listening on loopback (which stops
    /// DNS rebinding), any host otherwise (warned about).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// How long a client may take to send a request's headers (and a TLS
    /// handshake) before the connection is closed: slow-header clients
    /// cannot hold connections open.
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest a request may take from headers to response (408 after).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Open connections at most; more wait in the listen backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Requests handled at once at most; more wait (within
    /// `request_timeout`).
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// Largest request body in bytes (413 above); only the login form has one.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// How long a dashboard login lasts.
    #[serde(default = "default_session_ttl", with = "humantime_serde")]
    pub session_ttl: Duration,
}

/// `[http.tls]`: certificate and key files (PEM), reread on SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, leaf first (PEM).
    pub cert_file: PathBuf,
    /// Private key of the leaf (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// `[http.proxy]`: trust identity headers set by an authenticating reverse
/// proxy, from these peer addresses only.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Peer addresses or CIDR blocks of the proxy (`10.0.0.5`,
    /// `10.0.0.0/24`). Headers from any other peer are ignored.
    pub trusted: Vec<String>,
    /// Header carrying the user name.
    #[serde(default = "default_user_header")]
    pub user_header: String,
    /// Header carrying the user's groups, comma-separated.
    #[serde(default = "default_groups_header")]
    pub groups_header: String,
    /// Groups whose members are admins.
    #[serde(default)]
    pub admin_groups: Vec<String>,
    /// Groups whose members are CSMs (scoped by `csm` in customers.toml).
    #[serde(default)]
    pub csm_groups: Vec<String>,
    /// Groups whose members are viewers (portfolio only).
    #[serde(default)]
    pub viewer_groups: Vec<String>,
}

fn default_user_header() -> String {
    "X-Forwarded-User".into()
}

fn default_groups_header() -> String {
    "X-Forwarded-Groups".into()
}

/// `127.0.0.1:8080`.
pub fn default_listen() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 8080))
}

fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_connections() -> usize {
    1024
}

fn default_max_concurrent_requests() -> usize {
    64
}

fn default_max_body_bytes() -> usize {
    16 * 1024
}

fn default_session_ttl() -> Duration {
    Duration::from_secs(12 * 3600)
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: default_listen(),
            allow_anonymous: false,
            users_file: None,
            proxy: None,
            tls: None,
            allowed_hosts: Vec::new(),
            header_read_timeout: default_header_read_timeout(),
            request_timeout: default_request_timeout(),
            max_connections: default_max_connections(),
            max_concurrent_requests: default_max_concurrent_requests(),
            max_body_bytes: default_max_body_bytes(),
            session_ttl: default_session_ttl(),
        }
    }
}

impl HttpConfig {
    /// Listens on `listen` with every other setting at its default.
    pub fn on(listen: SocketAddr) -> Self {
        Self {
            enabled: true,
            listen,
            ..Self::default()
        }
    }

    /// The section sets something (a `listen` address, users, TLS) but
    /// the port is off: most likely `enabled = true` was forgotten.
    fn set_but_off(&self) -> bool {
        !self.enabled && *self != Self::default()
    }

    /// Says so at start when [`Self::set_but_off`].
    pub fn warn_if_set_but_off(&self, path: &Path) {
        if self.set_but_off() {
            tracing::warn!(
                file = %path.display(),
                "[http] sets options but not `enabled = true`: the HTTP port stays closed"
            );
        }
    }

    /// True when a user must say who they are (users file or proxy).
    pub fn authenticates(&self) -> bool {
        self.users_file.is_some() || self.proxy.is_some()
    }

    /// The host names a request may name: `allowed_hosts`, or the loopback
    /// names when listening on loopback; `None` means any.
    pub fn host_allow_list(&self) -> Option<Vec<String>> {
        if !self.allowed_hosts.is_empty() {
            return Some(
                self.allowed_hosts
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect(),
            );
        }
        is_loopback(self.listen.ip()).then(|| {
            ["localhost", "127.0.0.1", "::1", "[::1]"]
                .map(String::from)
                .to_vec()
        })
    }

    /// Makes relative file paths relative to `base` (the config's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        let files = [self.users_file.as_mut()]
            .into_iter()
            .chain(
                self.tls
                    .iter_mut()
                    .flat_map(|t| [Some(&mut t.cert_file), Some(&mut t.key_file)]),
            )
            .flatten();
        for file in files {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
    }

    /// The safe-default rules; errors name `path` and the field.
    pub fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            field: format!("http.{field}"),
            message,
        };
        if !self.enabled {
            return Ok(());
        }
        if self.allow_anonymous && self.authenticates() {
            return Err(invalid(
                "allow_anonymous",
                "cannot be set together with users_file or [http.proxy]: with authentication \
                 configured every request must authenticate"
                    .into(),
            ));
        }
        if !self.authenticates() && !self.allow_anonymous && !is_loopback(self.listen.ip()) {
            return Err(invalid(
                "listen",
                format!(
                    "{} is not a loopback address and no authentication is configured: set \
                     users_file (create users with `fleetpulse users add`) or [http.proxy], or \
                     set allow_anonymous = true to let anyone who reaches the port read every \
                     customer",
                    self.listen
                ),
            ));
        }
        if let Some(proxy) = &self.proxy {
            if proxy.trusted.is_empty() {
                return Err(invalid(
                    "proxy.trusted",
                    "name at least one proxy address".into(),
                ));
            }
            for (i, entry) in proxy.trusted.iter().enumerate() {
                crate::http::auth::proxy::Cidr::parse(entry)
                    .map_err(|e| invalid(&format!("proxy.trusted[{i}]"), e))?;
            }
            for (field, name) in [
                ("proxy.user_header", &proxy.user_header),
                ("proxy.groups_header", &proxy.groups_header),
            ] {
                axum::http::HeaderName::try_from(name.as_str())
                    .map_err(|e| invalid(field, format!("`{name}`: {e}")))?;
            }
        }
        for (field, value) in [
            ("max_connections", self.max_connections),
            ("max_concurrent_requests", self.max_concurrent_requests),
            ("max_body_bytes", self.max_body_bytes),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be at least 1".into()));
            }
        }
        for (field, value) in [
            ("header_read_timeout", self.header_read_timeout),
            ("request_timeout", self.request_timeout),
            ("session_ttl", self.session_ttl),
        ] {
            if value.is_zero() {
                return Err(invalid(field, "must be longer than 0s".into()));
            }
        }
        Ok(())
    }
}

/// Loopback, including the IPv4-mapped form of 127.0.0.0/8.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_that_sets_options_without_enabling_the_port_is_noticed() {
        let forgotten: HttpConfig = toml::from_str("listen = \"0.0.0.0:9000\"").unwrap();
        assert!(forgotten.set_but_off());
        assert!(!HttpConfig::default().set_but_off());
        let on: HttpConfig = toml::from_str("enabled = true\nlisten = \"0.0.0.0:9000\"").unwrap();
        assert!(!on.set_but_off());
    }

    #[test]
    fn listen_must_be_an_address() {
        let ok: HttpConfig = toml::from_str("enabled = true\nlisten = \"0.0.0.0:9000\"").unwrap();
        assert_eq!(ok.listen.port(), 9000);
        assert!(toml::from_str::<HttpConfig>("listen = \"localhost\"").is_err());
        assert!(toml::from_str::<HttpConfig>("port = 1").is_err());
        assert_eq!(HttpConfig::default().listen, default_listen());
    }

    #[test]
    fn a_public_port_needs_authentication_or_an_explicit_opt_out() {
        let path = Path::new("f.toml");
        let public: HttpConfig =
            toml::from_str("enabled = true\nlisten = \"0.0.0.0:9000\"").unwrap();
        let err = public.check(path).unwrap_err().to_string();
        assert!(err.starts_with("f.toml: field `http.listen`"), "{err}");
        assert!(err.contains("fleetpulse users add"), "{err}");
        let open = HttpConfig {
            allow_anonymous: true,
            ..public.clone()
        };
        open.check(path).unwrap();
        let users = HttpConfig {
            users_file: Some("users.toml".into()),
            ..public.clone()
        };
        users.check(path).unwrap();
        let both = HttpConfig {
            allow_anonymous: true,
            ..users
        };
        let err = both.check(path).unwrap_err().to_string();
        assert!(err.contains("http.allow_anonymous"), "{err}");
        HttpConfig::on(default_listen()).check(path).unwrap();
        let v6: HttpConfig = toml::from_str("enabled = true\nlisten = \"[::1]:9000\"").unwrap();
        v6.check(path).unwrap();
    }

    #[test]
    fn proxy_addresses_and_headers_are_checked() {
        let text = "enabled = true\nlisten = \"0.0.0.0:1\"\n[proxy]\ntrusted = [\"10.0.0.0/33\"]";
        let config: HttpConfig = toml::from_str(text).unwrap();
        let err = config.check(Path::new("f.toml")).unwrap_err().to_string();
        assert!(err.contains("http.proxy.trusted[0]"), "{err}");
        let text =
            "enabled = true\n[proxy]\ntrusted = [\"10.0.0.1\"]\nuser_header = \"bad header\"";
        let config: HttpConfig = toml::from_str(text).unwrap();
        let err = config.check(Path::new("f.toml")).unwrap_err().to_string();
        assert!(err.contains("http.proxy.user_header"), "{err}");
    }

    #[test]
    fn loopback_listens_accept_only_loopback_host_names() {
        let hosts = HttpConfig::default().host_allow_list().unwrap();
        assert!(hosts.contains(&"localhost".to_string()));
        let public = HttpConfig::on("0.0.0.0:1".parse().unwrap());
        assert_eq!(public.host_allow_list(), None);
        let named = HttpConfig {
            allowed_hosts: vec!["Fleet.Example.com".into()],
            ..public
        };
        assert_eq!(
            named.host_allow_list(),
            Some(vec!["fleet.example.com".to_string()])
        );
    }
}
