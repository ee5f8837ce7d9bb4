//! Which BPE a model uses, and counting with it.
//!
//! Counting uses `bpe-openai`, which produces the same tokens as OpenAI's `tiktoken` (its own
//! equivalence tests, and ours in `tests/estimate.rs`) several times faster. Each vocabulary is
//! deserialized on first use behind a `LazyLock` and shared for the life of the process; call
//! [`preload`] at start-up to keep that one-off cost (tens of milliseconds) off the first request.

use bpe_openai::Tokenizer;

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
    if text.is_empty() {
        return 0;
    }
    match encoding {
        Encoding::O200kBase => count_with(bpe_openai::o200k_base(), text),
        Encoding::Cl100kBase => count_with(bpe_openai::cl100k_base(), text),
        Encoding::Conservative => count_with(bpe_openai::o200k_base(), text)
            .max(count_with(bpe_openai::cl100k_base(), text)),
    }
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

fn count_with(tokenizer: &Tokenizer, text: &str) -> u64 {
    tokenizer.count(text) as u64
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
}
