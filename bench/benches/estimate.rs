//! Estimation benchmarks: a ~100k-token chat prompt (its first, cold estimate timed once, which
//! includes loading the tokenizer; then warm) and a small typical request.
//!
//! `cargo bench -p bursora-bench --bench estimate` prints a table to paste into a note, then
//! criterion's own measurements. Target: the warm 100k-token estimate in ≤ 5 ms.
#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bursora_core::estimate::{
    Encoding, Endpoint, clear_count_cache, count_tokens, estimate, estimate_json, preload,
};
use criterion::Criterion;
use serde_json::{Value, json};

/// Common English words; most of a long prompt is prose like this.
const WORDS: &str = "the of and to in is was for that with as on by at from his her it an be are \
    were this which or had not but have they you he she we one all their there been has when who \
    will more no if out so said what up its about into than them can only other new some could \
    time these two may then do first any my now such like our over man me even most made after \
    also did many before must through back years where much your way well down should because \
    each just those people how too little state good very make world still own see men work long \
    here get both between life being under never day same another know while last might us great \
    old year off come since against go came right used take three revenue quarterly customer \
    report analysis growth margin forecast contract invoice shipment warehouse latency request";

/// Everything else a prompt carries: code, JSON, numbers, dates, URLs, other scripts, emoji.
const EXTRAS: &[&str] = &[
    "Frankfurt",
    "API",
    "serde_json::Value",
    "Vec<u32>",
    "fn merge(a: &[u32]) -> usize {",
    "}",
    "42",
    "3.14159",
    "2026-11-22T15:04:05Z",
    "{\"sku\": \"KX-220\", \"qty\": 2}",
    "東京の会議は午後三時に始まります。",
    "请在周五之前完成审核",
    "Привет",
    "mañana",
    "naïve",
    "user_id",
    "getCurrentWeather",
    "HTTP/1.1",
    "https://example.com/orders?id=81723",
    "🎉",
    "안녕하세요",
    "مرحبا",
];

/// Words of other scripts, for a prompt that is mostly not ASCII (counted by the regex
/// pre-tokenizer wherever a non-ASCII character decides a piece).
const OTHER_SCRIPTS: &str = "и в не на что он с как это по но они мы было сказал время \
    Umsatz Größe über Straße Bestätigung Rückmeldung café déjà élève année français señor \
    mañana niño 東京 会議 午後 三時 始まります 请 在 周五 之前 完成 审核 数据 分析 报告 \
    안녕하세요 회의 오후 시작 합니다 مرحبا تقرير العملاء नमस्ते रिपोर्ट ग्राहक";

/// Deterministic text of about `bytes` bytes: `words` drawn by a xorshift generator, with
/// capitals, punctuation and line breaks, so that it is not one phrase repeated.
fn prose(seed: &mut u64, bytes: usize, words: &str) -> String {
    let words: Vec<&str> = words.split_whitespace().collect();
    let mut s = String::with_capacity(bytes + 64);
    while s.len() < bytes {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let r = *seed as usize;
        let word = if r.is_multiple_of(10) {
            EXTRAS[(r >> 8) % EXTRAS.len()]
        } else {
            words[(r >> 8) % words.len()]
        };
        if r.is_multiple_of(13) && word.is_ascii() {
            s += &word[..1].to_ascii_uppercase();
            s += &word[1..];
        } else {
            s += word;
        }
        s += match (r >> 20) % 17 {
            0 => ". ",
            1 => ", ",
            2 => "\n",
            3 => "; ",
            _ => " ",
        };
    }
    s
}

/// A chat request of about `target_bytes` of text drawn from `words`, in messages of about
/// 2 KB.
fn chat_prompt(target_bytes: usize, words: &str) -> Value {
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let mut messages = vec![json!({"role": "system", "content": "You are a careful analyst."})];
    let mut bytes = 0;
    while bytes < target_bytes {
        let content = prose(&mut seed, 2000, words);
        bytes += content.len();
        let role = if messages.len() % 2 == 1 {
            "user"
        } else {
            "assistant"
        };
        messages.push(json!({"role": role, "content": content}));
    }
    json!({"model": "gpt-4o", "messages": messages, "max_completion_tokens": 4096})
}

