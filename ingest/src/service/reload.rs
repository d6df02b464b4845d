//! The customers file, reloaded on SIGHUP and when it (or the contract
//! events file it names) changes on disk: a
//! changed definition (outcome target, milestone, contract dates, weights,
//! thresholds) folds the customer's journey again from its first kept day
//! (the corrections thread's recompute). A customer added, removed or moved
//! to another time zone stops a single process so that it starts again in
//! place: admission, the engine and the view take in the customers a start
//! finds (an added customer's telemetry refused until then is sent again
//! from the dead letters after the start: [`crate::replay::onboarded`]). A file that does not check keeps the
//! old definitions, and says why; so does one that names no customer while
//! the service serves some (an emptied file would offboard the whole fleet).
//! What the HTTP port reads of the file (who manages which customer, the
//! contract events, the coverage model) is taken in at each reload, with or
//! without the archive: a CSM taken off a customer loses it at once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fleetpulse_engine::EngineConfig;
use tokio_util::sync::CancellationToken;

use crate::config::ServiceConfig;
use crate::corrections::Corrections;
use crate::http::Hub;

/// How often the file's modification time and length are looked at; a
/// change is taken once it has held still for one look.
const POLL: Duration = Duration::from_secs(2);

/// Watches `config`'s customers file until `stop`; cancels `restart` when
/// it changes which customers a single process serves, or their time zones,
/// and returns the customers it added (none when it stopped otherwise).
pub async fn watch(
    config: ServiceConfig,
    engine: EngineConfig,
    corrections: Option<Corrections>,
    hub: Option<Arc<Hub>>,
    stop: CancellationToken,
    restart: CancellationToken,
) -> Vec<String> {
    let Some(path) = config.customers.as_ref().map(|c| c.file.clone()) else {
        return Vec::new();
    };
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!(error = %e, "no SIGHUP handler: the customers file is reloaded when it changes only");
            None
        }
    };
    // The file and the contract events file it names: a CRM export that
    // rewrites only the latter changes the retention figures.
    let mut watched = watched(&path);
    let mut seen = looks(&watched);
    let mut changed = None;
    loop {
        let signalled = async {
            match &mut hangup {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return Vec::new(),
            _ = signalled => {}
            _ = tokio::time::sleep(POLL) => {
                if !settled(seen.clone(), &mut changed, looks(&watched)) {
                    continue;
                }
            }
        }
        changed = None;
        watched = self::watched(&path);
        seen = looks(&watched);
        let metrics = hub.as_ref().and_then(|h| h.metrics());
        let refused = |why: &str| {
            if let Some(metrics) = &metrics {
                metrics.customers_reload_failed(why);
            }
        };
        match super::load_customers(&config, &engine) {
            // Emptied by mistake (`>`, a failed export, an editor stalled
            // between truncating and writing) far more often than meant.
            Ok(Some((_, specs, _))) if specs.is_empty() && !engine.customers.is_empty() => {
                tracing::error!(
                    file = %path.display(),
                    serving = engine.customers.len(),
                    "customers file not reloaded: it names no customer now, and taken in it would \
                     offboard every customer and refuse the whole fleet's telemetry; the previous \
                     definitions stay. To offboard every customer, restart the service on it"
                );
                refused("it names no customer");
            }
            Ok(Some((file, specs, book))) => {
                if let Some(metrics) = &metrics {
                    metrics.customers_reloaded();
                }
                file.warn();
                if let Some(hub) = &hub {
                    hub.reload_customers(&file, &path, book);
                }
                let changes = roster_changes(&engine, &specs);
                // Changed definitions first: their recompute is noted in
                // the archive before a start in place stops the thread.
                match &corrections {
                    Some(corrections) => {
                        tracing::info!(file = %path.display(), customers = specs.len(), "customers file reloaded");
                        corrections.customers(specs);
                    }
                    None if changes.is_empty() => tracing::warn!(
                        file = %path.display(),
                        "customers file changed: without the archive ([wal] and a correction horizon above 0) a changed definition takes effect at the next restart (contract events and who manages whom are taken in now)"
                    ),
                    None => {}
                }
                if changes.is_empty() {
                    continue;
                }
                let cluster = (config.cluster.as_ref()).is_some_and(|c| c.is_multi_process());
                if cluster {
                    tracing::warn!(
                        changes = ?shown(&changes),
                        "customers added, removed or moved to another time zone in the customers file: a cluster takes that in when all its members restart"
                    );
                    continue;
                }
                tracing::info!(
                    changes = ?shown(&changes),
                    "customers added, removed or moved to another time zone in the customers file: the service stops and starts again in place to take that in"
                );
                restart.cancel();
                let added = changes.iter().filter(|c| c.change == Change::Added);
                return added.map(|c| c.customer.clone()).collect();
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "customers file not reloaded; the previous definitions stay");
                refused(&e.to_string());
            }
        }
    }
}

