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
    ///
    /// A customer is back when its state is days behind the others and
    /// behind `journeys_cover` ([`super::rescale::Layout::journeys_cover`]):
    /// the states of a cluster's members are stored as far as each last
    /// saw the others' checkpoints, days apart when they catch up with a
    /// backlog, and a customer merely behind must not be taken for one
    /// whose days no store holds.
    pub fn of(
        restored: &HashMap<Id, JourneyState>,
        customers: &HashMap<String, CustomerSpec>,
        names: &HashMap<String, String>,
        archive: Option<&Path>,
        journeys_cover: Option<EventTime>,
    ) -> Result<Self, crate::corrections::ArchiveError> {
        let removed = |id: &str| !customers.contains_key(id);
        let mut untracked = Self::default();
        if let Some(newest) = restored.values().filter_map(|s| s.last_day_end).max() {
            let reference = journeys_cover.map_or(newest, |cover| cover.min(newest));
            let behind = |end: EventTime| end.saturating_add(2 * 86_400_000) < reference;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corrections::tests::spec;

    const DAY: EventTime = 86_400_000;

    /// `id`'s journey state with its last day ending on day `day`.
    fn state(id: &str, day: u64) -> (Id, JourneyState) {
        let journey = fleetpulse_engine::kpi::journey::Journey::new(spec(id));
        let mut state = journey.snapshot();
        state.last_day_end = Some(day * DAY);
        (Id::from(id), state)
    }

    /// A cluster member that caught up with a backlog stored its customers'
    /// states six days behind the other member's, as far as its last look
    /// at the others' checkpoints (its checkpoint says so): they are not
    /// customers back in the file, whose records no store holds. A state
    /// days behind that too is one.
    #[test]
    fn a_customer_days_behind_is_back_only_when_behind_every_member_s_journey_states() {
        let restored: HashMap<Id, JourneyState> =
            [state("ahead", 30), state("member", 24), state("back", 10)].into();
        let customers: HashMap<String, CustomerSpec> = ["ahead", "member", "back"]
            .into_iter()
            .map(|id| (id.to_string(), spec(id)))
            .collect();
        let names = HashMap::new();
        let back = |cover| {
            let untracked = Untracked::of(&restored, &customers, &names, None, cover).unwrap();
            let mut back: Vec<String> = untracked.returning.iter().map(|c| c.to_string()).collect();
            back.sort();
            back
        };
        assert_eq!(back(Some(24 * DAY)), ["back"]);
        // A single process's checkpoint covers its newest state.
        assert_eq!(back(Some(31 * DAY)), ["back", "member"]);
        assert_eq!(back(None), ["back", "member"]);
    }
}
