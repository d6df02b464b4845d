//! `[[aemp]]` in the service file: one ISO 15143-3 (AEMP 2.0) endpoint of
//! one OEM. Typed so that parsing is validation; [`AempConfig::check`] adds
//! the cross-field checks, each error naming the file and `aemp[i].field`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;

/// One AEMP source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AempConfig {
    /// Name of the source: label of its metrics, its position file, and the
    /// `source` of its machines in the customers file's `[[aemp_equipment]]`.
    pub name: String,
    /// Base URL of the API, the part before `/Fleet/1`.
    #[serde(deserialize_with = "url")]
    pub url: reqwest::Url,
    /// How to authenticate; none when absent.
    #[serde(default)]
    pub auth: AempAuth,
    /// Answer format asked for with `Accept` (`xml`, the standard's
    /// default, or `json`). Either is parsed whatever was asked for.
    #[serde(default)]
    pub format: Format,
    /// Time between two polls of the whole fleet. Vendors refresh their
    /// data every 15 minutes to hourly; polling faster only spends their
    /// rate limit.
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Least time between two requests of this source (the vendor's rate
    /// limit); 0: no spacing. A 429 is still honoured through `Retry-After`.
    #[serde(default, with = "humantime_serde")]
    pub min_request_interval: Duration,
    /// Time-series elements polled for each machine.
    #[serde(default = "default_elements")]
    pub elements: Vec<Element>,
    /// How far back the first poll of a newly found machine reaches.
    #[serde(default = "default_history", with = "humantime_serde")]
    pub history: Duration,
    /// Longest time range one time-series request asks for: a backfill
    /// walks the whole fleet forward in steps of this, so machines stay
    /// within `engine.allowed_lateness` of each other.
    #[serde(default = "default_max_span", with = "humantime_serde")]
    pub max_span: Duration,
    /// How long after its `datetime` the vendor shows a reading. Each poll
    /// asks again for this much before where the last one stopped: a
    /// reading that appeared since, dated before that, is taken (readings
    /// taken already are passed over); without the overlap it was never
    /// asked for again.
    #[serde(default = "default_vendor_delay", with = "humantime_serde")]
    pub vendor_delay: Duration,
    /// How machines are addressed in time-series URLs.
    #[serde(default)]
    pub addressing: Addressing,
    /// Largest answer body taken, bytes; a larger one is refused
    /// (`too_large`) without reading the rest.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Most pages followed for one request; more is an endless paging
    /// answer (`endless_paging`).
    #[serde(default = "default_max_pages")]
    pub max_pages: u32,
    /// Most readings held for one machine and time range (every element's
    /// pages, kept until they are delivered together); more is `too_large`,
    /// so a chain of big pages cannot grow memory up to `max_pages` of
    /// them. A machine that truly reports more needs a shorter `max_span`.
    #[serde(default = "default_max_readings")]
    pub max_readings: usize,
    /// Timeout of one HTTP request.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts of one request that is answered 429 or 5xx (waiting
    /// `Retry-After`, or backing off) before the machine is left for the
    /// next poll.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Longest wait for one `Retry-After`; a longer one leaves the request
    /// for the next poll.
    #[serde(default = "default_max_retry_after", with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// Directory of the position file (`aemp-{name}.json`); relative paths
    /// start at the service file. Default: the WAL directory, which must
    /// then be configured: the position and the WAL belong together.
    #[serde(default)]
    pub position_dir: Option<PathBuf>,
}

/// Authentication of an AEMP source. Secrets come from environment
/// variables, never from the file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum AempAuth {
    /// No authentication.
    #[default]
    None,
    /// HTTP Basic.
    Basic {
        /// User name.
        username: String,
        /// Environment variable holding the password.
        password_env: String,
    },
    /// OAuth2 client credentials: a bearer token from `token_url`, renewed
    /// before it expires and after a 401.
    Oauth2 {
        /// Token endpoint.
        #[serde(deserialize_with = "url")]
        token_url: reqwest::Url,
        /// Client id.
        client_id: String,
        /// Environment variable holding the client secret.
        client_secret_env: String,
        /// Scope to ask for, if the vendor wants one.
        #[serde(default)]
        scope: Option<String>,
    },
}

/// Answer format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `application/xml`, the standard's default.
    #[default]
    Xml,
    /// `application/json`.
    Json,
}

impl Format {
    /// The `Accept` header value.
    pub fn accept(self) -> &'static str {
        match self {
            Self::Xml => "application/xml",
            Self::Json => "application/json",
        }
    }
}

