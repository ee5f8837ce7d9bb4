//! N-API glue for `@bursora/sdk`: converts types and errors between JS and `bursora-core`, and
//! holds no logic of its own. Every export catches panics (`catch_unwind`), so a bug in the core
//! surfaces as a JS error with code `internal`, never as a crashed host process.
//!
//! Errors thrown to JS carry the core's stable code in `error.code` (`config`, `invalid_input`,
//! `storage`, ...). Expected refusals (`budget_exceeded`, `unknown_model`) are not thrown here:
//! they come back as a value from `hot.admit` ([`admit_with`]), which keeps the refusal path of a
//! runaway loop as cheap as the admission path.

use std::sync::Arc;

use bursora_core::Error as CoreError;
use bursora_core::budget::Tags;
use bursora_core::estimate::{Endpoint, estimate_plain};
use bursora_core::guard::{Guard, GuardOptions};
use bursora_core::ledger::BudgetStatus;
use bursora_core::warn::Warning;
use bursora_core::window::format_utc;
use napi::bindgen_prelude::*;
use napi_derive::napi;

mod hot;

/// The addon's own allocations (request bodies parsed for estimation, ledger bookkeeping) go
/// through mimalloc: glibc's malloc was a sixth of the reservation path's time.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Puts the per-call functions (`hot.admit`, `hot.finish*`, `hot.keepAlive`,
/// `hot.countTokens`) on the exports.
#[napi(module_exports)]
pub fn register_hot(exports: Object, env: Env) -> Result<()> {
    hot::register(env.raw(), exports.raw())
}

fn js_error(e: &CoreError) -> napi::Error<String> {
    napi::Error::new(e.code().to_owned(), e.to_string())
}

fn parse_json(text: &str, what: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|e| {
        napi::Error::new(
            "invalid_input".to_owned(),
            format!("{what} is not valid JSON: {e}"),
        )
    })
}

/// A validated, merged set of tags, prepared once per `withTags()` scope so that a call passes
/// one handle instead of an object.
#[napi]
pub struct NativeTags {
    inner: Arc<Tags>,
    /// Its slot in [`hot::TAGS`], freed when JS collects this object.
    slot: u32,
}

impl NativeTags {
    fn new(tags: Tags) -> Self {
        let inner = Arc::new(tags);
        let slot = hot::TAGS.insert(inner.clone());
        Self { inner, slot }
    }
}

impl Drop for NativeTags {
    fn drop(&mut self) {
        hot::TAGS.remove(self.slot);
    }
}

#[napi]
impl NativeTags {
    /// Validates `tagsJson` (an object of string values, SPEC §1) and lays it over `parent`
    /// (inner wins). Throws with `code: "invalid_input"` and a message naming the bad tag.
    #[napi(factory, catch_unwind)]
    pub fn create(parent: Option<&NativeTags>, tags_json: String) -> Result<NativeTags, String> {
        let value = parse_json(&tags_json, "tags")?;
        let serde_json::Value::Object(map) = value else {
            return Err(napi::Error::new(
                "invalid_input".to_owned(),
                "tags must be an object of string values, e.g. { tenant_id: \"acme\" }".to_owned(),
            ));
        };
        let mut pairs = Vec::with_capacity(map.len());
        for (k, v) in map {
            match v {
                serde_json::Value::String(s) => pairs.push((k, s)),
                other => {
                    return Err(napi::Error::new(
                        "invalid_input".to_owned(),
                        format!("tag {k:?} must be a string, not {other}"),
                    ));
                }
            }
        }
        let own = Tags::new(pairs).map_err(|e| js_error(&e))?;
        let inner = match parent {
            Some(p) => p.inner.merged(&own).map_err(|e| js_error(&e))?,
            None => own,
        };
        Ok(NativeTags::new(inner))
    }

