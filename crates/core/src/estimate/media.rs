//! Worst-case token counts of images, audio clips and files.
//!
//! Nothing here decodes media: the request rarely carries the size (URLs, file ids), and the
//! worst case is cheap to reserve and exact to reason about.

use super::tokenizer::base_model_name;

/// Worst-case tokens of one image for a model, by `detail`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ImageCost {
    /// `detail: "high"`, `"auto"`, absent, or anything we do not know.
    pub high: u64,
    /// `detail: "low"`.
    pub low: u64,
}

/// Tokens of text framing around each image part (the part's delimiters in the prompt). Counted
/// with the image, so that an image's total is still a worst case when its framing is included.
pub(crate) const IMAGE_FRAMING: u64 = 4;

/// Tile models: the image is fitted into 2048×2048, then its shortest side scaled down to 768,
/// and covered by 512 px tiles. The largest result is 8 tiles: with the short side ≤ 768 the
/// image is at most 2048×768 (4×2 tiles); with it > 768 the long side ends < 2048 (4×2 again).
/// Images are never scaled up, so a thinner image only has fewer tiles.
const MAX_TILES: u64 = 8;

/// Patch models: 32 px patches, scaled down to at most 1536, times a per-model multiplier.
const MAX_PATCHES: u64 = 1536;

const fn tiles(base: u64, per_tile: u64) -> ImageCost {
    ImageCost {
        high: base + per_tile * MAX_TILES,
        low: base,
    }
}

/// `ceil(1536 × multiplier_percent / 100)`. Patch models document no cheaper `low` detail, so
/// `low` is the full cost too.
const fn patches(multiplier_percent: u64) -> ImageCost {
    let high = (MAX_PATCHES * multiplier_percent).div_ceil(100);
    ImageCost { high, low: high }
}

/// The table, first matching family wins (so `gpt-4o-mini` before `gpt-4o`). Source: OpenAI's
/// "Images and vision → Calculating costs" guide (platform.openai.com/docs/guides/images-vision,
/// as of 2025-11): tile models with base/tile tokens 85/170 (gpt-4o, gpt-4.1, gpt-4.5),
/// 2833/5667 (gpt-4o-mini), 75/150 (o1, o3), 65/129 (computer-use-preview), 70/140 (gpt-5);
/// patch models with multipliers 1.62 (gpt-4.1-mini, gpt-5-mini), 2.46 (gpt-4.1-nano,
/// gpt-5-nano), 1.72 (o4-mini). Deliberate margins where reports disagree with the guide:
/// gpt-4.1 is also described as patch-based at 1 token per patch (1536 > 1445), and later GPT-5
/// models were measured billing images ×1.2, so the GPT-5 row is (85 + 8×170) × 1.2.
const IMAGE_TABLE: &[(&str, ImageCost)] = &[
    ("gpt-4o-mini", tiles(2833, 5667)),
    ("gpt-4.1-mini", patches(162)),
    ("gpt-4.1-nano", patches(246)),
    ("o4-mini", patches(172)),
    (
        "gpt-4.1",
        ImageCost {
            high: MAX_PATCHES,
            low: 85,
        },
    ),
    ("gpt-4o", tiles(85, 170)),
    ("chatgpt-4o", tiles(85, 170)),
    ("gpt-4.5", tiles(85, 170)),
    ("gpt-4-turbo", tiles(85, 170)),
    ("o1", tiles(75, 150)),
    ("o3", tiles(75, 150)),
    ("computer-use-preview", tiles(65, 129)),
];

/// The GPT-5 family: `-mini`/`-nano` variants are patch models, the rest tile models.
const GPT5_MINI: ImageCost = patches(162);
const GPT5_NANO: ImageCost = patches(246);
const GPT5: ImageCost = ImageCost {
    high: (85 + 170 * MAX_TILES) * 6 / 5,
    low: 85 * 6 / 5 + 1,
};