/// How a machine is addressed in time-series URLs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Addressing {
    /// `/Equipment/ID/{EquipmentID}`, or `/Equipment/PIN/{PIN}` when the
    /// id holds a character that does not survive a URL path (`#`, `/`,
    /// `?`, `%`, space).
    #[default]
    Auto,
    /// Always `/Equipment/ID/{EquipmentID}`.
    Id,
    /// Always `/Equipment/PIN/{PIN}`.
    Pin,
}

/// A time-series element of ISO 15143-3 and what it becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
pub enum Element {
    /// Cumulative operating hours -> operating-hours increments.
    CumulativeOperatingHours,
    /// Cumulative idle hours -> idle-hours increments.
    CumulativeIdleHours,
    /// Cumulative fuel used -> fuel increments (litres).
    CumulativeFuelUsed,
    /// Cumulative load count -> work cycles.
    CumulativeLoadCount,
    /// Engine running or not -> machine state.
    EngineStatus,
    /// Fault codes -> faults.
    Faults,
}

impl Element {
    /// Every element, in the order samples are built from them.
    pub const ALL: [Element; 6] = [
        Self::CumulativeOperatingHours,
        Self::CumulativeIdleHours,
        Self::CumulativeFuelUsed,
        Self::CumulativeLoadCount,
        Self::EngineStatus,
        Self::Faults,
    ];

    /// The URL segment and the position file's key.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CumulativeOperatingHours => "CumulativeOperatingHours",
            Self::CumulativeIdleHours => "CumulativeIdleHours",
            Self::CumulativeFuelUsed => "CumulativeFuelUsed",
            Self::CumulativeLoadCount => "CumulativeLoadCount",
            Self::EngineStatus => "EngineStatus",
            Self::Faults => "Faults",
        }
    }

    /// The element named `name` (as in a URL).
    pub fn parse(name: &str) -> Option<Element> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }

    /// A running total that never goes down.
    pub fn is_cumulative(self) -> bool {
        matches!(
            self,
            Self::CumulativeOperatingHours
                | Self::CumulativeIdleHours
                | Self::CumulativeFuelUsed
                | Self::CumulativeLoadCount
        )
    }
}

/// A URL field, refused with the parser's reason.
fn url<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<reqwest::Url, D::Error> {
    let text = String::deserialize(deserializer)?;
    reqwest::Url::parse(&text).map_err(|e| serde::de::Error::custom(format!("`{text}`: {e}")))
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_elements() -> Vec<Element> {
    Element::ALL.to_vec()
}
fn default_history() -> Duration {
    Duration::from_secs(7 * 86_400)
}
fn default_max_span() -> Duration {
    Duration::from_secs(86_400)
}
fn default_vendor_delay() -> Duration {
    Duration::from_secs(3_600)
}
fn default_max_body_bytes() -> usize {
    8 * 1024 * 1024
}
fn default_max_pages() -> u32 {
    1000
}
/// A day of six elements read every second (518,400) fits: far above what
/// vendors serve (every 10 to 60 minutes); about 30 MB held.
fn default_max_readings() -> usize {
    600_000
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_attempts() -> u32 {
    4
}
fn default_max_retry_after() -> Duration {
    Duration::from_secs(120)
}

impl AempConfig {
    /// A source with every default, for tests and examples.
    pub fn new(name: &str, url: reqwest::Url) -> Self {
        Self {
            name: name.into(),
            url,
            auth: AempAuth::None,
            format: Format::default(),
            poll_interval: default_poll_interval(),
            min_request_interval: Duration::ZERO,
            elements: default_elements(),
            history: default_history(),
            max_span: default_max_span(),
            vendor_delay: default_vendor_delay(),
            addressing: Addressing::default(),
            max_body_bytes: default_max_body_bytes(),
            max_pages: default_max_pages(),
            max_readings: default_max_readings(),
            timeout: default_timeout(),
            attempts: default_attempts(),
            max_retry_after: default_max_retry_after(),
            position_dir: None,
        }
    }

    /// Cross-field checks of source `index` of the file at `path`;
    /// `wal_dir`: the service's WAL directory, if any.
    pub fn check(
        &self,
        path: &Path,
        index: usize,
        wal_dir: Option<&Path>,
    ) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            field: format!("aemp[{index}].{field}"),
            message,
        };
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return Err(invalid(
                "name",
                format!(
                    "`{}`: 1 to 64 of A-Z, a-z, 0-9, `-`, `_` (it names the position file)",
                    self.name
                ),
            ));
        }
        if !matches!(self.url.scheme(), "http" | "https") {
            return Err(invalid(
                "url",
                format!("`{}`: http or https", self.url.scheme()),
            ));
        }
        if self.elements.is_empty() {
            return Err(invalid("elements", "poll at least one element".into()));
        }
        for (field, value) in [
            ("poll_interval", self.poll_interval),
            ("max_span", self.max_span),
            ("history", self.history),
            ("timeout", self.timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(field, "must be above 0".into()));
            }
        }
        if self.max_span < Duration::from_secs(1) {
            return Err(invalid("max_span", "at least 1 s".into()));
        }
        if self.max_pages == 0
            || self.max_readings == 0
            || self.attempts == 0
            || self.max_body_bytes < 1024
        {
            return Err(invalid(
                if self.max_pages == 0 {
                    "max_pages"
                } else if self.max_readings == 0 {
                    "max_readings"
                } else if self.attempts == 0 {
                    "attempts"
                } else {
                    "max_body_bytes"
                },
                "too small (max_pages, max_readings and attempts at least 1, max_body_bytes \
                 at least 1024)"
                    .into(),
            ));
        }
        if self.position_dir.is_none() && wal_dir.is_none() {
            return Err(invalid(
                "position_dir",
                "set it, or configure [wal]: the poll position is kept beside the WAL".into(),
            ));
        }
        Ok(())
    }

    /// The position file.
    pub fn position_file(&self, wal_dir: Option<&Path>) -> PathBuf {
        let dir = self
            .position_dir
            .as_deref()
            .or(wal_dir)
            .unwrap_or(Path::new("."));
        dir.join(format!("aemp-{}.json", self.name))
    }
}

