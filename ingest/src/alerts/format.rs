//! What an alert looks like on the wire: the JSON message published on MQTT
//! ([`AlertMessage`]), its topic ([`alert_topic`]), the Slack-compatible
//! webhook body ([`slack_body`]) and the stable ids receivers deduplicate by
//! ([`alert_id`], [`notification_id`]). Plain functions, no I/O.

use fleetpulse_engine::AlertRecord;
use fleetpulse_engine::kpi::risk::AlertStatus;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One alert transition as published on MQTT. The field set and names are a
/// stable contract with consumers (CRM sync, automation): add fields, never
/// rename or remove them. Enumerations are their lower-case labels (`rule`
/// e.g. `usage_drop`, `status` `open` / `resolved` / `retracted`, `stage` e.g. `adopt`,
/// `segment` e.g. `high-touch`); times are given both as RFC 3339 (UTC) and
/// as milliseconds since the epoch.
///
/// A notification may arrive more than once (QoS 1, webhook retries, the
/// outbox retried after a restart): `notification_id` is the same each time,
/// so a receiver drops what it has already seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertMessage {
    /// Stable id of the alert episode: [`alert_id`] of (customer, rule,
    /// opening time). The same for its open and its resolve.
    pub alert_id: String,
    /// Stable id of this transition: [`notification_id`], `{alert_id}-open`,
    /// `{alert_id}-resolved-{resolved_at_ms}` or `{alert_id}-retracted`.
    /// Deduplicate by it.
    pub notification_id: String,
    /// Customer id.
    pub customer: String,
    /// Customer display name.
    pub customer_name: String,
    /// The at-risk rule, e.g. `usage_drop`.
    pub rule: String,
    /// `open`, `resolved`, or `retracted`: late telemetry (within the
    /// correction horizon) restated the days that raised the episode, and
    /// it never happened.
    pub status: String,
    /// Episode number of this rule for this customer, from 1.
    pub episode: u32,
    /// When the episode opened, RFC 3339 UTC.
    pub opened_at: String,
    /// When the episode opened, ms since the epoch.
    pub opened_at_ms: u64,
    /// When it resolved, RFC 3339 UTC; `null` while open.
    pub resolved_at: Option<String>,
    /// When it resolved, ms since the epoch; `null` while open.
    pub resolved_at_ms: Option<u64>,
    /// The numbers that fired (or resolved) it, in words.
    pub evidence: String,
    /// The measured value behind the rule.
    pub metric: f64,
    /// The threshold it was compared with.
    pub threshold: f64,
    /// Lifecycle stage at the time, e.g. `adopt`.
    pub stage: String,
    /// Coverage segment, e.g. `high-touch`.
    pub segment: String,
    /// Revenue at stake: the customer's ARR.
    pub arr_at_risk: f64,
    /// Suggested next action.
    pub next_action: String,
    /// Raised from the open day before it closed (`devices_dark` within a
    /// minute of the threshold, `fault_spike` and `champion_lost` from the
    /// day's hours): the day's close confirms it (not notified again) or
    /// retracts it (`retracted`, also `provisional`).
    #[serde(default)]
    pub provisional: bool,
}

impl AlertMessage {
    /// The message for one engine alert record.
    pub fn from_record(record: &AlertRecord) -> Self {
        let alert_id = alert_id(&record.customer, record.rule.as_str(), record.opened_at);
        Self {
            notification_id: notification_id(&alert_id, record.status, record.resolved_at),
            alert_id,
            customer: record.customer.to_string(),
            customer_name: record.customer_name.to_string(),
            rule: record.rule.as_str().to_owned(),
            status: record.status.as_str().to_owned(),
            episode: record.episode,
            opened_at: rfc3339(record.opened_at),
            opened_at_ms: record.opened_at,
            resolved_at: record.resolved_at.map(rfc3339),
            resolved_at_ms: record.resolved_at,
            evidence: record.evidence.clone(),
            metric: record.metric,
            threshold: record.threshold,
            stage: record.stage.as_str().to_owned(),
            segment: record.segment.as_str().to_owned(),
            arr_at_risk: record.arr_at_risk,
            next_action: record.next_action.clone(),
            provisional: record.provisional,
        }
    }

