//! Which BPE a model uses, and counting with it.
//!
//! Counting uses `bpe-openai`, which produces the same tokens as OpenAI's `tiktoken` (its own
//! equivalence tests, and ours in `tests/estimate.rs`) several times faster. Each vocabulary is
//! deserialized on first use behind a `LazyLock` and shared for the life of the process; call
//! [`preload`] at start-up to keep that one-off cost (tens of milliseconds) off the first request.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{LazyLock, OnceLock};

use parking_lot::RwLock;

use bpe_openai::Tokenizer;

use super::pieces::{Pattern, pieces};

/// A tokenizer vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `o200k_base`: GPT-4o, GPT-4.1, GPT-4.5, GPT-5, the o-series, gpt-oss.
    O200kBase,
    /// `cl100k_base`: GPT-4, GPT-3.5, the `text-embedding-*` models.
    Cl100kBase,
    /// A model we cannot identify: every text is counted with both vocabularies and the larger
    /// count is kept. Neither vocabulary bounds the other on all text (o200k is usually, not
    /// always, the smaller), so this is the only choice of the two that bounds both. It is not a
    /// bound for tokenizers other than OpenAI's (a model of another vendor behind an
    /// OpenAI-compatible endpoint); see [`super::RequestEstimate::encoding`].
    Conservative,
}

impl Encoding {
    /// The `tiktoken` name of the vocabulary (`None` for [`Encoding::Conservative`]).
    #[must_use]
    pub fn name(self) -> Option<&'static str> {
        match self {
            Self::O200kBase => Some("o200k_base"),
            Self::Cl100kBase => Some("cl100k_base"),
            Self::Conservative => None,
        }
    }
}

/// The encoding OpenAI uses for `model`.
///
/// Accepts `ft:<base>:...` fine-tune names and a router prefix such as `openai/gpt-4o`. Matching
/// ignores ASCII case. Unknown names get [`Encoding::Conservative`] rather than a guess: an
/// under-count would let a call through that its budget cannot pay for.
#[must_use]
pub fn encoding_for_model(model: &str) -> Encoding {
    let name = base_model_name(model);
    // Order matters: the `gpt-4o`/`gpt-4.1`/`gpt-4.5` prefixes must win over plain `gpt-4`.
    const O200K_PREFIXES: &[&str] = &[
        "gpt-4o",
        "gpt-4.1",
        "gpt-4.5",
        "gpt-5",
        "chatgpt-4o",
        "gpt-oss",
        "codex-",
        "gpt-realtime",
        "gpt-audio",
        "computer-use-preview",
        "omni-moderation",
    ];
    const O200K_FAMILIES: &[&str] = &["o1", "o3", "o4-mini"];
    const CL100K_PREFIXES: &[&str] = &[
        "gpt-3.5",
        "gpt-35",
        "text-embedding-",
        "davinci-002",
        "babbage-002",
    ];

    if O200K_PREFIXES
        .iter()
        .any(|p| strip_prefix_ci(name, p).is_some())
        || O200K_FAMILIES.iter().any(|f| is_family(name, f))
    {
        Encoding::O200kBase
    } else if is_family(name, "gpt-4")
        || CL100K_PREFIXES
            .iter()
            .any(|p| strip_prefix_ci(name, p).is_some())
    {
        Encoding::Cl100kBase
    } else {
        Encoding::Conservative
    }
}

/// Number of tokens `text` encodes to, as ordinary text (special-token strings such as
/// `<|endoftext|>` count as the characters they are, which is how the API treats user text).
#[must_use]
pub fn count_tokens(encoding: Encoding, text: &str) -> u64 {
    count_texts(encoding, &[text])
}

/// Loads the vocabularies `encoding` needs now instead of on its first count. Idempotent and
/// cheap after the first call.
pub fn preload(encoding: Encoding) {
    match encoding {
        Encoding::O200kBase => force(bpe_openai::o200k_base()),
        Encoding::Cl100kBase => force(bpe_openai::cl100k_base()),
        Encoding::Conservative => {
            force(bpe_openai::o200k_base());
            force(bpe_openai::cl100k_base());
        }
    }
}

