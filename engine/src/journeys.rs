//! Journey states between the engine and the service: the states a restart
//! restores, and the states of the days closed since, from which the service
//! persists those its checkpoint covers. Memory only: the engine does no I/O.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::SeqCst;

use crate::kpi::journey::{Journey, JourneyState};
use crate::kpi::risk::AlertRecord;
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
    /// The newest state of each customer a checkpoint took (the restored
    /// ones to begin with): what the persisted file holds.
    covered: Mutex<HashMap<Id, JourneyState>>,
    /// `covered` changed since the service last stored it.
    unstored: std::sync::atomic::AtomicBool,
    /// Every day's state as it closes, for the service's archive (a
    /// restatement starts from the state before its first day).
    days: Option<Mutex<Vec<(Id, JourneyState)>>>,
    /// Provisional alerts the stores may hold from before the restart,
    /// not yet confirmed or retracted, by customer: the close of their day
    /// settles them. The open day judged again after a restart need not
    /// raise them again (what its readings showed then depended on how
    /// far each worker had got), and one left unsettled stayed open.
    unsettled: Mutex<HashMap<Id, Vec<AlertRecord>>>,
    /// The newest day end the restored states reach: what the stores hold
    /// of the run before the restart.
    restored_through: Option<EventTime>,
    /// Whether the inputs closing is a stop of a service that replays the
    /// open days after its next start ([`Self::stopping_keeps_days_open`]).
    stops: bool,
    /// The least input time of this process's workers as their inputs
    /// closed at a stop (0: running). See [`Self::stopped_at`].
    stopped_at: AtomicU64,
}

impl JourneyBoard {
    /// A board for a service that persists states, restoring `states`.
    pub fn persisted(states: HashMap<Id, JourneyState>) -> Self {
        Self {
            persisted: true,
            restored_through: states.values().filter_map(|s| s.last_day_end).max(),
            covered: Mutex::new(states.clone()),
            restored: Mutex::new(states),
            closed: Mutex::default(),
            unstored: Default::default(),
            days: None,
            unsettled: Mutex::default(),
            stops: false,
            stopped_at: AtomicU64::new(0),
        }
    }

    /// The inputs closing is a stop, not the end of the input: a service
    /// whose WAL replays the readings of the days still open after the
    /// next start ([`Self::stopped_at`]).
    pub fn stopping_keeps_days_open(mut self) -> Self {
        self.stops = true;
        self
    }

    /// Also hands `alerts` (provisional ones still open where the stores
    /// hold them) to the operators with their customers' journeys.
    pub fn unsettled(self, alerts: Vec<AlertRecord>) -> Self {
        let mut unsettled: HashMap<Id, Vec<AlertRecord>> = HashMap::new();
        for alert in alerts {
            unsettled
                .entry(alert.customer.clone())
                .or_default()
                .push(alert);
        }
        *lock(&self.unsettled) = unsettled;
        self
    }

    /// The newest day end of the states a restart restored: a customer
    /// with none (added to the customers file while stopped) is tracked
    /// from there, not from the older records the WAL replays, whose
    /// records the service suppresses as written before.
    pub fn restored_through(&self) -> Option<EventTime> {
        self.restored_through
    }

    /// Takes the unsettled provisional alerts of the customers `mine`
    /// picks.
    pub fn take_unsettled_where(&self, mine: impl Fn(&Id) -> bool) -> Vec<(Id, Vec<AlertRecord>)> {
        take_where(&self.unsettled, mine)
    }

    /// Also hands every day's state to [`Self::take_days`].
    pub fn keeping_days(mut self) -> Self {
        self.days = Some(Mutex::default());
        self
    }

    /// A worker's input closed at input time `at`.
    pub(crate) fn input_closed(&self, at: EventTime) {
        if self.stops {
            let at = at.max(1);
            let _ = (self.stopped_at).fetch_update(SeqCst, SeqCst, |was| {
                Some(if was == 0 { at } else { was.min(at) })
            });
        }
    }

    /// At a stop ([`Self::stopping_keeps_days_open`]), the least input
    /// time this process's workers' inputs closed at. Closing the input passes every window
    /// and day: those still open (their end at or after it) would close on
    /// the readings so far, as if none were to come. Their journey records
    /// (a closed health where the day is open, alerts that the real close
    /// would not raise, sent to receivers and never resolved) are not
    /// emitted, nor their states noted: the next start closes them on the
    /// whole day. `None` while running, and at the end of a finite input
    /// (a simulation, a backtest, a service without a WAL to replay),
    /// which closes everything.
    pub fn stopped_at(&self) -> Option<EventTime> {
        Some(self.stopped_at.load(SeqCst)).filter(|&at| at > 0)
    }

    /// At a stop, the end of the last date whose portfolio figures the
    /// engine emitted: a date's figures wait for every customer's day of
    /// it, in every time zone ([`crate::kpi::Output::kept_at_stop`]).
    /// `None` while running and at the end of a finite input.
    pub fn portfolio_passed(&self) -> Option<EventTime> {
        (self.stopped_at()).map(crate::operators::portfolio::figures_emitted_through)
    }