    /// The JSON payload.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an AlertMessage always serializes")
    }

    fn is_open(&self) -> bool {
        self.status == AlertStatus::Open.as_str()
    }
}

/// Stable id of an alert episode: FNV-1a (128 bit) of the customer id, the
/// rule and the opening time in ms (decimal), separated by a zero byte, as 32
/// lower-case hex digits. Recomputed the same after a restart or on another
/// member, so duplicates are recognised.
pub fn alert_id(customer: &str, rule: &str, opened_at_ms: u64) -> String {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let opened = opened_at_ms.to_string();
    let bytes = customer
        .bytes()
        .chain([0])
        .chain(rule.bytes())
        .chain([0])
        .chain(opened.bytes());
    let hash = bytes.fold(OFFSET, |hash, byte| {
        (hash ^ u128::from(byte)).wrapping_mul(PRIME)
    });
    format!("{hash:032x}")
}

/// Stable id of one transition of an episode: `{alert_id}-{status}`, and
/// for a resolve its date too (`{alert_id}-resolved-{ms}`): late
/// telemetry that moved an episode's resolution makes a transition of its
/// own, which a receiver dropping what it has seen must not take for the
/// first. Also the webhook's `Idempotency-Key`.
pub fn notification_id(alert_id: &str, status: AlertStatus, resolved_at: Option<u64>) -> String {
    match (status, resolved_at) {
        (AlertStatus::Resolved, Some(at)) => format!("{alert_id}-resolved-{at}"),
        _ => format!("{alert_id}-{}", status.as_str()),
    }
}

/// `ms` since the epoch as RFC 3339 UTC (`2024-03-01T00:00:00Z`).
pub fn rfc3339(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| format!("@{ms}ms"), |t| t.to_string())
}

/// The MQTT topic of a customer's alerts: `{prefix}/{customer}`. Characters
/// that would change the topic's structure (`/`, `+`, `#`) are replaced by
/// `_` (customer ids from telemetry topics never contain them).
pub fn alert_topic(prefix: &str, customer: &str) -> String {
    let customer: String = customer
        .chars()
        .map(|c| if matches!(c, '/' | '+' | '#') { '_' } else { c })
        .collect();
    format!("{}/{customer}", prefix.trim_end_matches('/'))
}

/// `120000.4` as `120,000`: whole units with thousands separators.
pub fn money(amount: f64) -> String {
    if !amount.is_finite() {
        return "?".into();
    }
    let rounded = amount.abs().round() as u64;
    let digits = rounded.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if amount < 0.0 && rounded > 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Escapes the three characters Slack's mrkdwn treats as control characters.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Whole days from `from` to `to` (ms), at least 0.
fn days_between(from: u64, to: u64) -> u64 {
    to.saturating_sub(from) / 86_400_000
}

/// The one-line fallback text of a webhook message, e.g.
/// `:rotating_light: Acme Quarry — usage_drop opened (low-touch, ARR 120,000
/// at stake): <evidence>. Next: <next action>`.
pub fn summary_line(message: &AlertMessage) -> String {
    let name = escape(&message.customer_name);
    let evidence = escape(message.evidence.trim_end().trim_end_matches('.'));
    let arr = money(message.arr_at_risk);
    if message.is_open() {
        format!(
            ":rotating_light: {name} — {rule} opened ({segment}, ARR {arr} at stake): {evidence}. Next: {next}",
            rule = message.rule,
            segment = message.segment,
            next = escape(&message.next_action),
        )
    } else if message.status == AlertStatus::Retracted.as_str() {
        format!(
            ":leftwards_arrow_with_hook: {name} — {rule} retracted ({segment}, ARR {arr}): {evidence}.",
            rule = message.rule,
            segment = message.segment,
        )
    } else {
        let after = message
            .resolved_at_ms
            .map(|resolved| {
                format!(
                    " after {} days",
                    days_between(message.opened_at_ms, resolved)
                )
            })
            .unwrap_or_default();
        format!(
            ":white_check_mark: {name} — {rule} resolved{after} ({segment}, ARR {arr}): {evidence}.",
            rule = message.rule,
            segment = message.segment,
        )
    }
}

/// Slack's limit for a section's text.
const SECTION_TEXT_MAX: usize = 3000;

fn clip(text: String) -> String {
    if text.chars().count() <= SECTION_TEXT_MAX {
        return text;
    }
    let mut clipped: String = text.chars().take(SECTION_TEXT_MAX - 1).collect();
    clipped.push('…');
    clipped
}

fn section(text: String) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(text)}})
}

