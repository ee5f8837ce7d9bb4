//! The units Bursora meters, and how they nest.
//!
//! This mirrors genai-prices' unit registry for the units an OpenAI-style usage object can report.
//! Each unit is a set of dimensions (`direction=input`, `family=tokens`, `token_type=cache_read`,
//! ...). A unit is an *ancestor* of another when its dimensions are a strict subset of the other's
//! (`input_mtok` is an ancestor of `cache_read_mtok`). Prices are charged on *leaf* values: what is
//! left of a unit's usage after subtracting the leaves of its priced descendants. So
//! `input_tokens` counts every input token, and a cached token is charged once, at the cache rate,
//! if the model prices cache reads, or at the input rate if it does not.

/// A metered unit. The discriminant indexes [`UnitMap`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Unit {
    Input = 0,
    CacheRead,
    CacheWrite,
    CacheWrite1h,
    InputAudio,
    CacheAudioRead,
    InputImage,
    CacheImageRead,
    Output,
    OutputReasoning,
    OutputAudio,
    OutputImage,
    Requests,
    WebSearches,
}

/// The number of metered units.
pub(crate) const UNIT_COUNT: usize = 14;

/// One value per unit, inline (no allocation on the hot path).
pub(crate) type UnitMap<T> = [T; UNIT_COUNT];

// Dimensions, one bit per (key, value) pair of genai-prices' `units.yml`.
const DIR_IN: u16 = 1 << 0;
const DIR_OUT: u16 = 1 << 1;
const TOKENS: u16 = 1 << 2;
const CACHE_READ: u16 = 1 << 3;
const CACHE_WRITE: u16 = 1 << 4;
const TTL_1H: u16 = 1 << 5;
const AUDIO: u16 = 1 << 6;
const IMAGE: u16 = 1 << 7;
const REASONING: u16 = 1 << 8;
const REQUESTS: u16 = 1 << 9;
const WEB_SEARCH: u16 = 1 << 10;

/// What [`Unit::direction`] returns: which side of the bound a unit's price belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Input,
    Output,
    /// Per-call fees and tool calls.
    Other,
}

struct UnitDef {
    price_key: &'static str,
    /// How many units one price is for: 1,000,000 tokens or 1,000 requests/searches.
    per: u64,
    dims: u16,
    /// Whether the unit is audio or image (left out of a bound for a text-only request).
    media: bool,
}

const DEFS: UnitMap<UnitDef> = [
    UnitDef {
        price_key: "input_mtok",
        per: MTOK,
        dims: DIR_IN | TOKENS,
        media: false,
    },
    UnitDef {
        price_key: "cache_read_mtok",
        per: MTOK,
        dims: DIR_IN | TOKENS | CACHE_READ,
        media: false,
    },
    UnitDef {
        price_key: "cache_write_mtok",
        per: MTOK,
        dims: DIR_IN | TOKENS | CACHE_WRITE,
        media: false,
    },
    UnitDef {
        price_key: "cache_write_1h_mtok",
        per: MTOK,
        dims: DIR_IN | TOKENS | CACHE_WRITE | TTL_1H,
        media: false,
    },
    UnitDef {
        price_key: "input_audio_mtok",
        per: MTOK,
        dims: DIR_IN | TOKENS | AUDIO,
        media: true,
    },
    UnitDef {
        price_key: "cache_audio_read_mtok",
        per: MTOK,
        dims: DIR_IN | TOKENS | AUDIO | CACHE_READ,
        media: true,
    },
    UnitDef {
        price_key: "input_image_mtok",
        per: MTOK,
        dims: DIR_IN | TOKENS | IMAGE,
        media: true,
    },
    UnitDef {
        price_key: "cache_image_read_mtok",
        per: MTOK,
        dims: DIR_IN | TOKENS | IMAGE | CACHE_READ,
        media: true,
    },
    UnitDef {
        price_key: "output_mtok",
        per: MTOK,
        dims: DIR_OUT | TOKENS,
        media: false,
    },
    UnitDef {
        price_key: "output_reasoning_mtok",
        per: MTOK,
        dims: DIR_OUT | TOKENS | REASONING,
        media: false,
    },
    UnitDef {
        price_key: "output_audio_mtok",
        per: MTOK,
        dims: DIR_OUT | TOKENS | AUDIO,
        media: true,
    },
    UnitDef {
        price_key: "output_image_mtok",
        per: MTOK,
        dims: DIR_OUT | TOKENS | IMAGE,
        media: true,
    },
    UnitDef {
        price_key: "requests_kcount",
        per: KCOUNT,
        dims: REQUESTS,
        media: false,
    },
    UnitDef {
        price_key: "web_searches_kcount",
        per: KCOUNT,
        dims: WEB_SEARCH,
        media: false,
    },
];

