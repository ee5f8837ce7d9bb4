//! The per-call entry points — `admit`, the `finish*` endings, `keepAlive` and
//! `countTokens` — as plain
//! N-API functions on the module's exports, instead of `#[napi]` methods.
//!
//! Why: for every call of a method with arguments, napi-rs 3's generated glue opens a borrow
//! scope (an `Arc<Mutex<..>>` and vectors, a global lock and a map entry per class reference,
//! a class-identity lookup), and converts each string into a fresh `String`. On a wrapped OpenAI
//! call that glue was most of `finishResponse`'s cost and a fifth of `admit`'s (`perf`, frame
//! pointers, `bench/README.md`). Here nothing is borrowed from JS: the guard and the tags travel
//! as slot numbers of the registries below (a `NativeGuard` or `NativeTags` object owns its slot
//! until it is collected), and strings are read into a per-thread buffer that is reused.
//!
//! Same contract as the rest of the glue: arguments are checked (a wrong type is a JS error with
//! code `invalid_input`, an unknown slot `config`), core errors keep their `code`, and no panic
//! crosses the boundary. The TypeScript declarations are in `js/internal/native.ts` (napi-rs
//! only generates them for `#[napi]` items).

use std::cell::RefCell;
use std::ffi::CStr;
use std::ptr;
use std::sync::{Arc, PoisonError, RwLock};

use bursora_core::budget::Tags;
use bursora_core::estimate::{count_tokens as core_count_tokens, encoding_for_model};
use bursora_core::guard::{CallEnding, Guard};
use bursora_core::pricing::{CHAT_USAGE_FIELDS, CountValue, TokenUsage};
use napi::bindgen_prelude::{JsError, ToNapiValue, panic_to_error};
use napi::sys;

/// Objects that JS refers to by slot number. Slots start at 1, so 0 can mean "none"; a freed
/// slot is reused.
pub(crate) struct Registry<T> {
    slots: RwLock<Slots<T>>,
    what: &'static str,
}

struct Slots<T> {
    live: Vec<Option<Arc<T>>>,
    free: Vec<u32>,
}

impl<T> Registry<T> {
    const fn new(what: &'static str) -> Self {
        Self {
            slots: RwLock::new(Slots {
                live: Vec::new(),
                free: Vec::new(),
            }),
            what,
        }
    }

    /// Registers `value`; the caller frees the slot with [`Registry::remove`].
    pub(crate) fn insert(&self, value: Arc<T>) -> u32 {
        let mut s = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = s.free.pop() {
            s.live[slot as usize - 1] = Some(value);
            slot
        } else {
            s.live.push(Some(value));
            u32::try_from(s.live.len()).expect("fewer than 2^32 live objects")
        }
    }

    pub(crate) fn remove(&self, slot: u32) {
        let mut s = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = slot.checked_sub(1).and_then(|i| s.live.get_mut(i as usize))
            && entry.take().is_some()
        {
            s.free.push(slot);
        }
    }

    fn get(&self, slot: u32) -> Result<Arc<T>, napi::Error<String>> {
        let s = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        slot.checked_sub(1)
            .and_then(|i| s.live.get(i as usize))
            .and_then(Option::clone)
            .ok_or_else(|| {
                napi::Error::new(
                    "config".to_owned(),
                    format!(
                        "no live {} has slot {slot} (a bug in bursora's JS layer)",
                        self.what
                    ),
                )
            })
    }
}

pub(crate) static GUARDS: Registry<Guard> = Registry::new("guard");
pub(crate) static TAGS: Registry<Tags> = Registry::new("tag set");

type Error = napi::Error<String>;

fn invalid(message: String) -> Error {
    napi::Error::new("invalid_input".to_owned(), message)
}

fn status(code: sys::napi_status, what: &str) -> Result<(), Error> {
    if code == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(napi::Error::new(
            "internal".to_owned(),
            format!("N-API failed ({code}) while {what}"),
        ))
    }
}

