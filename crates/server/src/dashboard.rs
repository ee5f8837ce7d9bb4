//! The dashboard: plain HTML, CSS and ES modules from `crates/server/dashboard/`, compiled into
//! the binary so it works on a machine with no internet and no build step.
//!
//! The page holds no server-side state and no secret: it signs in with the key a person types,
//! keeps it in `sessionStorage` and calls the public `/v1` API with `Authorization: Bearer`,
//! exactly like any other client. What this module adds is only the file serving:
//!
//! - `GET /` and `GET /dashboard` redirect to `/dashboard/`;
//! - `GET /dashboard/` is `index.html`, `GET /dashboard/<file>` one of the embedded files;
//! - every answer carries a strict Content-Security-Policy (scripts and styles from this origin
//!   only, nothing inline, no framing), `nosniff` and `no-referrer`;
//! - files are revalidated on every load (`no-cache` + a strong `ETag`, so an unchanged file is a
//!   304): their names carry no content hash, and an upgraded server must never be paired with
//!   a stale script from the browser's cache.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::AppError;

/// One embedded file.
struct Asset {
    /// Its path under `/dashboard/`.
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!("../dashboard/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the dashboard. A file added to `dashboard/` must be listed here to be served
/// (the test `every_dashboard_file_is_served` checks the two agree).
static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("js/main.js", JS),
    asset!("js/api.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/format.js", JS),
    asset!("js/charts.js", JS),
    asset!("js/csv.js", JS),
    asset!("js/live.js", JS),
    asset!("js/queries.js", JS),
    asset!("js/views.js", JS),
    asset!("js/pages/signin.js", JS),
    asset!("js/pages/overview.js", JS),
    asset!("js/pages/spend.js", JS),
    asset!("js/pages/budgets.js", JS),
    asset!("js/pages/activity.js", JS),
    asset!("js/pages/alerts.js", JS),
    asset!("js/pages/keys.js", JS),
];

/// The paths of the embedded files (for tests and the README).
#[must_use]
pub fn asset_paths() -> Vec<&'static str> {
    ASSETS.iter().map(|a| a.path).collect()
}

/// Everything the page may load. `connect-src 'self'`: the page talks to this server only, so a
/// script injected through some tag value could not send a key elsewhere either.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The strong ETag of each asset, computed once.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let digest = Sha256::digest(a.body);
            let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header value")
        })
        .collect()
});

/// The dashboard's routes, merged into the API's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(to_dashboard))
        .route("/dashboard", get(to_dashboard))
        .route("/dashboard/", get(index))
        .route("/dashboard/{*file}", get(file))
}

async fn to_dashboard() -> Redirect {
    Redirect::to("/dashboard/")
}

async fn index(headers: HeaderMap) -> Response {
    serve(0, &headers)
}

async fn file(Path(file): Path<String>, headers: HeaderMap) -> Result<Response, AppError> {
    ASSETS
        .iter()
        .position(|a| a.path == file)
        .map(|i| serve(i, &headers))
        .ok_or_else(|| {
            AppError::NotFound(format!(
                "no dashboard file {file:?}; open /dashboard/ for the dashboard"
            ))
        })
}

fn serve(i: usize, request: &HeaderMap) -> Response {
    let asset = &ASSETS[i];
    let etag = &ETAGS[i];
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, etag.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(&path, base, out);
            } else {
                let rel = path.strip_prefix(base).unwrap();
                out.push(rel.to_str().unwrap().replace('\\', "/"));
            }
        }
    }

    #[test]
    fn every_dashboard_file_is_served() {
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboard");
        let mut on_disk = Vec::new();
        files(&base, &base, &mut on_disk);
        on_disk.sort();
        let mut served: Vec<String> = asset_paths().into_iter().map(str::to_owned).collect();
        served.sort();
        assert_eq!(on_disk, served, "list new dashboard files in ASSETS");
    }
}
