//! How far back each store keeps what it is given. A store drops points
//! older than its retention: VictoriaMetrics answers 204 and drops them
//! without a word (`-retentionPeriod`, one month by default), InfluxDB 1.x
//! writes the rest of the request and answers 400 ("points beyond
//! retention policy dropped"). So a history backfilled from before it, or
//! a window restated after it, is lost in that store while fleetpulse
//! reports it sent: `fleetpulse backfill` asks first ([`of`]).

use std::fmt;
use std::time::Duration;

use reqwest::Url;

use super::SinkConfig;
use super::influxdb::{InfluxDbV1Sink, client_builder, parse_base_url};

/// What a store keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retention {
    /// Everything (SQLite; InfluxDB's `0s` policy).
    Forever,
    /// Points no older than `period`, as `setting` says.
    For {
        /// How far back.
        period: Duration,
        /// Where it is set, as the operator would change it.
        setting: String,
    },
    /// Not known: the store does not say (InfluxDB 2.x buckets are not
    /// asked), or could not be asked (the reason).
    Unknown(String),
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Retention::Forever => f.write_str("keeps everything"),
            Retention::For { period, setting } => {
                let hours = period.as_secs_f64() / 3_600.0;
                if hours < 48.0 {
                    write!(f, "keeps {hours:.0}h ({setting})")
                } else {
                    write!(f, "keeps {:.0} days ({setting})", hours / 24.0)
                }
            }
            Retention::Unknown(why) => write!(f, "retention unknown: {why}"),
        }
    }
}

/// The retention of the store `config` writes to. Makes only requests
/// that read.
pub async fn of(config: &SinkConfig) -> Retention {
    match config {
        SinkConfig::Sqlite(_) => Retention::Forever,
        SinkConfig::InfluxDbV1(config) => {
            let sink = match InfluxDbV1Sink::new(config) {
                Ok(sink) => sink,
                Err(e) => return Retention::Unknown(e.to_string()),
            };
            let (client, base) = sink.endpoint();
            if let Some(found) = victoria_metrics(client, base).await {
                return found;
            }
            match sink.default_retention().await {
                Ok(None) => Retention::Forever,
                Ok(Some(period)) => Retention::For {
                    period,
                    setting: format!(
                        "the default retention policy of InfluxDB database `{}`",
                        config.database
                    ),
                },
                Err(e) => Retention::Unknown(e.to_string()),
            }
        }
        SinkConfig::InfluxDbV2(config) => {
            let base = match parse_base_url(&config.url) {
                Ok(base) => base,
                Err(e) => return Retention::Unknown(e.to_string()),
            };
            let client = match client_builder().build() {
                Ok(client) => client,
                Err(e) => return Retention::Unknown(e.to_string()),
            };
            victoria_metrics(&client, &base).await.unwrap_or_else(|| {
                Retention::Unknown(format!(
                    "not VictoriaMetrics; InfluxDB 2.x bucket `{}`'s retention is not asked",
                    config.bucket
                ))
            })
        }
    }
}

/// VictoriaMetrics' `-retentionPeriod`, which its `/metrics` shows (the
/// default too); `None` when `base` is not VictoriaMetrics.
async fn victoria_metrics(client: &reqwest::Client, base: &Url) -> Option<Retention> {
    let url = base.join("metrics").ok()?;
    let response = client.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let text = response.text().await.ok()?;
    let value = vm_flag(&text, "retentionPeriod")?;
    Some(match vm_period(value) {
        Ok(period) => Retention::For {
            period,
            setting: format!("VictoriaMetrics -retentionPeriod={value}"),
        },
        Err(e) => Retention::Unknown(e),
    })
}

/// The value of flag `name` in VictoriaMetrics' `/metrics`:
/// `flag{name="retentionPeriod", value="1", is_set="false"} 1`.
fn vm_flag<'a>(metrics: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("flag{{name=\"{name}\", value=\"");
    let line = metrics.lines().find(|l| l.starts_with(&prefix))?;
    let rest = &line[prefix.len()..];
    Some(&rest[..rest.find('"')?])
}

/// A `-retentionPeriod`: a number of months (31 days each, as
/// VictoriaMetrics counts them) without a suffix, else with `s`, `m`
/// (minutes), `h`, `d`, `w` or `y` (365 days).
fn vm_period(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 'M'),
    };
    let seconds = match unit {
        's' => 1.0,
        'm' => 60.0,
        'h' => 3_600.0,
        'd' => 86_400.0,
        'w' => 7.0 * 86_400.0,
        'y' => 365.0 * 86_400.0,
        'M' => 31.0 * 86_400.0,
        _ => return Err(format!("-retentionPeriod `{text}`: unknown unit `{unit}`")),
    };
    let n: f64 = (number.parse().ok())
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)
        .ok_or_else(|| format!("-retentionPeriod `{text}` is not a duration"))?;
    Ok(Duration::from_secs_f64(n * seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    #[test]
    fn victoria_metrics_periods_are_months_without_a_suffix() {
        let days = |text| vm_period(text).unwrap().as_secs() / DAY;
        assert_eq!(days("1"), 31);
        assert_eq!(days("12"), 372);
        assert_eq!(days("30d"), 30);
        assert_eq!(days("2w"), 14);
        assert_eq!(days("100y"), 36_500);
        assert_eq!(vm_period("48h").unwrap(), Duration::from_secs(2 * DAY));
        assert!(vm_period("1x").is_err());
        assert!(vm_period("d").is_err());
    }

    #[test]
    fn the_flag_is_read_from_victoria_metrics_own_metrics() {
        let metrics = "vm_rows{type=\"x\"} 3\n\
             flag{name=\"retentionPeriod\", value=\"2w\", is_set=\"true\"} 1\n\
             flag{name=\"search.disableCache\", value=\"true\", is_set=\"true\"} 1\n";
        assert_eq!(vm_flag(metrics, "retentionPeriod"), Some("2w"));
        assert_eq!(vm_flag(metrics, "dedup.minScrapeInterval"), None);
    }

    #[test]
    fn influx_durations_read_as_go_writes_them_through_humantime() {
        assert_eq!(
            humantime::parse_duration("720h0m0s").unwrap(),
            Duration::from_secs(30 * DAY)
        );
        assert_eq!(
            humantime::parse_duration("1h0m0s").unwrap(),
            Duration::from_secs(3_600)
        );
        assert_eq!(humantime::parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(
            humantime::parse_duration("1h30m").unwrap(),
            Duration::from_secs(5_400)
        );
        assert_eq!(
            humantime::parse_duration("500ms").unwrap(),
            Duration::from_millis(500)
        );
        for bad in ["", "720", "h", "1x"] {
            assert!(humantime::parse_duration(bad).is_err(), "{bad}");
        }
    }
}
