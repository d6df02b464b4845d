//! Per-source counters of the AEMP pollers, their Prometheus text and
//! their part of `/api/status`. One label, the source's configured name:
//! few values, never a machine.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::metrics::{Family, PerReason, Reason};

pub const POLLS: Family = Family::counter("fleetpulse_aemp_polls_total", "AEMP polls completed.");
pub const REQUESTS: Family =
    Family::counter("fleetpulse_aemp_requests_total", "AEMP HTTP requests sent.");
pub const READINGS: Family =
    Family::counter("fleetpulse_aemp_readings_total", "AEMP readings taken.");
pub const MESSAGES: Family = Family::counter(
    "fleetpulse_aemp_messages_total",
    "AEMP messages handed to the intake.",
);
pub const THROTTLED: Family = Family::counter(
    "fleetpulse_aemp_throttled_total",
    "AEMP answers 429 Too Many Requests.",
);
pub const ERRORS: Family = Family::counter(
    "fleetpulse_aemp_errors_total",
    "AEMP failed requests and refused readings by reason.",
);
pub const LAG: Family = Family::gauge(
    "fleetpulse_aemp_lag_seconds",
    "Lag of the least advanced AEMP machine behind snapshotTime.",
);
pub const MACHINES: Family = Family::gauge("fleetpulse_aemp_machines", "AEMP machines polled.");
pub const UNMAPPED: Family = Family::gauge(
    "fleetpulse_aemp_unmapped_equipment",
    "AEMP machines not in the customers file.",
);

/// Why a request failed or a reading was refused. Each has its counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AempError {
    /// Connection, TLS or timeout.
    Transport,
    /// 401/403, or the token endpoint refused.
    Auth,
    /// Another 4xx.
    HttpStatus,
    /// 5xx after every attempt.
    Http5xx,
    /// Still 429 after every attempt (or a `Retry-After` too long).
    Throttled,
    /// A body over `max_body_bytes`.
    TooLarge,
    /// Not well-formed XML or JSON, or not an AEMP document; an entry that
    /// cannot be read counts here too.
    Malformed,
    /// More pages than `max_pages`, or a `next` link seen before.
    EndlessPaging,
    /// A running total below its previous value.
    CounterBackwards,
    /// A running total that gained more than the time since its previous
    /// value allows.
    CounterJump,
    /// Faults beyond the most one sample carries, at one `datetime`.
    TooManyFaults,
    /// A fault's `CodeSeverity` not understood (taken as 2).
    UnknownSeverity,
    /// A `datetime` beyond the wall clock plus `limits.max_future`.
    FutureDatetime,
    /// The position file could not be written.
    PositionWrite,
}

impl AempError {
    /// Every reason, in counter order.
    pub const ALL: [AempError; 14] = [
        Self::Transport,
        Self::Auth,
        Self::HttpStatus,
        Self::Http5xx,
        Self::Throttled,
        Self::TooLarge,
        Self::Malformed,
        Self::EndlessPaging,
        Self::CounterBackwards,
        Self::CounterJump,
        Self::TooManyFaults,
        Self::UnknownSeverity,
        Self::FutureDatetime,
        Self::PositionWrite,
    ];

    /// Counter label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transport => "transport",
            Self::Auth => "auth",
            Self::HttpStatus => "http_status",
            Self::Http5xx => "http_5xx",
            Self::Throttled => "throttled",
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::EndlessPaging => "endless_paging",
            Self::CounterBackwards => "counter_backwards",
            Self::CounterJump => "counter_jump",
            Self::TooManyFaults => "too_many_faults",
            Self::UnknownSeverity => "unknown_severity",
            Self::FutureDatetime => "future_datetime",
            Self::PositionWrite => "position_write",
        }
    }
}

impl Reason for AempError {
    const VALUES: &'static [Self] = &Self::ALL;
}

/// Counters of one source.
#[derive(Debug, Default)]
pub struct SourceMetrics {
    /// The source's name.
    pub name: String,
    /// Polls completed.
    pub polls: AtomicU64,
    /// HTTP requests sent.
    pub requests: AtomicU64,
    /// Readings taken.
    pub readings: AtomicU64,
    /// Messages handed to the intake.
    pub messages: AtomicU64,
    /// Answers 429.
    pub throttled: AtomicU64,
    errors: PerReason<AempError>,
    /// Lag of the least advanced machine behind `snapshotTime`, ms.
    pub lag_ms: AtomicU64,
    /// Machines polled.
    pub machines: AtomicU64,
    /// Unmapped machines in the last snapshot.
    pub unmapped: AtomicU64,
    /// The last poll brought every machine up to the wall clock without an
    /// error.
    pub caught_up: AtomicBool,
}

impl SourceMetrics {
    /// Counters for source `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }

