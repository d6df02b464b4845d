//! Customers taken out of the customers file: no day of theirs closes any
//! more, so the alerts their journeys had open would stay open in every
//! store and at every receiver. A start resolves them ("customer removed
//! from the customers file") as the first records it hands out, and stores
//! the journeys with the episodes ended once every store has written them.

use std::collections::HashMap;

use fleetpulse_engine::{CustomerSpec, Id, JourneyState, Output};

/// The resolutions to hand out and the states to store after them.
#[derive(Debug, Default)]
pub struct Untracked {
    /// One resolved alert per episode a removed customer had open.
    pub resolutions: Vec<Output>,
    /// Those customers' journeys with the episodes ended.
    pub states: HashMap<Id, JourneyState>,
}

impl Untracked {
    /// What `restored` holds of customers `customers` no longer names;
    /// `names`: the display names the previous start knew (the id stands in
    /// for one not known, as after a restart of the process).
    pub fn of(
        restored: &HashMap<Id, JourneyState>,
        customers: &HashMap<String, CustomerSpec>,
        names: &HashMap<String, String>,
    ) -> Self {
        let mut untracked = Self::default();
        let mut removed: Vec<_> = (restored.iter())
            .filter(|(id, _)| !customers.contains_key(&***id))
            .collect();
        removed.sort_by(|a, b| a.0.cmp(b.0));
        for (id, state) in removed {
            let mut state = state.clone();
            let name = names.get(&**id).map_or(&**id, String::as_str);
            let ended = state.end_tracking(id, name);
            if ended.is_empty() {
                continue;
            }
            untracked
                .resolutions
                .extend(ended.into_iter().map(Output::Alert));
            untracked.states.insert(id.clone(), state);
        }
        untracked
    }
}
