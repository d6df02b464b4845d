//! The telemetry topic scheme: `fleet/{customer}/{site}/{device}/telemetry`,
//! and `.../backfill` for a customer's recorded history (`fleetpulse
//! backfill`), which the service takes in however old it is.

use thiserror::Error;

/// Subscription filter that matches every device's telemetry topic.
pub const TELEMETRY_FILTER: &str = "fleet/+/+/+/telemetry";

/// Subscription filter that matches every device's backfill topic.
pub const BACKFILL_FILTER: &str = "fleet/+/+/+/backfill";

/// What a topic carries: live telemetry, or recorded history loaded by an
/// operator (`fleetpulse backfill`; devices may not publish there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TopicKind {
    /// `.../telemetry`: the device's own messages.
    #[default]
    Telemetry,
    /// `.../backfill`: history older than the correction horizon is taken
    /// in when the customer's journey can be folded again from it.
    Backfill,
}

impl TopicKind {
    /// The kind a topic's last level names (`telemetry`, `backfill`).
    pub fn of_level(level: &str) -> Option<Self> {
        match level {
            "telemetry" => Some(Self::Telemetry),
            "backfill" => Some(Self::Backfill),
            _ => None,
        }
    }

    /// The kind of `topic` by its last level alone, without checking its
    /// ids (for a topic admission already took).
    pub fn of(topic: &str) -> Option<Self> {
        topic.rsplit('/').next().and_then(Self::of_level)
    }
}

/// Longest id (customer, site, device, operator) accepted, in bytes.
pub const MAX_ID_BYTES: usize = 64;

/// The ids a telemetry topic names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicIds<'a> {
    /// `{customer}` level.
    pub customer: &'a str,
    /// `{site}` level.
    pub site: &'a str,
    /// `{device}` level.
    pub device: &'a str,
    /// Telemetry or backfill.
    pub kind: TopicKind,
}

/// Why a topic is not a telemetry topic.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TopicError {
    /// The topic does not have the shape `fleet/{customer}/{site}/{device}/telemetry`.
    #[error(
        "topic `{0}` is not of the form fleet/{{customer}}/{{site}}/{{device}}/telemetry (or /backfill)"
    )]
    Shape(String),
    /// One of the id levels is empty, too long or holds a forbidden character.
    #[error("topic `{topic}`: {level} id is invalid: {reason}")]
    Id {
        /// The whole topic.
        topic: String,
        /// Which level: customer, site or device.
        level: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The topic a device publishes its telemetry on.
pub fn telemetry_topic(customer: &str, site: &str, device: &str) -> String {
    format!("fleet/{customer}/{site}/{device}/telemetry")
}

/// The topic `fleetpulse backfill` publishes a device's history on.
pub fn backfill_topic(customer: &str, site: &str, device: &str) -> String {
    format!("fleet/{customer}/{site}/{device}/backfill")
}

impl<'a> TopicIds<'a> {
    /// Parses a telemetry or backfill topic into its ids.
    pub fn parse(topic: &'a str) -> Result<Self, TopicError> {
        let mut levels = topic.split('/');
        let shape = || TopicError::Shape(topic.to_owned());
        if levels.next() != Some("fleet") {
            return Err(shape());
        }
        let customer = levels.next().ok_or_else(shape)?;
        let site = levels.next().ok_or_else(shape)?;
        let device = levels.next().ok_or_else(shape)?;
        let kind = (levels.next())
            .and_then(TopicKind::of_level)
            .ok_or_else(shape)?;
        if levels.next().is_some() {
            return Err(shape());
        }
        for (level, id) in [("customer", customer), ("site", site), ("device", device)] {
            check_id(id).map_err(|reason| TopicError::Id {
                topic: topic.to_owned(),
                level,
                reason,
            })?;
        }
        Ok(Self {
            customer,
            site,
            device,
            kind,
        })
    }
}

/// Checks an id for use as a topic level and a store tag: non-empty, at most
/// [`MAX_ID_BYTES`] bytes, no MQTT wildcard or separator, no control character.
pub fn check_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("empty");
    }
    if id.len() > MAX_ID_BYTES {
        return Err("longer than 64 bytes");
    }
    if forbidden(id) {
        return Err(
            "contains '/', '+', '#', a control character or an invisible one (zero-width, \
             direction mark or override, soft hyphen, byte order mark)",
        );
    }
    Ok(())
}

/// The invisible characters an id may not hold: zero-width spaces and
/// joiners, direction marks, embeddings, overrides and isolates, word
/// joiner and invisible operators, soft hyphen, byte order mark. With them
/// `ac\u{200b}me` would be another customer than `acme` that reads the
/// same, and a right-to-left override shows an id backwards.
fn invisible(c: char) -> bool {
    direction_override(c)
        || matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{2060}'..='\u{2064}' | '\u{feff}')
}

