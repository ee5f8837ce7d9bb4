//! The one error type of the HTTP layer, and the extractors whose rejections use it.
//!
//! Every failure leaves as `{ "error": { "code", "message" } }` with a 4xx status when the client
//! can fix it. Store failures are logged with their detail and answered with a generic
//! `503 unavailable` (usually transient: the SDK's fail mode decides what the call does), so
//! paths, SQL and driver messages never reach a client.

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bursora_core::ledger::Exceeded;
use bursora_core::window::format_utc;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

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

/// Every error response: `{ "error": { "code", "message" } }`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// An error: a stable code and a message for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable: `unauthorized`, `forbidden`, `not_found`,
    /// `method_not_allowed`, `malformed_json`, `invalid_request`, `invalid_input`,
    /// `invalid_query`, `invalid_path`, `missing_project`, `payload_too_large`,
    /// `unsupported_media_type`, `budget_exceeded`, `last_admin_key`, `unavailable`.
    pub code: String,
    /// What is wrong and how to fix it.
    pub message: String,
    /// With `budget_exceeded` only: the budget that refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<ExceededBudget>,
}

impl ErrorDetail {
    /// An error without a budget.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            budget: None,
        }
    }
}

/// The budget that refused a reservation (SPEC §5's fields, in nano-USD and USD).
#[derive(Debug, Serialize, ToSchema)]
pub struct ExceededBudget {
    /// Budget id.
    pub id: String,
    /// Budget name.
    pub name: String,
    /// The template counter's value (`match` values of `*`), if any.
    pub key: Option<String>,
    /// `minute`, `hour`, `day`, `week`, `month` or `total`.
    pub window: String,
    /// The limit.
    pub limit_nanos: i64,
    /// The limit in USD, for display.
    pub limit_usd: f64,
    /// Settled spend in the current window.
    pub spent_nanos: i64,
    /// Settled spend in USD, for display.
    pub spent_usd: f64,
    /// Held by live reservations.
    pub reserved_nanos: i64,
    /// Held by live reservations, in USD.
    pub reserved_usd: f64,
    /// What the refused reservation asked for.
    pub requested_nanos: i64,
    /// What is left: `limit - spent - reserved`, at least 0.
    pub remaining_nanos: i64,
    /// When the window resets (RFC 3339 UTC); `null` for `total`.
    pub resets_at: Option<String>,
    /// When the window resets, in Unix milliseconds.
    pub resets_at_ms: Option<i64>,
}

impl From<&Exceeded> for ExceededBudget {
    fn from(x: &Exceeded) -> Self {
        Self {
            id: x.id.to_string(),
            name: x.name.clone(),
            key: x.key.clone(),
            window: x.window.as_str().to_owned(),
            limit_nanos: x.limit.nanos(),
            limit_usd: x.limit.to_usd_f64(),
            spent_nanos: x.spent.nanos(),
            spent_usd: x.spent.to_usd_f64(),
            reserved_nanos: x.reserved.nanos(),
            reserved_usd: x.reserved.to_usd_f64(),
            requested_nanos: x.requested.nanos(),
            remaining_nanos: x.remaining().nanos(),
            resets_at: x.resets_at_ms.map(format_utc),
            resets_at_ms: x.resets_at_ms,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, error) = match self {
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                ErrorDetail::new(
                    "unauthorized",
                    "a valid API key is required: send `Authorization: Bearer <key>`",
                ),
            ),
            Self::Forbidden => (
                StatusCode::FORBIDDEN,
                ErrorDetail::new("forbidden", "this operation needs an admin key"),
            ),
            Self::NotFound(message) => (
                StatusCode::NOT_FOUND,
                ErrorDetail::new("not_found", message),
            ),
            Self::Client {
                status,
                code,
                message,
            } => (status, ErrorDetail::new(code, message)),
            Self::BudgetExceeded(x) => (
                StatusCode::CONFLICT,
                ErrorDetail {
                    code: "budget_exceeded".into(),
                    message: x.to_string(),
                    budget: Some(ExceededBudget::from(&*x)),
                },
            ),
            Self::Internal(detail) => {
                tracing::error!(%detail, "request failed in the store");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorDetail::new("unavailable", "the budget store failed; retry later"),
                )
            }
        };
        let body = ErrorBody { error };
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
///
/// A body sent as plain `application/json` (what the SDK sends on every reserve) is read by
/// `serde_json` directly: `axum::Json` tracks the path of every field it reads for the error
/// message of a bad body, which cost as much as the parse itself. Any other content type, and
/// every body that fails, goes through `axum::Json`, so the answers and messages are its own.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let plain = req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"application/json"));
        if !plain {
            let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
            return Ok(Self(value));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(JsonRejection::from)?;
        match serde_json::from_slice(&bytes) {
            Ok(value) => Ok(Self(value)),
            Err(_) => {
                let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
                Ok(Self(value))
            }
        }
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Query` whose rejection is an [`AppError`].
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct Query<T>(pub T);