/// The changes as the log shows them (`c03 added`).
fn shown(changes: &[RosterChange]) -> Vec<String> {
    changes.iter().map(ToString::to_string).collect()
}

/// A change of who is served, which admission, the engine and the view
/// take in only at a start.
#[derive(Debug, PartialEq)]
struct RosterChange {
    customer: String,
    change: Change,
}

#[derive(Debug, PartialEq)]
enum Change {
    Added,
    Removed,
    /// To another time zone (a day's bounds): from, to.
    Moved(String, String),
}

impl std::fmt::Display for RosterChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = &self.customer;
        match &self.change {
            Change::Added => write!(f, "{id} added"),
            Change::Removed => write!(f, "{id} removed"),
            Change::Moved(from, to) => write!(f, "{id} time zone {from} -> {to}"),
        }
    }
}

/// What `specs` changes of the customers the running engine serves, by
/// customer id.
fn roster_changes(
    engine: &EngineConfig,
    specs: &std::collections::HashMap<String, fleetpulse_engine::CustomerSpec>,
) -> Vec<RosterChange> {
    let zone = |z: &jiff::tz::TimeZone| z.iana_name().unwrap_or("UTC").to_string();
    let mut changes = Vec::new();
    for (id, spec) in specs {
        let change = match engine.customers.get(id) {
            None => Change::Added,
            Some(old) if old.timezone != spec.timezone => {
                Change::Moved(zone(&old.timezone), zone(&spec.timezone))
            }
            Some(_) => continue,
        };
        changes.push(RosterChange {
            customer: id.clone(),
            change,
        });
    }
    let removed = (engine.customers.keys()).filter(|id| !specs.contains_key(*id));
    changes.extend(removed.map(|id| RosterChange {
        customer: id.clone(),
        change: Change::Removed,
    }));
    changes.sort_by(|a, b| a.customer.cmp(&b.customer));
    changes
}

/// What a look at the file sees: its modification time and length, and
/// its inode's change time and number. A copy that keeps the modification
/// time (`cp -p`, `rsync -t`) over a file of the same length changes the
/// change time, which no tool sets back; a file replaced by a rename, the
/// inode.
type Stamp = Option<(SystemTime, u64, (i64, i64), u64)>;

/// The customers file at `path` and the contract events file it names
/// (`contract_events_csv`), if it parses.
fn watched(path: &std::path::Path) -> Vec<PathBuf> {
    let named = std::fs::read_to_string(path).ok().and_then(|text| {
        let file: crate::customers::CustomersFile = toml::from_str(&text).ok()?;
        file.contract_events_path(path)
    });
    std::iter::once(path.to_path_buf()).chain(named).collect()
}

/// A look at each of `paths`.
fn looks(paths: &[PathBuf]) -> Vec<Stamp> {
    paths.iter().map(stamp).collect()
}

fn stamp(path: &PathBuf) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let changed = (meta.ctime(), meta.ctime_nsec());
    Some((meta.modified().ok()?, meta.len(), changed, meta.ino()))
}

