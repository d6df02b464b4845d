//! Operators are people: their badge ids and hours are employee-monitoring
//! data. With a key, every operator id is replaced by a pseudonym at the
//! edge (in [`crate::convert`]) before the engine sees it, so the engine's
//! state, alert evidence, every store and every alert channel hold only
//! pseudonyms.
//!
//! A pseudonym is `op-` and 16 hex digits of a keyed BLAKE2b hash of the id:
//! stable (the champion rule follows an operator from day to day, and the
//! processes of a cluster agree), and not reversible without the key, so a
//! reader of the store cannot test badge numbers (a short id space) against
//! it. The key comes from an environment variable (`[privacy]
//! operator_key_env`), never from a file, and is never logged.
//!
//! The clear id of a pseudonym seen since the start is kept in memory only
//! ([`Pseudonyms::reveal`]), for admins in the API; it is never stored.
//! docs/SECURITY.md lists what is personal data and where it is kept.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

/// Prefix of every pseudonym.
pub const PREFIX: &str = "op-";
/// Hex digits after the prefix.
const DIGITS: usize = 16;
/// Clear ids remembered at most (then the oldest are forgotten wholesale).
const DIRECTORY: usize = 100_000;

/// `[privacy]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Environment variable holding the pseudonym key (any string of 16
    /// characters or more). Unset variable: operator ids stay in clear,
    /// with a warning at start.
    #[serde(default = "default_key_env")]
    pub operator_key_env: String,
    /// Refuse to start without the key (production: a missing secret must
    /// not silently store clear ids).
    #[serde(default)]
    pub require_operator_key: bool,
    /// How long alert evidence may name an operator (even by pseudonym):
    /// older `champion_lost` episodes are shown and stored without it.
    #[serde(default = "default_retention", with = "humantime_serde")]
    pub operator_retention: Duration,
}

fn default_key_env() -> String {
    "FLEETPULSE_OPERATOR_KEY".into()
}

fn default_retention() -> Duration {
    Duration::from_secs(180 * 86_400)
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            operator_key_env: default_key_env(),
            require_operator_key: false,
            operator_retention: default_retention(),
        }
    }
}

/// Shortest key accepted.
pub const MIN_KEY_LEN: usize = 16;

impl PrivacyConfig {
    /// The pseudonymiser, from the key in the environment; `Ok(None)`
    /// without one (warned), an error naming the variable when it is
    /// required or too short.
    pub fn pseudonyms(&self) -> Result<Option<Arc<Pseudonyms>>, String> {
        match std::env::var(&self.operator_key_env) {
            Ok(key) if key.chars().count() >= MIN_KEY_LEN => {
                crate::secrets::register(&key);
                Ok(Some(Arc::new(Pseudonyms::new(key.as_bytes()))))
            }
            Ok(_) => Err(format!(
                "privacy.operator_key_env: ${} is shorter than {MIN_KEY_LEN} characters",
                self.operator_key_env
            )),
            Err(_) if self.require_operator_key => Err(format!(
                "privacy.require_operator_key: ${} is not set",
                self.operator_key_env
            )),
            Err(_) => {
                tracing::warn!(
                    variable = %self.operator_key_env,
                    "no operator pseudonym key: operator ids are stored in clear (docs/SECURITY.md)"
                );
                Ok(None)
            }
        }
    }
}

/// Turns operator ids into pseudonyms and remembers the way back in memory.
pub struct Pseudonyms {
    key: [u8; 32],
    directory: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for Pseudonyms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonyms { key: *** }")
    }
}

impl Pseudonyms {
    /// With a key of any length (hashed to 32 bytes).
    pub fn new(key: &[u8]) -> Self {
        use blake2::digest::{Digest, consts::U32};
        let key: [u8; 32] = blake2::Blake2b::<U32>::digest(key).into();
        Self {
            key,
            directory: Mutex::new(HashMap::new()),
        }
    }

    /// The pseudonym of `operator`; remembers it for [`Self::reveal`].
    pub fn pseudonym(&self, operator: &str) -> String {
        use blake2::digest::{Mac, consts::U32};
        let mut mac =
            blake2::Blake2bMac::<U32>::new_from_slice(&self.key).expect("a 32-byte key fits");
        mac.update(operator.as_bytes());
        let digest = mac.finalize().into_bytes();
        let pseudonym = format!(
            "{PREFIX}{}",
            &crate::http::auth::users::hex(&digest)[..DIGITS]
        );
        let mut directory = self.directory.lock().unwrap_or_else(|e| e.into_inner());
        if directory.len() >= DIRECTORY {
            directory.clear();
        }
        directory
            .entry(pseudonym.clone())
            .or_insert_with(|| operator.to_string());
        pseudonym
    }

