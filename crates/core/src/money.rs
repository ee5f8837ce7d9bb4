//! Money as integer nano-USD (1 USD = 10^9 nano-USD).
//!
//! Nothing that decides whether a call may go out is computed in floating point: amounts are
//! `i64` nano-USD (enough for $9.2 billion), prices are parsed from decimal text, and every
//! rounding that is not exact goes up, so a reservation is never smaller than the true cost.

use std::fmt;
use std::ops::{Add, AddAssign};

use crate::error::{Error, Result};

/// Nano-USD per USD.
pub const NANOS_PER_USD: i64 = 1_000_000_000;

/// An amount of money in nano-USD. Never negative when it comes out of a constructor here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NanoUsd(i64);

impl NanoUsd {
    /// Zero dollars.
    pub const ZERO: Self = Self(0);
    /// The largest amount representable.
    pub const MAX: Self = Self(i64::MAX);

    /// An amount from a count of nano-USD.
    ///
    /// # Errors
    /// A negative count is [`Error::InvalidInput`].
    pub fn from_nanos(nanos: i64) -> Result<Self> {
        if nanos < 0 {
            return Err(Error::invalid(format!(
                "an amount of money cannot be negative (got {nanos} nano-USD)"
            )));
        }
        Ok(Self(nanos))
    }

    /// An amount from a count of nano-USD known to be non-negative (e.g. read back from storage
    /// this crate wrote). Negative values are clamped to zero.
    #[must_use]
    pub const fn from_nanos_clamped(nanos: i64) -> Self {
        if nanos < 0 { Self(0) } else { Self(nanos) }
    }

    /// The amount in nano-USD.
    #[must_use]
    pub const fn nanos(self) -> i64 {
        self.0
    }

    /// Parses a decimal USD amount such as `"12"`, `"0.15"` or `"1e-3"`.
    ///
    /// Digits beyond the ninth decimal round **up** to the next nano-USD, so a parsed limit or price
    /// is never below what was written.
    ///
    /// # Errors
    /// Negative, non-finite, empty or malformed text, or an amount above [`NanoUsd::MAX`].
    pub fn parse_usd(text: &str) -> Result<Self> {
        let scaled = Decimal::parse(text)?.scaled_ceil(9)?;
        Ok(Self(scaled))
    }

    /// Converts a JavaScript/JSON number of USD at the API edge.
    ///
    /// The number is read through its shortest round-trip decimal form (what `JSON.stringify`
    /// prints), so `0.1` is exactly 100,000,000 nano-USD, not 100,000,000.000000005.
    ///
    /// # Errors
    /// NaN, infinities, negative numbers and amounts above [`NanoUsd::MAX`].
    pub fn from_usd_f64(usd: f64) -> Result<Self> {
        if !usd.is_finite() {
            return Err(Error::invalid(format!(
                "an amount of money must be a finite number of USD (got {usd})"
            )));
        }
        Self::parse_usd(&format!("{usd}"))
    }

    /// The amount in USD as a float, for display and the JS edge only.
    #[must_use]
    #[allow(clippy::cast_precision_loss)]
    pub fn to_usd_f64(self) -> f64 {
        // Split to keep 9 exact decimals for any amount below 2^53 nano-USD.
        (self.0 / NANOS_PER_USD) as f64 + (self.0 % NANOS_PER_USD) as f64 / 1e9
    }

    /// `self + other`, or `None` on overflow.
    #[must_use]
    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Self)
    }

    /// `self + other`, saturating at [`NanoUsd::MAX`].
    #[must_use]
    pub const fn saturating_add(self, other: Self) -> Self {
        Self(self.0.saturating_add(other.0))
    }

    /// `self - other`, saturating at zero.
    #[must_use]
    pub const fn saturating_sub(self, other: Self) -> Self {
        let d = self.0.saturating_sub(other.0);
        if d < 0 { Self(0) } else { Self(d) }
    }

    /// Whether this is zero dollars.
    #[must_use]
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl Add for NanoUsd {
    type Output = Self;
    fn add(self, rhs: Self) -> Self {
        self.saturating_add(rhs)
    }
}

impl AddAssign for NanoUsd {
    fn add_assign(&mut self, rhs: Self) {
        *self = self.saturating_add(rhs);
    }
}

impl std::iter::Sum for NanoUsd {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::ZERO, Add::add)
    }
}

impl fmt::Display for NanoUsd {
    /// `$1.5`, `$0.000000001`: exact, trailing zeros trimmed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / NANOS_PER_USD;
        let frac = self.0 % NANOS_PER_USD;
        if frac == 0 {
            return write!(f, "${whole}");
        }
        let digits = format!("{frac:09}");
        write!(f, "${whole}.{}", digits.trim_end_matches('0'))
    }
}

/// A non-negative decimal number parsed exactly from text: `digits × 10^-scale`.
///
/// Used for money and prices so that `"0.0375"` means exactly that, whatever a float would say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decimal {
    digits: u128,
    /// Power of ten to divide `digits` by; may be negative for large exponents.
    scale: i32,
}