/// Whether to reload after a look that saw `now` (`seen` when last loaded):
/// once a change has held still for a poll. A copy or an editor writing in
/// place may be caught half-way, and a file cut at a customer's end still
/// parses: taken then, it would drop the customers after the cut.
fn settled<T: PartialEq + Clone>(seen: T, changed: &mut Option<T>, now: T) -> bool {
    if now == seen {
        *changed = None;
        return false;
    }
    if changed.as_ref() == Some(&now) {
        return true;
    }
    *changed = Some(now);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_taken_once_it_holds_still_for_a_poll() {
        let at = |s: u64, len: u64| {
            let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(s);
            Some((modified, len, (s as i64, 0), 1))
        };
        let seen = at(1, 100);
        let mut changed = None;
        // Unchanged: nothing to do.
        assert!(!settled(seen, &mut changed, seen));
        // Being written: longer at each look, never taken half-way.
        assert!(!settled(seen, &mut changed, at(5, 40)));
        assert!(!settled(seen, &mut changed, at(7, 80)));
        assert!(!settled(seen, &mut changed, at(7, 120)));
        // Held still for a poll: taken.
        assert!(settled(seen, &mut changed, at(7, 120)));
        // Written back as it was before being taken: nothing to do.
        let mut changed = None;
        assert!(!settled(seen, &mut changed, at(9, 10)));
        assert!(!settled(seen, &mut changed, seen));
        assert_eq!(changed, None);
        // A file removed and not back yet is a change like another.
        assert!(!settled(seen, &mut changed, None));
        assert!(settled(seen, &mut changed, None));
    }

    /// Copied over with its modification time kept (`cp -p`, `rsync -t`)
    /// and of the same length: the inode's change time moved, so the
    /// change is seen (it was missed, and a recompute folded with the old
    /// definition).
    #[test]
    fn a_copy_that_keeps_the_modification_time_and_length_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("customers.toml");
        std::fs::write(&path, "arr = 90000\n").unwrap();
        let before = stamp(&path);
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, "arr = 95000\n").unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(modified).unwrap();
        let after = stamp(&path);
        let (a, b) = (before.unwrap(), after.unwrap());
        assert_eq!(
            (a.0, a.1),
            (b.0, b.1),
            "the same modification time and length"
        );
        let mut changed = None;
        assert!(!settled(before, &mut changed, after));
        assert!(settled(before, &mut changed, after));
    }

    #[test]
    fn customers_added_removed_or_moved_to_another_zone_need_a_start() {
        use fleetpulse_engine::{Contract, CustomerSpec, Segment};
        let contract = Contract {
            arr: 1.0,
            start: 0,
            renewal: 1,
            devices_purchased: 1,
            operator_seats: 1,
        };
        let spec = |id: &str, zone: &str| CustomerSpec {
            timezone: jiff::tz::TimeZone::get(zone).unwrap(),
            ..CustomerSpec::new(id, Segment::LowTouch, contract.clone())
        };
        let specs = |all: &[CustomerSpec]| -> std::collections::HashMap<String, CustomerSpec> {
            all.iter().map(|c| (c.id.to_string(), c.clone())).collect()
        };
        let engine = EngineConfig {
            customers: specs(&[
                spec("a", "UTC"),
                spec("b", "Europe/Berlin"),
                spec("c", "UTC"),
            ]),
            ..EngineConfig::default()
        };
        // The same roster with another definition: the recompute's, no start.
        let mut same = engine.customers.clone();
        same.get_mut("a").unwrap().contract.arr = 2.0;
        assert!(roster_changes(&engine, &same).is_empty());
        let changed = specs(&[
            spec("a", "UTC"),
            spec("b", "America/New_York"),
            spec("d", "UTC"),
        ]);
        assert_eq!(
            shown(&roster_changes(&engine, &changed)),
            [
                "b time zone Europe/Berlin -> America/New_York",
                "c removed",
                "d added"
            ]
        );
    }
}