thread_local! {
    /// Reused UTF-8 buffers for the string arguments of one call (two at most).
    static BUFFERS: RefCell<[Vec<u8>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

/// A buffer that grew beyond this for one large argument (a request with images inlined) is
/// given back after the call rather than kept for the thread's lifetime.
const KEEP_BUFFER_BYTES: usize = 256 * 1024;

/// The call's arguments; missing ones are `undefined`.
unsafe fn args<const N: usize>(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> Result<[sys::napi_value; N], Error> {
    let mut argv = [ptr::null_mut(); N];
    let mut argc = N;
    // SAFETY: `argv` has room for `argc` values; N-API fills missing ones with `undefined`.
    let code = unsafe {
        sys::napi_get_cb_info(
            env,
            info,
            &raw mut argc,
            argv.as_mut_ptr(),
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    status(code, "reading the arguments")?;
    Ok(argv)
}

unsafe fn u32_arg(env: sys::napi_env, value: sys::napi_value, what: &str) -> Result<u32, Error> {
    let mut out = 0u32;
    // SAFETY: `value` is a live argument of the current call.
    let code = unsafe { sys::napi_get_value_uint32(env, value, &raw mut out) };
    if code == sys::Status::napi_number_expected {
        return Err(invalid(format!("{what} must be a number")));
    }
    status(code, "reading a number")?;
    Ok(out)
}

unsafe fn is_nullish(env: sys::napi_env, value: sys::napi_value) -> Result<bool, Error> {
    // SAFETY: forwarded from the callback.
    let kind = unsafe { type_of(env, value)? };
    Ok(kind == sys::ValueType::napi_undefined || kind == sys::ValueType::napi_null)
}

/// Reads a JS string into `buf` (replacing its contents) and borrows it.
unsafe fn str_arg<'b>(
    env: sys::napi_env,
    value: sys::napi_value,
    buf: &'b mut Vec<u8>,
    what: &str,
) -> Result<&'b str, Error> {
    let mut len = 0usize;
    // SAFETY: a null buffer asks for the length in bytes (without the terminating NUL).
    let code =
        unsafe { sys::napi_get_value_string_utf8(env, value, ptr::null_mut(), 0, &raw mut len) };
    if code == sys::Status::napi_string_expected {
        return Err(invalid(format!("{what} must be a string")));
    }
    status(code, "reading a string")?;
    buf.clear();
    buf.reserve(len + 1);
    let mut written = 0usize;
    // SAFETY: `buf` has room for `len` bytes and the NUL N-API writes after them.
    let code = unsafe {
        sys::napi_get_value_string_utf8(
            env,
            value,
            buf.as_mut_ptr().cast(),
            len + 1,
            &raw mut written,
        )
    };
    status(code, "reading a string")?;
    // SAFETY: N-API wrote `written` (≤ len) bytes.
    unsafe { buf.set_len(written.min(len)) };
    // V8 writes well-formed UTF-8 (lone surrogates become U+FFFD); checked all the same.
    std::str::from_utf8(buf).map_err(|e| invalid(format!("{what} is not valid UTF-8: {e}")))
}

/// Runs `f` with panics caught; an error is thrown into JS and the call returns `undefined`.
unsafe fn run(
    env: sys::napi_env,
    f: impl FnOnce() -> Result<sys::napi_value, Error>,
) -> sys::napi_value {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|payload| {
            let e = panic_to_error(payload);
            napi::Error::new("internal".to_owned(), e.reason.clone())
        })
        .and_then(|r| r);
    BUFFERS.with(|buffers| {
        if let Ok(mut buffers) = buffers.try_borrow_mut() {
            for b in buffers
                .iter_mut()
                .filter(|b| b.capacity() > KEEP_BUFFER_BYTES)
            {
                *b = Vec::new();
            }
        }
    });
    match result {
        Ok(value) => value,
        Err(e) => {
            // SAFETY: `env` is the current call's environment.
            unsafe { JsError::from(e).throw_into(env) };
            ptr::null_mut()
        }
    }
}

/// `value` as the call's result.
unsafe fn returning<T: ToNapiValue>(
    env: sys::napi_env,
    value: T,
) -> Result<sys::napi_value, Error> {
    // SAFETY: `env` is the current call's environment.
    unsafe { ToNapiValue::to_napi_value(env, value) }
        .map_err(|e| napi::Error::new("internal".to_owned(), format!("returning: {}", e.reason)))
}

unsafe fn undefined(env: sys::napi_env) -> Result<sys::napi_value, Error> {
    let mut out = ptr::null_mut();
    // SAFETY: plain N-API call on the current environment.
    status(
        unsafe { sys::napi_get_undefined(env, &raw mut out) },
        "returning",
    )?;
    Ok(out)
}

/// `admit(guardSlot, endpoint, bodyJson, tagsSlot, baseURL)`: see [`crate::admit_with`].
unsafe extern "C" fn admit(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: called by N-API with the current call's `env` and `info`.
    unsafe {
        run(env, || {
            let [guard, endpoint, body, tags, base_url] = args::<5>(env, info)?;
            let guard = GUARDS.get(u32_arg(env, guard, "the guard slot")?)?;
            let endpoint = crate::endpoint(u32_arg(env, endpoint, "the endpoint")?)?;
            let tags = match u32_arg(env, tags, "the tags slot")? {
                0 => None,
                slot => Some(TAGS.get(slot)?),
            };
            let admission = BUFFERS.with(|buffers| {
                let mut buffers = buffers.borrow_mut();
                let [body_buf, url_buf] = &mut *buffers;
                let body = str_arg(env, body, body_buf, "the request body")?;
                let base_url = if is_nullish(env, base_url)? {
                    None
                } else {
                    Some(str_arg(env, base_url, url_buf, "baseURL")?)
                };
                let empty = Tags::default();
                let tags = tags.as_deref().unwrap_or(&empty);
                crate::admit_with(&guard, endpoint, body, tags, None, base_url)
            })?;
            returning(env, admission)
        })
    }
}

/// The guard and reservation id every ending starts with.
unsafe fn guard_and_id<const N: usize>(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> Result<(Arc<Guard>, [sys::napi_value; N]), Error> {
    // SAFETY: forwarded from the callback.
    let argv = unsafe { args::<N>(env, info)? };
    let guard = GUARDS.get(unsafe { u32_arg(env, argv[0], "the guard slot")? })?;
    Ok((guard, argv))
}

/// How a `finish*` function reads its ending from the arguments after the guard and the id
/// (`buf` holds a string argument the ending borrows).
type ReadEnding<const N: usize> = for<'b> unsafe fn(
    sys::napi_env,
    &[sys::napi_value; N],
    &'b mut Vec<u8>,
) -> Result<CallEnding<'b>, Error>;

/// `finish*(guardSlot, id, ...)`: hands the reservation's ending to the guard (which ignores an
/// id it does not hold: already finished).
unsafe fn finish<const N: usize>(
    env: sys::napi_env,
    info: sys::napi_callback_info,
    read: ReadEnding<N>,
) -> sys::napi_value {
    // SAFETY: forwarded from the callback.
    unsafe {
        run(env, || {
            let (guard, argv) = guard_and_id::<N>(env, info)?;
            BUFFERS.with(|buffers| {
                let mut buffers = buffers.borrow_mut();
                let [id_buf, buf] = &mut *buffers;
                let id = str_arg(env, argv[1], id_buf, "the reservation id")?;
                guard.finish(id, read(env, &argv, buf)?);
                Ok::<_, Error>(())
            })?;
            undefined(env)
        })
    }
}

/// The endings that carry one text after the id: the response's JSON (`finishResponse`) or
/// the output a stream delivered before it ended (`finishPartial`).
unsafe fn with_text<'b, const PARTIAL: bool>(
    env: sys::napi_env,
    argv: &[sys::napi_value; 3],
    buf: &'b mut Vec<u8>,
) -> Result<CallEnding<'b>, Error> {
    let what = if PARTIAL {
        "the output text"
    } else {
        "the response"
    };
    // SAFETY: forwarded from the callback.
    let text = unsafe { str_arg(env, argv[2], buf, what)? };
    Ok(if PARTIAL {
        CallEnding::Partial(text)
    } else {
        // Owned: the reporter thread reads it.
        CallEnding::ResponseJson(text.to_owned())
    })
}