    /// The states of the days closed since the last call, oldest first.
    pub fn take_days(&self) -> Vec<(Id, JourneyState)> {
        self.days
            .as_ref()
            .map(|days| std::mem::take(&mut *lock(days)))
            .unwrap_or_default()
    }

    /// Takes the restored states of the customers `mine` picks (those a
    /// worker owns), so it tracks them from the start: a customer that
    /// sends nothing after a restart still has its days closed.
    pub fn take_restored_where(&self, mine: impl Fn(&Id) -> bool) -> Vec<(Id, JourneyState)> {
        take_where(&self.restored, mine)
    }

    /// Notes `journey`'s state after a closed day, when the service
    /// persists states.
    pub fn closed(&self, journey: &Journey) {
        if self.persisted {
            self.note(&journey.spec().id, &[journey.snapshot()], true);
        }
    }

    /// Notes the states of the days a restatement folded again (`days`,
    /// oldest first), in place of those noted for the same days before it:
    /// a state noted live before the late data came holds the days as they
    /// were, and a later restatement or a restart that starts from it would
    /// carry them on (a wrong 7-day movement, trend or outcome streak).
    ///
    /// Noted for the checkpoint only: the pass that folded them keeps them
    /// in the archive once the stores wrote its records. Kept before, a
    /// kill in between left the archive holding days the stores lacked,
    /// and the pass run again after the start folded on from them and
    /// never wrote those days.
    pub fn refolded(&self, customer: &Id, days: &[JourneyState]) {
        if self.persisted {
            self.note(customer, days, false);
        }
    }

    /// Notes `states` (oldest first) for the checkpoint, and for the
    /// archive if `archived`, in place of any noted for their days or later
    /// ones. At most [`HELD_STATES`] are held per customer (the checkpoint
    /// is that many days behind at most before the oldest go).
    fn note(&self, customer: &Id, states: &[JourneyState], archived: bool) {
        let Some(first) = states.first().and_then(|d| d.last_day_end) else {
            return;
        };
        if self.stopped_at().is_some_and(|at| first >= at) {
            return;
        }
        if let Some(kept) = self.days.as_ref() {
            let mut kept = lock(kept);
            if archived {
                // Taken in order, so these replace the older ones in the
                // archive. Not the days of a fleet that never reported: a
                // pass has nothing to fold from them, and the history a
                // backfill brings is folded from its own first day, as for
                // a customer the live journey never saw.
                let activated = states.iter().filter(|d| d.activated());
                kept.extend(activated.map(|d| (customer.clone(), d.clone())));
            } else {
                // The live states of the days folded again, not taken yet,
                // are superseded. Taken after the stores wrote the pass
                // (which keeps its own then: the checkpoint asks after the
                // pass is confirmed, in the same second), they replaced
                // its states in the archive, and a later pass folded on
                // from the days as they were.
                let superseded = |s: &JourneyState| s.last_day_end.is_none_or(|end| end >= first);
                kept.retain(|(c, s)| c != customer || !superseded(s));
            }
        }
        let mut closed = lock(&self.closed);
        let held = closed.entry(customer.clone()).or_default();
        held.retain(|s| s.last_day_end.is_some_and(|end| end < first));
        held.extend(states.iter().cloned());
        while held.len() > HELD_STATES {
            held.pop_front();
        }
    }

    /// Where a fold of `customer`'s days from `first` begins when no state
    /// before it is at hand, by its newest state
    /// ([`JourneyState::silent_start`]): a restatement of a customer that
    /// was silent until then starts from its silence.
    pub fn silent_start(&self, customer: &Id, first: EventTime) -> Option<JourneyState> {
        // One lock at a time: `covered_before` takes `covered`, then `closed`.
        // Read in place: the states are not copied to read two fields.
        let held = (lock(&self.closed).get(customer))
            .and_then(|held| held.back())
            .map(|newest| newest.silent_start(first));
        match held {
            Some(start) => start,
            None => lock(&self.covered).get(customer)?.silent_start(first),
        }
    }

    /// Each customer's newest state whose last day ended before `before`
    /// (every record of those days is in every store), dropping the states
    /// older than it; a customer with none keeps the one taken before.
    /// `None` when nothing changed since it was last stored
    /// ([`JourneyBoard::stored`]).
    pub fn covered_before(&self, before: EventTime) -> Option<HashMap<Id, JourneyState>> {
        let mut covered = lock(&self.covered);
        let mut changed = self.unstored.load(SeqCst);
        for (customer, states) in lock(&self.closed).iter_mut() {
            let done = |s: &JourneyState| s.last_day_end.is_some_and(|end| end < before);
            if let Some(newest) = states.iter().rposition(done) {
                let taken = states.drain(..=newest).next_back().expect("drained one");
                covered.insert(customer.clone(), taken);
                changed = true;
            }
        }
        self.unstored.store(changed, SeqCst);
        changed.then(|| covered.clone())
    }