/// Getting the `&'static` already forced the `LazyLock`; this only names that intent.
fn force(_: &'static Tokenizer) {}

/// Texts at least this long are counted with a memo of their pre-tokenized pieces, shared by
/// all the texts one thread counts: prose and code repeat their words, and a hash lookup is
/// cheaper than a BPE pass over the piece. Shorter texts would mostly pay for inserts.
const MEMO_MIN_BYTES: usize = 512;

/// Texts at least this long have their counts remembered process-wide: an agent re-sends its
/// system prompt and history with every call, and a hash of a message is far cheaper than a BPE
/// pass over it. Short texts too (a message's role, a name): their BPE pass allocates an
/// encoder, the lookup does not. One byte is one token, never looked up.
const CACHE_MIN_BYTES: usize = 2;
/// Remembered counts at most; past this the cache starts over (a few hundred KiB).
const CACHE_CAPACITY: usize = 16_384;

/// `(vocabulary, seeded hash of the text, its length)` → tokens. The hash is seeded per process,
/// so end users cannot choose texts that collide; a false hit needs a 64-bit collision between
/// two texts of equal length.
type CountKey = (u8, u64, usize);

static SEED: LazyLock<foldhash::fast::RandomState> = LazyLock::new(Default::default);
static COUNTS: LazyLock<RwLock<HashMap<CountKey, u64, foldhash::fast::RandomState>>> =
    LazyLock::new(Default::default);

fn remembered(vocab: u8, text: &str) -> Option<u64> {
    COUNTS
        .read()
        .get(&(vocab, SEED.hash_one(text), text.len()))
        .copied()
}

fn remember(vocab: u8, text: &str, n: u64) {
    let mut counts = COUNTS.write();
    if counts.len() >= CACHE_CAPACITY {
        counts.clear();
    }
    counts.insert((vocab, SEED.hash_one(text), text.len()), n);
}

/// Forgets every remembered count (benchmarks measure cold counting with it).
pub fn clear_count_cache() {
    COUNTS.write().clear();
}

/// Counts texts with one vocabulary.
struct Counter<'t> {
    vocab: u8,
    pattern: Pattern,
    tokenizer: &'static Tokenizer,
    /// Piece of 2 to 15 bytes, as [`short_key`] → tokens. Most pieces are this short; an
    /// integer key hashes and compares in a few instructions, a `&str` key calls `memcmp`.
    /// foldhash, seeded per process: end users cannot choose texts that collide.
    short: HashMap<u128, u32, foldhash::fast::RandomState>,
    /// Longer piece → tokens.
    long: HashMap<&'t [u8], u32, foldhash::fast::RandomState>,
}