    /// What the hot functions take in place of this object (0 stands for "no tags").
    #[napi(getter, catch_unwind)]
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The tags as a plain object.
    #[napi(catch_unwind)]
    pub fn entries(&self) -> std::collections::HashMap<String, String> {
        self.inner
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

/// A budget that refused a call.
#[napi(object)]
pub struct NativeRefusedBudget {
    pub id: String,
    pub name: String,
    pub key: Option<String>,
    pub window: String,
    pub limit_usd: f64,
    pub spent_usd: f64,
    pub reserved_usd: f64,
    /// ISO 8601 UTC; absent for `total` budgets.
    pub resets_at: Option<String>,
}

/// Why a call was refused before dispatch.
#[napi(object)]
pub struct NativeRefusal {
    /// `budget_exceeded`, `unknown_model` or `budget_unavailable`.
    pub code: String,
    pub message: String,
    pub model: String,
    pub estimated_usd: Option<f64>,
    pub budget: Option<NativeRefusedBudget>,
}

/// A warning raised by the core (the JS layer shows each code once).
#[napi(object)]
pub struct NativeWarning {
    pub code: String,
    pub message: String,
}

/// The outcome of [`NativeGuard::admit`].
#[napi(object)]
pub struct NativeAdmission {
    /// True when the call may go out; `id` then names its reservation.
    pub ok: bool,
    pub id: Option<String>,
    pub reserved_usd: Option<f64>,
    pub estimated_usd: Option<f64>,
    /// `fit` reserved less than the estimate: cap the call to `maxOutputTokens` per choice.
    pub capped: Option<bool>,
    pub max_output_tokens: Option<f64>,
    pub input_tokens: Option<f64>,
    /// Server mode, fail-open: the server could not decide, the call goes out unreserved and
    /// its usage is delivered when the server is back.
    pub unreserved: Option<bool>,
    pub refusal: Option<NativeRefusal>,
    pub warnings: Option<Vec<NativeWarning>>,
}

/// One budget's counter in its current window.
#[napi(object)]
pub struct NativeBudgetStatus {
    pub id: String,
    pub name: String,
    pub window: String,
    pub mode: String,
    pub r#match: std::collections::HashMap<String, String>,
    /// `key=value` of a template counter.
    pub key: Option<String>,
    pub limit_usd: f64,
    pub spent_usd: f64,
    pub reserved_usd: f64,
    pub overrun_usd: f64,
    /// Exact figures in nano-USD (integers, exact below 2^53).
    pub spent_nanos: f64,
    pub reserved_nanos: f64,
    /// ISO 8601 UTC; absent for `total` budgets.
    pub resets_at: Option<String>,
}

#[allow(clippy::cast_precision_loss)]
fn status_to_js(s: BudgetStatus) -> NativeBudgetStatus {
    let spec = &s.budget.spec;
    NativeBudgetStatus {
        id: s.budget.id.to_string(),
        name: spec.name.clone(),
        window: spec.window.as_str().to_owned(),
        mode: spec.mode.as_str().to_owned(),
        r#match: spec.selector.to_pairs().into_iter().collect(),
        key: s.key,
        limit_usd: spec.limit.to_usd_f64(),
        spent_usd: s.spent.to_usd_f64(),
        reserved_usd: s.reserved.to_usd_f64(),
        overrun_usd: s.overrun.to_usd_f64(),
        spent_nanos: s.spent.nanos() as f64,
        reserved_nanos: s.reserved.nanos() as f64,
        resets_at: s.resets_at_ms.map(format_utc),
    }
}

fn warnings_to_js(w: Vec<Warning>) -> Vec<NativeWarning> {
    w.into_iter()
        .map(|w| NativeWarning {
            code: w.code.to_owned(),
            message: w.message,
        })
        .collect()
}

fn endpoint(code: u32) -> Result<Endpoint, String> {
    match code {
        0 => Ok(Endpoint::ChatCompletions),
        1 => Ok(Endpoint::Responses),
        2 => Ok(Endpoint::Embeddings),
        other => Err(napi::Error::new(
            "invalid_input".to_owned(),
            format!("unknown endpoint {other}: 0 chat.completions, 1 responses, 2 embeddings"),
        )),
    }
}

/// One guard: budgets, prices and a ledger (in memory or a SQLite file), with its background
/// reporter.
#[napi]
pub struct NativeGuard {
    inner: Arc<Guard>,
    /// Its slot in [`hot::GUARDS`], freed when JS collects this object.
    slot: u32,
}

impl Drop for NativeGuard {
    fn drop(&mut self) {
        hot::GUARDS.remove(self.slot);
    }
}

#[napi]
impl NativeGuard {
    /// Builds a guard from embedded-mode options (JSON). Throws with `code` `config`,
    /// `invalid_input` or `storage`.
    #[napi(constructor, catch_unwind)]
    pub fn new(options_json: String) -> Result<Self, String> {
        let options = GuardOptions::from_json(&options_json).map_err(|e| js_error(&e))?;
        let guard = Arc::new(Guard::new(&options).map_err(|e| js_error(&e))?);
        let slot = hot::GUARDS.insert(guard.clone());
        Ok(Self { inner: guard, slot })
    }

    /// What the hot functions (`hot.admit`, `hot.finish*`, `hot.keepAlive`) take in place of
    /// this object.
    #[napi(getter, catch_unwind)]
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// True when reservations go to bursora-server: use `admitAsync`.
    #[napi(getter, catch_unwind)]
    pub fn remote(&self) -> bool {
        self.inner.is_remote()
    }

    /// Server mode: like `admit`, as a promise resolved once bursora-server decided (or the
    /// fail mode did). The caller's thread never waits on the network. It never rejects: a
    /// `failMode: "closed"` refusal has `refusal.code: "budget_unavailable"`, a bad request
    /// `invalid_input`.
    #[napi(catch_unwind, ts_return_type = "Promise<NativeAdmission>")]
    pub fn admit_async<'env>(
        &self,
        env: &'env Env,
        endpoint_code: u32,
        body_json: String,
        tags: Option<&NativeTags>,
        provider: Option<String>,
        base_url: Option<String>,
    ) -> Result<Object<'env>, String> {
        let body = parse_json(&body_json, "the request body")?;
        let endpoint = endpoint(endpoint_code)?;
        let (deferred, promise) = env
            .create_deferred::<NativeAdmission, _>()
            .map_err(|e| napi::Error::new("internal".to_owned(), e.to_string()))?;
        let empty = Tags::default();
        let tags = tags.map_or(&empty, |t| &*t.inner);
        let model = model_of(&body);
        let guard = self.inner.clone();
        self.inner.admit_async(
            endpoint,
            &body,
            tags,
            provider.as_deref(),
            base_url.as_deref(),
            move |result| {
                // Never rejects: any failure is a refusal with its code (`invalid_input`, ...),
                // so the JS side has one place that turns codes into error classes.
                let admission =
                    admission_to_js(&guard, result, || model.clone()).unwrap_or_else(|e| {
                        NativeAdmission {
                            refusal: Some(NativeRefusal {
                                code: e.status,
                                message: e.reason,
                                model,
                                estimated_usd: None,
                                budget: None,
                            }),
                            ..refused()
                        }
                    });
                deferred.resolve(move |_| Ok(admission));
            },
        );
        Ok(promise)
    }

