//! The one place where wire types become engine types, so KPI code never sees
//! prost types.

pub mod wire;

use fleetpulse_engine::{DeviceBatch, FeatureCatalog, Id, MachineState, Sample};
use fleetpulse_proto::{TopicIds, v1};

/// Converts validated batches, interning ids so that the many readings of a
/// device share one allocation per id.
#[derive(Debug, Default)]
pub struct Converter {
    catalog: FeatureCatalog,
    ids: foldhash::HashMap<String, Id>,
    /// Operator ids become pseudonyms here, before the engine sees them.
    pseudonyms: Option<std::sync::Arc<crate::privacy::Pseudonyms>>,
    /// Clear operator id -> pseudonym, so each is hashed once.
    operators: foldhash::HashMap<String, Id>,
}

/// Most ids kept interned; beyond it new ids are allocated per batch (a flood
/// of never-seen ids must not grow memory without bound).
const MAX_INTERNED: usize = 1 << 20;

impl Converter {
    /// A converter classifying features with `catalog`.
    pub fn new(catalog: FeatureCatalog) -> Self {
        Self {
            catalog,
            ids: foldhash::HashMap::default(),
            pseudonyms: None,
            operators: foldhash::HashMap::default(),
        }
    }

    /// Replaces operator ids by their pseudonyms.
    pub fn with_pseudonyms(
        mut self,
        pseudonyms: Option<std::sync::Arc<crate::privacy::Pseudonyms>>,
    ) -> Self {
        self.pseudonyms = pseudonyms;
        self
    }

    /// The catalog features are classified with.
    pub fn catalog(&self) -> &FeatureCatalog {
        &self.catalog
    }

    fn operator(&mut self, id: &str) -> Id {
        let Some(pseudonyms) = &self.pseudonyms else {
            return self.intern(id);
        };
        if let Some(pseudonym) = self.operators.get(id) {
            return pseudonym.clone();
        }
        let pseudonym: Id = pseudonyms.pseudonym(id).as_str().into();
        if self.operators.len() < MAX_INTERNED {
            self.operators.insert(id.to_owned(), pseudonym.clone());
        }
        pseudonym
    }

    /// Converts one validated batch.
    pub fn batch(&mut self, batch: v1::TelemetryBatch) -> DeviceBatch {
        let samples = batch.samples.into_iter().map(|s| self.sample(s)).collect();
        DeviceBatch {
            customer: self.intern(&batch.customer_id),
            site: self.intern(&batch.site_id),
            device: self.intern(&batch.device_id),
            unit_epoch: batch.unit_epoch,
            sequence: batch.sequence,
            samples,
        }
    }

    /// The batch a payload read by [`wire::parse`] on `topic` holds.
    pub fn parsed(&mut self, topic: &TopicIds<'_>, parsed: wire::Parsed<'_>) -> DeviceBatch {
        let mut samples = parsed.samples;
        for (sample, operator) in samples.iter_mut().zip(parsed.operators) {
            sample.operator = (!operator.is_empty()).then(|| self.operator(operator));
        }
        DeviceBatch {
            customer: self.intern(topic.customer),
            site: self.intern(topic.site),
            device: self.intern(topic.device),
            unit_epoch: parsed.unit_epoch,
            sequence: parsed.sequence,
            samples,
        }
    }

    fn sample(&mut self, s: v1::Sample) -> Sample {
        let mut sample = Sample {
            at: s.event_time_ms as u64,
            state: state(s.state()),
            operating_hours: s.cumulative_operating_hours,
            idle_hours: s.cumulative_idle_hours,
            fuel_litres: s.cumulative_fuel_used_litres,
            cycles: s.cycles,
            output_units: s.output_units,
            manual_interventions: s.manual_interventions,
            operator: (!s.operator_id.is_empty()).then(|| self.operator(&s.operator_id)),
            faults: s.fault_codes.len() as u32,
            ..Sample::default()
        };
        for f in &s.features {
            add_feature(&mut sample, &self.catalog, &f.feature, f.active_seconds);
        }
        sample
    }

    fn intern(&mut self, id: &str) -> Id {
        if let Some(shared) = self.ids.get(id) {
            return shared.clone();
        }
        let shared: Id = id.into();
        if self.ids.len() < MAX_INTERNED {
            self.ids.insert(id.to_owned(), shared.clone());
        }
        shared
    }
}

/// Adds a feature's active seconds to `sample`: any feature's to
/// `feature_seconds`, an advanced one's (by `catalog`) to its bit and to
/// `advanced_feature_seconds`.
fn add_feature(sample: &mut Sample, catalog: &FeatureCatalog, name: &str, seconds: u32) {
    sample.feature_seconds = sample.feature_seconds.saturating_add(seconds);
    if let Some(bit) = catalog.advanced_bit(name) {
        sample.advanced_features |= bit;
        sample.advanced_feature_seconds = sample.advanced_feature_seconds.saturating_add(seconds);
    }
}

/// The engine's machine state of a wire state.
fn state(s: v1::MachineState) -> MachineState {
    match s {
        v1::MachineState::Unspecified => MachineState::Unknown,
        v1::MachineState::Running => MachineState::Running,
        v1::MachineState::Idle => MachineState::Idle,
        v1::MachineState::Off => MachineState::Off,
        v1::MachineState::Fault => MachineState::Fault,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_features_faults_and_ids() {
        let batch = v1::TelemetryBatch {
            device_id: "d".into(),
            customer_id: "c".into(),
            site_id: "s".into(),
            sequence: 3,
            unit_epoch: 0,
            firmware_version: "1".into(),
            samples: vec![v1::Sample {
                event_time_ms: 1000,
                state: v1::MachineState::Running as i32,
                cumulative_operating_hours: 2.5,
                operator_id: "op".into(),
                features: vec![
                    v1::FeatureUsage {
                        feature: "work_mode".into(),
                        active_seconds: 10,
                    },
                    v1::FeatureUsage {
                        feature: "payload_weighing".into(),
                        active_seconds: 5,
                    },
                ],
                fault_codes: vec![v1::FaultCode::default(); 2],
                ..Default::default()
            }],
        };
        let mut converter = Converter::new(FeatureCatalog::default());
        let out = converter.batch(batch.clone());
        let s = &out.samples[0];
        assert_eq!(s.advanced_features, 0b100);
        assert_eq!((s.feature_seconds, s.advanced_feature_seconds), (15, 5));
        assert_eq!(s.faults, 2);
        assert_eq!(s.state, MachineState::Running);
        let again = converter.batch(batch);
        assert!(std::sync::Arc::ptr_eq(&out.device, &again.device));
    }
}