/// The bytes of a piece of 2 to 15 bytes and its length, in one integer that no other such
/// piece has: with the length known, the first eight bytes and the last seven (overlapping
/// when shorter than 15) spell the piece.
#[inline(always)]
fn short_key(piece: &[u8]) -> u128 {
    let len = piece.len();
    debug_assert!((2..=15).contains(&len));
    let u64_at = |i: usize| {
        piece
            .get(i..i + 8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    };
    let u32_at = |i: usize| {
        piece.get(i..i + 4).map_or(0, |b| {
            u64::from(u32::from_le_bytes(b.try_into().unwrap_or_default()))
        })
    };
    let (lo, hi) = if len >= 8 {
        (u64_at(0), u64_at(len - 8) >> 8)
    } else if len >= 4 {
        (u32_at(0) | (u32_at(len - 4) << 32), 0)
    } else {
        let b = |i: usize| u64::from(piece[i]);
        (b(0) | (b(1) << 8) | (b(len - 1) << 16), 0)
    };
    u128::from(lo) | (u128::from(hi | ((len as u64) << 56)) << 64)
}

impl<'t> Counter<'t> {
    fn o200k() -> Self {
        Self::new(0, Pattern::O200k, bpe_openai::o200k_base())
    }

    fn cl100k() -> Self {
        Self::new(1, Pattern::Cl100k, bpe_openai::cl100k_base())
    }

    fn new(vocab: u8, pattern: Pattern, tokenizer: &'static Tokenizer) -> Self {
        Self {
            vocab,
            pattern,
            tokenizer,
            short: HashMap::default(),
            long: HashMap::default(),
        }
    }

    /// What `Tokenizer::count` does (split, then BPE per piece), with our split. Its NFC
    /// normalization step is off for both OpenAI vocabularies, so the text is split as is.
    fn count_plain(&self, text: &str) -> u64 {
        pieces(self.pattern, self.tokenizer, text)
            .map(|piece| match piece.len() {
                // Every byte is a token of both vocabularies.
                1 => 1,
                _ => self.tokenizer.bpe.count(piece) as u64,
            })
            .sum()
    }

    fn count(&mut self, text: &'t str) -> u64 {
        if text.len() < CACHE_MIN_BYTES {
            return self.count_plain(text);
        }
        if let Some(n) = remembered(self.vocab, text) {
            return n;
        }
        let n = self.count_uncached(text);
        remember(self.vocab, text, n);
        n
    }

    fn count_uncached(&mut self, text: &'t str) -> u64 {
        if text.len() < MEMO_MIN_BYTES {
            return self.count_plain(text);
        }
        // `count_plain` with the memo.
        let mut total = 0u64;
        let bpe = &self.tokenizer.bpe;
        let count = |piece: &[u8]| u32::try_from(bpe.count(piece)).unwrap_or(u32::MAX);
        for piece in pieces(self.pattern, self.tokenizer, text) {
            let n = match piece.len() {
                // Every byte is a token of both vocabularies: spaces, newlines, most punctuation.
                1 => 1,
                2..=15 => *self
                    .short
                    .entry(short_key(piece))
                    .or_insert_with(|| count(piece)),
                _ => *self.long.entry(piece).or_insert_with(|| count(piece)),
            };
            total += u64::from(n);
        }
        total
    }
}

/// Sum of the counts of `texts` on the calling thread. [`Encoding::Conservative`] takes the
/// larger count text by text, so the result does not depend on how texts are grouped.
fn count_texts(encoding: Encoding, texts: &[&str]) -> u64 {
    match encoding {
        Encoding::O200kBase => {
            let mut o = Counter::o200k();
            texts.iter().map(|t| o.count(t)).sum()
        }
        Encoding::Cl100kBase => {
            let mut c = Counter::cl100k();
            texts.iter().map(|t| c.count(t)).sum()
        }
        Encoding::Conservative => {
            let mut o = Counter::o200k();
            let mut c = Counter::cl100k();
            texts.iter().map(|t| o.count(t).max(c.count(t))).sum()
        }
    }
}

/// Below this many bytes in all (counting both vocabularies' bytes for
/// [`Encoding::Conservative`]), counting stays on the calling thread. That is about 250k
/// tokens, counted in a few milliseconds; on a busy machine a thread that waits for a core
/// costs more than that (2 vCPUs, load 6: a 114k-token prompt took 2.0 ms on one thread and
/// 7.1 ms, median, on two).
const PARALLEL_MIN_BYTES: usize = 1024 * 1024;
/// Texts are cut into parts of about this size to spread them over threads.
const PART_BYTES: usize = 16 * 1024;
/// Counting a prompt uses at most this many threads (the caller's included).
const MAX_THREADS: usize = 4;

/// Sum of [`count_tokens`] over `texts`, the same number, but spread over up to [`MAX_THREADS`]
/// scoped threads when the texts are large. The threads are joined before this returns; if one
/// cannot be started, its share is counted on the calling thread.
pub(crate) fn count_tokens_of_all(encoding: Encoding, texts: &[&str]) -> u64 {
    let total: usize = texts.iter().map(|t| t.len()).sum();
    let vocabularies = if encoding == Encoding::Conservative {
        2
    } else {
        1
    };
    if total * vocabularies < PARALLEL_MIN_BYTES {
        return count_texts(encoding, texts);
    }
    // Cut whatever the number of threads, so that a `Conservative` count (the larger of two
    // per part) is the same number on every machine.
    let mut parts = Vec::with_capacity(total / PART_BYTES + texts.len());
    for text in texts {
        split_at_piece_boundaries(text, PART_BYTES, &mut parts);
    }
    let threads = parallelism().min(MAX_THREADS);
    if threads < 2 {
        return count_texts(encoding, &parts);
    }
    // Contiguous runs of parts, of about equal size, one per thread.
    let share = total.div_ceil(threads);
    let mut runs: Vec<&[&str]> = Vec::with_capacity(threads + 1);
    let (mut start, mut bytes) = (0, 0);
    for (i, part) in parts.iter().enumerate() {
        bytes += part.len();
        if bytes >= share {
            runs.push(&parts[start..=i]);
            (start, bytes) = (i + 1, 0);
        }
    }
    if start < parts.len() {
        runs.push(&parts[start..]);
    }
    let count_run = |run: &[&str]| count_texts(encoding, run);
    std::thread::scope(|scope| {
        let Some((mine, others)) = runs.split_first() else {
            return 0;
        };
        let spawned: Vec<_> = others
            .iter()
            .map(|&run| {
                let handle = std::thread::Builder::new()
                    .name("bursora-count".into())
                    .spawn_scoped(scope, move || count_run(run));
                (run, handle)
            })
            .collect();
        let mut sum = count_run(mine);
        for (run, handle) in spawned {
            sum += match handle {
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p)),
                Err(_) => count_run(run),
            };
        }
        sum
    })
}