    /// Every budget's current window, after applying pending settlements. Runs on libuv's
    /// thread pool: in server mode it asks bursora-server.
    #[napi(catch_unwind, ts_return_type = "Promise<Array<NativeBudgetStatus>>")]
    pub fn spend(&self) -> AsyncTask<Spend> {
        AsyncTask::new(Spend {
            guard: self.inner.clone(),
        })
    }

    /// Resolves once every settlement handed over so far is applied.
    #[napi(catch_unwind)]
    pub fn flush(&self) -> AsyncTask<Drain> {
        AsyncTask::new(Drain {
            guard: self.inner.clone(),
            stop: false,
        })
    }

    /// Flushes, then stops the background reporter.
    #[napi(catch_unwind)]
    pub fn shutdown(&self) -> AsyncTask<Drain> {
        AsyncTask::new(Drain {
            guard: self.inner.clone(),
            stop: true,
        })
    }

    /// Takes the warnings raised since the last call.
    #[napi(catch_unwind)]
    pub fn take_warnings(&self) -> Vec<NativeWarning> {
        warnings_to_js(self.inner.take_warnings())
    }
}

/// Estimates, prices and reserves one call before dispatch (embedded mode): `hot.admit`.
/// The common outcome — reserved in full, no warnings — is only the reservation id (a string:
/// building the admission object was a measurable part of a call); anything else is a
/// [`NativeAdmission`], a refusal `{ ok: false, refusal }`.
fn admit_with(
    guard: &Guard,
    endpoint: Endpoint,
    body_json: &str,
    tags: &Tags,
    provider: Option<&str>,
    base_url: Option<&str>,
) -> Result<Either<String, NativeAdmission>, String> {
    // A plain chat body is estimated from its text; any other is parsed into a `Value`.
    let result = match estimate_plain(endpoint, body_json) {
        Some(est) => guard.admit_estimate(endpoint, est, tags, provider, base_url),
        None => {
            let body = parse_json(body_json, "the request body")?;
            guard.admit(endpoint, &body, tags, provider, base_url)
        }
    };
    match result {
        Ok(a) if !a.capped && !a.unreserved && !guard.has_warnings() => Ok(Either::A(a.id)),
        other => admission_to_js(guard, other, || model_of_json(body_json)).map(Either::B),
    }
}

/// [`model_of`] of a body given as JSON text (refusals only: never on the admitted path).
fn model_of_json(body_json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body_json)
        .map(|body| model_of(&body))
        .unwrap_or_default()
}

fn model_of(body: &serde_json::Value) -> String {
    body.get("model")
        .and_then(|m| m.as_str())
        .unwrap_or_default()
        .to_owned()
}