const MTOK: u64 = 1_000_000;
const KCOUNT: u64 = 1_000;

/// The common denominator of every unit's `per`: costs are summed as `rate × count × (DENOM /
/// per)` and divided by `DENOM` once, rounding up.
pub(crate) const DENOM: u128 = MTOK as u128;

impl Unit {
    /// Every unit, in discriminant order.
    pub(crate) const ALL: UnitMap<Unit> = [
        Unit::Input,
        Unit::CacheRead,
        Unit::CacheWrite,
        Unit::CacheWrite1h,
        Unit::InputAudio,
        Unit::CacheAudioRead,
        Unit::InputImage,
        Unit::CacheImageRead,
        Unit::Output,
        Unit::OutputReasoning,
        Unit::OutputAudio,
        Unit::OutputImage,
        Unit::Requests,
        Unit::WebSearches,
    ];

    /// Most specific first, the order leaves are computed in: a unit's descendants have more
    /// dimensions, so their leaves are known when the unit's own is computed.
    pub(crate) const DECOMPOSITION_ORDER: UnitMap<Unit> = {
        let mut order = Self::ALL;
        // Insertion sort by dimension count, descending (const context: no sort_by).
        let mut i = 1;
        while i < UNIT_COUNT {
            let mut j = i;
            while j > 0
                && DEFS[order[j - 1] as usize].dims.count_ones()
                    < DEFS[order[j] as usize].dims.count_ones()
            {
                let swap = order[j - 1];
                order[j - 1] = order[j];
                order[j] = swap;
                j -= 1;
            }
            i += 1;
        }
        order
    };

    /// The unit's index in a [`UnitMap`].
    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    /// The genai-prices price key, e.g. `cache_read_mtok`.
    pub(crate) const fn price_key(self) -> &'static str {
        DEFS[self as usize].price_key
    }

    /// The unit a genai-prices price key prices, if Bursora meters it.
    pub(crate) fn from_price_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|unit| unit.price_key() == key)
    }

    /// `DENOM / per`: what a count of this unit is multiplied by before the common division.
    pub(crate) const fn scale(self) -> u128 {
        DENOM / DEFS[self as usize].per as u128
    }

    /// Whether `self` is a strict ancestor of `other` (its dimensions are a strict subset).
    pub(crate) const fn is_ancestor_of(self, other: Self) -> bool {
        let (mine, theirs) = (DEFS[self as usize].dims, DEFS[other as usize].dims);
        mine != theirs && mine & !theirs == 0
    }

    /// Which side of a request the unit is charged on.
    pub(crate) const fn direction(self) -> Direction {
        let dims = DEFS[self as usize].dims;
        if dims & DIR_IN != 0 {
            Direction::Input
        } else if dims & DIR_OUT != 0 {
            Direction::Output
        } else {
            Direction::Other
        }
    }

    /// Whether the unit is audio or image tokens.
    pub(crate) const fn is_media(self) -> bool {
        DEFS[self as usize].media
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestry_follows_dimensions() {
        assert!(Unit::Input.is_ancestor_of(Unit::CacheRead));
        assert!(Unit::Input.is_ancestor_of(Unit::CacheAudioRead));
        assert!(Unit::CacheRead.is_ancestor_of(Unit::CacheAudioRead));
        assert!(Unit::InputAudio.is_ancestor_of(Unit::CacheAudioRead));
        assert!(Unit::CacheWrite.is_ancestor_of(Unit::CacheWrite1h));
        assert!(Unit::Output.is_ancestor_of(Unit::OutputReasoning));
        assert!(!Unit::Input.is_ancestor_of(Unit::Output));
        assert!(!Unit::Input.is_ancestor_of(Unit::Input));
        assert!(!Unit::CacheRead.is_ancestor_of(Unit::InputAudio));
        assert!(!Unit::Requests.is_ancestor_of(Unit::WebSearches));
    }

    #[test]
    fn decomposition_puts_descendants_first() {
        let order = Unit::DECOMPOSITION_ORDER;
        for (i, unit) in order.iter().enumerate() {
            for later in &order[i + 1..] {
                assert!(
                    !unit.is_ancestor_of(*later),
                    "{unit:?} before its descendant {later:?}"
                );
            }
        }
        for unit in Unit::ALL {
            assert_eq!(Unit::from_price_key(unit.price_key()), Some(unit));
            assert_eq!(Unit::ALL[unit.index()], unit);
        }
    }
}
