//! `GET /api/health-validation`: is the health score any good? For every
//! churn and renewal in the customers' contract events, the customer's
//! score 30, 60 and 90 days before: ROC AUC of the score predicting churn
//! and the churn rate per band (the arithmetic is
//! `fleetpulse_engine::kpi::health_validation`). Daily scores come from the
//! SQLite store when the service keeps one (the whole history), overlaid
//! with the view's (the newest days, restated ones included). A CSM gets
//! the figures over their own customers.

use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::Response;
use fleetpulse_engine::HealthRecord;
use fleetpulse_engine::kpi::health_validation::{
    DEFAULT_HORIZONS_DAYS, HorizonValidation, decisions, validate,
};
use serde::Serialize;
use utoipa::ToSchema;

use super::Hub;
use super::api::{ApiError, ApiQuery, BadQuery, NoQuery, Unauthorized, json};
use super::auth::Access;
use crate::sinks::SqliteStore;

/// The health score's record against renewal decisions.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = HealthValidationReport)]
struct ValidationDoc {
    /// Customers with contract events that this user sees.
    customers: usize,
    /// Of them, those with at least one decision (a churn or a renewal);
    /// the others are not cases.
    customers_with_decisions: u32,
    /// Churns and renewals over them.
    decisions: u32,
    /// Where the daily scores come from: `store` (the SQLite store, with
    /// the view's newest days over it) or `view` (the last 120 days the
    /// service holds in memory).
    health_source: &'static str,
    /// 30, 60 and 90 days before the decision. `auc` is the chance that a
    /// churned customer scored below a renewed one (ties half; null
    /// without cases of both); `without_history` the decisions with no
    /// score that many days before; `bands` green, yellow, red.
    horizons: Vec<HorizonValidation>,
}

/// The health score's predictive power and calibration
///
/// For each churn and renewal in the contract events (customers.toml and
/// its CSV), the score of the customer's last day that ended 30, 60 and 90
/// days before it: per horizon the number of churned and renewed cases, the
/// ROC AUC of the score predicting churn (Mann-Whitney, ties half) and, per
/// band, the cases and their churn rate. Decisions without a score then are
/// counted and left out. Admins and viewers get every customer; a CSM
/// their own.
#[utoipa::path(get, path = "/api/health-validation", operation_id = "getHealthValidation", tag = "api",
    responses((status = 200, description = "per horizon", body = ValidationDoc), BadQuery,
        Unauthorized))]
pub async fn health_validation(
    State(hub): State<Arc<Hub>>,
    Extension(access): Extension<Access>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Result<Response, ApiError> {
    let (book, _, _) = super::retention::contract_book(&hub).await?;
    let customers = super::retention::visible(&book.histories, &access);
    // Only the customers with a decision are cases: the dashboard asks on
    // every refresh, so the store is not read for the others.
    let deciding: Vec<String> = customers
        .iter()
        .filter(|c| !decisions(c).is_empty())
        .map(|c| c.customer.to_string())
        .collect();
    let stored: Option<Vec<HealthRecord>> = match hub.touchpoint_store() {
        Some(path) => Some(
            tokio::task::spawn_blocking(move || {
                let store = SqliteStore::open_existing(&path)?;
                let mut rows = Vec::new();
                for customer in &deciding {
                    rows.extend(store.health(Some(customer))?);
                }
                Ok::<_, crate::sinks::SinkError>(rows)
            })
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(super::api::store_error)?,
        ),
        None => None,
    };
    let histories = {
        let view = hub.read_view();
        let recent = view
            .customers()
            .values()
            .flat_map(|c| c.health.iter().flat_map(|s| s.iter()));
        // The view's rows last: a day restated since the store's write wins.
        // Closed days only: a provisional score is the open day so far.
        let rows = (stored.iter().flatten().chain(recent)).filter(|h| !h.provisional);
        crate::health_validation::score_histories(rows, &customers)
    };
    let v = validate(&histories, &DEFAULT_HORIZONS_DAYS);
    let doc = ValidationDoc {
        customers: customers.len(),
        customers_with_decisions: v.customers_with_decisions,
        decisions: v.decisions,
        health_source: if stored.is_some() { "store" } else { "view" },
        horizons: v.horizons,
    };
    Ok(json(&doc))
}
