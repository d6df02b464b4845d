//! `fleetpulse recompute`: fold a customer's journey again from a date with
//! its definition in the customers file (outcomes, milestones, contract,
//! weights, thresholds), over the daily inputs the service keeps for the
//! contract's lifetime. The request goes into the archive's state file; a
//! running service takes it up within a second, a stopped one at its next
//! start. Outcomes, milestones, time to value, stage, health and alerts of
//! the days folded again are written again; an alert episode the definition
//! no longer raises is retracted. The service does the same by itself when
//! the customers file changes (SIGHUP, or the file's modification time).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

use crate::config::ServiceConfig;

/// `fleetpulse recompute` arguments.
#[derive(Debug, Clone, Args)]
pub struct RecomputeArgs {
    /// The customer.
    #[arg(long)]
    pub customer: String,
    /// First day folded again (`2026-03-01`, the customer's local day that
    /// holds its start in UTC); default: the first day kept.
    #[arg(long, value_parser = date_only)]
    pub from: Option<jiff::civil::Date>,
    /// The service's configuration: its `[wal]` dir holds the archive.
    #[arg(long, short)]
    pub config: PathBuf,
}

/// A `YYYY-MM-DD` date and nothing else (a time and offset after it were
/// dropped, and the fold started a day off).
fn date_only(text: &str) -> Result<jiff::civil::Date, String> {
    crate::customers::date_ms(text)?;
    text.parse().map_err(|e: jiff::Error| e.to_string())
}

/// Records the request; returns the `from` it asked for (ms).
pub fn run(args: &RecomputeArgs) -> anyhow::Result<u64> {
    let config = ServiceConfig::load(&args.config)?;
    if (config.cluster.as_ref()).is_some_and(|c| c.is_multi_process()) {
        bail!(
            "{}: a cluster of several processes keeps no archive: recompute needs one process",
            args.config.display()
        );
    }
    if config.engine.correction_horizon.is_zero() {
        bail!(
            "{}: engine.correction_horizon is 0: the service keeps no archive to recompute from",
            args.config.display()
        );
    }
    let Some(wal) = &config.wal else {
        bail!(
            "{}: no [wal]: the service keeps no archive",
            args.config.display()
        );
    };
    if let Some(customers) = &config.customers {
        let file = crate::customers::CustomersFile::load(&customers.file)?;
        if !file.customers.iter().any(|c| c.id == args.customer) {
            bail!(
                "customer `{}` is not in {}",
                args.customer,
                customers.file.display()
            );
        }
    }
    let from = match args.from {
        Some(date) => {
            let at = date
                .to_zoned(jiff::tz::TimeZone::UTC)
                .context("--from")?
                .timestamp()
                .as_millisecond();
            // A mistyped year (2062 for 2026) would fold nothing, silently.
            let today = jiff::Zoned::now().date();
            if date > today {
                bail!("--from {date} is after today ({today}): no day of it to fold again");
            }
            u64::try_from(at).context("--from is before 1970")?
        }
        None => 0,
    };
    let dir = wal.dir.join("archive");
    crate::corrections::request_recompute(&dir, &args.customer, from)?;
    println!(
        "recompute of `{}` from {} requested in {}: a running service folds its journey again \
         within seconds, a stopped one at its next start",
        args.customer,
        args.from
            .map_or_else(|| "its first kept day".to_string(), |d| d.to_string()),
        dir.display()
    );
    Ok(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A date after today is named, and nothing is requested.
    #[test]
    fn a_from_date_after_today_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("fleetpulse.toml");
        let wal = dir.path().join("wal");
        std::fs::write(
            &config,
            format!("[mqtt]\nhost = \"127.0.0.1\"\nport = 1883\n[wal]\ndir = {wal:?}\n"),
        )
        .unwrap();
        let args = RecomputeArgs {
            customer: "acme".into(),
            from: Some(jiff::civil::date(2999, 1, 1)),
            config,
        };
        let e = run(&args).unwrap_err().to_string();
        assert!(e.contains("--from 2999-01-01 is after today"), "{e}");
        assert!(!wal.exists(), "nothing requested");
    }
}
