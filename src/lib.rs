//! N-API glue for `@bursora/sdk`: converts types and errors, holds no logic of its own.

use napi_derive::napi;

/// The version of the native core.
#[napi]
#[must_use]
pub fn core_version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}