    /// The states of customers taken out of the customers file, their
    /// episodes ended ([`JourneyState::end_tracking`]), once every store
    /// has written the resolutions: the next checkpoint stores them in
    /// place of the restored ones, so a later start does not end them again.
    pub fn ended(&self, states: HashMap<Id, JourneyState>) {
        if states.is_empty() {
            return;
        }
        lock(&self.covered).extend(states);
        self.unstored
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// What the last [`JourneyBoard::covered_before`] returned is on disk.
    pub fn stored(&self) {
        self.unstored
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// States held per customer until a checkpoint takes one.
pub const HELD_STATES: usize = 32;

/// Takes the entries of the customers `mine` picks out of `map`.
fn take_where<T>(map: &Mutex<HashMap<Id, T>>, mine: impl Fn(&Id) -> bool) -> Vec<(Id, T)> {
    let mut map = lock(map);
    let picked: Vec<Id> = map.keys().filter(|c| mine(c)).cloned().collect();
    (picked.into_iter())
        .filter_map(|c| map.remove(&c).map(|v| (c, v)))
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kpi::CustomerKpi;
    use crate::kpi::fleet_days::{day, spec};

    /// The states of days 0..n of a journey whose days worked `utilisation`.
    fn states(days: u64, utilisation: f64) -> Vec<JourneyState> {
        let mut journey = Journey::new(spec(4));
        (0..days)
            .map(|d| {
                journey.close_day(&day(d, 4, 1.0, utilisation), &mut Vec::new());
                journey.snapshot()
            })
            .collect()
    }

    /// A fold of a customer silent until its first day folded starts from
    /// the day its tracking began, whether its newest state is still held
    /// or a checkpoint took it; not from a day before that, and not once
    /// the customer has reported before the fold's first day.
    #[test]
    fn a_silent_customer_s_fold_starts_where_its_tracking_began() {
        let board = JourneyBoard::persisted(HashMap::new());
        let customer: Id = "c".into();
        let mut journey = Journey::new(spec(4));
        let silent = |d| CustomerKpi {
            totals: crate::kpi::Totals::default(),
            ..day(d, 4, 0.0, 0.0)
        };
        for d in 2..5 {
            journey.close_day(&silent(d), &mut Vec::new());
            board.closed(&journey);
        }
        let day_ms = crate::config::DAY_MS;
        let start = |first| board.silent_start(&customer, first * day_ms);
        let from = start(4).expect("tracked silent since day 2");
        assert_eq!(from.last_day_end, Some(2 * day_ms));
        assert!(!from.activated());
        assert_eq!(start(2), Some(from.clone()));
        assert_eq!(start(1), None, "before the tracking began");
        // Taken by a checkpoint: the same.
        assert!(board.covered_before(u64::MAX).is_some());
        assert_eq!(start(4), Some(from));
        // Activated on day 5: a fold from day 6 has a state to start from.
        journey.close_day(&day(5, 4, 1.0, 0.5), &mut Vec::new());
        board.closed(&journey);
        assert!(start(6).is_none());
        assert!(start(5).is_some(), "the first telemetry's own day");
        assert_eq!(board.silent_start(&"other".into(), u64::MAX), None);
    }

    /// A restatement folds days 4..6 again after the live journey closed
    /// them: the checkpoint then holds the folded states, never a live one
    /// of those days noted before them. The archive's list gets neither:
    /// the pass keeps the folded ones once the stores wrote it (a kill
    /// before would leave the archive ahead of the stores), and the live
    /// ones, taken after that, would replace them. A live state noted
    /// afterwards (the next day, closed on the folded journey) goes there.
    #[test]
    fn a_journey_folded_again_replaces_the_states_of_its_days() {
        let board = JourneyBoard::persisted(HashMap::new()).keeping_days();
        let customer: Id = "c".into();
        let live = states(6, 0.2);
        for state in &live {
            board.closed(&Journey::restore(spec(4), state.clone()));
        }
        let folded: Vec<JourneyState> = states(6, 0.5).split_off(3);
        board.refolded(&customer, &folded);

        let archived: Vec<JourneyState> = (board.take_days().into_iter())
            .map(|(c, state)| {
                assert_eq!(c, customer);
                state
            })
            .collect();
        assert_eq!(archived, live[..3]);
        // Whatever the checkpoint takes, from any day on, is folded or
        // older than the folded days.
        for before in 1..=7 {
            let covered = board.covered_before(before * crate::config::DAY_MS + 1);
            if let Some(states) = covered {
                let state = &states[&customer];
                let end = state.last_day_end.unwrap() / crate::config::DAY_MS;
                let want = if end <= 3 {
                    &live[end as usize - 1]
                } else {
                    &folded[end as usize - 4]
                };
                assert_eq!(state, want, "covered before day {before}");
            }
        }
        assert_ne!(live[5], folded[2]);
        let next = states(7, 0.5).pop().unwrap();
        board.closed(&Journey::restore(spec(4), next.clone()));
        assert_eq!(board.take_days(), [(customer, next)]);
    }
}
