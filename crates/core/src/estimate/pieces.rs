//! Pre-tokenization: the split of a text into the pieces that BPE then encodes one by one.
//!
//! `bpe-openai` splits with one `regex-automata` search per piece, which is most of the time
//! of counting a long text once the pieces' counts are memoized. This module decides the pieces
//! of ASCII text (and the letters of Latin-1) by hand, with the regex's own rules, and asks the
//! regex for a piece whenever any other character decides it. The pieces are the regex's
//! exactly (not merely close): `tests` compares both splits on adversarial and random text.
//!
//! The patterns (`bpe-openai` 0.3.2, the same as `tiktoken`'s), tried in order at the start of
//! every piece, the first that matches winning (leftmost-first):
//!
//! ```text
//! cl100k_base: (?i:'s|'t|'re|'ve|'m|'ll|'d) | [^\r\n\p{L}\p{N}]?\p{L}+ | \p{N}{1,3}
//!            | ' '?[^\s\p{L}\p{N}]+[\r\n]* | \s*[\r\n]+ | \s+$ | \s+ less its last char | \s+
//! o200k_base:  [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(contraction)?
//!            | [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(contraction)?
//!            | \p{N}{1,3} | ' '?[^\s\p{L}\p{N}]+[\r\n/]* | \s*[\r\n]+ | \s+$
//!            | \s+ less its last char | \s+
//! ```
//!
//! In ASCII, `\p{L}` is `A-Za-z` (`Lu` the capitals, `Ll` the small letters; `Lt`, `Lm`, `Lo`
//! and `M` have no ASCII members), `\p{N}` is `0-9`, and `\s` is `\t\n\x0B\x0C\r` and space.
//! Latin-1's letters are capitals and small letters too (see [`class`]).

use bpe_openai::Tokenizer;

/// Which vocabulary's pattern splits the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pattern {
    Cl100k,
    O200k,
}

/// The pieces of `text` under `pattern`, as bytes (BPE encodes bytes, and slicing a `str` would
/// check for character boundaries that are certain); `tokenizer` is the one whose regex
/// `pattern` describes, asked for the pieces this module does not decide itself.
pub(crate) fn pieces<'a>(
    pattern: Pattern,
    tokenizer: &'static Tokenizer,
    text: &'a str,
) -> Pieces<'a> {
    Pieces {
        pattern,
        tokenizer,
        text,
        pos: 0,
    }
}

pub(crate) struct Pieces<'a> {
    pattern: Pattern,
    tokenizer: &'static Tokenizer,
    text: &'a str,
    pos: usize,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a [u8];

    /// Inlined into the counting loop: a call per piece would cost a good part of a piece.
    #[inline(always)]
    fn next(&mut self) -> Option<&'a [u8]> {
        let (pos, b) = (self.pos, self.text.as_bytes());
        if pos >= b.len() {
            return None;
        }
        let fast = ascii_piece(self.pattern, b, pos);
        debug_assert!(
            fast.is_none_or(|end| end > pos),
            "empty piece at {pos} of {b:?}"
        );
        let end = match fast {
            Some(end) if end > pos => end,
            // (The regex also takes over from an empty piece, a bug that would otherwise never
            // end, in release builds.)
            _ => regex_piece(self.tokenizer, self.text, pos),
        };
        self.pos = end;
        b.get(pos..end)
    }
}

/// The end of the regex's piece at `pos`. The regex is anchored and looks neither behind nor
/// past the end of the text, so that piece is the first piece of the rest.
#[cold]
#[inline(never)]
fn regex_piece(tokenizer: &Tokenizer, text: &str, pos: usize) -> usize {
    pos + tokenizer
        .split(&text[pos..])
        .next()
        .map_or(text.len() - pos, str::len)
}

// Classes of bytes, as bits so that a run can stop at any of several.
const LOWER: u8 = 1;
const UPPER: u8 = 2;
const DIGIT: u8 = 4;
/// `\r` or `\n`.
const NEWLINE: u8 = 8;
/// Space, `\t`, `\x0B`, `\x0C`.
const BLANK: u8 = 16;
/// Neither white space nor letter nor digit: punctuation, symbols, control characters.
const OTHER: u8 = 32;
/// The first byte of a character that is not ASCII nor a letter of Latin-1: where one decides
/// a piece, the regex does.
const NON_ASCII: u8 = 64;
/// Past the end of the text: no class, so every run stops there.
const END: u8 = 0;
const LETTER: u8 = LOWER | UPPER;