/// The Slack-compatible webhook body: `text` (the [`summary_line`], shown in
/// notifications and by receivers that ignore blocks), simple `section`
/// blocks (headline, facts, evidence, next action for open alerts only), and
/// `alert_id` and `notification_id` (Slack ignores them; other receivers
/// deduplicate by them).
pub fn slack_body(message: &AlertMessage) -> Value {
    let name = escape(&message.customer_name);
    let headline = if message.is_open() && message.provisional {
        format!(
            ":rotating_light: *{name}* — `{}` opened (episode {}, provisional: the day's close confirms it)",
            message.rule, message.episode
        )
    } else if message.is_open() {
        format!(
            ":rotating_light: *{name}* — `{}` opened (episode {})",
            message.rule, message.episode
        )
    } else if message.status == AlertStatus::Retracted.as_str() && message.provisional {
        format!(
            ":leftwards_arrow_with_hook: *{name}* — `{}` retracted (episode {}): the day's close did not confirm it",
            message.rule, message.episode
        )
    } else if message.status == AlertStatus::Retracted.as_str() {
        format!(
            ":leftwards_arrow_with_hook: *{name}* — `{}` retracted (episode {}): late telemetry shows it did not happen",
            message.rule, message.episode
        )
    } else {
        format!(
            ":white_check_mark: *{name}* — `{}` resolved (episode {})",
            message.rule, message.episode
        )
    };
    let mut when = format!("*Opened*\n{}", message.opened_at);
    if let Some(resolved) = &message.resolved_at {
        when.push_str(&format!("\n*Resolved*\n{resolved}"));
    }
    let field = |text: String| json!({"type": "mrkdwn", "text": text});
    let facts = json!({
        "type": "section",
        "fields": [
            field(format!("*Customer*\n{name} (`{}`)", escape(&message.customer))),
            field(format!("*ARR at stake*\n{}", money(message.arr_at_risk))),
            field(format!("*Segment*\n{}", message.segment)),
            field(format!("*Stage*\n{}", message.stage)),
            field(format!(
                "*Metric / threshold*\n{} / {}",
                number(message.metric),
                number(message.threshold)
            )),
            field(when),
        ],
    });
    let mut blocks = vec![
        section(headline),
        facts,
        section(format!("*Evidence*\n{}", escape(&message.evidence))),
    ];
    if message.is_open() {
        blocks.push(section(format!(
            "*Next action*\n{}",
            escape(&message.next_action)
        )));
    }
    json!({
        "text": summary_line(message),
        "blocks": blocks,
        "alert_id": message.alert_id,
        "notification_id": message.notification_id,
    })
}

