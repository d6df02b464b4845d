//! OpenAPI schemas of the record kinds, generated from the definitions: a
//! record's JSON document ([`Doc`](super::Doc)) is an object with one member
//! per column.

use std::borrow::Cow;

use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{Ref, RefOr};

use super::{Column, Kind, RecordKind};

/// The schema of one column's JSON value.
pub fn column_schema(c: &Column) -> RefOr<Schema> {
    let description = if c.unit.is_empty() {
        c.doc.to_owned()
    } else {
        format!("{} ({})", c.doc, c.unit)
    };
    // A float may be undefined (NaN), which JSON writes as `null`.
    let nullable = c.ty.optional || c.ty.kind == Kind::Real;
    let ty = |t: Type| -> SchemaType {
        if nullable {
            SchemaType::from_iter([t, Type::Null])
        } else {
            SchemaType::new(t)
        }
    };
    let object = match c.ty.kind {
        Kind::Enum { type_name, .. } => return Ref::from_schema_name(type_name).into(),
        Kind::Integer => ObjectBuilder::new()
            .schema_type(ty(Type::Integer))
            .minimum(Some(0)),
        Kind::Real => ObjectBuilder::new().schema_type(ty(Type::Number)),
        Kind::Boolean => ObjectBuilder::new().schema_type(ty(Type::Boolean)),
        Kind::Text => ObjectBuilder::new().schema_type(ty(Type::String)),
    };
    object.description(Some(description)).into()
}

/// The schema of `R`'s JSON document.
pub fn record_schema<R: RecordKind>() -> RefOr<Schema> {
    let mut object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(R::DOC))
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    for c in R::COLUMNS {
        object = object.property(c.name, column_schema(c)).required(c.name);
    }
    object.into()
}

/// A string enum schema of `names`.
fn enum_schema(names: &[&str]) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(names.iter().copied()))
        .into()
}

/// Registers the enum schemas the columns of `R` refer to.
pub fn enum_schemas<R: RecordKind>(schemas: &mut Vec<(String, RefOr<Schema>)>) {
    for c in R::COLUMNS {
        if let Kind::Enum { type_name, names } = c.ty.kind
            && !schemas.iter().any(|(n, _)| n == type_name)
        {
            schemas.push((type_name.to_owned(), enum_schema(names)));
        }
    }
}

/// Types that stand for a record kind's [`Doc`] in the API's document types
/// (`#[schema(value_type = HealthSchema)]`): utoipa's derive wants a
/// schema type without type parameters.
macro_rules! schema_types {
    ($($schema:ident => $record:ty),+ $(,)?) => {$(
        #[doc = concat!("The OpenAPI schema of a [`Doc`](super::Doc) of [`", stringify!($record), "`].")]
        pub struct $schema;

        impl utoipa::PartialSchema for $schema {
            fn schema() -> RefOr<Schema> {
                record_schema::<$record>()
            }
        }

        impl utoipa::ToSchema for $schema {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(<$record as RecordKind>::API_NAME)
            }

            fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
                enum_schemas::<$record>(schemas);
            }
        }
    )+};
}

schema_types!(
    CustomerKpiSchema => fleetpulse_engine::CustomerKpi,
    OutcomeSchema => fleetpulse_engine::OutcomeRecord,
    MilestoneSchema => fleetpulse_engine::MilestoneRecord,
    HealthSchema => fleetpulse_engine::HealthRecord,
    ForecastSchema => fleetpulse_engine::ForecastRecord,
    AlertSchema => fleetpulse_engine::AlertRecord,
    PortfolioSchema => fleetpulse_engine::PortfolioRecord,
    TouchpointSchema => fleetpulse_engine::kpi::touchpoint::Touchpoint,
    ContractEventSchema => fleetpulse_engine::kpi::revenue_retention::RecordedContractEvent,
);
