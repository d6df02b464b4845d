//! The simulated fleet as an OEM's AEMP API sees it: per machine, an
//! `EquipmentHeader` and the time series of what ISO 15143-3 can carry
//! (running totals of hours, idle hours, fuel and loads; engine status;
//! fault codes). Operators, features, output and interventions have no
//! AEMP element and are not served.
//!
//! The ground truth of the served machines is the simulator's fold
//! ([`GroundTruth`]) over that projection: what a perfect AEMP client can
//! know. Two things differ from the MQTT truth of the same devices, by the
//! standard's nature: a machine's first load count is a baseline (its
//! cycles are not known), and the engine status tells running from not
//! running only (idle counts as running, a fault stop as off).

use fleetpulse_proto::v1;
use fleetpulse_sim::{Device, Fleet, GroundTruth};

use crate::source::aemp::AempEquipment;
use crate::source::aemp::parse::EquipmentHeader;

/// Which of the fleet's devices the server answers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selection {
    /// Serve device `i` (fleet order) when `i % every == offset`.
    pub every: usize,
    /// See `every`.
    pub offset: usize,
}

impl Default for Selection {
    fn default() -> Self {
        Self {
            every: 1,
            offset: 0,
        }
    }
}

impl Selection {
    /// Whether `device` is served.
    pub fn serves(&self, device: &Device) -> bool {
        device.index % self.every.max(1) == self.offset
    }
}

/// One reading time of one machine: every element at once, as the
/// simulated telematics unit sampled them.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// ms since the epoch.
    pub at: u64,
    /// Cumulative operating hours.
    pub hours: f64,
    /// Cumulative idle hours.
    pub idle: f64,
    /// Cumulative fuel used, litres.
    pub fuel: f64,
    /// Cumulative load count.
    pub loads: u64,
    /// Engine running.
    pub running: bool,
    /// Fault codes raised since the previous point: (code, severity).
    pub faults: Vec<(String, u32)>,
}

/// One machine the server answers for.
#[derive(Debug, Clone)]
pub struct SimMachine {
    /// Its header.
    pub header: EquipmentHeader,
    /// Customer, site and device in the simulation (and in the mapping).
    pub customer: String,
    /// Site id.
    pub site: String,
    /// Device id.
    pub device: String,
    /// Its readings, in time order.
    pub points: Vec<Point>,
}

/// The served part of a fleet.
#[derive(Debug, Clone)]
pub struct AempFleet {
    /// Machines, in fleet order.
    pub machines: Vec<SimMachine>,
}

impl AempFleet {
    /// The devices of `fleet` that `selection` serves; with `pin_ids`,
    /// equipment ids carry a `#` (so clients must address them by PIN).
    pub fn new(fleet: &Fleet, selection: Selection, pin_ids: bool) -> Self {
        let mut machines: Vec<SimMachine> = Vec::new();
        let mut slot = vec![usize::MAX; fleet.devices().len()];
        for device in fleet.devices().iter().filter(|d| selection.serves(d)) {
            slot[device.index] = machines.len();
            let customer = fleet.customer_of(device);
            machines.push(SimMachine {
                header: EquipmentHeader {
                    oem: "FleetpulseSim".into(),
                    model: format!("{:?}", device.kind),
                    id: if pin_ids {
                        format!("{}#{:05}", device.kind.code().to_uppercase(), device.index)
                    } else {
                        device.id.clone()
                    },
                    serial: format!("SN{:07}", device.index),
                    pin: format!("FPS{:014}", device.index),
                    latest_ms: None,
                },
                customer: customer.id.clone(),
                site: device.site_id().to_owned(),
                device: device.id.clone(),
                points: Vec::new(),
            });
        }
        let index: std::collections::HashMap<(String, String), usize> = fleet
            .devices()
            .iter()
            .filter(|d| slot[d.index] != usize::MAX)
            .map(|d| {
                (
                    (fleet.customer_of(d).id.clone(), d.id.clone()),
                    slot[d.index],
                )
            })
            .collect();
        for message in fleet.messages() {
            let batch = &message.batch;
            let Some(&i) = index.get(&(batch.customer_id.clone(), batch.device_id.clone())) else {
                continue;
            };
            let machine = &mut machines[i];
            for s in &batch.samples {
                let loads = machine.points.last().map_or(0, |p| p.loads) + u64::from(s.cycles);
                machine.points.push(Point {
                    at: s.event_time_ms as u64,
                    hours: s.cumulative_operating_hours,
                    idle: s.cumulative_idle_hours,
                    fuel: s.cumulative_fuel_used_litres,
                    loads,
                    running: matches!(
                        s.state(),
                        v1::MachineState::Running | v1::MachineState::Idle
                    ),
                    faults: s
                        .fault_codes
                        .iter()
                        .map(|f| (f.code.clone(), f.severity.clamp(1, 3)))
                        .collect(),
                });
            }
        }
        Self { machines }
    }