impl Decimal {
    /// Parses `123`, `0.15`, `.5`, `1e-3`, `2.5E+2`. A leading `+` is accepted; a `-` is not.
    ///
    /// # Errors
    /// Anything else, with a message naming the text.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::invalid(format!(
                "{text:?} is not a valid non-negative decimal number: {why}"
            ))
        };
        let s = text.trim();
        let s = s.strip_prefix('+').unwrap_or(s);
        if s.starts_with('-') {
            return Err(bad("it is negative"));
        }
        let (mantissa, exponent) = match s.find(['e', 'E']) {
            Some(i) => {
                let exp: i32 = s[i + 1..].parse().map_err(|_| bad("bad exponent"))?;
                (&s[..i], exp)
            }
            None => (s, 0),
        };
        let (int_part, frac_part) = match mantissa.split_once('.') {
            Some((a, b)) => (a, b),
            None => (mantissa, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad("no digits"));
        }
        let mut digits: u128 = 0;
        let mut scale: i32 = 0;
        for (i, c) in int_part.chars().chain(frac_part.chars()).enumerate() {
            let d = c.to_digit(10).ok_or_else(|| bad("unexpected character"))?;
            if digits > (u128::MAX - 9) / 10 {
                return Err(bad("too many digits"));
            }
            digits = digits * 10 + u128::from(d);
            if i >= int_part.len() {
                scale += 1;
            }
        }
        if !(-60..=60).contains(&exponent) {
            return Err(bad("exponent out of range"));
        }
        scale -= exponent;
        Ok(Self { digits, scale })
    }

    /// The number times `10^places`, rounded up to an integer.
    ///
    /// # Errors
    /// If the result does not fit in an `i64`.
    pub fn scaled_ceil(&self, places: i32) -> Result<i64> {
        let shift = places - self.scale;
        let value: Option<u128> = if shift >= 0 {
            10u128
                .checked_pow(shift.unsigned_abs())
                .and_then(|p| self.digits.checked_mul(p))
        } else {
            match 10u128.checked_pow(shift.unsigned_abs()) {
                Some(p) => Some(self.digits.div_ceil(p)),
                // Dividing by more than 10^38: anything non-zero rounds up to one.
                None => Some(u128::from(self.digits != 0)),
            }
        };
        value
            .and_then(|v| i64::try_from(v).ok())
            .ok_or_else(|| Error::invalid("the number is too large"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_decimals() {
        assert_eq!(NanoUsd::parse_usd("1").unwrap().nanos(), 1_000_000_000);
        assert_eq!(NanoUsd::parse_usd("0.15").unwrap().nanos(), 150_000_000);
        assert_eq!(NanoUsd::parse_usd(".5").unwrap().nanos(), 500_000_000);
        assert_eq!(NanoUsd::parse_usd("1e-9").unwrap().nanos(), 1);
        assert_eq!(
            NanoUsd::parse_usd("2.5E+2").unwrap().nanos(),
            250_000_000_000
        );
        assert_eq!(NanoUsd::parse_usd("0").unwrap(), NanoUsd::ZERO);
    }

    #[test]
    fn rounds_sub_nano_digits_up() {
        assert_eq!(NanoUsd::parse_usd("0.0000000001").unwrap().nanos(), 1);
        assert_eq!(
            NanoUsd::parse_usd("1.0000000001").unwrap().nanos(),
            1_000_000_001
        );
        assert_eq!(
            NanoUsd::parse_usd("1.0000000000").unwrap().nanos(),
            1_000_000_000
        );
    }

    #[test]
    fn rejects_bad_text() {
        for bad in [
            "", "-1", "abc", "1.2.3", "NaN", "inf", "1e", "1e999", "--1", ".",
        ] {
            assert!(
                NanoUsd::parse_usd(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        assert!(NanoUsd::parse_usd("99999999999999999999").is_err());
    }

    #[test]
    fn floats_at_the_edge_read_as_written() {
        assert_eq!(NanoUsd::from_usd_f64(0.1).unwrap().nanos(), 100_000_000);
        assert_eq!(NanoUsd::from_usd_f64(5.0).unwrap().nanos(), 5_000_000_000);
        assert_eq!(NanoUsd::from_usd_f64(1e-9).unwrap().nanos(), 1);
        assert!(NanoUsd::from_usd_f64(f64::NAN).is_err());
        assert!(NanoUsd::from_usd_f64(f64::INFINITY).is_err());
        assert!(NanoUsd::from_usd_f64(-0.5).is_err());
        assert!((NanoUsd::parse_usd("12.345").unwrap().to_usd_f64() - 12.345).abs() < 1e-12);
    }

    #[test]
    fn displays_exactly() {
        assert_eq!(NanoUsd::parse_usd("1.5").unwrap().to_string(), "$1.5");
        assert_eq!(NanoUsd::from_nanos(1).unwrap().to_string(), "$0.000000001");
        assert_eq!(
            NanoUsd::from_nanos(3_000_000_000).unwrap().to_string(),
            "$3"
        );
    }

    #[test]
    fn arithmetic_saturates() {
        let one = NanoUsd::from_nanos(1).unwrap();
        assert_eq!(NanoUsd::ZERO.saturating_sub(one), NanoUsd::ZERO);
        assert_eq!(NanoUsd::MAX + one, NanoUsd::MAX);
        assert!(NanoUsd::MAX.checked_add(one).is_none());
        assert!(NanoUsd::from_nanos(-1).is_err());
    }
}
