//! Upper bounds of a request's tokens, computed before dispatch.