    /// The ground truth of the served machines.
    pub fn ground_truth(&self) -> GroundTruth {
        let mut truth = GroundTruth::default();
        self.observe_into(&mut truth);
        truth
    }

    /// Adds the served machines' readings to `truth`, as what an AEMP
    /// client can know of them (see the module docs).
    pub fn observe_into(&self, truth: &mut GroundTruth) {
        for machine in &self.machines {
            truth_of(machine, truth, |m| m.customer.clone());
        }
    }

    /// Per-device ground truth: rows keyed `customer/device` in the
    /// customer column.
    pub fn device_truth(&self) -> GroundTruth {
        let mut truth = GroundTruth::default();
        for machine in &self.machines {
            truth_of(machine, &mut truth, |m| {
                format!("{}/{}", m.customer, m.device)
            });
        }
        truth
    }

    /// `[[aemp_equipment]]` entries mapping every served machine to its
    /// simulated customer, site and device (by PIN), for `source`.
    pub fn equipment(&self, source: Option<&str>) -> Vec<AempEquipment> {
        self.machines
            .iter()
            .map(|m| AempEquipment {
                source: source.map(str::to_owned),
                pin: Some(m.header.pin.clone()),
                serial: None,
                customer: m.customer.clone(),
                site: m.site.clone(),
                device: m.device.clone(),
            })
            .collect()
    }

    /// Readings served.
    pub fn points(&self) -> usize {
        self.machines.iter().map(|m| m.points.len()).sum()
    }
}

fn truth_of(machine: &SimMachine, truth: &mut GroundTruth, key: impl Fn(&SimMachine) -> String) {
    let mut previous: Option<u64> = None;
    for (i, p) in machine.points.iter().enumerate() {
        let cycles = previous.map_or(0, |loads| p.loads - loads);
        previous = Some(p.loads);
        truth.observe(&v1::TelemetryBatch {
            device_id: machine.device.clone(),
            customer_id: key(machine),
            site_id: machine.site.clone(),
            sequence: i as u64 + 1,
            firmware_version: String::new(),
            unit_epoch: 0,
            samples: vec![v1::Sample {
                event_time_ms: p.at as i64,
                state: if p.running {
                    v1::MachineState::Running
                } else {
                    v1::MachineState::Off
                } as i32,
                cumulative_operating_hours: p.hours,
                cumulative_idle_hours: p.idle,
                cumulative_fuel_used_litres: p.fuel,
                cycles: cycles as u32,
                fault_codes: p
                    .faults
                    .iter()
                    .map(|(code, severity)| v1::FaultCode {
                        code: code.clone(),
                        severity: *severity,
                    })
                    .collect(),
                ..v1::Sample::default()
            }],
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_sim::FleetSpec;

    #[test]
    fn the_projection_keeps_every_sample_and_the_truth_its_work() {
        let fleet = Fleet::generate(&FleetSpec {
            customers: 2,
            devices: 4,
            days: 1,
            ..FleetSpec::default()
        });
        let all = AempFleet::new(&fleet, Selection::default(), false);
        assert_eq!(all.points() as u64, fleet.sample_count());
        let half = AempFleet::new(
            &fleet,
            Selection {
                every: 2,
                offset: 1,
            },
            true,
        );
        assert_eq!(half.machines.len(), 2);
        assert!(half.machines.iter().all(|m| m.header.id.contains('#')));
        // Hours and faults are the MQTT truth's; cycles lose only each
        // machine's first sample's.
        let (mqtt, aemp) = (fleet.ground_truth().rows(), all.ground_truth().rows());
        let sum = |rows: &[fleetpulse_sim::DayTruth], f: fn(&fleetpulse_sim::DayTruth) -> f64| {
            rows.iter().map(f).sum::<f64>()
        };
        assert!(
            (sum(&mqtt, |r| r.operating_hours) - sum(&aemp, |r| r.operating_hours)).abs() < 1e-6
        );
        assert_eq!(
            sum(&mqtt, |r| r.fault_count as f64),
            sum(&aemp, |r| r.fault_count as f64)
        );
        assert!(sum(&aemp, |r| r.cycles as f64) <= sum(&mqtt, |r| r.cycles as f64));
        assert_eq!(all.equipment(Some("s")).len(), 4);
    }
}