static CLASS: [u8; 256] = {
    let mut t = [NON_ASCII; 256];
    let mut b = 0;
    while b < 128 {
        t[b] = match b as u8 {
            b'a'..=b'z' => LOWER,
            b'A'..=b'Z' => UPPER,
            b'0'..=b'9' => DIGIT,
            b'\r' | b'\n' => NEWLINE,
            b' ' | b'\t' | 0x0B | 0x0C => BLANK,
            _ => OTHER,
        };
        b += 1;
    }
    t
};

/// Class of the character that starts at `i`. Besides ASCII, the letters of Latin-1
/// (U+00C0–U+00FF less `×` and `÷`, UTF-8 `C3 80`–`C3 BF`): all of them capitals (`Lu`) or
/// small letters (`Ll`), like ASCII's, and common in the languages of Western Europe. They
/// are the only characters of two bytes a run steps over; see [`letter_run`].
#[inline(always)]
fn class(b: &[u8], i: usize) -> u8 {
    match b.get(i) {
        None => END,
        Some(0xC3) => match b.get(i + 1) {
            Some(0x97 | 0xB7) => NON_ASCII,
            Some(0x80..=0x9E) => UPPER,
            _ => LOWER,
        },
        Some(&c) => CLASS[c as usize],
    }
}

/// The end of the piece that starts at `i` (`i < b.len()`), or `None` when a character that
/// decides it is neither ASCII nor a letter of Latin-1.
#[inline(always)]
fn ascii_piece(pattern: Pattern, b: &[u8], i: usize) -> Option<usize> {
    let c = class(b, i);
    if c & LETTER != 0 {
        return letters(pattern, b, i);
    }
    if c & DIGIT != 0 {
        return digits(b, i);
    }
    if c & NEWLINE != 0 {
        return white(b, i);
    }
    if c & BLANK != 0 {
        let next = class(b, i + 1);
        return if next & NON_ASCII != 0 {
            None
        } else if next & LETTER != 0 {
            // The optional leading character of a word.
            letters(pattern, b, i + 1)
        } else if next & OTHER != 0 && b[i] == b' ' {
            others(pattern, b, i + 1)
        } else {
            white(b, i)
        };
    }
    if c & OTHER != 0 {
        if pattern == Pattern::Cl100k && b[i] == b'\'' {
            match contraction(b, i) {
                Some(0) => {}
                Some(n) => return Some(i + n),
                None => return None,
            }
        }
        let next = class(b, i + 1);
        return if next & NON_ASCII != 0 {
            None
        } else if next & LETTER != 0 {
            letters(pattern, b, i + 1)
        } else {
            others(pattern, b, i)
        };
    }
    None
}

/// The end of the run of characters in `classes` from `i`, for classes of ASCII characters
/// only (letters, which may be two bytes long, have [`letter_run`]).
#[inline(always)]
fn run(b: &[u8], mut i: usize, classes: u8) -> usize {
    while class(b, i) & classes != 0 {
        i += 1;
    }
    i
}

