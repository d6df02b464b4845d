//! `[http]`: the service's HTTP port (API, dashboard, `/metrics`, health
//! checks).
//!
//! ```toml
//! [http]
//! enabled = true
//! listen = "127.0.0.1:8080"
//! ```

use std::net::{Ipv4Addr, SocketAddr};

use serde::Deserialize;

/// HTTP port settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Serve the HTTP port. Off unless the file says so, like any port a
    /// service opens; `fleetpulse demo` always serves its dashboard.
    #[serde(default)]
    pub enabled: bool,
    /// Address and port to listen on. Port 0 picks a free port (the service
    /// logs the one it got). Bind to a non-loopback address only behind a
    /// proxy that authenticates: the API has no authentication of its own.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
}

/// `127.0.0.1:8080`.
pub fn default_listen() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 8080))
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: default_listen(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_must_be_an_address() {
        let ok: HttpConfig = toml::from_str("enabled = true\nlisten = \"0.0.0.0:9000\"").unwrap();
        assert_eq!(ok.listen.port(), 9000);
        assert!(toml::from_str::<HttpConfig>("listen = \"localhost\"").is_err());
        assert!(toml::from_str::<HttpConfig>("port = 1").is_err());
        assert_eq!(HttpConfig::default().listen, default_listen());
    }
}
