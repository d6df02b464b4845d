//! `fleetpulse touchpoints`: record the CS team's activities in the SQLite
//! store from the command line or a CSV file, and list them.
//!
//! ```text
//! fleetpulse touchpoints add --customer acme --kind business_review --date 2026-03-02 \
//!     --csm alice --attendees "Jo Bloggs (CEO);ops lead" --decision-maker
//! fleetpulse touchpoints import touchpoints.csv --customers customers.toml
//! fleetpulse touchpoints list --customer acme
//! ```
//!
//! `--store` is the KPI store (default `fleetpulse-data/kpi.sqlite`); a
//! running service reads it on each request, so its dashboard shows them at
//! once. An import checks every line before it writes any.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{TouchpointInput, read_csv};
use crate::customers::CustomersFile;
use crate::sinks::SqliteStore;

/// `fleetpulse touchpoints ...`.
#[derive(Debug, clap::Args)]
pub struct TouchpointsArgs {
    #[command(subcommand)]
    command: TouchpointsCommand,
    /// The SQLite KPI store.
    #[arg(long, global = true, default_value = "fleetpulse-data/kpi.sqlite")]
    store: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
enum TouchpointsCommand {
    /// Record one touchpoint.
    Add {
        /// Customer id.
        #[arg(long)]
        customer: String,
        /// kickoff, training, onsite_visit, health_check_call,
        /// business_review, webinar or escalation.
        #[arg(long)]
        kind: String,
        /// The day it took place, YYYY-MM-DD.
        #[arg(long)]
        date: String,
        /// The CS manager who held it.
        #[arg(long)]
        csm: String,
        /// Who attended from the customer, `;`-separated.
        #[arg(long, default_value = "")]
        attendees: String,
        /// A decision-maker of the customer attended.
        #[arg(long)]
        decision_maker: bool,
        /// Free text.
        #[arg(long, default_value = "")]
        notes: String,
        /// customers.toml, to check the customer exists (default:
        /// customers.toml beside the store, if there is one).
        #[arg(long)]
        customers: Option<PathBuf>,
    },
    /// Record every touchpoint of a CSV file
    /// (customer,kind,date,csm,attendees,decision_maker_present,notes).
    Import {
        /// The CSV file.
        file: PathBuf,
        /// customers.toml, to check every customer exists (default:
        /// customers.toml beside the store, if there is one).
        #[arg(long)]
        customers: Option<PathBuf>,
    },
    /// Print the touchpoints, oldest first.
    List {
        /// Only this customer.
        #[arg(long)]
        customer: Option<String>,
    },
}

/// Runs `fleetpulse touchpoints`.
pub fn run(args: TouchpointsArgs) -> anyhow::Result<()> {
    let store = args.store.clone();
    let known = |customers: &Option<PathBuf>| -> anyhow::Result<Option<HashSet<String>>> {
        // The file named, or the one beside the store (as `report` reads
        // it): a touchpoint of a customer no file names goes where
        // nothing reads it. Without either, a typo would be recorded.
        let beside = || {
            let beside = store.parent()?.join("customers.toml");
            beside.exists().then_some(beside)
        };
        let Some(path) = customers.clone().or_else(beside) else {
            anyhow::bail!(
                "no customers file to check the customer against: pass --customers (the \
                 service's customers file), or keep a customers.toml beside {}",
                store.display()
            );
        };
        Ok(Some(
            (CustomersFile::load(&path)?.customers.into_iter())
                .map(|c| c.id)
                .collect(),
        ))
    };
    let open = || open_store(&args.store);
    match args.command {
        TouchpointsCommand::Add {
            customer,
            kind,
            date,
            csm,
            attendees,
            decision_maker,
            notes,
            customers,
        } => {
            let mut store = open()?;
            if let Some(known) = known(&customers)?
                && !known.contains(&customer)
            {
                anyhow::bail!("--customer: `{customer}` is not in the customers file");
            }
            let touchpoint = TouchpointInput {
                kind,
                date,
                csm: Some(csm),
                attendees,
                decision_maker_present: decision_maker,
                notes,
            }
            .check(&customer, None, "cli")
            .map_err(|e| option_error(e.field, &e.message))?;
            store.record_touchpoints(&[touchpoint])?;
            say_recorded("1 touchpoint", None, &args.store);
        }
        TouchpointsCommand::Import { file, customers } => {
            let mut store = open()?;
            let touchpoints = read_csv(&file, known(&customers)?.as_ref())?;
            store.record_touchpoints(&touchpoints)?;
            let what = format!("{} touchpoints", touchpoints.len());
            say_recorded(&what, Some(&file), &args.store);
        }
        TouchpointsCommand::List { customer } => {
            // Stored before the check on text (or by hand): shown escaped.
            let shown = crate::text::for_terminal;
            for t in open()?.touchpoints(customer.as_deref())? {
                println!(
                    "{}  {:<20} {:<18} csm {:<12} decision-maker {:<3}  {}{}",
                    super::day(t.at),
                    t.customer,
                    t.kind.as_str(),
                    shown(&t.csm),
                    if t.decision_maker_present {
                        "yes"
                    } else {
                        "no"
                    },
                    shown(&t.attendees),
                    if t.notes.is_empty() {
                        String::new()
                    } else {
                        format!("  ({})", shown(&t.notes))
                    }
                );
            }
        }
    }
    Ok(())
}

/// The SQLite store of the `touchpoints` and `contracts` commands: one the
/// service made. A path that names none (a typo, another directory) is
/// refused: made here, it would hold what a CSM recorded where no
/// dashboard reads it, and list nothing.
pub(crate) fn open_store(path: &Path) -> anyhow::Result<SqliteStore> {
    match SqliteStore::open_existing(path) {
        Err(crate::sinks::SinkError::SqliteMissing { .. }) => anyhow::bail!(
            "{}: no such store (pass the service's `[[sinks]]` SQLite path with --store, or \
             start the service once to make it)",
            path.display()
        ),
        opened => opened.with_context(|| format!("{}: cannot open the store", path.display())),
    }
}

/// A field of a record given on the command line that does not check,
/// named as its option (`--arr-change: ...`).
pub(crate) fn option_error(field: &str, message: &str) -> anyhow::Error {
    anyhow::anyhow!("--{}: {message}", field.replace('_', "-"))
}

/// Says what was recorded: `recorded 12 touchpoints from visits.csv in
/// kpi.sqlite`.
pub(crate) fn say_recorded(what: &str, from: Option<&Path>, store: &Path) {
    let from = from.map_or_else(String::new, |f| format!(" from {}", f.display()));
    println!("recorded {what}{from} in {}", store.display());
}
