//! One device's telemetry, sample by sample.
//!
//! A device works in shifts (local time: day shift 06:00-14:00, late shift
//! 14:00-22:00; Saturday a thin day shift, Sunday almost nothing). At each
//! shift start it decides whether it works that shift, for how long and with
//! which operator; within the shift each sample is RUNNING, IDLE or OFF (a
//! short stop), with a break mid-shift. Outside work it sends OFF heartbeats.
//! Every sample covers the interval since the previous one: counters and
//! feature seconds are what happened in it.

use std::ops::Range;

use fleetpulse_proto::v1::{
    FaultCode, FeatureUsage, Location, MachineState, Sample, TelemetryBatch,
};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::calendar::{DAY_MS, HOUR_MS, MINUTE_MS, weekday};
use crate::fleet::{Customer, Device, FIRMWARE_UPDATE};
use crate::machine::{
    ADVANCED_FEATURES, AUTO_GRADE_ASSIST, CRITICAL_FAULTS, ECO_MODE, MINOR_FAULTS, MachineKind,
};
use crate::profile::{Profile, adoption_ramp};
use crate::random::{Domain, chance, mix, poisson, rng_for, stochastic_round, uniform};
use crate::spec::FleetSpec;

/// Cumulative counters of a machine (AEMP running totals).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Counters {
    pub operating_hours: f64,
    pub idle_hours: f64,
    pub fuel_litres: f64,
}

/// When a customer adopts an advanced feature and how much it then uses it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Adoption {
    /// Simulation day of adoption.
    pub day: f64,
    /// Share of working samples that use it once adoption has settled.
    pub share: f64,
}

/// The fixed parameters of one device's simulation.
#[derive(Debug, Clone)]
pub(crate) struct DeviceModel {
    pub topic: String,
    pub customer_id: String,
    pub site_id: String,
    /// Position among the customer's devices (crew rotation slot).
    pub local_index: usize,
    pub kind: MachineKind,
    /// Chance of working a weekday shift before profile effects.
    pub utilisation: f64,
    /// Counters when the unit first powers on (the machine's prior age).
    pub prior: Counters,
    /// Latitude, longitude, altitude when the unit has GNSS.
    pub location: Option<(f64, f64, f64)>,
    pub firmware: &'static str,
    /// Batch slot from which it runs [`FIRMWARE_UPDATE`] (`u64::MAX`: never).
    pub firmware_update: u64,
    /// Batch slot of the first message; `None`: never online.
    pub online: Option<u64>,
    /// Simulation day it comes online (learning curve of new customers).
    pub online_day: f64,
    /// Batch slot from which it sends nothing (`u64::MAX`: never).
    pub dark: u64,
    /// Batch slot from which it is parked (`u64::MAX`: never).
    pub parked: u64,
    /// The champion's machine (champion-leaves customers).
    pub champion_machine: bool,
    /// Unit epoch (Unix seconds) of the telematics unit it comes online with.
    pub unit_epoch: u64,
    /// Its unit is replaced: from this batch slot on it sends under a new
    /// epoch with the sequence back at 1; with `true` the new unit's
    /// cumulative counters start from 0.
    pub replaced: Option<(u64, bool)>,
}

impl DeviceModel {
    /// Batch slots in which the device sends a message.
    pub fn batches(&self, spec: &FleetSpec) -> Range<u64> {
        match self.online {
            None => 0..0,
            Some(online) => {
                let end = self.dark.min(spec.batches_per_device());
                online..end.max(online)
            }
        }
    }
}

/// Local-time shifts, minutes of the day.
const SHIFTS: [(u32, u32); 2] = [(6 * 60, 14 * 60), (14 * 60, 22 * 60)];

/// A device's plan for the shift it is in.
#[derive(Debug, Clone, Copy)]
struct ShiftPlan {
    /// Local day * 2 + shift; `i64::MIN` before the first shift.
    key: i64,
    working: bool,
    /// Local minutes of the working session.
    from: u32,
    to: u32,
    /// Local minutes of the break.
    break_from: u32,
    break_to: u32,
    /// Index into [`Customer::operators`].
    operator: usize,
    /// The operator is the customer's champion.
    champion: bool,
}

impl ShiftPlan {
    const NONE: ShiftPlan = ShiftPlan {
        key: i64::MIN,
        working: false,
        from: 0,
        to: 0,
        break_from: 0,
        break_to: 0,
        operator: 0,
        champion: false,
    };
}

