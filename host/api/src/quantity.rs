//! Kubernetes resource quantities (`500m`, `2`, `128Mi`, `1G`, `1e3`).
//!
//! Parsed to an exact count of thousandths so that CPU (millicores) and
//! memory or storage (bytes) compare and add without rounding.

use std::fmt;

/// A parsed quantity, held as thousandths of the unit (so `1` is 1000, `500m` is 500).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Quantity {
    millis: i128,
}

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", match .0 { QuantityProblem::Syntax => format!("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' (got {:?})", .1), QuantityProblem::TooLarge => format!("quantity {:?} is too large: at most {} (2^63-1) units", .1, Quantity::MAX_UNITS) })]
pub struct QuantityError(pub QuantityProblem, pub String);

/// What is wrong with a quantity string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantityProblem {
    /// Not a quantity at all.
    Syntax,
    /// A quantity beyond [`Quantity::MAX_UNITS`].
    TooLarge,
}

/// At most this much of a refused quantity is repeated in its error.
const QUOTED_CHARS: usize = 64;

/// `text` as an error repeats it: its first [`QUOTED_CHARS`] characters, and `…` for the rest.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTED_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

impl Quantity {
    /// The largest magnitude of a quantity, in whole units (`i64::MAX`, as
    /// Kubernetes' `Quantity.Value()`): about 8 Ei bytes or 9.2·10¹⁸ cores.
    pub const MAX_UNITS: i64 = i64::MAX;

    /// A quantity of `n` whole units.
    pub fn from_units(n: i64) -> Self {
        Quantity { millis: i128::from(n) * 1000 }
    }
    /// A quantity of `n` thousandths (millicores for CPU).
    pub fn from_millis(n: i64) -> Self {
        Quantity { millis: i128::from(n) }
    }
    /// Thousandths of the unit, rounded up (CPU millicores).
    pub fn millis(&self) -> i128 {
        self.millis
    }
    /// Whole units, rounded up (bytes for memory and storage).
    pub fn units_ceil(&self) -> i128 {
        self.millis.div_euclid(1000) + i128::from(self.millis.rem_euclid(1000) != 0)
    }
    pub fn is_negative(&self) -> bool {
        self.millis < 0
    }

    /// A quantity as JSON holds it: a string (`"250m"`) or a number; `None` for anything else or what does not parse.
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        match value {
            serde_json::Value::String(text) => Quantity::parse(text).ok(),
            serde_json::Value::Number(n) => Quantity::parse(&n.to_string()).ok(),
            _ => None,
        }
    }

    /// Parses a Kubernetes quantity string.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let err = || QuantityError(QuantityProblem::Syntax, quoted(text));
        let too_large = || QuantityError(QuantityProblem::TooLarge, quoted(text));
        let s = text.trim();
        let (negative, s) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let number_len = s.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
        let (number, suffix) = s.split_at(number_len);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(err());
        }
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        // value = digits * 10^(exp10) * 2^(exp2)
        let digits: String = format!("{int_part}{frac_part}");
        let digits = match digits.trim_start_matches('0') {
            "" => "0",
            significant => significant,
        };
        if digits.len() > 38 {
            // Beyond i128's digits: either far too large, or more precise than a thousandth needs.
            let whole_digits = int_part.trim_start_matches('0').len();
            return Err(if whole_digits > 20 { too_large() } else { err() });
        }
        let mut mantissa: i128 = digits.parse().map_err(|_| err())?;
        let mut exp10: i32 = -(frac_part.len() as i32);
        let mut exp2: u32 = 0;
        match suffix {
            "" => {}
            "n" => exp10 -= 9,
            "u" => exp10 -= 6,
            "m" => exp10 -= 3,
            "k" => exp10 += 3,
            "M" => exp10 += 6,
            "G" => exp10 += 9,
            "T" => exp10 += 12,
            "P" => exp10 += 15,
            "E" => exp10 += 18,
            "Ki" => exp2 = 10,
            "Mi" => exp2 = 20,
            "Gi" => exp2 = 30,
            "Ti" => exp2 = 40,
            "Pi" => exp2 = 50,
            "Ei" => exp2 = 60,
            _ => {
                let exponent = suffix.strip_prefix(['e', 'E']).ok_or_else(err)?;
                let exponent: i32 = exponent.parse().map_err(|_| err())?;
                if !(-30..=30).contains(&exponent) {
                    return Err(err());
                }
                exp10 += exponent;
            }
        }
        // Express in thousandths.
        exp10 += 3;
        mantissa = mantissa.checked_mul(1i128 << exp2).ok_or_else(too_large)?;
        let millis = if exp10 >= 0 {
            mantissa.checked_mul(10i128.checked_pow(exp10 as u32).ok_or_else(too_large)?).ok_or_else(too_large)?
        } else {
            match 10i128.checked_pow((-exp10) as u32) {
                // Round up, as Kubernetes does for sub-milli precision.
                Some(divisor) => mantissa / divisor + i128::from(mantissa % divisor != 0),
                // A divisor beyond i128 leaves at most one thousandth.
                None => i128::from(mantissa != 0),
            }
        };
        if millis > i128::from(Self::MAX_UNITS) * 1000 {
            return Err(too_large());
        }
        Ok(Quantity { millis: if negative { -millis } else { millis } })
    }
}

