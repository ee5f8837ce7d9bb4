//! One error type for the crate, each variant with a stable `code` that the JS layer maps to its
//! error classes (`BudgetExceededError`, `UnknownModelError`, `BursoraConfigError`, ...).

use crate::ledger::Exceeded;

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `bursora-core`. Messages say what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value given by the caller is malformed or out of range.
    #[error("{message}")]
    InvalidInput {
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The call would not fit a `block` budget (SPEC §2.2). Nothing was reserved.
    #[error("{0}")]
    BudgetExceeded(Box<Exceeded>),
    /// The model has no price and `unknownModel` is `block` (SPEC §3).
    #[error(
        "no price is known for model {model:?}{}; add one with the `prices` option, or set unknownModel: \"fallback\" to reserve it at a conservative price",
        provider.as_deref().map(|p| format!(" of provider {p:?}")).unwrap_or_default()
    )]
    UnknownModel {
        /// The model name as the request gave it.
        model: String,
        /// The provider it was resolved to, if any.
        provider: Option<String>,
    },
    /// Price data (bundled or user-supplied) is malformed.
    #[error("price data is invalid: {message}")]
    PriceData {
        /// What is wrong with it.
        message: String,
    },
    /// The ledger's storage failed: a corrupt, locked or read-only database file.
    #[error("budget storage failed: {message}")]
    Storage {
        /// What failed, and what to check.
        message: String,
    },
    /// The SDK's options are wrong (`BursoraConfigError`).
    #[error("{message}")]
    Config {
        /// What is wrong and how to fix it.
        message: String,
    },
    /// bursora-server could not decide in time (down, hung, erroring) and `failMode` is
    /// `closed`, or an operation needs the server while its circuit is open.
    #[error("{message}")]
    Unavailable {
        /// What failed, and what to check.
        message: String,
    },
    /// A reservation id that this ledger never issued.
    #[error("unknown reservation {id:?}: it was never issued by this ledger")]
    UnknownReservation {
        /// The id given.
        id: String,
    },
}

impl Error {
    /// The stable machine-readable code of this error.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidInput { .. } => "invalid_input",
            Self::BudgetExceeded(_) => "budget_exceeded",
            Self::UnknownModel { .. } => "unknown_model",
            Self::PriceData { .. } => "price_data",
            Self::Storage { .. } => "storage",
            Self::UnknownReservation { .. } => "unknown_reservation",
            Self::Unavailable { .. } => "budget_unavailable",
            Self::Config { .. } => "config",
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidInput {
            message: message.into(),
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::Config {
            message: message.into(),
        }
    }

    pub(crate) fn price_data(message: impl Into<String>) -> Self {
        Self::PriceData {
            message: message.into(),
        }
    }
}