/// The chance (before the 0.98 cap) that `device` works `shift` (0: day,
/// 1: late) of a day of `weekday` (0 = Monday) at simulation `day`, with the
/// customer's turn day `turn`, before any planted CS activity: the
/// machine's utilisation, the weekday, the profile's usage curve, the
/// learning curve of a new customer, the champion's machine.
pub(crate) fn shift_chance(
    spec: &FleetSpec,
    customer: &Customer,
    device: &Device,
    weekday: u32,
    shift: usize,
    day: f64,
    turn: f64,
) -> f64 {
    let model = &device.model;
    let profile = customer.profile;
    let weekday_factor = match (weekday, shift) {
        (0..=4, _) => 1.0,
        (5, 0) => 0.35,
        (6, 0) => 0.05,
        _ => 0.0,
    };
    let mut p =
        model.utilisation * weekday_factor * profile.usage_factor(day, turn, f64::from(spec.days));
    if profile.is_new_customer() {
        // Learning curve: half the use at first, full use two weeks later.
        p *= (0.5 + 0.5 * (day - model.online_day) / 14.0).clamp(0.5, 1.0);
    }
    if model.champion_machine {
        p *= profile.champion_machine_factor(day, turn);
    }
    p
}

/// What the profile curves say about one moment of the simulation.
struct Moment {
    /// Simulation day (fractional).
    day: f64,
    /// The customer's turn day (`INFINITY`: none).
    turn: f64,
    /// Local minute of the day.
    minute: u32,
}

/// The running state of one device's simulation.
#[derive(Debug, Clone)]
pub(crate) struct DeviceSim {
    rng: ChaCha8Rng,
    sequence: u64,
    unit_epoch: u64,
    powered_on: bool,
    counters: Counters,
    /// Subtracted from the machine's counters when they are reported: what
    /// the machine had done before a unit that counts from 0 was fitted.
    reported_from: Counters,
    plan: ShiftPlan,
    /// Samples of FAULT downtime still to come.
    downtime: u32,
}

impl DeviceSim {
    /// A device before its first sample.
    pub fn new(seed: u64, device: &Device) -> Self {
        Self {
            rng: rng_for(seed, Domain::DeviceTelemetry, device.index as u64),
            sequence: 0,
            unit_epoch: device.model.unit_epoch,
            powered_on: false,
            counters: device.model.prior,
            reported_from: Counters::default(),
            plan: ShiftPlan::NONE,
            downtime: 0,
        }
    }

    /// The device's message for batch slot `batch`, or `None` when it sends
    /// none then (not yet online, or dark). Slots must be asked in order.
    pub fn batch(
        &mut self,
        spec: &FleetSpec,
        customer: &Customer,
        device: &Device,
        batch: u64,
    ) -> Option<TelemetryBatch> {
        let model = &device.model;
        if !model.batches(spec).contains(&batch) {
            return None;
        }
        if let Some((slot, from_zero)) = model.replaced
            && slot == batch
        {
            // The new unit was fitted a minute before this slot's first
            // sample, right after the old unit's last reading.
            self.sequence = 0;
            self.unit_epoch = (spec.batch_time(batch) - MINUTE_MS) / 1000;
            if from_zero {
                self.reported_from = self.counters;
            }
        }
        let per = u64::from(spec.samples_per_batch);
        let first = batch * per;
        let end = (first + per).min(spec.samples_per_device());
        let samples = (first..end)
            .map(|k| self.sample(spec, customer, device, k))
            .collect();
        self.sequence += 1;
        let firmware = if batch >= model.firmware_update {
            FIRMWARE_UPDATE
        } else {
            model.firmware
        };
        Some(TelemetryBatch {
            device_id: device.id.clone(),
            customer_id: model.customer_id.clone(),
            site_id: model.site_id.clone(),
            sequence: self.sequence,
            unit_epoch: self.unit_epoch,
            firmware_version: firmware.to_owned(),
            samples,
        })
    }

