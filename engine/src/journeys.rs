//! Journey states between the engine and the service: the states a restart
//! restores, and the states of the days closed since, from which the service
//! persists those its checkpoint covers. Memory only: the engine does no I/O.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::kpi::journey::JourneyState;
use crate::model::{EventTime, Id};

/// Journey states, shared by the customer-success operators (on every
/// worker) and the service.
#[derive(Debug, Default)]
pub struct JourneyBoard {
    /// Whether the service persists states (it has a WAL and a checkpoint);
    /// without, closed days are not noted.
    persisted: bool,
    /// States to start from, taken once by the worker that owns the customer.
    restored: Mutex<HashMap<Id, JourneyState>>,
    /// Each customer's states since the newest one a checkpoint took,
    /// oldest first.
    closed: Mutex<HashMap<Id, VecDeque<JourneyState>>>,
}

impl JourneyBoard {
    /// A board for a service that persists states, restoring `states`.
    pub fn persisted(states: HashMap<Id, JourneyState>) -> Self {
        Self {
            persisted: true,
            restored: Mutex::new(states),
            closed: Mutex::default(),
        }
    }

    /// The state `customer` restarts from, if there is one (taken: the
    /// journey is built once).
    pub fn take_restored(&self, customer: &Id) -> Option<JourneyState> {
        lock(&self.restored).remove(customer)
    }

    /// Whether closed days are noted.
    pub fn is_persisted(&self) -> bool {
        self.persisted
    }

    /// Notes `customer`'s state after a closed day. At most
    /// [`HELD_STATES`] are held per customer (the checkpoint is that many
    /// days behind at most before the oldest go).
    pub fn closed(&self, customer: &Id, state: JourneyState) {
        if !self.persisted {
            return;
        }
        let mut closed = lock(&self.closed);
        let states = closed.entry(customer.clone()).or_default();
        states.push_back(state);
        while states.len() > HELD_STATES {
            states.pop_front();
        }
    }

    /// Each customer's newest state whose last day ended before `before`
    /// (every record of those days is in every store), dropping the states
    /// older than it. Customers restored but not seen since keep their
    /// restored state.
    pub fn covered_before(&self, before: EventTime) -> HashMap<Id, JourneyState> {
        let mut covered: HashMap<Id, JourneyState> = lock(&self.restored).clone();
        for (customer, states) in lock(&self.closed).iter_mut() {
            let done = |s: &JourneyState| s.last_day_end.is_some_and(|end| end < before);
            let newest = states.iter().rposition(done);
            if let Some(newest) = newest {
                states.drain(..newest);
                covered.insert(customer.clone(), states[0].clone());
            }
        }
        covered
    }
}

/// States held per customer until a checkpoint takes one.
pub const HELD_STATES: usize = 64;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