/// `finishResponse(guardSlot, id, responseJson)`: settle from `{ usage, service_tier, output }`.
unsafe extern "C" fn finish_response(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: called by N-API with the current call's `env` and `info`.
    unsafe { finish::<3>(env, info, with_text::<false>) }
}

/// `finishChatUsage(guardSlot, id, serviceTier, ...counts)`: settle a chat completion from its
/// usage, read by the caller off the usage object: one value per path of
/// [`CHAT_USAGE_FIELDS`], in order. Exactly what `finishResponse` with the JSON text would do
/// ([`TokenUsage::from_chat_counts`]), without writing and parsing the JSON; usage that cannot
/// be read settles at the reservation, as there.
unsafe extern "C" fn finish_chat_usage(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    const N: usize = 3 + CHAT_USAGE_FIELDS.len();
    unsafe fn read<'b>(
        env: sys::napi_env,
        argv: &[sys::napi_value; N],
        buf: &'b mut Vec<u8>,
    ) -> Result<CallEnding<'b>, Error> {
        let mut counts = [CountValue::Absent; CHAT_USAGE_FIELDS.len()];
        for (count, &value) in counts.iter_mut().zip(&argv[3..]) {
            *count = unsafe { count_value(env, value)? };
        }
        let tier = if unsafe { type_of(env, argv[2])? } == sys::ValueType::napi_string {
            Some(unsafe { str_arg(env, argv[2], buf, "the service tier")? }.to_owned())
        } else {
            None
        };
        Ok(match TokenUsage::from_chat_counts(&counts) {
            Ok(usage) => CallEnding::Usage(usage, tier),
            Err(_) => CallEnding::Unknown,
        })
    }
    // SAFETY: called by N-API with the current call's `env` and `info`.
    unsafe { finish::<N>(env, info, read) }
}