/// For a model we do not know, the largest cost of every row, for each detail.
const UNKNOWN: ImageCost = {
    let mut high = 0;
    let mut low = 0;
    let rows: [ImageCost; 3] = [GPT5_MINI, GPT5_NANO, GPT5];
    let mut i = 0;
    while i < rows.len() {
        if rows[i].high > high {
            high = rows[i].high;
        }
        if rows[i].low > low {
            low = rows[i].low;
        }
        i += 1;
    }
    let mut i = 0;
    while i < IMAGE_TABLE.len() {
        let c = IMAGE_TABLE[i].1;
        if c.high > high {
            high = c.high;
        }
        if c.low > low {
            low = c.low;
        }
        i += 1;
    }
    ImageCost { high, low }
};

/// Worst-case image cost for `model` (ft: and router prefixes are looked through).
pub(crate) fn image_cost(model: &str) -> ImageCost {
    let name = base_model_name(model);
    let lower = |p: &str| name.len() >= p.len() && name[..p.len()].eq_ignore_ascii_case(p);
    if lower("gpt-5") {
        let rest = &name[5..];
        return if contains_ci(rest, "-nano") {
            GPT5_NANO
        } else if contains_ci(rest, "-mini") {
            GPT5_MINI
        } else {
            GPT5
        };
    }
    IMAGE_TABLE
        .iter()
        .find(|(prefix, _)| lower(prefix))
        .map_or(UNKNOWN, |&(_, cost)| cost)
}

fn contains_ci(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Upper bound of the audio tokens of a base64 clip (`input_audio.data`). Audio input is billed
/// at about 10 tokens per second (OpenAI's launch figure: ~$0.06/min at $100/M tokens), and the
/// least data a second can take is 1000 bytes (8 kbit/s, the lowest MP3 bitrate; WAV is larger).
/// That gives one token per 100 decoded bytes; we charge one per 50 for margin, plus framing.
pub(crate) fn audio_tokens(base64_len: usize) -> u64 {
    const DECODED_BYTES_PER_TOKEN: u64 = 50;
    const FRAMING: u64 = 16;
    decoded_len(base64_len).div_ceil(DECODED_BYTES_PER_TOKEN) + FRAMING
}

/// Heuristic tokens of an inline file (`file_data`): one per decoded byte. Plain text is about
/// four bytes per token, but a PDF's compressed text streams and its per-page images are not
/// bounded by its size, which is why any file also marks the estimate
/// [`unbounded_context`](super::RequestEstimate::unbounded_context).
pub(crate) fn file_tokens(file_data: &str) -> u64 {
    let payload = file_data
        .split_once(";base64,")
        .map_or(file_data, |(_, b64)| b64);
    decoded_len(payload.len())
}

/// Decoded size of `len` base64 characters, rounded up (padding is not subtracted).
fn decoded_len(len: usize) -> u64 {
    (len as u64).div_ceil(4) * 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_cases() {
        assert_eq!(
            image_cost("gpt-4o"),
            ImageCost {
                high: 1445,
                low: 85
            }
        );
        assert_eq!(
            image_cost("gpt-4o-mini-2024-07-18"),
            ImageCost {
                high: 48_169,
                low: 2833
            }
        );
        assert_eq!(image_cost("gpt-4.1-mini").high, 2489);
        assert_eq!(image_cost("gpt-4.1-nano").high, 3779);
        assert_eq!(image_cost("o4-mini").high, 2642);
        assert_eq!(
            image_cost("gpt-5"),
            ImageCost {
                high: 1734,
                low: 103
            }
        );
        assert_eq!(image_cost("gpt-5-mini").high, 2489);
        assert_eq!(image_cost("gpt-5.1-nano").low, 3779);
        assert_eq!(
            image_cost("o3"),
            ImageCost {
                high: 1275,
                low: 75
            }
        );
        assert_eq!(
            image_cost("some-new-model"),
            ImageCost {
                high: 48_169,
                low: 3779
            }
        );
    }

    #[test]
    fn audio_and_files() {
        // One minute of 8 kbit/s MP3 = 60 000 bytes = 80 000 base64 chars → ≥ 600 tokens.
        assert!(audio_tokens(80_000) >= 600);
        assert_eq!(file_tokens("data:application/pdf;base64,AAAA"), 3);
    }
}