fn parallelism() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Cuts `text` into parts of at least `part_bytes` (the last may be shorter) where both
/// vocabularies' pre-tokenizers are sure to start a new piece, so the parts' counts add up to
/// the whole's: right after a `\n` that is followed by a character that is neither white space
/// nor `/`. No pre-tokenizer pattern continues a piece past a newline into such a character
/// (newline runs, and o200k's `punctuation[\r\n/]*`, stop there), and none starts a piece
/// with a newline followed by more. Text without such a place stays whole.
fn split_at_piece_boundaries<'a>(text: &'a str, part_bytes: usize, out: &mut Vec<&'a str>) {
    let mut rest = text;
    while rest.len() > part_bytes {
        let cut = rest.as_bytes()[part_bytes..]
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'\n')
            .map(|(i, _)| part_bytes + i + 1)
            .find(|&cut| {
                rest[cut..]
                    .chars()
                    .next()
                    .is_some_and(|c| !c.is_whitespace() && c != '/')
            });
        let Some(cut) = cut else { break };
        let (part, tail) = rest.split_at(cut);
        out.push(part);
        rest = tail;
    }
    out.push(rest);
}

/// The model a name refers to: `ft:gpt-4o-mini:org::id` → `gpt-4o-mini`,
/// `openai/gpt-4.1` → `gpt-4.1`.
pub(crate) fn base_model_name(model: &str) -> &str {
    let mut name = model.trim();
    if let Some(rest) = strip_prefix_ci(name, "ft:") {
        name = rest.split(':').next().unwrap_or(rest);
    }
    if let Some((_, last)) = name.rsplit_once('/') {
        name = last;
    }
    name
}