fn small_request() -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What's the weather like in Paris today? Answer in one sentence."}
        ],
        "tools": [{"type": "function", "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location.",
            "parameters": {"type": "object", "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
            }, "required": ["location"]}
        }}],
        "max_completion_tokens": 256
    })
}

/// Median and minimum of `runs` timings of `f`.
fn time(runs: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    let mut samples: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    samples.sort();
    (samples[runs / 2], samples[0])
}

fn main() {
    // ~440 KB of this text is about 100k tokens with o200k_base.
    let big = chat_prompt(440_000, WORDS);
    let small = small_request();
    let small_text = small.to_string();

    if let Some(runs) = std::env::var("BURSORA_PROFILE_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
    {
        // Which prompt: the 100k one (default), `unknown-model` or `other-scripts`.
        let prompt = match std::env::var("BURSORA_PROFILE_PROMPT").as_deref() {
            Ok("unknown-model") => {
                let mut unknown = big.clone();
                unknown["model"] = "acme-large".into();
                unknown
            }
            Ok("other-scripts") => chat_prompt(300_000, OTHER_SCRIPTS),
            _ => big,
        };
        profile(runs, &prompt, &small);
        return;
    }

    // Cold: the first estimate of the process pays for deserializing o200k_base.
    let t = Instant::now();
    let big_estimate = estimate(Endpoint::ChatCompletions, &big).unwrap();
    let cold = t.elapsed();
    let t = Instant::now();
    preload(Encoding::Cl100kBase);
    let cl100k_load = t.elapsed();

    // "Warm" means the vocabulary is loaded; the process-wide count cache is cleared before
    // every call, so these figures are a first sight of the prompt's text.
    let (big_median, big_min) = time(30, || {
        clear_count_cache();
        black_box(estimate(Endpoint::ChatCompletions, black_box(&big)).unwrap());
    });
    // An agent re-sending the same history: every message count is remembered.
    let (repeat_median, repeat_min) = time(30, || {
        black_box(estimate(Endpoint::ChatCompletions, black_box(&big)).unwrap());
    });
    // An unknown model: both vocabularies count every text.
    let mut unknown = big.clone();
    unknown["model"] = "acme-large".into();
    let unknown_tokens = estimate(Endpoint::ChatCompletions, &unknown)
        .unwrap()
        .input_tokens;
    let (unknown_median, unknown_min) = time(30, || {
        clear_count_cache();
        black_box(estimate(Endpoint::ChatCompletions, black_box(&unknown)).unwrap());
    });
    // Mostly other scripts than Latin: the regex pre-tokenizer splits most of it.
    let other = chat_prompt(300_000, OTHER_SCRIPTS);
    let other_tokens = estimate(Endpoint::ChatCompletions, &other)
        .unwrap()
        .input_tokens;
    let (other_median, other_min) = time(30, || {
        clear_count_cache();
        black_box(estimate(Endpoint::ChatCompletions, black_box(&other)).unwrap());
    });
    // The same text in one `count_tokens` call: the counting alone, without the walk.
    let all_text: String = big["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["content"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let (one_thread_median, one_thread_min) = time(30, || {
        clear_count_cache();
        black_box(count_tokens(Encoding::O200kBase, black_box(&all_text)));
    });
    let big_cpu = cpu_per_call(100, || {
        clear_count_cache();
        black_box(estimate(Endpoint::ChatCompletions, black_box(&big)).unwrap());
    });
    let one_thread_cpu = cpu_per_call(100, || {
        clear_count_cache();
        black_box(count_tokens(Encoding::O200kBase, black_box(&all_text)));
    });
    let (small_median, small_min) = time(2000, || {
        black_box(estimate(Endpoint::ChatCompletions, black_box(&small)).unwrap());
    });
    let (json_median, json_min) = time(2000, || {
        black_box(estimate_json(Endpoint::ChatCompletions, black_box(&small_text)).unwrap());
    });
    let small_tokens = estimate(Endpoint::ChatCompletions, &small)
        .unwrap()
        .input_tokens;

    let load = std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "n/a".to_owned(),
        |l| l.split(' ').next().unwrap_or("").to_owned(),
    );
    println!();
    println!(
        "| estimate (bursora-core, {} cores, load average {load}) | input tokens | wall median | wall min | CPU per call |",
        cores()
    );
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| 100k chat prompt, cold (first call: loads o200k_base) | {} | {cold:.2?} | - | - |",
        big_estimate.input_tokens
    );
    println!("| cl100k_base load alone (`preload`) | - | {cl100k_load:.2?} | - | - |");
    println!(
        "| 100k chat prompt, warm ({} messages) | {} | {big_median:.2?} | {big_min:.2?} | {big_cpu} |",
        big["messages"].as_array().map_or(0, Vec::len),
        big_estimate.input_tokens
    );
    println!(
        "| same prompt again (message counts remembered) | {} | {repeat_median:.2?} | {repeat_min:.2?} | - |",
        big_estimate.input_tokens
    );
    println!(
        "| same prompt, unknown model (both vocabularies), warm | {unknown_tokens} | {unknown_median:.2?} | {unknown_min:.2?} | - |"
    );
    println!(
        "| chat prompt in other scripts (Cyrillic, CJK, accents, ...), warm | {other_tokens} | {other_median:.2?} | {other_min:.2?} | - |"
    );
    println!(
        "| same text, `count_tokens` on one thread | {} | {one_thread_median:.2?} | {one_thread_min:.2?} | {one_thread_cpu} |",
        count_tokens(Encoding::O200kBase, &all_text)
    );
    println!(
        "| small request with one tool | {small_tokens} | {small_median:.2?} | {small_min:.2?} | - |"
    );
    println!(
        "| same, from JSON text (`estimate_json`) | {small_tokens} | {json_median:.2?} | {json_min:.2?} | - |"
    );
    println!();

    let mut c = Criterion::default().configure_from_args();
    c.bench_function("estimate/chat_100k_tokens_warm", |b| {
        b.iter(|| {
            clear_count_cache();
            estimate(Endpoint::ChatCompletions, black_box(&big)).unwrap()
        });
    });
    c.bench_function("estimate/chat_small", |b| {
        b.iter(|| estimate(Endpoint::ChatCompletions, black_box(&small)).unwrap());
    });
    c.bench_function("estimate_json/chat_small", |b| {
        b.iter(|| estimate_json(Endpoint::ChatCompletions, black_box(&small_text)).unwrap());
    });
    c.final_summary();
}

