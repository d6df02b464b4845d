//! One definition per record kind the engine emits: its columns, their types,
//! units and meaning, and which of them identify a row (SQLite primary key),
//! a series (line-protocol tags) and a point (line-protocol timestamp).
//!
//! Everything that stores, reads, serves or documents a record is derived
//! from these definitions: the SQLite tables, upserts and readers
//! (`sinks/sqlite`), the line protocol (`sinks/influxdb/encode.rs`), the
//! API's JSON documents ([`Doc`]) and their OpenAPI schemas
//! ([`openapi`]), and the tables of `docs/SCHEMA.md` ([`docs`]). A new field
//! is one line in its kind's file.

#[macro_use]
mod define;
mod kinds;

#[cfg(test)]
mod added_field;
mod cell;
pub mod docs;
pub mod openapi;

use fleetpulse_engine::Output;
use serde::ser::SerializeMap;

pub use cell::{Cell, CellType, Kind, Named, Value};

/// What a column is for, beyond holding a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Part of the SQLite primary key.
    Key,
    /// A line-protocol tag (part of the series).
    Tag,
    /// The line-protocol timestamp.
    Time,
}

/// One column of a record kind.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Its name in every store, the API and the docs.
    pub name: &'static str,
    /// Its type.
    pub ty: CellType,
    /// What it identifies.
    pub roles: &'static [Role],
    /// Unit, e.g. `hours`, `ms since epoch`, `ratio 0..1`.
    pub unit: &'static str,
    /// What it means, one line.
    pub doc: &'static str,
}

impl Column {
    /// Whether the column plays `role`.
    pub fn is(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// A line-protocol field: neither a tag nor the timestamp.
    pub fn is_field(&self) -> bool {
        !self.is(Role::Tag) && !self.is(Role::Time)
    }
}

/// A record kind: a record type of the engine with its columns.
pub trait RecordKind: Default + 'static {
    /// SQLite table and line-protocol measurement.
    const NAME: &'static str;
    /// Name of its OpenAPI schema.
    const API_NAME: &'static str;
    /// What one record is, one line.
    const DOC: &'static str;
    /// Notes for the docs: what a row means, how it is kept current.
    const NOTES: &'static str;
    /// Its columns, in stored order.
    const COLUMNS: &'static [Column];
    /// SQL condition (over `<table>` and `excluded`) that must hold for an
    /// upsert to overwrite an existing row; `None`: always.
    const OVERWRITE_IF: Option<&'static str> = None;
    /// Kept in the SQLite store only, never written as line protocol: not
    /// an engine output (touchpoints).
    const SQLITE_ONLY: bool = false;

    /// Calls `f` with each column's value, in [`Self::COLUMNS`] order.
    fn visit<'a>(&'a self, f: &mut dyn FnMut(Value<'a>));

    /// The record from a row holding [`Self::COLUMNS`] in order.
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self>;

    /// The values, in column order.
    fn values(&self) -> Vec<Value<'_>> {
        let mut out = Vec::with_capacity(Self::COLUMNS.len());
        self.visit(&mut |v| out.push(v));
        out
    }
}

/// Something done with each record kind, e.g. creating its table.
pub trait KindVisitor {
    /// Called once per kind.
    fn kind<R: RecordKind>(&mut self);
}

/// Something done with one record of any kind, e.g. writing it.
pub trait RecordVisitor {
    /// What it returns.
    type Out;
    /// Called with the record.
    fn record<R: RecordKind>(&mut self, record: &R) -> Self::Out;
}

/// Calls `v` for every record kind, in the order the docs list them.
pub fn each_kind(v: &mut impl KindVisitor) {
    use fleetpulse_engine::*;
    v.kind::<CustomerKpi>();
    v.kind::<DeviceKpi>();
    v.kind::<OutcomeRecord>();
    v.kind::<MilestoneRecord>();
    v.kind::<HealthRecord>();
    v.kind::<ForecastRecord>();
    v.kind::<AlertRecord>();
    v.kind::<PortfolioRecord>();
    v.kind::<kpi::touchpoint::Touchpoint>();
    v.kind::<kpi::revenue_retention::RecordedContractEvent>();
}

/// Calls `v` with the record inside `output`.
pub fn with_record<V: RecordVisitor>(output: &Output, v: &mut V) -> V::Out {
    match output {
        Output::Customer(r) => v.record(r),
        Output::Device(r) => v.record(r),
        Output::Outcome(r) => v.record(r),
        Output::Milestone(r) => v.record(r),
        Output::Health(r) => v.record(&**r),
        Output::Forecast(r) => v.record(r),
        Output::Alert(r) => v.record(r),
        Output::Portfolio(r) => v.record(r),
    }
}

