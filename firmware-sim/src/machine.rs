//! The machines: kinds, their physics (fuel, cycles, payload), their features
//! and the fault codes they raise.

use serde::{Deserialize, Serialize};

/// Basic features: every operator uses them, they say little about adoption.
pub const BASIC_FEATURES: [&str; 3] = ["work_mode", "lights", "climate"];

/// Advanced features: their use is the depth of adoption. The engine's default
/// feature catalog lists the same names in the same order.
pub const ADVANCED_FEATURES: [&str; 4] = [
    "eco_mode",
    "auto_grade_assist",
    "payload_weighing",
    "remote_diagnostics",
];

/// Index of `eco_mode` in [`ADVANCED_FEATURES`] (it saves fuel).
pub(crate) const ECO_MODE: usize = 0;
/// Index of `auto_grade_assist` in [`ADVANCED_FEATURES`] (operators override it).
pub(crate) const AUTO_GRADE_ASSIST: usize = 1;

/// What kind of machine a device is; its id carries [`MachineKind::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MachineKind {
    /// Crawler excavator: many short dig-and-dump cycles.
    Excavator,
    /// Wheel loader: load-and-carry cycles.
    WheelLoader,
    /// Articulated hauler: few long haul cycles, large payloads.
    ArticulatedHauler,
    /// Dozer: push passes.
    Dozer,
}

impl MachineKind {
    /// All kinds, with the share of a fleet each makes up.
    pub(crate) const MIX: [(MachineKind, f64); 4] = [
        (MachineKind::Excavator, 0.40),
        (MachineKind::WheelLoader, 0.25),
        (MachineKind::ArticulatedHauler, 0.20),
        (MachineKind::Dozer, 0.15),
    ];

    /// Three-letter code used in device ids (`c01-exc-007`).
    pub fn code(self) -> &'static str {
        match self {
            Self::Excavator => "exc",
            Self::WheelLoader => "whl",
            Self::ArticulatedHauler => "hlr",
            Self::Dozer => "doz",
        }
    }

    /// Fuel burnt while working, litres per hour.
    pub(crate) fn working_fuel_lph(self) -> f64 {
        match self {
            Self::Excavator => 18.0,
            Self::WheelLoader => 14.0,
            Self::ArticulatedHauler => 24.0,
            Self::Dozer => 22.0,
        }
    }

    /// Fuel burnt while idling, litres per hour.
    pub(crate) fn idle_fuel_lph(self) -> f64 {
        match self {
            Self::Excavator => 3.5,
            Self::WheelLoader => 3.0,
            Self::ArticulatedHauler => 4.0,
            Self::Dozer => 4.0,
        }
    }

    /// Seconds of work per cycle.
    pub(crate) fn cycle_seconds(self) -> f64 {
        match self {
            Self::Excavator => 25.0,
            Self::WheelLoader => 40.0,
            Self::ArticulatedHauler => 900.0,
            Self::Dozer => 60.0,
        }
    }

    /// Tons moved per cycle.
    pub(crate) fn tons_per_cycle(self) -> f64 {
        match self {
            Self::Excavator => 3.2,
            Self::WheelLoader => 5.5,
            Self::ArticulatedHauler => 30.0,
            Self::Dozer => 6.0,
        }
    }

    /// Subscription list price per machine and year, whole currency units.
    pub(crate) fn list_price(self) -> u64 {
        match self {
            Self::Excavator => 9_600,
            Self::WheelLoader => 8_400,
            Self::ArticulatedHauler => 7_800,
            Self::Dozer => 9_000,
        }
    }
}

/// A fault code a machine can raise.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FaultDef {
    /// Manufacturer code (SPN/FMI rendered as text, or a hydraulics code).
    pub code: &'static str,
    /// 1 = info, 2 = warning, 3 = critical (stops the machine).
    pub severity: u32,
}

/// Faults that do not stop the machine.
pub(crate) const MINOR_FAULTS: [FaultDef; 5] = [
    FaultDef {
        code: "SPN1761-FMI17",
        severity: 1,
    }, // DEF tank level low
    FaultDef {
        code: "SPN168-FMI4",
        severity: 1,
    }, // battery voltage low
    FaultDef {
        code: "SPN157-FMI18",
        severity: 2,
    }, // fuel rail pressure low
    FaultDef {
        code: "SPN3216-FMI2",
        severity: 2,
    }, // NOx sensor erratic
    FaultDef {
        code: "HYD-0412",
        severity: 2,
    }, // hydraulic oil temperature high
];

/// Faults that stop the machine (state FAULT, downtime follows).
pub(crate) const CRITICAL_FAULTS: [FaultDef; 3] = [
    FaultDef {
        code: "SPN110-FMI0",
        severity: 3,
    }, // coolant temperature critical
    FaultDef {
        code: "SPN100-FMI1",
        severity: 3,
    }, // engine oil pressure critical
    FaultDef {
        code: "HYD-0977",
        severity: 3,
    }, // hydraulic pump pressure loss
];