/// An explicit direction embedding, override or isolate: text after it
/// shows in another order than it is stored (free text refuses it too).
pub fn direction_override(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Whether `id` holds '/', '+', '#', a control character (Unicode `Cc`) or
/// an [`invisible`] one, read byte by byte (every reading's operator and
/// features pass here): in UTF-8 the C0 controls and DEL are single bytes,
/// the C1 controls (U+0080 to U+009F) and the soft hyphen are 0xC2 and a
/// second byte, the other invisible ones start with 0xE2 or 0xEF, which
/// only then are decoded.
fn forbidden(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.iter().enumerate().any(|(i, &b)| match b {
        b'/' | b'+' | b'#' | 0x00..=0x1f | 0x7f => true,
        0xc2 => bytes
            .get(i + 1)
            .is_some_and(|next| (0x80..=0x9f).contains(next) || *next == 0xad),
        0xe2 | 0xef => id
            .get(i..)
            .and_then(|rest| rest.chars().next())
            .is_some_and(invisible),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The byte scan finds what a scan of the characters finds, for any
        /// text and for text made of the edges (controls, DEL, the C1
        /// block and the characters around it, the wildcards).
        #[test]
        fn the_byte_scan_agrees_with_the_characters(
            any in ".*",
            edges in proptest::collection::vec(proptest::sample::select(vec![
                'a', '/', '+', '#', '\0', '\u{1f}', ' ', '\u{7e}', '\u{7f}', '\u{80}',
                '\u{9f}', '\u{a0}', '\u{ad}', '\u{ae}', '\u{c2}', '\u{100}', '\u{200a}',
                '\u{200b}', '\u{200f}', '\u{2010}', '\u{2028}', '\u{202e}', '\u{2060}',
                '\u{2065}', '\u{2069}', '\u{20ac}', '\u{feff}', '\u{fffd}', 'é', '🚜',
            ]), 0..6),
        ) {
            let edges: String = edges.into_iter().collect();
            for id in [any.as_str(), edges.as_str()] {
                let by_chars = id
                    .chars()
                    .any(|c| matches!(c, '/' | '+' | '#') || c.is_control() || invisible(c));
                proptest::prop_assert_eq!(forbidden(id), by_chars, "{:?}", id);
            }
        }
    }

    #[test]
    fn round_trips_a_topic() {
        let topic = telemetry_topic("acme", "north-pit", "exc-07");
        let ids = TopicIds::parse(&topic).unwrap();
        assert_eq!(
            ids,
            TopicIds {
                customer: "acme",
                site: "north-pit",
                device: "exc-07",
                kind: TopicKind::Telemetry,
            }
        );
        let topic = backfill_topic("acme", "north-pit", "exc-07");
        let ids = TopicIds::parse(&topic).unwrap();
        assert_eq!(ids.kind, TopicKind::Backfill);
        assert_eq!(ids.device, "exc-07");
    }

    #[test]
    fn rejects_wrong_shapes() {
        for topic in [
            "fleet/a/b/telemetry",
            "fleet/a/b/c/d/telemetry",
            "fleet/a/b/c/status",
            "devices/a/b/c/telemetry",
            "fleet/a/b/c/telemetry/x",
            "fleet/a/b/c/backfill/x",
        ] {
            assert!(
                matches!(TopicIds::parse(topic), Err(TopicError::Shape(_))),
                "{topic}"
            );
        }
    }

    #[test]
    fn rejects_bad_ids() {
        let long = "x".repeat(65);
        let topic = telemetry_topic("acme", &long, "d");
        let err = TopicIds::parse(&topic).unwrap_err();
        assert!(matches!(err, TopicError::Id { level: "site", .. }), "{err}");
        assert!(TopicIds::parse("fleet//b/c/telemetry").is_err());
    }

    /// An id that reads as another (a zero-width space inside, a right-to-
    /// left override) is refused; visible non-ASCII letters are not.
    #[test]
    fn rejects_ids_with_invisible_characters() {
        for id in [
            "ac\u{200b}me",
            "\u{feff}acme",
            "acme\u{202e}",
            "ac\u{ad}me",
            "a\u{2066}b",
        ] {
            let err = check_id(id).unwrap_err();
            assert!(err.contains("invisible"), "{id:?}: {err}");
        }
        for id in ["acme", "straße", "café", "出租车", "a\u{2010}b", "€"] {
            assert!(check_id(id).is_ok(), "{id:?}");
        }
    }

    #[test]
    fn accepts_utf8_ids() {
        let topic = telemetry_topic("bäckerei-müller", "süd", "öfen 1");
        assert_eq!(TopicIds::parse(&topic).unwrap().customer, "bäckerei-müller");
    }
}