/// Sums saturate at the ends of `i128` (far beyond any quantity in range):
/// a total of many huge requests stays huge and exceeds every limit.
impl std::ops::Add for Quantity {
    type Output = Quantity;
    fn add(self, rhs: Quantity) -> Quantity {
        Quantity { millis: self.millis.saturating_add(rhs.millis) }
    }
}

impl std::ops::Sub for Quantity {
    type Output = Quantity;
    fn sub(self, rhs: Quantity) -> Quantity {
        Quantity { millis: self.millis.saturating_sub(rhs.millis) }
    }
}

impl std::iter::Sum for Quantity {
    fn sum<I: Iterator<Item = Quantity>>(iter: I) -> Quantity {
        iter.fold(Quantity::default(), |a, b| a + b)
    }
}

impl fmt::Display for Quantity {
    /// Canonical form: whole units when exact, otherwise `m` (thousandths).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.millis % 1000 == 0 {
            let units = self.millis / 1000;
            for (suffix, shift) in [("Ei", 60), ("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
                let step = 1i128 << shift;
                if units != 0 && units % step == 0 {
                    return write!(f, "{}{suffix}", units / step);
                }
            }
            write!(f, "{units}")
        } else {
            write!(f, "{}m", self.millis)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_forms() {
        assert_eq!(Quantity::parse("500m").unwrap().millis(), 500);
        assert_eq!(Quantity::parse("2").unwrap().millis(), 2000);
        assert_eq!(Quantity::parse("0.5").unwrap().millis(), 500);
        assert_eq!(Quantity::parse("128Mi").unwrap().units_ceil(), 128 << 20);
        assert_eq!(Quantity::parse("1G").unwrap().units_ceil(), 1_000_000_000);
        assert_eq!(Quantity::parse("1e3").unwrap().units_ceil(), 1000);
        assert_eq!(Quantity::parse("1.5Gi").unwrap().units_ceil(), 3 << 29);
        assert_eq!(Quantity::parse("100n").unwrap().millis(), 1);
        assert!(Quantity::parse("-1").unwrap().is_negative());
        for bad in ["", "abc", "1.2.3", "5 Mi", "1Qi", "."] {
            assert!(Quantity::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn refuses_quantities_beyond_int64_units() {
        assert_eq!(Quantity::parse("9223372036854775807").unwrap().units_ceil(), i128::from(i64::MAX));
        for huge in [
            "9223372036854775808",
            "85070591730234615865843651857942052864m",
            "8Ei",
            "1e30",
            "99999999999999999999999999999999999999999999Ki",
        ] {
            let error = Quantity::parse(huge).unwrap_err();
            assert_eq!(error.0, QuantityProblem::TooLarge, "{huge}: {error}");
            assert!(error.to_string().contains("too large"), "{error}");
        }
        assert_eq!(Quantity::parse("0000000000000000000000000000000000000000000000000000000000000000000001").unwrap().millis(), 1000);
        assert_eq!(Quantity::parse("1e-30").unwrap().millis(), 1);
    }

    #[test]
    fn errors_repeat_at_most_a_little_of_the_input() {
        let long = "9".repeat(3 << 20);
        let error = Quantity::parse(&long).unwrap_err();
        assert!(error.to_string().len() < 200, "{} bytes", error.to_string().len());
        assert!(error.1.ends_with('…'));
        assert_eq!(Quantity::parse("5 Mi").unwrap_err().1, "5 Mi");
    }

    #[test]
    fn sums_saturate_instead_of_wrapping() {
        let big = Quantity::parse("9223372036854775807").unwrap();
        let total: Quantity = std::iter::repeat_n(big, 1 << 20).sum();
        assert!(total > big);
        let mut sum = Quantity { millis: i128::MAX };
        sum = sum + big;
        assert_eq!(sum.millis(), i128::MAX);
        assert_eq!((Quantity { millis: i128::MIN } - big).millis(), i128::MIN);
    }

    #[test]
    fn displays_canonically() {
        assert_eq!(Quantity::parse("1024Ki").unwrap().to_string(), "1Mi");
        assert_eq!(Quantity::parse("250m").unwrap().to_string(), "250m");
        assert_eq!(Quantity::parse("3").unwrap().to_string(), "3");
    }
}
