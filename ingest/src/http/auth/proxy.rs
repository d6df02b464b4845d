//! Trusted reverse-proxy mode: an authenticating proxy (oauth2-proxy in
//! front of an OIDC provider) sets the user and their groups in headers.
//! Anyone can send those headers, so they count only on connections from
//! the configured proxy addresses; from any other peer they are ignored
//! (and the request is logged to the audit log).

use std::net::IpAddr;

use axum::http::HeaderMap;

use super::roles::{Principal, Role, Via};
use crate::http::config::ProxyConfig;

/// An address block, `10.0.0.0/8` or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Parses `a.b.c.d[/n]` or an IPv6 address with an optional `/n`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (address, bits) = match text.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (text, None),
        };
        let network: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or CIDR block"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?,
        };
        Ok(Self { network, bits })
    }

    /// Whether `ip` is in the block (IPv4-mapped IPv6 peers count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// What the proxy headers say about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyIdentity {
    /// No user header.
    Absent,
    /// A user header from a peer that is not a trusted proxy.
    Untrusted,
    /// A user none of whose groups maps to a role.
    NoRole(String),
    /// The user.
    User(Principal),
}

/// The proxy settings, parsed.
#[derive(Debug, Clone)]
pub struct Proxy {
    config: ProxyConfig,
    trusted: Vec<Cidr>,
}

impl Proxy {
    /// From a checked `[http.proxy]`.
    pub fn new(config: &ProxyConfig) -> Result<Self, String> {
        let trusted = config
            .trusted
            .iter()
            .map(|t| Cidr::parse(t))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            config: config.clone(),
            trusted,
        })
    }

    /// The identity `headers` carry on a connection from `peer`.
    pub fn identify(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> ProxyIdentity {
        let Some(user) = headers
            .get(self.config.user_header.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|u| !u.is_empty())
        else {
            return ProxyIdentity::Absent;
        };
        if !peer.is_some_and(|ip| self.trusted.iter().any(|c| c.contains(ip))) {
            return ProxyIdentity::Untrusted;
        }
        let groups: Vec<&str> = headers
            .get_all(self.config.groups_header.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let member = |of: &[String]| groups.iter().any(|g| of.iter().any(|o| o == g));
        let role = if member(&self.config.admin_groups) {
            Role::Admin
        } else if member(&self.config.csm_groups) {
            Role::Csm
        } else if member(&self.config.viewer_groups) {
            Role::Viewer
        } else {
            return ProxyIdentity::NoRole(user.to_string());
        };
        ProxyIdentity::User(Principal {
            name: user.to_string(),
            role,
            via: Via::Proxy,
            customers: Vec::new(),
            segments: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_contain_their_addresses() {
        let block = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(block.contains("10.1.200.3".parse().unwrap()));
        assert!(!block.contains("10.2.0.1".parse().unwrap()));
        assert!(block.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            Cidr::parse("fd00::/8")
                .unwrap()
                .contains("fd12::1".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/40").is_err());
        assert!(Cidr::parse("proxy.local").is_err());
    }

    #[test]
    fn headers_count_only_from_a_trusted_proxy() {
        let proxy = Proxy::new(&ProxyConfig {
            trusted: vec!["127.0.0.1".into()],
            user_header: "X-Forwarded-User".into(),
            groups_header: "X-Forwarded-Groups".into(),
            admin_groups: vec!["cs-admins".into()],
            csm_groups: vec!["csm".into()],
            viewer_groups: vec!["staff".into()],
        })
        .unwrap();
        let mut headers = HeaderMap::new();
        let local = Some("127.0.0.1".parse().unwrap());
        assert_eq!(proxy.identify(&headers, local), ProxyIdentity::Absent);
        headers.insert("x-forwarded-user", "alice".parse().unwrap());
        headers.insert("x-forwarded-groups", "staff, csm".parse().unwrap());
        let ProxyIdentity::User(alice) = proxy.identify(&headers, local) else {
            panic!()
        };
        assert_eq!((alice.name.as_str(), alice.role), ("alice", Role::Csm));
        assert_eq!(
            proxy.identify(&headers, Some("10.0.0.1".parse().unwrap())),
            ProxyIdentity::Untrusted
        );
        assert_eq!(proxy.identify(&headers, None), ProxyIdentity::Untrusted);
        headers.insert("x-forwarded-groups", "other".parse().unwrap());
        assert_eq!(
            proxy.identify(&headers, local),
            ProxyIdentity::NoRole("alice".into())
        );
    }
}
