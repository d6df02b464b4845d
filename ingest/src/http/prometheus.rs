//! `/metrics` in the Prometheus text format (version 0.0.4). Metric names are
//! the constants below (each family's help line says what it counts); the only labels are the reject reason and the sink,
//! never a customer or a device.
//!
//! [`render`] is a plain function over a [`Snapshot`], so the format is
//! unit-tested without a server.

use std::fmt::Write;

use fleetpulse_engine::StatsSnapshot;

use crate::metrics::{Family, RejectReason};

pub const MESSAGES_RECEIVED: Family = Family::counter(
    "fleetpulse_messages_received_total",
    "Messages taken from the broker.",
);
pub const BYTES_RECEIVED: Family = Family::counter(
    "fleetpulse_bytes_received_total",
    "Payload bytes taken from the broker.",
);
pub const INTAKE_BYTES: Family = Family::gauge(
    "fleetpulse_intake_queue_bytes",
    "Payload bytes received and not yet handed to the engine (at most mqtt.queue_bytes).",
);
pub const MESSAGES_REPLAYED: Family = Family::counter(
    "fleetpulse_messages_replayed_total",
    "Messages replayed from the write-ahead log at start.",
);
pub const MESSAGES_DECODED: Family = Family::counter(
    "fleetpulse_messages_decoded_total",
    "Messages whose payload decoded (accepted, or refused by a later check).",
);
pub const MESSAGES_ACCEPTED: Family = Family::counter(
    "fleetpulse_messages_accepted_total",
    "Messages that passed every check and went to the engine.",
);
pub const MESSAGES_REJECTED: Family = Family::counter(
    "fleetpulse_messages_rejected_total",
    "Messages refused, by reason.",
);
pub const SAMPLES_ACCEPTED: Family = Family::counter(
    "fleetpulse_samples_accepted_total",
    "Samples in accepted messages.",
);
pub const CONNECTION_ERRORS: Family = Family::counter(
    "fleetpulse_mqtt_connection_errors_total",
    "Times the broker connection failed.",
);
pub const OVERSIZED_PACKETS: Family = Family::counter(
    "fleetpulse_mqtt_oversized_packets_total",
    "Packets the broker sent above mqtt.max_packet_bytes (each broke the connection).",
);
pub const TAKEOVERS: Family = Family::counter(
    "fleetpulse_mqtt_takeovers_total",
    "Times the broker closed a connection and accepted the next at once (another client with the same client id).",
);
pub const DEAD_LETTER_WRITE_ERRORS: Family = Family::counter(
    "fleetpulse_dead_letter_write_errors_total",
    "Failed writes of dead letters (a full disk). With a WAL, a failed try of a group whose refused messages wait, unacknowledged, until their letters are written; without one, a refused message not kept.",
);
pub const CUSTOMERS_RELOAD_ERRORS: Family = Family::counter(
    "fleetpulse_customers_reload_errors_total",
    "Reloads of the customers file refused (it did not check, or named no customer); the previous definitions stay.",
);
pub const CUSTOMERS_RELOAD_FAILING: Family = Family::gauge(
    "fleetpulse_customers_reload_failing",
    "1 while the customers file on disk is not the one in effect: its last reload was refused (the log says why).",
);
pub const SESSION_CONTESTED: Family = Family::gauge(
    "fleetpulse_mqtt_session_contested",
    "1 while another client with this service's client id takes its MQTT session, again and again.",
);
pub const SUBSCRIBED: Family = Family::gauge(
    "fleetpulse_mqtt_subscribed",
    "1 while the telemetry subscription is acknowledged.",
);
pub const WATERMARK: Family = Family::gauge(
    "fleetpulse_engine_watermark_seconds",
    "The engine's event-time watermark, seconds since the epoch.",
);
pub const WATERMARK_LAG: Family = Family::gauge(
    "fleetpulse_engine_watermark_lag_seconds",
    "Wall time minus the engine's watermark, seconds (large when replaying old data).",
);
pub const ENGINE_SAMPLES: Family = Family::counter(
    "fleetpulse_engine_samples_total",
    "Readings the engine turned into usage (after deduplication).",
);
pub const ENGINE_DUPLICATES: Family = Family::counter(
    "fleetpulse_engine_duplicates_total",
    "Batches the engine dropped as already seen.",
);
pub const ENGINE_REPLAYS_TOO_OLD: Family = Family::counter(
    "fleetpulse_engine_replays_too_old_total",
    "Batches dropped as older than the replay window.",
);
pub const ENGINE_COUNTER_RESETS: Family = Family::counter(
    "fleetpulse_engine_counter_resets_total",
    "Cumulative device counters that went backwards.",
);
pub const ENGINE_COUNTER_JUMPS: Family = Family::counter(
    "fleetpulse_engine_counter_jumps_total",
    "Cumulative device counters that rose more than the time elapsed allows (counted as no work).",
);
pub const ENGINE_SEQUENCE_GAPS: Family = Family::gauge(
    "fleetpulse_engine_sequence_gaps",
    "Sequence numbers skipped by devices and not (yet) delivered.",
);
pub const ENGINE_DEVICES: Family = Family::gauge(
    "fleetpulse_engine_devices",
    "Devices the engine holds state for.",
);
pub const RECORDS_EMITTED: Family = Family::counter(
    "fleetpulse_records_emitted_total",
    "KPI records the engine emitted.",
);
pub const LATE_ADMITTED: Family = Family::counter(
    "fleetpulse_late_admitted_total",
    "Batches that arrived after their windows closed, within engine.correction_horizon: archived, and their windows restated.",
);
pub const DEVICES_BEHIND: Family = Family::gauge(
    "fleetpulse_devices_behind",
    "Devices whose readings arrive steadily behind the rest of the fleet for 30 minutes (a clock or time-zone setting hours off): every batch of them is late.",
);
pub const RESTATEMENTS: Family = Family::counter(
    "fleetpulse_restatements_total",
    "Restatement passes handed to the stores (one customer's closed windows computed again).",
);
pub const RECORDS_RESTATED: Family = Family::counter(
    "fleetpulse_records_restated_total",
    "Device and customer window records restated (written again with a higher revision).",
);
pub const RESTATEMENT_DAYS_READ: Family = Family::counter(
    "fleetpulse_restatement_days_read_total",
    "Archive day files the restatement passes read (each reads through the last window its late data changed).",
);
pub const RESTATEMENTS_FAILED: Family = Family::counter(
    "fleetpulse_restatements_failed_total",
    "Restatement and recompute attempts that failed and are retried (the log says why): one that keeps rising is a pass that cannot complete.",
);
pub const RECORDS_WRITTEN: Family = Family::counter(
    "fleetpulse_sink_records_written_total",
    "KPI records the sinks wrote.",
);
pub const SINK_WRITE_ERRORS: Family = Family::counter(
    "fleetpulse_sink_write_errors_total",
    "Failed sink write attempts (each failed retry counts).",
);
pub const SINKS_FAILING: Family = Family::gauge(
    "fleetpulse_sinks_failing",
    "Sinks whose last write attempt failed: their records wait (retried; the log says why), and the write-ahead log grows behind them.",
);
pub const SINK_QUEUE_DEPTH: Family = Family::gauge(
    "fleetpulse_sink_queue_depth",
    "Record batches waiting in the sink's queue.",
);
pub const SINK_QUEUE_CAPACITY: Family = Family::gauge(
    "fleetpulse_sink_queue_capacity",
    "Capacity of the sink's queue, in record batches.",
);
pub const WAL_BYTES: Family = Family::gauge(
    "fleetpulse_wal_bytes",
    "Bytes in the write-ahead log's segment files.",
);
pub const WAL_FULL: Family = Family::gauge(
    "fleetpulse_wal_full",
    "1 while the write-ahead log refuses records for lack of room (wal.max_bytes or a full disk): intake paused.",
);
pub const VIEW_CUSTOMERS: Family = Family::gauge(
    "fleetpulse_view_customers",
    "Customers the API's view holds.",
);
pub const VIEW_RECORDS: Family = Family::counter(
    "fleetpulse_view_records_total",
    "Records the API's view took in.",
);
pub const READY: Family = Family::gauge(
    "fleetpulse_ready",
    "1 while the service is running, subscribed, and its write-ahead log takes records.",
);