    /// `text` (JSON) with each known pseudonym followed by its clear id:
    /// `op-… (badge-17)`. For admins only.
    pub fn reveal<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !text.contains(PREFIX) {
            return Cow::Borrowed(text);
        }
        let directory = self.directory.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find(PREFIX) {
            let end = at + PREFIX.len() + DIGITS;
            let candidate = rest.get(at..end);
            out.push_str(&rest[..at]);
            match candidate.and_then(|c| directory.get(c).map(|clear| (c, clear))) {
                Some((pseudonym, clear)) => {
                    // Inside a JSON string: escape the clear id as JSON.
                    let quoted = serde_json::to_string(clear).expect("a string serialises");
                    out.push_str(pseudonym);
                    out.push_str(" (");
                    out.push_str(&quoted[1..quoted.len() - 1]);
                    out.push(')');
                    rest = &rest[end..];
                }
                None => {
                    out.push_str(PREFIX);
                    rest = &rest[at + PREFIX.len()..];
                }
            }
        }
        out.push_str(rest);
        Cow::Owned(out)
    }
}

/// Alert evidence older than the retention with its operator removed:
/// `champion op-… logged` becomes `champion (operator removed after
/// retention) logged`.
pub fn expire_operator(evidence: &str) -> Cow<'_, str> {
    const REMOVED: &str = "champion (operator removed after retention) ";
    if evidence.starts_with(REMOVED) {
        return Cow::Borrowed(evidence);
    }
    let Some(rest) = evidence.strip_prefix("champion ") else {
        return Cow::Borrowed(evidence);
    };
    let Some((_, tail)) = rest.split_once(' ') else {
        return Cow::Borrowed(evidence);
    };
    Cow::Owned(format!("{REMOVED}{tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_stable_keyed_and_revealed_only_when_seen() {
        let a = Pseudonyms::new(b"key one for the unit test");
        let b = Pseudonyms::new(b"key two for the unit test");
        let p = a.pseudonym("badge-17");
        assert_eq!(p, a.pseudonym("badge-17"));
        assert_ne!(p, b.pseudonym("badge-17"), "another key, another pseudonym");
        assert_ne!(p, a.pseudonym("badge-18"));
        assert!(p.starts_with("op-") && p.len() == 3 + 16, "{p}");
        let json = format!("{{\"evidence\":\"champion {p} logged 90 h\"}}");
        assert_eq!(
            a.reveal(&json),
            format!("{{\"evidence\":\"champion {p} (badge-17) logged 90 h\"}}")
        );
        // Another key's directory does not know it.
        assert_eq!(b.reveal(&json), json);
        assert_eq!(a.reveal("op- nothing op-12"), "op- nothing op-12");
        let quote = a.pseudonym("o\"dd");
        assert!(a.reveal(&quote).contains("(o\\\"dd)"));
        assert!(!format!("{a:?}").contains("key one"));
    }

    #[test]
    fn a_required_key_that_is_missing_stops_the_start() {
        let config = PrivacyConfig {
            operator_key_env: "FLEETPULSE_UNIT_TEST_NEVER_SET_KEY".into(),
            require_operator_key: true,
            ..PrivacyConfig::default()
        };
        let err = config.pseudonyms().unwrap_err();
        assert!(err.contains("FLEETPULSE_UNIT_TEST_NEVER_SET_KEY"), "{err}");
        let optional = PrivacyConfig {
            require_operator_key: false,
            ..config
        };
        assert!(optional.pseudonyms().unwrap().is_none());
    }

    #[test]
    fn expired_evidence_loses_the_operator() {
        assert_eq!(
            expire_operator("champion op-0123456789abcdef logged 90 h in the baseline"),
            "champion (operator removed after retention) logged 90 h in the baseline"
        );
        assert_eq!(expire_operator("5 faults in 3 days"), "5 faults in 3 days");
        let once = expire_operator("champion op-1 logged 9 h").into_owned();
        assert_eq!(expire_operator(&once), once);
    }
}
