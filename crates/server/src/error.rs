//! The one error type of the HTTP layer, and the extractors whose rejections use it.
//!
//! Every failure leaves as `{ "error": { "code", "message" } }` with a 4xx status when the client
//! can fix it. Store failures are logged with their detail and answered with a generic
//! `503 unavailable` (usually transient: the SDK's fail mode decides what the call does), so
//! paths, SQL and driver messages never reach a client.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bursora_core::ledger::Exceeded;
use bursora_core::window::format_utc;
use serde_json::{Value, json};

/// What a request can fail with.
#[derive(Debug)]
pub enum AppError {
    /// Missing, malformed or unknown API key (401).
    Unauthorized,
    /// A project key asked for an admin operation (403).
    Forbidden,
    /// Nothing by that id in the caller's project, or no such route (404). Another project's
    /// data is reported exactly like data that does not exist.
    NotFound(String),
    /// The client sent something it can fix (4xx), with a stable code.
    Client {
        /// HTTP status (400, 413, 415, 422...).
        status: StatusCode,
        /// Stable machine-readable code.
        code: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The reservation does not fit a `block` budget (409).
    BudgetExceeded(Box<Exceeded>),
    /// The store failed (503); the detail is logged, never sent.
    Internal(String),
}

impl AppError {
    /// A 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::Client {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }
}

impl From<bursora_core::Error> for AppError {
    fn from(e: bursora_core::Error) -> Self {
        use bursora_core::Error as E;
        match e {
            E::BudgetExceeded(x) => Self::BudgetExceeded(x),
            E::UnknownReservation { id } => Self::NotFound(format!("no reservation {id:?}")),
            E::InvalidInput { message } | E::Config { message } => {
                Self::bad_request("invalid_input", message)
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

/// The `budget` object of a `budget_exceeded` error (SPEC §5's fields, in nano-USD and USD).
pub fn exceeded_json(x: &Exceeded) -> Value {
    json!({
        "id": &*x.id,
        "name": x.name,
        "key": x.key,
        "window": x.window.as_str(),
        "limit_nanos": x.limit.nanos(),
        "limit_usd": x.limit.to_usd_f64(),
        "spent_nanos": x.spent.nanos(),
        "spent_usd": x.spent.to_usd_f64(),
        "reserved_nanos": x.reserved.nanos(),
        "reserved_usd": x.reserved.to_usd_f64(),
        "requested_nanos": x.requested.nanos(),
        "remaining_nanos": x.remaining().nanos(),
        "resets_at": x.resets_at_ms.map(format_utc),
        "resets_at_ms": x.resets_at_ms,
    })
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                json!({ "error": { "code": "unauthorized", "message": "a valid API key is required: send `Authorization: Bearer <key>`" } }),
            ),
            Self::Forbidden => (
                StatusCode::FORBIDDEN,
                json!({ "error": { "code": "forbidden", "message": "this operation needs an admin key" } }),
            ),
            Self::NotFound(message) => (
                StatusCode::NOT_FOUND,
                json!({ "error": { "code": "not_found", "message": message } }),
            ),
            Self::Client {
                status,
                code,
                message,
            } => (
                status,
                json!({ "error": { "code": code, "message": message } }),
            ),
            Self::BudgetExceeded(x) => (
                StatusCode::CONFLICT,
                json!({ "error": { "code": "budget_exceeded", "message": x.to_string(), "budget": exceeded_json(&x) } }),
            ),
            Self::Internal(detail) => {
                tracing::error!(%detail, "request failed in the store");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({ "error": { "code": "unavailable", "message": "the budget store failed; retry later" } }),
                )
            }
        };
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<JsonRejection> for AppError {
    fn from(r: JsonRejection) -> Self {
        let code = match &r {
            JsonRejection::JsonSyntaxError(_) => "malformed_json",
            JsonRejection::JsonDataError(_) => "invalid_request",
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            _ if r.status() == StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            _ => "invalid_body",
        };
        Self::Client {
            status: r.status(),
            code,
            message: r.body_text(),
        }
    }
}

impl From<QueryRejection> for AppError {
    fn from(r: QueryRejection) -> Self {
        Self::bad_request("invalid_query", r.body_text())
    }
}

/// `axum::Json` whose rejection is an [`AppError`], so a bad body gets our error shape.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Query` whose rejection is an [`AppError`].
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct Query<T>(pub T);
