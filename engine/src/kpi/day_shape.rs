//! When in its day a customer's fleet usually works: each hour's share of
//! the day's operating hours, over the last days whose hours were all taken
//! in. The provisional score reads the open day at this pace
//! ([`super::open_day::OpenDay::at_pace`]): a fleet that works one shift has
//! done half its usual day by mid-shift, not by noon.
//!
//! Kept in the journey's state: a restart restores it (it used to be learned
//! again from the days that closed after one, the open day read at a
//! uniform pace meanwhile, so a restart changed the provisional score), and
//! a restatement learns the days it folds again from their restated hours.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Days the shape is averaged over.
const DAYS: usize = 7;

/// Below this share of its usual day's work done, an open day is not
/// scored: the shift has not started, and no pace reads it.
pub const TOO_EARLY: f64 = 0.1;

/// Each hour's share of the day's operating hours, for the last [`DAYS`]
/// days learned (hour 0 is the day's first, in the customer's time zone).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DayShape {
    days: VecDeque<Vec<f64>>,
}

impl DayShape {
    /// Learns a closed day from its `hours` (operating hours per hour of the
    /// day, as the open day took them in), if they add up to the
    /// `closed` day's operating hours: a day whose hours were not all taken
    /// in (a restart within it) or that did no work teaches nothing.
    pub fn learn(&mut self, hours: &[f64], closed: f64) {
        let total: f64 = hours.iter().sum();
        if total <= 0.0 || (total - closed).abs() > 1e-6 * total.max(1.0) {
            return;
        }
        if self.days.len() == DAYS {
            self.days.pop_front();
        }
        self.days
            .push_back(hours.iter().map(|h| h / total).collect());
    }

    /// The usual share of a day's operating hours done in its first `hours`
    /// hours; `None` before a day was learned.
    pub fn done_by(&self, hours: usize) -> Option<f64> {
        if self.days.is_empty() {
            return None;
        }
        let done: f64 = (self.days.iter())
            .map(|day| day.iter().take(hours).sum::<f64>())
            .sum();
        Some(done / self.days.len() as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Eight hours of work from 08:00, one operating hour each.
    fn one_shift() -> Vec<f64> {
        (0..24)
            .map(|h| if (8..16).contains(&h) { 1.0 } else { 0.0 })
            .collect()
    }

    #[test]
    fn a_one_shift_day_is_done_by_its_end_and_half_done_mid_shift() {
        let mut shape = DayShape::default();
        assert_eq!(shape.done_by(12), None);
        shape.learn(&one_shift(), 8.0);
        assert_eq!(shape.done_by(8), Some(0.0));
        assert_eq!(shape.done_by(12), Some(0.5));
        assert_eq!(shape.done_by(16), Some(1.0));
        assert_eq!(shape.done_by(25), Some(1.0));
    }

    #[test]
    fn days_not_all_taken_in_or_without_work_teach_nothing() {
        let mut shape = DayShape::default();
        // The close counted 10 operating hours; the open day saw 8 of them.
        shape.learn(&one_shift(), 10.0);
        shape.learn(&[0.0; 24], 0.0);
        assert_eq!(shape.done_by(12), None);
    }

    #[test]
    fn the_shape_is_the_mean_of_the_last_seven_days() {
        let mut shape = DayShape::default();
        // A night shift (from 20:00) once, then seven day shifts: the night
        // falls out of the mean.
        let night: Vec<f64> = (0..24).map(|h| if h >= 20 { 1.0 } else { 0.0 }).collect();
        shape.learn(&night, 4.0);
        shape.learn(&one_shift(), 8.0);
        assert_eq!(shape.done_by(20), Some(0.5));
        for _ in 0..6 {
            shape.learn(&one_shift(), 8.0);
        }
        assert_eq!(shape.done_by(20), Some(1.0));
    }
}