/// One sink's queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSnapshot {
    /// Label: position and kind, e.g. `0-sqlite`.
    pub sink: String,
    /// Batches waiting.
    pub depth: usize,
    /// Capacity in batches.
    pub capacity: usize,
}

/// Everything `/metrics` shows, read at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Messages taken from the broker.
    pub received: u64,
    /// Payload bytes taken from the broker.
    pub bytes: u64,
    /// Payload bytes on their way to the engine.
    pub intake_bytes: u64,
    /// Messages accepted.
    pub accepted: u64,
    /// Messages replayed from the WAL.
    pub replayed: u64,
    /// Samples accepted.
    pub samples: u64,
    /// Rejections per reason, in [`RejectReason::ALL`] order.
    pub rejected: Vec<(RejectReason, u64)>,
    /// Connection errors.
    pub connection_errors: u64,
    /// Packets above the client's packet limit.
    pub oversized_packets: u64,
    /// Likely takeovers of the MQTT session.
    pub takeovers: u64,
    /// Failed writes of dead letters.
    pub dead_letter_write_errors: u64,
    /// Refused reloads of the customers file.
    pub customers_reload_errors: u64,
    /// The customers file on disk is not the one in effect.
    pub customers_reload_failing: bool,
    /// The MQTT session fought over now.
    pub session_contested: bool,
    /// Subscription acknowledged.
    pub subscribed: bool,
    /// Watermark, ms since the epoch (0: none yet).
    pub watermark_ms: u64,
    /// Wall clock, ms since the epoch.
    pub now_ms: u64,
    /// Engine counters, once the engine has started.
    pub engine: Option<StatsSnapshot>,
    /// Records emitted by the engine.
    pub records_emitted: u64,
    /// Records written by the sinks.
    pub records_written: u64,
    /// Late batches admitted within the correction horizon.
    pub late_admitted: u64,
    /// Devices named steadily behind the fleet.
    pub devices_behind: u64,
    /// Restatement passes.
    pub restatements: u64,
    /// Records restated.
    pub records_restated: u64,
    /// Archive day files the passes read.
    pub restatement_days_read: u64,
    /// Restatement and recompute attempts that failed.
    pub restatements_failed: u64,
    /// Failed write attempts.
    pub write_errors: u64,
    /// Sinks whose last write attempt failed.
    pub sinks_failing: u64,
    /// Sink queues.
    pub queues: Vec<QueueSnapshot>,
    /// WAL bytes, when the service has a WAL.
    pub wal_bytes: Option<u64>,
    /// Whether the WAL is full, when the service has a WAL.
    pub wal_full: Option<bool>,
    /// Customers in the view.
    pub view_customers: usize,
    /// Records the view took in.
    pub view_records: u64,
    /// Running, subscribed, and the WAL not full.
    pub ready: bool,
    /// The AEMP sources' families, rendered by their registry.
    pub aemp: String,
}

