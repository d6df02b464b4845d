//! fleetpulse-sim: a deterministic connected-machine fleet simulator.
//!
//! It exists so the CLI (`fleetpulse sim`, `fleetpulse demo`), the tests and
//! the benchmarks all feed fleetpulse the same believable telemetry, and can
//! check the KPIs fleetpulse computes against a ground truth.
//!
//! - [`spec`]: what fleet to simulate ([`FleetSpec`]);
//! - [`activity`]: CS touchpoints planted with known effects on usage;
//! - [`contract_events`]: each customer's contract history, by profile;
//! - [`profile`]: the customer behaviours Customer Success teams recognise
//!   ([`Profile`]), and how each shapes the telemetry;
//! - [`fleet`]: customers, contracts, sites, devices ([`Fleet::generate`]);
//! - `device`: one device's telemetry, sample by sample (shifts, operators,
//!   features, faults);
//! - [`coverage`]: devices that lose coverage and upload their buffer later;
//! - [`stream`]: the lazy, event-time ordered message stream ([`Fleet::messages`]);
//! - [`ground_truth`]: the per-customer daily totals the engine must reproduce;
//! - [`mod@publish`]: publishing a stream to an MQTT broker ([`publish()`]).
//!
//! Same spec and seed give a byte-identical stream:
//!
//! ```
//! use fleetpulse_sim::{Fleet, FleetSpec, GroundTruth};
//!
//! let spec = FleetSpec { customers: 2, devices: 4, days: 2, ..FleetSpec::default() };
//! let fleet = Fleet::generate(&spec);
//! let mut truth = GroundTruth::default();
//! for message in fleet.messages() {
//!     truth.observe(&message.batch);
//! }
//! // One row per customer and UTC day with samples.
//! assert!(truth.rows().len() <= 2 * 2);
//! assert_eq!(truth.rows().iter().map(|r| r.messages).sum::<u64>(), fleet.message_count());
//! assert!(fleet.encoded_messages().eq(Fleet::generate(&spec).encoded_messages()));
//! ```
#![deny(missing_docs)]

pub mod activity;
pub mod calendar;
pub mod contract_events;
pub mod coverage;
mod device;
mod error;
pub mod fleet;
pub mod ground_truth;
pub mod machine;
pub mod profile;
pub mod publish;
mod random;
pub mod spec;
pub mod stream;

pub use activity::{IMPACT_WINDOW_DAYS, PlantedActivity, SimTouchpoint};
pub use calendar::EventTime;
pub use contract_events::SimContractEvent;
pub use coverage::{Outage, Upload};
pub use error::SimError;
pub use fleet::{Contract, Customer, Device, Fleet, Segment, Site};
pub use ground_truth::{CustomerFacts, DayTruth, GroundTruth};
pub use machine::{ADVANCED_FEATURES, BASIC_FEATURES, MachineKind};
pub use profile::Profile;
pub use publish::{PublishOptions, PublishProgress, PublishReport, QoS, publish};
pub use spec::FleetSpec;
pub use stream::{Messages, SimMessage};