    /// Sample `k` of the grid.
    fn sample(&mut self, spec: &FleetSpec, customer: &Customer, device: &Device, k: u64) -> Sample {
        let at = spec.sample_time(k);
        let mut sample = Sample {
            event_time_ms: at as i64,
            state: MachineState::Off as i32,
            location: self.location(device),
            ..Sample::default()
        };
        if !self.powered_on {
            // First sample ever: the power-on heartbeat.
            self.powered_on = true;
            self.write_counters(&mut sample);
            return sample;
        }
        let local = at as i64 + i64::from(customer.utc_offset_hours) * HOUR_MS as i64;
        let local_day = local.div_euclid(DAY_MS as i64);
        let moment = Moment {
            day: (at - spec.start) as f64 / DAY_MS as f64,
            turn: customer.turn_day.map_or(f64::INFINITY, f64::from),
            minute: (local.rem_euclid(DAY_MS as i64) as u64 / MINUTE_MS) as u32,
        };
        let shift = SHIFTS[..customer.shifts_per_day as usize]
            .iter()
            .position(|&(from, to)| (from..to).contains(&moment.minute));
        let parked = k / u64::from(spec.samples_per_batch) >= device.model.parked;
        if let (Some(shift), false) = (shift, parked) {
            let key = local_day * 2 + shift as i64;
            if key != self.plan.key {
                self.plan = self.plan_shift(spec, customer, device, key, shift, &moment);
            }
            if self.plan.working && (self.plan.from..self.plan.to).contains(&moment.minute) {
                self.work(spec, customer, device, &moment, &mut sample);
            }
        }
        self.write_counters(&mut sample);
        sample
    }

    fn plan_shift(
        &mut self,
        spec: &FleetSpec,
        customer: &Customer,
        device: &Device,
        key: i64,
        shift: usize,
        moment: &Moment,
    ) -> ShiftPlan {
        let model = &device.model;
        let p = shift_chance(
            spec,
            customer,
            device,
            weekday(key.div_euclid(2)),
            shift,
            moment.day,
            moment.turn,
        ) * customer.activity_factor(moment.day);
        let working = chance(&mut self.rng, p.min(0.98));
        let (start, end) = SHIFTS[shift];
        let late_start = 10 * self.rng.random_range(0..=3);
        let early_end = 10 * self.rng.random_range(0..=6);
        let break_from = (start + end) / 2 - 30 + 10 * self.rng.random_range(0..=6);
        let (operator, champion) = operator_for(customer, model, key, shift, moment);
        ShiftPlan {
            key,
            working,
            from: start + late_start,
            to: end - early_end,
            break_from,
            break_to: break_from + 30,
            operator,
            champion,
        }
    }