unsafe fn type_of(
    env: sys::napi_env,
    value: sys::napi_value,
) -> Result<sys::napi_valuetype, Error> {
    let mut kind = 0;
    // SAFETY: `value` is a live argument of the current call.
    status(
        unsafe { sys::napi_typeof(env, value, &raw mut kind) },
        "reading a type",
    )?;
    Ok(kind)
}

/// A usage count as the caller passed it (see [`CountValue`]).
unsafe fn count_value(env: sys::napi_env, value: sys::napi_value) -> Result<CountValue, Error> {
    // SAFETY: forwarded from the callback.
    let kind = unsafe { type_of(env, value)? };
    if kind == sys::ValueType::napi_number {
        let mut n = 0f64;
        // SAFETY: `value` is a number argument of the current call.
        status(
            unsafe { sys::napi_get_value_double(env, value, &raw mut n) },
            "reading a number",
        )?;
        Ok(CountValue::Number(n))
    } else if kind == sys::ValueType::napi_undefined || kind == sys::ValueType::napi_null {
        Ok(CountValue::Absent)
    } else {
        Ok(CountValue::Other)
    }
}

/// `finishPartial(guardSlot, id, outputText)`: a stream ended early; settle input + what was seen.
unsafe extern "C" fn finish_partial(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: called by N-API with the current call's `env` and `info`.
    unsafe { finish::<3>(env, info, with_text::<true>) }
}