/// The end of the run of bytes from `i` that are in `lo..=hi` once OR-ed with `fold` (`0x20`
/// folds ASCII capitals to small letters), eight at a time: words are most of a text.
#[inline(always)]
fn range_run(b: &[u8], mut i: usize, fold: u8, lo: u8, hi: u8) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = ONES * 0x80;
    while let Some(chunk) = b.get(i..i + 8) {
        let v = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let x = (v & !HIGH) | (ONES * u64::from(fold));
        // Per byte, and without carries since every byte of `x` is below 0x80: the high bit
        // of `ge` is set iff the byte is at least `lo`, that of `gt` iff it is above `hi`.
        let ge = x + ONES * u64::from(0x80 - lo);
        let gt = x + ONES * u64::from(0x7f - hi);
        let outside = !(ge & !gt & !v) & HIGH;
        if outside != 0 {
            return i + (outside.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while b
        .get(i)
        .is_some_and(|&c| c < 0x80 && (lo..=hi).contains(&(c | fold)))
    {
        i += 1;
    }
    i
}

/// The end of the run of letters of `classes` ([`LETTER`], [`UPPER`] or [`LOWER`]) from `i`:
/// ASCII ones eight at a time, Latin-1 ones one by one.
#[inline(always)]
fn letter_run(b: &[u8], mut i: usize, classes: u8) -> usize {
    loop {
        i = match classes {
            LETTER => range_run(b, i, 0x20, b'a', b'z'),
            UPPER => range_run(b, i, 0, b'A', b'Z'),
            _ => range_run(b, i, 0, b'a', b'z'),
        };
        if b.get(i) == Some(&0xC3) && class(b, i) & classes != 0 {
            i += 2;
        } else {
            return i;
        }
    }
}

/// A word whose first letter is at `i`: `\p{L}+` (cl100k), or o200k's capitals, then small
/// letters, then a contraction.
#[inline(always)]
fn letters(pattern: Pattern, b: &[u8], i: usize) -> Option<usize> {
    let end = match pattern {
        Pattern::Cl100k => letter_run(b, i, LETTER),
        // `[Lu…]*[Ll…]+` if there are small letters after the capitals, else `[Lu…]+`: in
        // ASCII and Latin-1 the two classes are disjoint, so the capitals are all taken either
        // way, and after the small letters a capital ends the word.
        Pattern::O200k => {
            let caps = if class(b, i) == UPPER {
                letter_run(b, i, UPPER)
            } else {
                i
            };
            letter_run(b, caps, LOWER)
        }
    };
    if class(b, end) & NON_ASCII != 0 {
        return None;
    }
    match pattern {
        Pattern::Cl100k => Some(end),
        Pattern::O200k => contraction(b, end).map(|n| end + n),
    }
}

/// Length of the contraction `(?i:'s|'t|'re|'ve|'m|'ll|'d)` at `i`: `Some(0)` if there is
/// none, `None` if a non-ASCII character could be part of one (Unicode case folding matches
/// `ſ` to `s`).
#[inline(always)]
fn contraction(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'\'') {
        return Some(0);
    }
    let Some(&c) = b.get(i + 1) else {
        return Some(0);
    };
    if c >= 128 {
        return None;
    }
    match c.to_ascii_lowercase() {
        b's' | b't' | b'm' | b'd' => Some(2),
        first @ (b'r' | b'v' | b'l') => {
            let Some(&d) = b.get(i + 2) else {
                return Some(0);
            };
            if d >= 128 {
                return None;
            }
            let second = if first == b'l' { b'l' } else { b'e' };
            Some(if d.to_ascii_lowercase() == second {
                3
            } else {
                0
            })
        }
        _ => Some(0),
    }
}

/// `\p{N}{1,3}` from `i`.
#[inline(always)]
fn digits(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < i + 3 {
        let c = class(b, j);
        if c & NON_ASCII != 0 {
            return None;
        }
        if c & DIGIT == 0 {
            break;
        }
        j += 1;
    }
    Some(j)
}

/// `' '?[^\s\p{L}\p{N}]+` followed by `[\r\n]*` (cl100k) or `[\r\n/]*` (o200k), the symbols
/// starting at `i`.
#[inline(always)]
fn others(pattern: Pattern, b: &[u8], i: usize) -> Option<usize> {
    let mut j = run(b, i, OTHER);
    if class(b, j) & NON_ASCII != 0 {
        return None;
    }
    // No non-ASCII character is `\r`, `\n` or `/`, so the tail is decided in ASCII.
    while j < b.len()
        && (b[j] == b'\r' || b[j] == b'\n' || (pattern == Pattern::O200k && b[j] == b'/'))
    {
        j += 1;
    }
    Some(j)
}

/// A piece of white space from `i`, where no word or symbol took it: up to the last newline of
/// the run (`\s*[\r\n]+`), else the whole run at the end of the text (`\s+$`), else the run
/// less its last character (`\s+(?!\S)`) if that leaves one, else the run.
#[inline(always)]
fn white(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    let mut last_newline = None;
    loop {
        let c = class(b, j);
        if c & NEWLINE != 0 {
            last_newline = Some(j);
        } else if c & BLANK == 0 {
            if c & NON_ASCII != 0 {
                return None;
            }
            break;
        }
        j += 1;
    }
    Some(match last_newline {
        Some(n) => n + 1,
        None if j == b.len() || j - i == 1 => j,
        None => j - 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) {
        for (pattern, tokenizer) in [
            (Pattern::Cl100k, bpe_openai::cl100k_base()),
            (Pattern::O200k, bpe_openai::o200k_base()),
        ] {
            let ours: Vec<&[u8]> = pieces(pattern, tokenizer, text).collect();
            let regex: Vec<&[u8]> = tokenizer.split(text).map(str::as_bytes).collect();
            assert_eq!(ours, regex, "{pattern:?} split {text:?}");
        }
    }

    #[test]
    fn pieces_are_the_regex_pieces_on_adversarial_text() {
        let texts = [
            "",
            "a",
            " ",
            "\n",
            "  ",
            " \n ",
            "Hello, world! It's 2026-12-01T13:45:00Z.",
            "HELLO world HelloWorld helloWORLD ABCdef aBC XMLHttpRequest iOS",
            "I'd've thought they'll've said it's fine, we're sure you'd known. 'S 'T 'RE 'Ve 'lL 'D",
            "can'",
            "can'r",
            "can'l",
            "'",
            "''s",
            "x'",
            "x'r",
            "X'LL",
            "x'ſ",
            "'ſ",
            "xſ",
            "'ſt",
            "1 12 123 1234 12345 3.14159 1,000,000 0x1F ١٢٣ 1١2 12٣4 ５６７ 1²",
            "      lots of     spaces\n\n\n\t\t and\r\n mixed   whitespace   ",
            "a  b   c\t\td \x0B\x0Ce\x0C",
            "tail spaces   ",
            "\n\n\n",
            " \r\n\r\n  x",
            "\t\tindented\n    code();\n",
            "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{v:?}\");\n}\n",
            "path/to/file.rs //comment\n/\n//\n\n/x ./a/../b",
            "!!!\n\n/ ... ??? ;; ,\r\n/\r/",
            "<|endoftext|> <|im_start|>system <|im_end|>",
            "\x00\x01\x1b[31m\x7f del",
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
            "東京の天気はどうですか？明日は雨が降るでしょうか。",
            "请用中文解释一下量子纠缠的基本原理",
            "안녕하세요! Привет мир. مرحبا नमस्ते",
            "Grüße aus Zürich: Öl, Äpfel und Übermut — naïve café façade.",
            "e\u{301}t\u{301}e\u{301} Ae\u{301} A\u{301}b",
            "🎉🎉🎉 Congrats!!! 🚀✨ 👩‍👩‍👧‍👦 🏳️‍🌈 a🎉b 🎉a",
            "nbsp\u{a0}here \u{a0}x\u{a0}\u{a0} \u{a0}\n\u{a0}",
            "nel\u{85}x \u{85}\n \u{2028} \u{3000}ideographic\u{3000}",
            "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ ｶﾀｶﾅ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
            "ǅungla ǈ ǋx Xǅ xʰy ʰ Aª ª x\u{2b0}",
            "CamelCaseÉtéÀ lowerÉ UPPERé",
            "a\u{200d}b x\u{fe0f} \u{feff}bom",
            "-- --- ==== ++ a-b a_b _x __init__ $var @user #tag %d &amp;",
            "'s'S's",
            "¿Qué? ÀÖ×ØÞßöø÷ÿĀ À×À Ö÷ö ×x x× ÷ ×× ßSS SSß ÉTÉ Été étÉ ÆØÅæøå Ĳ",
            "Größe Straße déjà-vu naïve l'été L'ÉTÉ d'été qu'ÿ ÿ's É'S é'll",
            "1é é1 é\u{301} Aé\u{301} µm ªº ¹²³ ¼",
        ];
        for text in texts {
            check(text);
            // And at every position, so every piece is also tried as a first or last piece.
            for (i, _) in text.char_indices() {
                check(&text[i..]);
                check(&text[..i]);
            }
        }
    }

    #[test]
    fn pieces_are_the_regex_pieces_on_random_text() {
        // Characters chosen to meet every rule: each ASCII class, the letters of the
        // contractions, and non-ASCII letters (Lu, Ll, Lt, Lm, Lo, M), digits, white space and
        // symbols next to them.
        let alphabet: Vec<char> = "aAsStTrReEvVlLmMdDzZ09 \t\n\r\x0B\x0C'/.,-_!\"{}\x00\x7f\
             é\u{301}ÉſǅʰªК日١５\u{a0}\u{85}\u{3000}\u{2028}—🎉\u{200d}ÀÖ×ØÞßö÷øÿĀ¿µ"
            .chars()
            .collect();
        let mut seed = 0x2545_F491_4F6C_DD1D_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let ascii_len = alphabet.iter().take_while(|c| c.is_ascii()).count();
        for round in 0..30_000 {
            // A few characters per text, so that runs of one class are common; mostly ASCII,
            // as real text is, with non-ASCII characters in one text of two.
            let letters: Vec<char> = (0..2 + next() % 4)
                .map(|_| {
                    let r = next() as usize;
                    if round % 2 == 0 {
                        alphabet[r % ascii_len]
                    } else {
                        alphabet[r % alphabet.len()]
                    }
                })
                .collect();
            let len = (next() % 24) as usize;
            let text: String = (0..len)
                .map(|_| letters[next() as usize % letters.len()])
                .collect();
            check(&text);
        }
    }
}