    /// Counts `n` of `reason`, and logs the first few and then one in a
    /// hundred.
    pub fn error(&self, reason: AempError, n: u64, detail: &str) {
        if n == 0 {
            return;
        }
        let count = self.errors.add(reason, n);
        if count <= 10 || count / 100 != (count - n) / 100 {
            tracing::warn!(
                source = %self.name,
                reason = reason.as_str(),
                count,
                "AEMP: {}",
                crate::secrets::redact(detail)
            );
        }
    }

    /// Errors counted for `reason`.
    pub fn errors(&self, reason: AempError) -> u64 {
        self.errors.get(reason)
    }

    /// The status document of this source.
    pub fn status(&self) -> SourceStatus {
        SourceStatus {
            source: self.name.clone(),
            polls: self.polls.load(Relaxed),
            requests: self.requests.load(Relaxed),
            readings: self.readings.load(Relaxed),
            messages: self.messages.load(Relaxed),
            throttled: self.throttled.load(Relaxed),
            errors: AempError::ALL
                .iter()
                .map(|e| (e.as_str(), self.errors(*e)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            lag_seconds: self.lag_ms.load(Relaxed) as f64 / 1000.0,
            machines: self.machines.load(Relaxed),
            unmapped: self.unmapped.load(Relaxed),
            caught_up: self.caught_up.load(Relaxed),
        }
    }
}

/// One source in `/api/status`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AempSource)]
pub struct SourceStatus {
    /// Name.
    pub source: String,
    /// Polls completed.
    pub polls: u64,
    /// Requests sent.
    pub requests: u64,
    /// Readings taken.
    pub readings: u64,
    /// Messages handed to the intake.
    pub messages: u64,
    /// Answers 429.
    pub throttled: u64,
    /// Non-zero error counters by reason.
    pub errors: std::collections::BTreeMap<&'static str, u64>,
    /// Lag of the least advanced machine behind `snapshotTime`.
    pub lag_seconds: f64,
    /// Machines polled.
    pub machines: u64,
    /// Unmapped machines in the last snapshot.
    pub unmapped: u64,
    /// The last poll brought every machine up to date without an error.
    pub caught_up: bool,
}

/// The sources of a service, for `/metrics` and `/api/status`.
#[derive(Debug, Default)]
pub struct AempRegistry(Mutex<Vec<Arc<SourceMetrics>>>);

impl AempRegistry {
    /// Registers (or finds) the counters of source `name`.
    pub fn source(&self, name: &str) -> Arc<SourceMetrics> {
        let mut sources = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = sources.iter().find(|s| s.name == name) {
            return found.clone();
        }
        let metrics = Arc::new(SourceMetrics::new(name));
        sources.push(metrics.clone());
        metrics
    }

    /// Every registered source.
    pub fn sources(&self) -> Vec<Arc<SourceMetrics>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Status of every source.
    pub fn status(&self) -> Vec<SourceStatus> {
        self.sources().iter().map(|s| s.status()).collect()
    }

    /// The Prometheus text of every source; empty without sources.
    pub fn render(&self) -> String {
        let sources = self.sources();
        let mut out = String::new();
        if sources.is_empty() {
            return out;
        }
        let label = |s: &SourceMetrics| format!("{{source=\"{}\"}}", s.name);
        // Each family's counter (the lag is held in ms, shown in s).
        type Read = fn(&SourceMetrics) -> &AtomicU64;
        let families: [(Family, Read); 8] = [
            (POLLS, |s| &s.polls),
            (REQUESTS, |s| &s.requests),
            (READINGS, |s| &s.readings),
            (MESSAGES, |s| &s.messages),
            (THROTTLED, |s| &s.throttled),
            (LAG, |s| &s.lag_ms),
            (MACHINES, |s| &s.machines),
            (UNMAPPED, |s| &s.unmapped),
        ];
        for (family, read) in families {
            family.write_head(&mut out);
            for s in &sources {
                let n = read(s).load(Relaxed);
                let value = if family.name == LAG.name {
                    format!("{:.3}", n as f64 / 1000.0)
                } else {
                    n.to_string()
                };
                let _ = writeln!(out, "{}{} {value}", family.name, label(s));
            }
        }
        ERRORS.write_head(&mut out);
        for s in &sources {
            for e in AempError::ALL {
                let _ = writeln!(
                    out,
                    "{}{{source=\"{}\",reason=\"{}\"}} {}",
                    ERRORS.name,
                    s.name,
                    e.as_str(),
                    s.errors(e)
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_renders_under_its_label() {
        let registry = AempRegistry::default();
        assert_eq!(registry.render(), "");
        let a = registry.source("oem-a");
        registry.source("oem-b").throttled.fetch_add(3, Relaxed);
        a.error(AempError::Malformed, 2, "bad");
        assert!(Arc::ptr_eq(&a, &registry.source("oem-a")));
        let text = registry.render();
        assert!(text.contains("fleetpulse_aemp_throttled_total{source=\"oem-b\"} 3"));
        assert!(
            text.contains("fleetpulse_aemp_errors_total{source=\"oem-a\",reason=\"malformed\"} 2")
        );
        let status = registry.status();
        assert_eq!(status[0].errors["malformed"], 2);
    }
}
