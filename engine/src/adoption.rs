//! How a restated journey replaces the live one: ingest folds nothing
//! itself; it hands the customer's restated windows and the journey's state
//! before them to the customer-success operator that owns the customer, which
//! folds them again at a point where it knows exactly what it has taken in,
//! adopts the result and answers with the restated records. Memory only:
//! the engine does no I/O.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc;

use crate::kpi::Output;
use crate::kpi::journey::JourneyState;
use crate::model::{EventTime, Id};

/// A journey to fold again.
#[derive(Debug)]
pub struct JourneyRequest {
    /// The customer.
    pub customer: Id,
    /// The journey's state at the end of the day before the restated
    /// windows; `None`: no day closed before them.
    pub base: Option<JourneyState>,
    /// The customer's restated device and customer windows, every one
    /// ending after `base`'s last day and by `through`.
    pub records: Vec<Output>,
    /// The restatement covers the windows ending by this: at least every
    /// window the live journey has taken in.
    pub through: EventTime,
    /// The customer's definition to fold with (a changed customers file);
    /// `None`: the live journey's.
    pub spec: Option<crate::customer::CustomerSpec>,
    /// Where a recompute restates from (a day's start; `None` for late
    /// windows): a journey that never reported has no window to fold, and
    /// its days before this stay as they were while those after close
    /// again under `spec`.
    pub from: Option<EventTime>,
    /// Whether `records` hold every hourly window of the open day so far,
    /// the devices' too; else the live open day stays, read again against
    /// the journey folded again.
    pub open_day: bool,
}

/// What the operator did with a request.
#[derive(Debug)]
pub enum JourneyAnswer {
    /// Folded again and adopted: the records of the days folded again, and
    /// the state after each of them.
    Adopted {
        /// Outcome, milestone, health and alert records.
        outputs: Vec<Output>,
        /// The state after each day closed, oldest first.
        days: Vec<JourneyState>,
        /// The windows ending by this were folded (the live journey had
        /// taken them in); later ones it takes in as they come.
        observed: EventTime,
    },
    /// The live journey has taken in windows after `through`: ask again
    /// with a later one.
    Behind,
}

type Pending = (JourneyRequest, mpsc::Sender<JourneyAnswer>);

/// Requests from ingest to the customer-success operators.
#[derive(Default)]
pub struct AdoptionBoard {
    requests: Mutex<Vec<Pending>>,
    waiting: AtomicUsize,
    wake: Mutex<Vec<timely::scheduling::SyncActivator>>,
}

impl std::fmt::Debug for AdoptionBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdoptionBoard")
            .field("waiting", &self.waiting.load(SeqCst))
            .finish()
    }
}

impl AdoptionBoard {
    /// Hands `request` to the operator that owns its customer; the answer
    /// comes on the returned channel (which closes unanswered if the engine
    /// stops first).
    pub fn submit(&self, request: JourneyRequest) -> mpsc::Receiver<JourneyAnswer> {
        let (tx, rx) = mpsc::channel();
        lock(&self.requests).push((request, tx));
        self.waiting.fetch_add(1, SeqCst);
        for operator in lock(&self.wake).iter() {
            let _ = operator.activate();
        }
        rx
    }

    /// Registers an operator to wake when a request arrives.
    pub fn wake_on_request(&self, operator: timely::scheduling::SyncActivator) {
        lock(&self.wake).push(operator);
    }

    /// Takes the requests for the customers `mine` picks.
    pub(crate) fn take_where(&self, mine: impl Fn(&Id) -> bool) -> Vec<Pending> {
        if self.waiting.load(SeqCst) == 0 {
            return Vec::new();
        }
        let mut requests = lock(&self.requests);
        let (taken, kept): (Vec<Pending>, Vec<Pending>) =
            requests.drain(..).partition(|(r, _)| mine(&r.customer));
        *requests = kept;
        self.waiting.fetch_sub(taken.len(), SeqCst);
        taken
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
