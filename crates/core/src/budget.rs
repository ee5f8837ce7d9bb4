//! Budget specs, tag selectors and templates.