/// `BURSORA_PROFILE_RUNS=n`: a cold estimate, then `n` warm ones of the 100k prompt (or of the
/// one `BURSORA_PROFILE_PROMPT` names) and `100 n` small ones, each in a function of its own,
/// and nothing else. For instruction counts that the neighbours on a shared machine do not
/// disturb (the second toggle takes in counting threads, which prompts past 1 MiB start):
///
/// ```text
/// BURSORA_PROFILE_RUNS=10 valgrind --tool=callgrind --toggle-collect='*profile_warm*' \
///     --toggle-collect='*thread_start*' target/release/deps/estimate-…
/// ```
fn profile(runs: usize, big: &Value, small: &Value) {
    black_box(estimate(Endpoint::ChatCompletions, big).unwrap());
    profile_warm(runs, big);
    profile_small(runs * 100, small);
}

#[inline(never)]
fn profile_warm(runs: usize, big: &Value) {
    for _ in 0..runs {
        clear_count_cache();
        black_box(estimate(Endpoint::ChatCompletions, black_box(big)).unwrap());
    }
}

#[inline(never)]
fn profile_small(runs: usize, small: &Value) {
    for _ in 0..runs {
        black_box(estimate(Endpoint::ChatCompletions, black_box(small)).unwrap());
    }
}

/// CPU time of this process so far (all threads, including finished ones), from
/// `/proc/self/stat` (Linux; 100 clock ticks per second). Wall time is what a caller waits, but
/// on a shared machine it mostly measures the neighbours; CPU time measures the work.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesized command name; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// CPU time per call of `f`, over enough calls for the 10 ms tick to be negligible.
fn cpu_per_call(runs: u32, mut f: impl FnMut()) -> String {
    let Some(before) = process_cpu() else {
        return "n/a".into();
    };
    for _ in 0..runs {
        f();
    }
    process_cpu().map_or("n/a".into(), |after| {
        format!("{:.2?}", (after - before) / runs)
    })
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
