//! Contract events recorded while the service runs: `GET
//! /api/contract-events` lists them, `POST /api/contract-events` records
//! one. They live in the service's SQLite store beside the touchpoints (so
//! one recorded with `fleetpulse contracts` shows up too), and revenue
//! retention reads them with the customers file's (`ContractBook::merged`:
//! a recorded event replaces a file event of the same customer, kind and
//! day).
//!
//! Who may write: as for touchpoints, an admin for any customer, a CSM for
//! the customers they see; the same checks against cross-site requests.
//! An event must add up with the customer's history (the file's events and
//! those recorded): a contraction below zero, an expansion after a churn,
//! ... are refused with the field named.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use fleetpulse_engine::kpi::revenue_retention::RecordedContractEvent;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Hub;
use super::api::{ApiError, ApiQuery, BadQuery, ErrorBody, NoQuery, Unauthorized, json, on_store};
use super::auth::Access;
use super::touchpoints::check_write;
use crate::contracts::ContractEventInput;
use crate::records::Doc;
use crate::records::openapi::ContractEventSchema;

/// `GET /api/contract-events` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ContractEventsQuery {
    /// Only this customer.
    customer: Option<String>,
}

/// The recorded contract events.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RecordedContractEvents)]
struct EventsDoc<'a> {
    /// By customer, then day; only those the user sees.
    #[schema(value_type = Vec<ContractEventSchema>)]
    events: Vec<Doc<'a, RecordedContractEvent>>,
}

/// The contract events recorded through the API and the CLI
///
/// Not those of the customers file. Admins get every customer's; a CSM
/// their own customers'.
#[utoipa::path(get, path = "/api/contract-events", operation_id = "listContractEvents", tag = "api",
    params(ContractEventsQuery),
    responses((status = 200, description = "the recorded events", body = EventsDoc), BadQuery,
        (status = 404, description = "`customer` names no customer, or not one of the user's", body = ErrorBody),
        Unauthorized))]
pub async fn list(
    State(hub): State<Arc<Hub>>,
    Extension(access): Extension<Access>,
    ApiQuery(q): ApiQuery<ContractEventsQuery>,
) -> Result<Response, ApiError> {
    if let Some(c) = &q.customer
        && !(access.sees(c) && hub.contracts().get(c).is_some())
    {
        // As `/api/alerts`: a mistyped id is said, not answered with an
        // empty list; one out of the user's scope gets the same answer.
        return Err(ApiError::not_found(format!(
            "`customer`: no customer `{c}`"
        )));
    }
    let customer = q.customer.clone();
    let events = on_store(&hub, move |s| s.contract_events(customer.as_deref()))
        .await?
        .unwrap_or_default();
    let events: Vec<&RecordedContractEvent> =
        events.iter().filter(|e| access.sees(&e.customer)).collect();
    Ok(json(&EventsDoc {
        events: events.into_iter().map(Doc).collect(),
    }))
}

/// Records a contract event
///
/// The body is a `NewContractEvent`. The event must add up with the
/// customer's contract events (the customers file's and those recorded).
/// Recording the same customer, kind and day again overwrites it; one with
/// the customer, kind and day of a customers file event replaces that one.
/// A dashboard session sends its CSRF token in `X-CSRF-Token`.
#[utoipa::path(post, path = "/api/contract-events", operation_id = "recordContractEvent", tag = "api",
    request_body(content = ContractEventInput, content_type = "application/json"),
    responses((status = 201, description = "the event as stored", body = ContractEventSchema),
        (status = 400, description = "a field is missing or wrong, or the event does not add up with the customer's history; the message names the field", body = ErrorBody),
        (status = 403, description = "a dashboard session without its CSRF token, or another origin", body = ErrorBody),
        (status = 404, description = "no such customer, or not one of the user's", body = ErrorBody),
        (status = 415, description = "a body that is not `application/json`", body = ErrorBody),
        (status = 503, description = "the service has no SQLite store to keep contract events in", body = ErrorBody),
        Unauthorized))]
pub async fn record(
    State(hub): State<Arc<Hub>>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_write(&headers, &access)?;
    let input: ContractEventInput = super::api::json_body(&body)?;
    let event = input
        .check(&access.principal.name)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let book = hub.contracts();
    if !access.sees(&event.customer) || book.get(&event.customer).is_none() {
        tracing::warn!(target: "audit", event = "denied", status = 404, user = %access.principal.name,
            path = "/api/contract-events", reason = "customer not in scope", "request denied");
        return Err(ApiError::not_found(format!(
            "no customer `{}`",
            event.customer
        )));
    }
    let stored = event.clone();
    let checked = on_store(&hub, move |s| {
        let recorded = s.contract_events(Some(&stored.customer))?;
        let verdict = book.check_new(&recorded, std::slice::from_ref(&stored));
        if verdict.is_ok() {
            s.record_contract_events(&[stored])?;
        }
        Ok(verdict)
    })
    .await?;
    match checked {
        None => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "contract events are kept in a SQLite store: configure a [[sinks]] of type sqlite",
            ));
        }
        Some(Err((_, field, message))) => {
            return Err(ApiError::bad_request(format!("field `{field}`: {message}")));
        }
        Some(Ok(())) => {}
    }
    tracing::info!(
        target: "audit",
        event = "contract_event",
        user = %access.principal.name,
        customer = %event.customer,
        kind = event.kind.as_str(),
        "contract event recorded"
    );
    Ok((StatusCode::CREATED, json(&Doc(&event))).into_response())
}