/// Checks every source: each alone, and names unique across them.
pub fn check_all(
    sources: &[AempConfig],
    path: &Path,
    wal_dir: Option<&Path>,
) -> Result<(), ConfigError> {
    for (i, source) in sources.iter().enumerate() {
        source.check(path, i, wal_dir)?;
        if let Some(j) = sources[..i].iter().position(|s| s.name == source.name) {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                field: format!("aemp[{i}].name"),
                message: format!("`{}` is also the name of aemp[{j}]", source.name),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        aemp: Vec<AempConfig>,
    }

    #[test]
    fn a_worked_config_parses_with_both_kinds_of_auth() {
        let text = r#"
[[aemp]]
name = "oem-b"
url = "https://aemp.example.com/v2"
format = "json"
poll_interval = "15m"
elements = ["CumulativeOperatingHours", "Faults"]
auth = { type = "basic", username = "fleet", password_env = "OEM_B_PASSWORD" }

[[aemp]]
name = "oem-c"
url = "https://api.example.org/aemp"
[aemp.auth]
type = "oauth2"
token_url = "https://login.example.org/token"
client_id = "fleetpulse"
client_secret_env = "OEM_C_SECRET"
"#;
        let file: File = toml::from_str(text).unwrap();
        assert_eq!(file.aemp.len(), 2);
        assert_eq!(file.aemp[0].format, Format::Json);
        assert_eq!(file.aemp[0].poll_interval, Duration::from_secs(900));
        assert!(matches!(file.aemp[1].auth, AempAuth::Oauth2 { .. }));
        assert_eq!(file.aemp[1].elements.len(), Element::ALL.len());
        let path = Path::new("fleetpulse.toml");
        check_all(&file.aemp, path, Some(Path::new("wal"))).unwrap();
        assert_eq!(
            file.aemp[0].position_file(Some(Path::new("wal"))),
            Path::new("wal/aemp-oem-b.json")
        );
    }

    #[test]
    fn errors_name_the_source_and_field() {
        let mut a = AempConfig::new("a", "http://x/".parse().unwrap());
        let path = Path::new("f.toml");
        let e = check_all(&[a.clone()], path, None).unwrap_err().to_string();
        assert!(
            e.contains("f.toml") && e.contains("aemp[0].position_dir"),
            "{e}"
        );
        let b = a.clone();
        let e = check_all(&[a.clone(), b], path, Some(Path::new("w")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("aemp[1].name"), "{e}");
        a.name = "has space".into();
        let e = check_all(&[a], path, Some(Path::new("w")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("aemp[0].name"), "{e}");
        let bad: Result<File, _> =
            toml::from_str("[[aemp]]\nname = \"x\"\nurl = \"http://x\"\nelements = [\"Nope\"]\n");
        assert!(bad.is_err());
    }
}
