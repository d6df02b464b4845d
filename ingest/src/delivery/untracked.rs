//! Customers taken out of the customers file: no day of theirs closes any
//! more, so the alerts their journeys had open would stay open in every
//! store and at every receiver. A start resolves them ("customer removed
//! from the customers file") as the first records it hands out; once every
//! receiver wrote them, the journeys are stored with the episodes ended and
//! the archive notes the resolutions, so a later start sends nothing again.
//! A customer taken back after days out goes on from its last day; the
//! days it was out are closed at that start and written.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use fleetpulse_engine::kpi::journey::ended_by_removal;
use fleetpulse_engine::{CustomerSpec, EventTime, Id, JourneyState, Output};

/// The resolutions to hand out and the states to store after them.
#[derive(Debug, Default)]
pub struct Untracked {
    /// One resolved alert per episode a removed customer had open.
    pub resolutions: Vec<Output>,
    /// Those customers' journeys with the episodes ended.
    pub states: HashMap<Id, JourneyState>,
    /// Customers back in the file after days out of it: their restored
    /// journeys end days before the others' (more than two: time zones
    /// part them by 26 hours at most), and close the days they were out at
    /// the start, which no store holds ([`super::ledger::Ledger::returning`]).
    pub returning: HashSet<Id>,
}

impl Untracked {
    /// What `restored` and the archive in `archive` (when the service keeps
    /// one) hold open of customers `customers` no longer names.
    ///
    /// The archive notes every alert transition before any receiver gets
    /// it, so its open episodes are the ones the receivers hold open, under
    /// the names they had; a restored journey state may be days behind
    /// them (it is kept once every store holds its day). Without an archive
    /// the restored states say, `names` (the previous start's display
    /// names) naming them: the id stands in after a restart of the process.
    pub fn of(
        restored: &HashMap<Id, JourneyState>,
        customers: &HashMap<String, CustomerSpec>,
        names: &HashMap<String, String>,
        archive: Option<&Path>,
    ) -> Result<Self, crate::corrections::ArchiveError> {
        let removed = |id: &str| !customers.contains_key(id);
        let mut untracked = Self::default();
        if let Some(newest) = restored.values().filter_map(|s| s.last_day_end).max() {
            let behind = |end: EventTime| end.saturating_add(2 * 86_400_000) < newest;
            untracked.returning = (restored.iter())
                .filter(|(id, s)| !removed(id) && s.last_day_end.is_some_and(behind))
                .map(|(id, _)| id.clone())
                .collect();
        }
        let mut from_states = Vec::new();
        let mut ids: Vec<&Id> = restored.keys().filter(|id| removed(id)).collect();
        ids.sort();
        for id in ids {
            let mut state = restored[id].clone();
            let name = names.get(&**id).map_or(&**id, String::as_str);
            let ended = state.end_tracking(id, name);
            if !ended.is_empty() {
                from_states.extend(ended.into_iter().map(Output::Alert));
                untracked.states.insert(id.clone(), state);
            }
        }
        let Some(dir) = archive else {
            untracked.resolutions = from_states;
            return Ok(untracked);
        };
        let mut open = crate::corrections::open_alerts_of(dir, removed)?;
        open.sort_by(|(a, _), (b, _)| {
            (&a.customer, a.rule.as_str(), a.opened_at).cmp(&(
                &b.customer,
                b.rule.as_str(),
                b.opened_at,
            ))
        });
        for (alert, last_day) in open {
            // The end of the customer's newest day any source knows.
            let state_end = (restored.get(&alert.customer)).and_then(|s| s.last_day_end);
            let at: EventTime = [last_day, state_end]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(0);
            untracked
                .resolutions
                .push(Output::Alert(ended_by_removal(&alert, at)));
        }
        Ok(untracked)
    }
}