    /// A sample inside the working session: RUNNING, IDLE, OFF or FAULT.
    fn work(
        &mut self,
        spec: &FleetSpec,
        customer: &Customer,
        device: &Device,
        moment: &Moment,
        sample: &mut Sample,
    ) {
        let profile = customer.profile;
        let kind = device.model.kind;
        let interval_s = (spec.sample_interval_ms / 1000) as f64;
        let operator = &customer.operators[self.plan.operator];
        if self.downtime > 0 {
            self.downtime -= 1;
            sample.state = MachineState::Fault as i32;
            sample.operator_id = operator.clone();
            return;
        }
        let rng = &mut self.rng;
        let on_break = (self.plan.break_from..self.plan.break_to).contains(&moment.minute);
        let roll = rng.random::<f64>();
        let state = match (on_break, roll) {
            (true, r) if r < 0.4 => MachineState::Idle,
            (true, _) => MachineState::Off,
            (false, r) if r < 0.76 => MachineState::Running,
            (false, r) if r < 0.94 => MachineState::Idle,
            (false, _) => MachineState::Off,
        };
        if state == MachineState::Off {
            return;
        }
        let (mut work_s, idle_s) = match state {
            MachineState::Running => (
                interval_s * uniform(rng, 0.8, 0.95),
                interval_s * uniform(rng, 0.0, 0.05),
            ),
            _ => (0.0, interval_s * uniform(rng, 0.5, 1.0)),
        };
        let mut state = state;
        if work_s > 0.0 && chance(rng, profile.fault_rate(moment.day, moment.turn)) {
            if chance(rng, profile.critical_share(moment.day, moment.turn)) {
                let fault = CRITICAL_FAULTS[rng.random_range(0..CRITICAL_FAULTS.len())];
                sample.fault_codes.push(FaultCode {
                    code: fault.code.to_owned(),
                    severity: fault.severity,
                });
                let (lo, hi) = profile.downtime_samples(moment.day, moment.turn);
                self.downtime = rng.random_range(lo..=hi);
                work_s *= uniform(rng, 0.1, 0.6);
                state = MachineState::Fault;
            } else {
                let fault = MINOR_FAULTS[rng.random_range(0..MINOR_FAULTS.len())];
                sample.fault_codes.push(FaultCode {
                    code: fault.code.to_owned(),
                    severity: fault.severity,
                });
            }
        }
        sample.state = state as i32;
        sample.operator_id = operator.clone();

        // Features: basic ones follow the work, advanced ones the adoption.
        let manned_s = work_s + idle_s;
        if work_s > 0.0 {
            sample.features.push(feature("work_mode", work_s));
        }
        let dark_outside = moment.minute < 7 * 60 || moment.minute >= 17 * 60;
        if dark_outside {
            sample.features.push(feature("lights", manned_s));
        }
        if chance(rng, 0.6) {
            sample
                .features
                .push(feature("climate", manned_s * uniform(rng, 0.5, 1.0)));
        }
        let mut eco = false;
        let mut grade_assist = false;
        if work_s > 0.0 {
            for (f, adoption) in customer.adoption.iter().enumerate() {
                let Some(adoption) = adoption else { continue };
                let settled = adoption_ramp(moment.day - adoption.day);
                let share = if self.plan.champion {
                    Profile::CHAMPION_FEATURE_SHARE * settled
                } else {
                    adoption.share * settled * profile.advanced_factor(moment.day, moment.turn)
                };
                if share > 0.0 && chance(rng, share) {
                    sample.features.push(feature(
                        ADVANCED_FEATURES[f],
                        work_s * uniform(rng, 0.3, 1.0),
                    ));
                    eco |= f == ECO_MODE;
                    grade_assist |= f == AUTO_GRADE_ASSIST;
                }
            }
        }

        // Work done.
        let pace = uniform(rng, 0.85, 1.1);
        let cycles = stochastic_round(rng, work_s / kind.cycle_seconds() * pace);
        sample.cycles = cycles;
        sample.output_units =
            (f64::from(cycles) * kind.tons_per_cycle() * uniform(rng, 0.9, 1.1) * 10.0).round()
                / 10.0;
        let mut intervention_rate = profile.interventions_per_cycle(moment.day, moment.turn);
        if grade_assist {
            intervention_rate *= 1.5;
        }
        sample.manual_interventions = poisson(rng, f64::from(cycles) * intervention_rate);
        let kept = customer.intervention_factor(moment.day);
        if kept < 1.0 && sample.manual_interventions > 0 {
            // A planted cut (`crate::activity`) keeps each intervention with
            // chance `kept`, drawn from a hash of the sample rather than the
            // device's stream: the fleet with and without the cut differs
            // in these counts only.
            let key = mix(spec.seed ^ mix(device.index as u64) ^ mix(sample.event_time_ms as u64));
            sample.manual_interventions = (0..u64::from(sample.manual_interventions))
                .filter(|&i| ((mix(key ^ i) >> 11) as f64 / (1u64 << 53) as f64) < kept)
                .count() as u32;
        }
        let eco_factor = if eco { 0.88 } else { 1.0 };
        self.counters.operating_hours += manned_s / 3600.0;
        self.counters.idle_hours += idle_s / 3600.0;
        self.counters.fuel_litres += work_s / 3600.0 * kind.working_fuel_lph() * eco_factor
            + idle_s / 3600.0 * kind.idle_fuel_lph();
    }

    fn write_counters(&self, sample: &mut Sample) {
        let from = self.reported_from;
        sample.cumulative_operating_hours = self.counters.operating_hours - from.operating_hours;
        sample.cumulative_idle_hours = self.counters.idle_hours - from.idle_hours;
        sample.cumulative_fuel_used_litres = self.counters.fuel_litres - from.fuel_litres;
    }

    fn location(&mut self, device: &Device) -> Option<Location> {
        let (lat, lon, alt) = device.model.location?;
        Some(Location {
            latitude: lat + uniform(&mut self.rng, -0.0015, 0.0015),
            longitude: lon + uniform(&mut self.rng, -0.0015, 0.0015),
            altitude_m: alt,
        })
    }
}

/// The operator of a device in a shift: crews rotate over the machines with a
/// stateless per-shift offset, so no operator works two machines at once and
/// the choice does not depend on any device's random stream. The champion
/// always works the day shift on the champion's machine until the turn day,
/// and nobody else gets the champion's badge.
fn operator_for(
    customer: &Customer,
    model: &DeviceModel,
    key: i64,
    shift: usize,
    moment: &Moment,
) -> (usize, bool) {
    let has_champion = customer.champion.is_some();
    if has_champion && shift == 0 && model.champion_machine && moment.day < moment.turn {
        return (0, true);
    }
    let reserved = usize::from(has_champion && shift == 0);
    let slots = (customer.crew_size - reserved) as u64;
    let offset = mix(customer.rotation_key ^ key as u64) % slots;
    let slot = (offset + model.local_index as u64) % slots;
    (shift * customer.crew_size + reserved + slot as usize, false)
}

fn feature(name: &str, seconds: f64) -> FeatureUsage {
    FeatureUsage {
        feature: name.to_owned(),
        active_seconds: (seconds.round() as u32).max(1),
    }
}