/// Reasons that are found before the payload is decoded.
fn before_decode(reason: RejectReason) -> bool {
    matches!(
        reason,
        RejectReason::Topic | RejectReason::TooLarge | RejectReason::Decode
    )
}

/// The text exposition of `s`.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::with_capacity(4096);
    let mut metric = |family: Family, samples: &[(String, String)]| {
        family.write_head(&mut out);
        let name = family.name;
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let one = |v: u64| vec![(String::new(), v.to_string())];
    let secs = |ms: u64| format!("{:.3}", ms as f64 / 1000.0);

    metric(MESSAGES_RECEIVED, &one(s.received));
    metric(BYTES_RECEIVED, &one(s.bytes));
    metric(INTAKE_BYTES, &one(s.intake_bytes));
    let decoded = s.accepted
        + s.rejected
            .iter()
            .filter(|(r, _)| !before_decode(*r))
            .map(|(_, n)| n)
            .sum::<u64>();
    metric(MESSAGES_DECODED, &one(decoded));
    metric(MESSAGES_ACCEPTED, &one(s.accepted));
    let rejected: Vec<(String, String)> = s
        .rejected
        .iter()
        .map(|(r, n)| (format!("{{reason=\"{}\"}}", r.as_str()), n.to_string()))
        .collect();
    metric(MESSAGES_REJECTED, &rejected);
    metric(MESSAGES_REPLAYED, &one(s.replayed));
    metric(SAMPLES_ACCEPTED, &one(s.samples));
    metric(CONNECTION_ERRORS, &one(s.connection_errors));
    metric(OVERSIZED_PACKETS, &one(s.oversized_packets));
    metric(TAKEOVERS, &one(s.takeovers));
    metric(DEAD_LETTER_WRITE_ERRORS, &one(s.dead_letter_write_errors));
    metric(CUSTOMERS_RELOAD_ERRORS, &one(s.customers_reload_errors));
    metric(
        CUSTOMERS_RELOAD_FAILING,
        &one(u64::from(s.customers_reload_failing)),
    );
    metric(SESSION_CONTESTED, &one(u64::from(s.session_contested)));
    metric(SUBSCRIBED, &one(u64::from(s.subscribed)));
    if s.watermark_ms > 0 {
        metric(WATERMARK, &[(String::new(), secs(s.watermark_ms))]);
        let lag = s.now_ms as f64 / 1000.0 - s.watermark_ms as f64 / 1000.0;
        metric(WATERMARK_LAG, &[(String::new(), format!("{lag:.3}"))]);
    }
    if let Some(e) = &s.engine {
        metric(ENGINE_SAMPLES, &one(e.samples));
        metric(ENGINE_DUPLICATES, &one(e.duplicates));
        metric(ENGINE_REPLAYS_TOO_OLD, &one(e.replays_too_old));
        metric(ENGINE_COUNTER_RESETS, &one(e.counter_resets));
        metric(ENGINE_COUNTER_JUMPS, &one(e.counter_jumps));
        metric(
            ENGINE_SEQUENCE_GAPS,
            &[(String::new(), e.sequence_gaps.to_string())],
        );
        metric(ENGINE_DEVICES, &[(String::new(), e.devices.to_string())]);
    }
    metric(RECORDS_EMITTED, &one(s.records_emitted));
    metric(RECORDS_WRITTEN, &one(s.records_written));
    metric(LATE_ADMITTED, &one(s.late_admitted));
    metric(DEVICES_BEHIND, &one(s.devices_behind));
    metric(RESTATEMENTS, &one(s.restatements));
    metric(RECORDS_RESTATED, &one(s.records_restated));
    metric(RESTATEMENT_DAYS_READ, &one(s.restatement_days_read));
    metric(RESTATEMENTS_FAILED, &one(s.restatements_failed));
    metric(SINK_WRITE_ERRORS, &one(s.write_errors));
    metric(SINKS_FAILING, &one(s.sinks_failing));
    let label = |q: &QueueSnapshot| format!("{{sink=\"{}\"}}", escape_label(&q.sink));
    let per_queue = |value: fn(&QueueSnapshot) -> usize| -> Vec<(String, String)> {
        s.queues
            .iter()
            .map(|q| (label(q), value(q).to_string()))
            .collect()
    };
    metric(SINK_QUEUE_DEPTH, &per_queue(|q| q.depth));
    metric(SINK_QUEUE_CAPACITY, &per_queue(|q| q.capacity));
    if let Some(bytes) = s.wal_bytes {
        metric(WAL_BYTES, &one(bytes));
    }
    if let Some(full) = s.wal_full {
        metric(WAL_FULL, &one(u64::from(full)));
    }
    metric(
        VIEW_CUSTOMERS,
        &[(String::new(), s.view_customers.to_string())],
    );
    metric(VIEW_RECORDS, &one(s.view_records));
    metric(READY, &one(u64::from(s.ready)));
    out.push_str(&s.aemp);
    out
}