/// `name` is `family` itself or `family-<anything>` (so `o1` matches `o1-mini`, not `o100`).
fn is_family(name: &str, family: &str) -> bool {
    strip_prefix_ci(name, family).is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_counts_equal_fresh_ones() {
        let texts = [
            "A system prompt that every call of an agent sends again, long enough to be remembered.",
            "Another message of the history, also past the sixty-four byte threshold of the cache.",
        ];
        for encoding in [
            Encoding::O200kBase,
            Encoding::Cl100kBase,
            Encoding::Conservative,
        ] {
            let first: Vec<u64> = texts.iter().map(|t| count_tokens(encoding, t)).collect();
            let again: Vec<u64> = texts.iter().map(|t| count_tokens(encoding, t)).collect();
            clear_count_cache();
            let fresh: Vec<u64> = texts.iter().map(|t| count_tokens(encoding, t)).collect();
            assert_eq!(first, again);
            assert_eq!(first, fresh);
        }
        // The two vocabularies are remembered apart.
        let text = "日本語のテキストは二つの語彙で数が違うので、キャッシュは語彙ごとに分けておく必要がある。";
        assert_ne!(
            count_tokens(Encoding::O200kBase, text),
            count_tokens(Encoding::Cl100kBase, text)
        );
    }

    #[test]
    fn model_families_map_to_their_encoding() {
        for m in [
            "gpt-4o",
            "gpt-4o-mini-2024-07-18",
            "GPT-4o",
            "chatgpt-4o-latest",
            "gpt-4.1-nano",
            "gpt-4.5-preview",
            "gpt-5",
            "gpt-5.1-codex",
            "o1",
            "o1-mini",
            "o3-pro",
            "o4-mini-2025-04-16",
            "gpt-oss-120b",
            "ft:gpt-4o-mini-2024-07-18:acme::abc123",
            "openai/gpt-4.1",
        ] {
            assert_eq!(encoding_for_model(m), Encoding::O200kBase, "{m}");
        }
        for m in [
            "gpt-4",
            "gpt-4-turbo",
            "gpt-4-0613",
            "gpt-3.5-turbo",
            "text-embedding-3-small",
            "ft:gpt-3.5-turbo:x",
        ] {
            assert_eq!(encoding_for_model(m), Encoding::Cl100kBase, "{m}");
        }
        for m in [
            "",
            "o100",
            "claude-3-5-sonnet",
            "my-azure-deployment",
            "gpt-4x",
        ] {
            assert_eq!(encoding_for_model(m), Encoding::Conservative, "{m}");
        }
    }

    #[test]
    fn conservative_is_the_larger_count() {
        let text = "Grüße aus Zürich — 東京は晴れ 🌤️ fn main() { println!(\"hi\"); }";
        let o = count_tokens(Encoding::O200kBase, text);
        let c = count_tokens(Encoding::Cl100kBase, text);
        assert_eq!(count_tokens(Encoding::Conservative, text), o.max(c));
        assert_eq!(count_tokens(Encoding::O200kBase, ""), 0);
    }

    #[test]
    fn short_keys_tell_every_piece_apart() {
        // Every string of 2 to 15 bytes over a small alphabet that is shorter than 6, and
        // random ones of every length: no two share a key.
        let mut keys: HashMap<u128, Vec<u8>> = HashMap::new();
        let mut add = |piece: Vec<u8>| {
            if let Some(other) = keys.insert(short_key(&piece), piece.clone()) {
                assert_eq!(other, piece);
            }
        };
        let alphabet = [0u8, 1, b' ', b'a', 0x80, 0xff];
        let mut strings: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..5 {
            strings = strings
                .iter()
                .flat_map(|s| alphabet.iter().map(move |&b| [s.as_slice(), &[b]].concat()))
                .collect();
            strings
                .iter()
                .filter(|s| s.len() >= 2)
                .for_each(|s| add(s.clone()));
        }
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        for _ in 0..200_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = 2 + (seed % 14) as usize;
            // Few distinct bytes, so that near-collisions (one byte apart) are common.
            let piece = (0..len)
                .map(|i| alphabet[(seed >> (4 + 3 * i)) as usize % 3])
                .collect();
            add(piece);
        }
        // Zero bytes at either end change the key.
        assert_ne!(short_key(b"ab"), short_key(b"ab\0"));
        assert_ne!(short_key(b"\0ab"), short_key(b"ab\0"));
        assert_ne!(short_key(b"abcdefgh"), short_key(b"abcdefgh\0"));
    }

    /// Text with every kind of seam the splitter could cut at, long enough to be split.
    fn seams() -> String {
        let lines = [
            "Plain line",
            "  indented",
            "",
            "\t\ttabs",
            "ends with spaces   ",
            "東京の天気",
            "/path/like",
            "!!! punctuation",
            "12345 numbers",
            "\u{a0}nbsp",
            "'s contraction",
            "🎉 emoji",
            "x/y",
            "Ünïcödé",
            "\r",
            "fn main() {}",
            "    // comment",
            "<|endoftext|>",
            "Привет мир",
            "\u{3000}ideographic",
        ];
        let mut s = String::new();
        let mut i = 0usize;
        while s.len() < 300_000 {
            s += lines[i % lines.len()];
            s += ["\n", "\n\n", "\r\n", ".\n", " \n", "\n/"][i % 6];
            i += 7;
        }
        s
    }

    #[test]
    fn parts_add_up_to_the_whole() {
        let text = seams();
        let mut parts = Vec::new();
        split_at_piece_boundaries(&text, 1000, &mut parts);
        assert!(parts.len() > 100);
        assert_eq!(parts.concat(), text);
        for encoding in [Encoding::O200kBase, Encoding::Cl100kBase] {
            let tokenizer = match encoding {
                Encoding::O200kBase => bpe_openai::o200k_base(),
                _ => bpe_openai::cl100k_base(),
            };
            let whole = tokenizer.count(text.as_str()) as u64;
            let sum: u64 = parts.iter().map(|p| tokenizer.count(*p) as u64).sum();
            assert_eq!(sum, whole, "{encoding:?}");
            // The memo and the threads change nothing either.
            assert_eq!(count_tokens(encoding, &text), whole);
            // Past `PARALLEL_MIN_BYTES`, so counted on several threads where there are cores.
            assert_eq!(
                count_tokens_of_all(encoding, &[&text, "tail", &text, &text, &text]),
                4 * whole + 1
            );
        }
    }
}