/// An admission or an expected refusal as a value; other failures as an error with its code.
#[allow(clippy::cast_precision_loss)]
fn admission_to_js(
    guard: &Guard,
    result: bursora_core::Result<bursora_core::guard::Admission>,
    model: impl FnOnce() -> String,
) -> Result<NativeAdmission, String> {
    let warnings = guard
        .has_warnings()
        .then(|| warnings_to_js(guard.take_warnings()));
    match result {
        Ok(a) => Ok(NativeAdmission {
            ok: true,
            id: Some(a.id),
            reserved_usd: Some(a.reserved.to_usd_f64()),
            estimated_usd: Some(a.estimated.to_usd_f64()),
            capped: Some(a.capped),
            max_output_tokens: a.max_output_tokens.map(|m| m.min(1 << 53) as f64),
            input_tokens: Some(a.input_tokens as f64),
            unreserved: a.unreserved.then_some(true),
            refusal: None,
            warnings,
        }),
        Err(CoreError::BudgetExceeded(x)) => Ok(NativeAdmission {
            refusal: Some(NativeRefusal {
                code: "budget_exceeded".to_owned(),
                message: x.to_string(),
                model: model(),
                estimated_usd: Some(x.requested.to_usd_f64()),
                budget: Some(NativeRefusedBudget {
                    id: x.id.to_string(),
                    name: x.name.clone(),
                    key: x.key.clone(),
                    window: x.window.as_str().to_owned(),
                    limit_usd: x.limit.to_usd_f64(),
                    spent_usd: x.spent.to_usd_f64(),
                    reserved_usd: x.reserved.to_usd_f64(),
                    resets_at: x.resets_at_ms.map(format_utc),
                }),
            }),
            warnings,
            ..refused()
        }),
        Err(e @ (CoreError::UnknownModel { .. } | CoreError::Unavailable { .. })) => {
            Ok(NativeAdmission {
                refusal: Some(NativeRefusal {
                    code: e.code().to_owned(),
                    message: e.to_string(),
                    model: model(),
                    estimated_usd: None,
                    budget: None,
                }),
                warnings,
                ..refused()
            })
        }
        Err(e) => Err(js_error(&e)),
    }
}

fn refused() -> NativeAdmission {
    NativeAdmission {
        ok: false,
        id: None,
        reserved_usd: None,
        estimated_usd: None,
        capped: None,
        max_output_tokens: None,
        input_tokens: None,
        unreserved: None,
        refusal: None,
        warnings: None,
    }
}

/// Reads every budget's counters on libuv's thread pool.
pub struct Spend {
    guard: Arc<Guard>,
}

impl Task for Spend {
    type Output = Vec<BudgetStatus>;
    type JsValue = Vec<NativeBudgetStatus>;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        let guard = self.guard.clone();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || guard.spend())) {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) => Err(napi::Error::new(
                napi::Status::GenericFailure,
                format!("[{}] {e}", e.code()),
            )),
            Err(_) => Err(napi::Error::from_reason(
                "internal error while reading the budgets (a bug in bursora)",
            )),
        }
    }

    fn resolve(&mut self, _env: Env, rows: Self::Output) -> napi::Result<Self::JsValue> {
        Ok(rows.into_iter().map(status_to_js).collect())
    }
}

/// Waits for the reporter on libuv's thread pool, never on the JS thread.
pub struct Drain {
    guard: Arc<Guard>,
    stop: bool,
}

impl Task for Drain {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> napi::Result<()> {
        let guard = self.guard.clone();
        let stop = self.stop;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            if stop {
                guard.shutdown();
            } else {
                let _ = guard.flush();
            }
        }))
        .map_err(|_| napi::Error::from_reason("internal error while flushing (a bug in bursora)"))
    }

    fn resolve(&mut self, _env: Env, (): ()) -> napi::Result<()> {
        Ok(())
    }
}

/// The paths (below `usage`) that `hot.finishChatUsage` takes the values of, in order.
#[napi(catch_unwind)]
#[must_use]
pub fn chat_usage_fields() -> Vec<Vec<String>> {
    bursora_core::pricing::CHAT_USAGE_FIELDS
        .iter()
        .map(|path| path.iter().map(|&k| k.to_owned()).collect())
        .collect()
}

/// The version of the native core and of the price data it uses.
#[napi(catch_unwind)]
#[must_use]
pub fn core_version() -> String {
    format!(
        "{} ({})",
        env!("CARGO_PKG_VERSION"),
        bursora_core::pricing::PRICE_DATA_VERSION
    )
}