/// A record as the API's JSON document: one member per column, non-finite
/// and absent values as `null`.
#[derive(Debug)]
pub struct Doc<'a, R>(pub &'a R);

impl<R: RecordKind> serde::Serialize for Doc<'_, R> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(R::COLUMNS.len()))?;
        let mut columns = R::COLUMNS.iter();
        let mut result = Ok(());
        self.0.visit(&mut |value| {
            if result.is_ok() {
                let column = columns.next().expect("one value per column");
                result = map.serialize_entry(column.name, &value);
            }
        });
        result?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    struct Check;
    impl KindVisitor for Check {
        fn kind<R: RecordKind>(&mut self) {
            let names: BTreeSet<_> = R::COLUMNS.iter().map(|c| c.name).collect();
            assert_eq!(names.len(), R::COLUMNS.len(), "{}: a name twice", R::NAME);
            // Plain names: SQL identifiers and line-protocol keys as they
            // are, no quoting or escaping.
            for name in names.iter().chain([&R::NAME]) {
                let plain = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
                assert!(
                    name.bytes().all(plain),
                    "{}: `{name}` is not plain",
                    R::NAME
                );
            }
            let times = R::COLUMNS.iter().filter(|c| c.is(Role::Time)).count();
            assert_eq!(times, 1, "{}: one timestamp", R::NAME);
            assert!(R::COLUMNS.iter().any(|c| c.is(Role::Key)), "{}", R::NAME);
            for c in R::COLUMNS.iter().filter(|c| c.is(Role::Tag)) {
                assert!(
                    matches!(c.ty.kind, Kind::Text | Kind::Enum { .. }) && !c.ty.optional,
                    "{}.{}: a tag is always a text",
                    R::NAME,
                    c.name
                );
            }
            assert_eq!(R::default().values().len(), R::COLUMNS.len());
        }
    }

    #[test]
    fn every_kind_is_well_formed() {
        each_kind(&mut Check);
    }

    /// The JSON document of a record has exactly the members the engine's
    /// serde gives it (the KPIs: with their totals flattened; health: with
    /// its components flattened), so the API's documents did not change
    /// shape when they moved onto the definitions.
    #[test]
    fn documents_have_the_engine_records_members() {
        use crate::sinks::fixtures::{DAY, alert, customer, health, milestone, outcome, portfolio};
        fn members(v: serde_json::Value) -> BTreeSet<String> {
            v.as_object().unwrap().keys().cloned().collect()
        }
        fn same<R: RecordKind + serde::Serialize>(r: &R) {
            let doc = serde_json::to_value(Doc(r)).unwrap();
            let mut engine = serde_json::to_value(r).unwrap();
            let object = engine.as_object_mut().unwrap();
            if let Some(serde_json::Value::Object(totals)) = object.remove("totals") {
                object.extend(totals);
            }
            assert_eq!(members(doc.clone()), members(engine.clone()), "{}", R::NAME);
            for (k, v) in engine.as_object().unwrap() {
                assert_eq!(&doc[k], v, "{}.{k}", R::NAME);
            }
        }
        same(&customer("acme", 0, 3));
        same(&outcome("acme", DAY, 0.5));
        same(&milestone("all-online", 1, DAY));
        same(&alert("acme", 1, DAY));
        same(&portfolio(DAY, 3));
        let h = health("acme", DAY, 70.0);
        let doc = serde_json::to_value(Doc(&h)).unwrap();
        let mut engine = serde_json::to_value(&h).unwrap();
        let components = engine
            .as_object_mut()
            .unwrap()
            .remove("components")
            .unwrap();
        for (k, v) in components.as_object().unwrap() {
            let k = if k == "outcome" {
                "outcome_attainment"
            } else {
                k
            };
            assert_eq!(&doc[k], v, "health.{k}");
        }
        let mut moved_members = 0;
        for span in ["moved_1d", "moved_7d"] {
            let moved = engine.as_object_mut().unwrap().remove(span).unwrap();
            for (k, v) in moved.as_object().unwrap() {
                assert_eq!(&doc[format!("{span}_{k}")], v, "health.{span}_{k}");
                moved_members += 1;
            }
        }
        assert_eq!(moved_members, 14);
        for (k, v) in engine.as_object().unwrap() {
            assert_eq!(&doc[k], v, "health.{k}");
        }
        assert_eq!(
            doc.as_object().unwrap().len(),
            engine.as_object().unwrap().len()
                + components.as_object().unwrap().len()
                + moved_members
        );
    }
}
