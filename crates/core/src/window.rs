//! UTC calendar windows.