/// A measured value for people: at most 3 decimals, no trailing zeros.
fn number(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.into()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use fleetpulse_engine::Segment;
    use fleetpulse_engine::kpi::health::Stage;
    use fleetpulse_engine::kpi::risk::Rule;

    use super::*;

    /// 2024-03-01T00:00:00Z.
    pub(crate) const MARCH_1: u64 = 1_709_251_200_000;
    const DAY: u64 = 86_400_000;

    pub(crate) fn record(status: AlertStatus) -> AlertRecord {
        AlertRecord {
            customer: "c01-acme".into(),
            customer_name: "Acme Quarry".into(),
            rule: Rule::UsageDrop,
            episode: 2,
            status,
            provisional: false,
            opened_at: MARCH_1,
            resolved_at: (status == AlertStatus::Resolved).then_some(MARCH_1 + 9 * DAY),
            evidence: "operating hours 31% below the 28-day baseline (4.1 h/day vs 5.9 h/day)."
                .into(),
            metric: 0.31,
            threshold: 0.25,
            stage: Stage::Adopt,
            segment: Segment::LowTouch,
            arr_at_risk: 120_000.0,
            next_action: Rule::UsageDrop.next_action().into(),
        }
    }

    #[test]
    fn message_carries_every_field_with_both_time_forms() {
        let message = AlertMessage::from_record(&record(AlertStatus::Resolved));
        let json: Value = serde_json::from_slice(&message.to_json()).unwrap();
        assert_eq!(
            json,
            json!({
                "alert_id": alert_id("c01-acme", "usage_drop", MARCH_1),
                "notification_id": format!(
                    "{}-resolved-{}",
                    alert_id("c01-acme", "usage_drop", MARCH_1),
                    message.resolved_at_ms.unwrap()
                ),
                "customer": "c01-acme",
                "customer_name": "Acme Quarry",
                "rule": "usage_drop",
                "status": "resolved",
                "episode": 2,
                "opened_at": "2024-03-01T00:00:00Z",
                "opened_at_ms": MARCH_1,
                "resolved_at": "2024-03-10T00:00:00Z",
                "resolved_at_ms": MARCH_1 + 9 * DAY,
                "evidence": "operating hours 31% below the 28-day baseline (4.1 h/day vs 5.9 h/day).",
                "metric": 0.31,
                "threshold": 0.25,
                "stage": "adopt",
                "segment": "low-touch",
                "arr_at_risk": 120000.0,
                "next_action": Rule::UsageDrop.next_action(),
                "provisional": false,
            })
        );
        let open = AlertMessage::from_record(&record(AlertStatus::Open));
        let json: Value = serde_json::from_slice(&open.to_json()).unwrap();
        assert_eq!(json["status"], "open");
        assert!(json["resolved_at"].is_null());
        assert!(json["resolved_at_ms"].is_null());
        let back: AlertMessage = serde_json::from_value(json).unwrap();
        assert_eq!(back, open);
    }

    /// FNV-1a 128 written out bit by bit, independent of the fold above.
    fn fnv1a_128_reference(bytes: &[u8]) -> u128 {
        let prime = (1u128 << 88) + 0x13b;
        let mut hash = 144066263297769815596495629667062367629u128;
        for &byte in bytes {
            hash ^= u128::from(byte);
            hash = hash.wrapping_mul(prime);
        }
        hash
    }

    #[test]
    fn ids_are_stable_and_tell_episodes_and_transitions_apart() {
        let id = alert_id("c01-acme", "usage_drop", MARCH_1);
        assert_eq!(id.len(), 32);
        assert_eq!(
            id,
            format!(
                "{:032x}",
                fnv1a_128_reference(b"c01-acme\x00usage_drop\x001709251200000")
            )
        );
        // Published FNV-1a 128 vectors: "" and "a".
        assert_eq!(fnv1a_128_reference(b""), 0x6c62272e07bb014262b821756295c58d);
        assert_eq!(
            fnv1a_128_reference(b"a"),
            0xd228cb696f1a8caf78912b704e4a8964
        );
        assert_ne!(id, alert_id("c01-acme", "usage_drop", MARCH_1 + 1));
        assert_ne!(id, alert_id("c01-acme", "health_red", MARCH_1));
        assert_ne!(id, alert_id("c02-acme", "usage_drop", MARCH_1));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(alert_id("ab", "c", 1), alert_id("a", "bc", 1));

        let open = AlertMessage::from_record(&record(AlertStatus::Open));
        let resolved = AlertMessage::from_record(&record(AlertStatus::Resolved));
        assert_eq!(open.alert_id, id);
        assert_eq!(resolved.alert_id, id);
        assert_eq!(open.notification_id, format!("{id}-open"));
        let at = resolved.resolved_at_ms.unwrap();
        assert_eq!(resolved.notification_id, format!("{id}-resolved-{at}"));
        let body = slack_body(&open);
        assert_eq!(body["alert_id"], id);
        assert_eq!(body["notification_id"], open.notification_id);
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(MARCH_1 + 1_500), "2024-03-01T00:00:01.5Z");
        assert_eq!(rfc3339(u64::MAX), format!("@{}ms", u64::MAX));
    }

    #[test]
    fn topics_are_per_customer_and_cannot_be_wildcards() {
        assert_eq!(alert_topic("cs/alerts", "c01-acme"), "cs/alerts/c01-acme");
        assert_eq!(alert_topic("cs/alerts/", "c01"), "cs/alerts/c01");
        assert_eq!(alert_topic("cs/alerts", "a/b+#"), "cs/alerts/a_b__");
    }

    #[test]
    fn money_has_thousands_separators() {
        assert_eq!(money(0.0), "0");
        assert_eq!(money(999.4), "999");
        assert_eq!(money(1_000.0), "1,000");
        assert_eq!(money(120_000.0), "120,000");
        assert_eq!(money(1_234_567.6), "1,234,568");
        assert_eq!(money(-2_500.0), "-2,500");
        assert_eq!(money(f64::NAN), "?");
    }

    #[test]
    fn numbers_drop_trailing_zeros() {
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.123456), "0.123");
        assert_eq!(number(-0.0001), "0");
    }

    #[test]
    fn open_summary_names_customer_rule_money_evidence_and_next_action() {
        let message = AlertMessage::from_record(&record(AlertStatus::Open));
        assert_eq!(
            summary_line(&message),
            format!(
                ":rotating_light: Acme Quarry — usage_drop opened (low-touch, ARR 120,000 at stake): \
                 operating hours 31% below the 28-day baseline (4.1 h/day vs 5.9 h/day). Next: {}",
                Rule::UsageDrop.next_action()
            )
        );
    }

    #[test]
    fn resolved_summary_says_how_long_it_lasted() {
        let message = AlertMessage::from_record(&record(AlertStatus::Resolved));
        assert_eq!(
            summary_line(&message),
            ":white_check_mark: Acme Quarry — usage_drop resolved after 9 days (low-touch, ARR 120,000): \
             operating hours 31% below the 28-day baseline (4.1 h/day vs 5.9 h/day)."
        );
    }

    #[test]
    fn slack_control_characters_are_escaped() {
        let mut record = record(AlertStatus::Open);
        record.customer_name = "Smith & Sons <UK>".into();
        let message = AlertMessage::from_record(&record);
        assert!(summary_line(&message).contains("Smith &amp; Sons &lt;UK&gt;"));
    }

    #[test]
    fn slack_body_has_text_and_section_blocks() {
        let open = slack_body(&AlertMessage::from_record(&record(AlertStatus::Open)));
        assert!(
            open["text"]
                .as_str()
                .unwrap()
                .starts_with(":rotating_light:")
        );
        let blocks = open["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 4);
        assert!(blocks.iter().all(|b| b["type"] == "section"));
        let facts: Vec<&str> = blocks[1]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["text"].as_str().unwrap())
            .collect();
        assert!(facts.contains(&"*ARR at stake*\n120,000"), "{facts:?}");
        assert!(facts.contains(&"*Stage*\nadopt"), "{facts:?}");
        assert!(facts.contains(&"*Metric / threshold*\n0.31 / 0.25"));
        assert!(
            blocks[3]["text"]["text"]
                .as_str()
                .unwrap()
                .starts_with("*Next action*")
        );

        let resolved = slack_body(&AlertMessage::from_record(&record(AlertStatus::Resolved)));
        let blocks = resolved["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 3, "no next action once resolved");
        assert!(
            blocks[1]["fields"][5]["text"]
                .as_str()
                .unwrap()
                .contains("*Resolved*\n2024-03-10T00:00:00Z")
        );
    }

    #[test]
    fn long_evidence_is_clipped_to_slack_limits() {
        let mut record = record(AlertStatus::Open);
        record.evidence = "x".repeat(5000);
        let body = slack_body(&AlertMessage::from_record(&record));
        let evidence = body["blocks"][2]["text"]["text"].as_str().unwrap();
        assert_eq!(evidence.chars().count(), SECTION_TEXT_MAX);
        assert!(evidence.ends_with('…'));
    }

    #[test]
    fn a_retracted_episode_says_so_under_its_own_ids() {
        let message = AlertMessage::from_record(&record(AlertStatus::Retracted));
        let open = AlertMessage::from_record(&record(AlertStatus::Open));
        assert_eq!(message.status, "retracted");
        assert_eq!(message.alert_id, open.alert_id);
        assert_eq!(
            message.notification_id,
            format!("{}-retracted", open.alert_id)
        );
        let body = slack_body(&message);
        let text = body["text"].as_str().unwrap();
        assert!(text.contains("usage_drop retracted"), "{text}");
        let headline = body["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(headline.contains("retracted"), "{headline}");
        assert!(!headline.contains("resolved"), "{headline}");
    }
}
