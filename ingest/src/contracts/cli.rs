//! `fleetpulse contracts`: record contract events in the SQLite store from
//! the command line or a CSV file, and list them.
//!
//! ```text
//! fleetpulse contracts add --customers customers.toml --customer acme \
//!     --kind expansion --date 2026-05-01 --arr-change 25000
//! fleetpulse contracts import events.csv --customers customers.toml
//! fleetpulse contracts list --customer acme
//! ```
//!
//! `--store` is the KPI store (default `fleetpulse-data/kpi.sqlite`); a
//! running service reads it on each request, so `/api/retention` counts
//! them at once. `add` and `import` check each event against the customer's
//! history (the customers file's events and those already recorded), and an
//! import checks every line before it writes any. The CSV columns are those
//! of `contract_events_csv`: `customer,kind,date,arr_change`.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{ContractBook, ContractEventInput, import_csv};
use crate::customers::CustomersFile;
use crate::touchpoints::cli::{open_store, option_error, say_recorded};

/// `fleetpulse contracts ...`.
#[derive(Debug, clap::Args)]
pub struct ContractsArgs {
    #[command(subcommand)]
    command: ContractsCommand,
    /// The SQLite KPI store.
    #[arg(long, global = true, default_value = "fleetpulse-data/kpi.sqlite")]
    store: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
enum ContractsCommand {
    /// Record one contract event.
    Add {
        /// customers.toml: the customer must be there, and the event must
        /// add up with its contract events.
        #[arg(long)]
        customers: PathBuf,
        /// Customer id.
        #[arg(long)]
        customer: String,
        /// start, renewal, expansion, contraction or churn.
        #[arg(long)]
        kind: String,
        /// The day it takes effect, YYYY-MM-DD.
        #[arg(long)]
        date: String,
        /// The change of ARR (positive for start and expansion, negative for
        /// contraction; none: a renewal without change, a churn of all).
        #[arg(long, allow_hyphen_values = true)]
        arr_change: Option<f64>,
    },
    /// Record every contract event of a CSV file
    /// (customer,kind,date,arr_change); nothing unless every line checks.
    Import {
        /// The CSV file.
        file: PathBuf,
        /// customers.toml, as for `add`.
        #[arg(long)]
        customers: PathBuf,
    },
    /// Print the recorded contract events, oldest first.
    List {
        /// Only this customer.
        #[arg(long)]
        customer: Option<String>,
    },
}

/// The customers file's contract book.
fn book(path: &Path) -> anyhow::Result<ContractBook> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let file = CustomersFile::parse(path, &text)?;
    Ok(file.contract_book(path, &text)?)
}

/// Runs `fleetpulse contracts`.
pub fn run(args: ContractsArgs) -> anyhow::Result<()> {
    let open = || open_store(&args.store);
    match args.command {
        ContractsCommand::Add {
            customers,
            customer,
            kind,
            date,
            arr_change,
        } => {
            let book = book(&customers)?;
            let event = ContractEventInput {
                customer,
                kind,
                date,
                arr_change,
            }
            .check("cli")
            .map_err(|e| option_error(e.field, &e.message))?;
            let mut store = open()?;
            let recorded = store.contract_events(None)?;
            book.check_new(&recorded, std::slice::from_ref(&event))
                .map_err(|(_, field, message)| option_error(field, &message))?;
            store.record_contract_events(&[event])?;
            say_recorded("1 contract event", None, &args.store);
        }
        ContractsCommand::Import { file, customers } => {
            let book = book(&customers)?;
            let mut store = open()?;
            let recorded = store.contract_events(None)?;
            let events = import_csv(&file, &book, &recorded)?;
            store.record_contract_events(&events)?;
            let what = format!("{} contract events", events.len());
            say_recorded(&what, Some(&file), &args.store);
        }
        ContractsCommand::List { customer } => {
            for e in open()?.contract_events(customer.as_deref())? {
                println!(
                    "{}  {:<20} {:<12} {:>14}  by {}",
                    crate::touchpoints::day(e.at),
                    e.customer,
                    e.kind.as_str(),
                    e.arr_change
                        .map_or_else(|| "-".into(), |v| format!("{v:+.2}")),
                    e.recorded_by
                );
            }
        }
    }
    Ok(())
}