/// Escapes a label value: backslash, double quote, line feed.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_help_and_type_and_valid_lines() {
        let s = Snapshot {
            received: 10,
            accepted: 7,
            rejected: RejectReason::ALL.iter().map(|r| (*r, 1)).collect(),
            watermark_ms: 1_000_000,
            now_ms: 1_060_000,
            engine: Some(StatsSnapshot::default()),
            queues: vec![QueueSnapshot {
                sink: "0-sqlite".into(),
                depth: 2,
                capacity: 64,
            }],
            wal_bytes: Some(123),
            wal_full: Some(true),
            ..Snapshot::default()
        };
        let text = render(&s);
        assert!(text.contains("fleetpulse_messages_rejected_total{reason=\"too_late\"} 1\n"));
        // 7 accepted + one of each reason found after decoding.
        let decoded = 7 + RejectReason::ALL.len() - 3;
        assert!(
            text.contains(&format!("fleetpulse_messages_decoded_total {decoded}\n")),
            "{text}"
        );
        assert!(text.contains("fleetpulse_engine_watermark_lag_seconds 60.000\n"));
        assert!(text.contains("fleetpulse_sink_queue_depth{sink=\"0-sqlite\"} 2\n"));
        assert!(text.contains("fleetpulse_wal_bytes 123\n"));
        assert!(text.contains("fleetpulse_wal_full 1\n"));
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("fleetpulse_"), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
        let families = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!(
            families,
            text.lines().filter(|l| l.starts_with("# HELP")).count()
        );
        assert!(!render(&Snapshot::default()).contains(WAL_BYTES.name));
        assert!(!render(&Snapshot::default()).contains(WAL_FULL.name));
    }
}