/// The endings that carry nothing but the id: `Failed` or `Unknown`.
unsafe fn id_only<'b, const FAILED: bool>(
    _: sys::napi_env,
    _: &[sys::napi_value; 2],
    _: &'b mut Vec<u8>,
) -> Result<CallEnding<'b>, Error> {
    Ok(if FAILED {
        CallEnding::Failed
    } else {
        CallEnding::Unknown
    })
}

/// `finishFailed(guardSlot, id)`: the provider refused before generating; release.
unsafe extern "C" fn finish_failed(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: called by N-API with the current call's `env` and `info`.
    unsafe { finish::<2>(env, info, id_only::<true>) }
}

/// `finishUnknown(guardSlot, id)`: no response at all; settle at the reservation.
unsafe extern "C" fn finish_unknown(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: called by N-API with the current call's `env` and `info`.
    unsafe { finish::<2>(env, info, id_only::<false>) }
}

/// `keepAlive(guardSlot, id)`: renews a live stream's reservation; false if it already ended.
unsafe extern "C" fn keep_alive(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: called by N-API with the current call's `env` and `info`.
    unsafe {
        run(env, || {
            let (guard, [_, id]) = guard_and_id::<2>(env, info)?;
            let renewed = BUFFERS.with(|buffers| {
                let mut buffers = buffers.borrow_mut();
                let id = str_arg(env, id, &mut buffers[0], "the reservation id")?;
                guard.keep_alive(id).map_err(|e| crate::js_error(&e))
            })?;
            returning(env, renewed)
        })
    }
}

/// `countTokens(model, text)`: `text` in tokens of `model`'s tokenizer (each delta of a capped
/// stream under `fit`).
unsafe extern "C" fn count_tokens(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: called by N-API with the current call's `env` and `info`.
    unsafe {
        run(env, || {
            let [model, text] = args::<2>(env, info)?;
            let n = BUFFERS.with(|buffers| {
                let mut buffers = buffers.borrow_mut();
                let [model_buf, text_buf] = &mut *buffers;
                let model = str_arg(env, model, model_buf, "the model")?;
                let text = str_arg(env, text, text_buf, "the text")?;
                Ok::<_, Error>(core_count_tokens(encoding_for_model(model), text))
            })?;
            #[allow(clippy::cast_precision_loss)] // token counts stay far below 2^53
            let n = n as f64;
            returning(env, n)
        })
    }
}

type Callback = unsafe extern "C" fn(sys::napi_env, sys::napi_callback_info) -> sys::napi_value;

const EXPORTS: [(&CStr, Callback); 8] = [
    (c"admit", admit),
    (c"finishResponse", finish_response),
    (c"finishChatUsage", finish_chat_usage),
    (c"finishPartial", finish_partial),
    (c"finishFailed", finish_failed),
    (c"finishUnknown", finish_unknown),
    (c"keepAlive", keep_alive),
    (c"countTokens", count_tokens),
];

/// Puts the hot functions on `exports.hot`.
pub(crate) fn register(env: sys::napi_env, exports: sys::napi_value) -> napi::Result<()> {
    let check = |code: sys::napi_status| {
        if code == sys::Status::napi_ok {
            Ok(())
        } else {
            Err(napi::Error::from_reason(format!(
                "registering the hot path failed ({code})"
            )))
        }
    };
    let mut hot = ptr::null_mut();
    // SAFETY: plain N-API calls on the module's environment during its initialisation.
    unsafe {
        check(sys::napi_create_object(env, &raw mut hot))?;
        for (name, callback) in EXPORTS {
            let mut f = ptr::null_mut();
            check(sys::napi_create_function(
                env,
                name.as_ptr(),
                name.count_bytes() as isize,
                Some(callback),
                ptr::null_mut(),
                &raw mut f,
            ))?;
            check(sys::napi_set_named_property(env, hot, name.as_ptr(), f))?;
        }
        check(sys::napi_set_named_property(
            env,
            exports,
            c"hot".as_ptr(),
            hot,
        ))?;
    }
    Ok(())
}
