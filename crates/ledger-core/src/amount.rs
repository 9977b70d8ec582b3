//! Exact quantities: [`Credits`] in thousandths of a credit, [`Cents`] for money.
//!
//! Neither type ever holds a float. JSON numbers are read by their decimal text and
//! written back so that whole credits print as integers (`847`) and fractional ones with
//! up to three decimals (`0.6`).

use std::fmt;
use std::ops::{Add, AddAssign, Neg, Sub, SubAssign};
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Thousandths in one credit.
pub const MILLIS_PER_CREDIT: i64 = 1_000;

/// An exact, signed number of credits, stored as thousandths of a credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Credits(i64);

/// Why a text or number is not a valid amount of credits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("`{text}` is not a number of credits (use digits with at most three decimals, e.g. 12 or 0.25)")]
    Malformed { text: String },
    #[error("`{text}` has more than three decimals; credits are exact to a thousandth")]
    TooPrecise { text: String },
    #[error("`{text}` is too large")]
    TooLarge { text: String },
}

impl Credits {
    pub const ZERO: Credits = Credits(0);
    /// The largest amount accepted from clients (one trillion credits).
    pub const MAX_INPUT: Credits = Credits(1_000_000_000_000 * MILLIS_PER_CREDIT);

    /// Whole credits.
    pub const fn whole(n: i64) -> Credits {
        Credits(n * MILLIS_PER_CREDIT)
    }

    /// Thousandths of a credit.
    pub const fn from_millis(m: i64) -> Credits {
        Credits(m)
    }

    pub const fn millis(self) -> i64 {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub const fn is_positive(self) -> bool {
        self.0 > 0
    }

    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    pub const fn abs(self) -> Credits {
        Credits(self.0.abs())
    }

    pub fn min(self, other: Credits) -> Credits {
        Credits(self.0.min(other.0))
    }

    pub fn max(self, other: Credits) -> Credits {
        Credits(self.0.max(other.0))
    }

    pub fn checked_add(self, other: Credits) -> Option<Credits> {
        self.0.checked_add(other.0).map(Credits)
    }

    /// Whole credits when there is no fractional part.
    pub fn as_whole(self) -> Option<i64> {
        (self.0 % MILLIS_PER_CREDIT == 0).then_some(self.0 / MILLIS_PER_CREDIT)
    }

    /// Thousands-separated form for descriptions: `1,000`, `25,000`, `0.5`.
    pub fn grouped(self) -> String {
        let plain = self.to_string();
        let (sign, rest) = plain
            .strip_prefix('-')
            .map_or(("", plain.as_str()), |r| ("-", r));
        let (int, frac) = rest
            .split_once('.')
            .map_or((rest, None), |(i, f)| (i, Some(f)));
        let mut out = String::with_capacity(plain.len() + int.len() / 3);
        for (i, ch) in int.chars().enumerate() {
            if i > 0 && (int.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(ch);
        }
        match frac {
            Some(f) => format!("{sign}{out}.{f}"),
            None => format!("{sign}{out}"),
        }
    }

    /// Parses an amount a client sent and insists it is strictly positive.
    pub fn parse_positive(text: &str) -> Result<Credits, AmountError> {
        let c: Credits = text.parse()?;
        if c.0 <= 0 {
            return Err(AmountError::Malformed { text: text.into() });
        }
        Ok(c)
    }
}

impl fmt::Display for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let int = abs / MILLIS_PER_CREDIT as u64;
        let frac = abs % MILLIS_PER_CREDIT as u64;
        if frac == 0 {
            write!(f, "{sign}{int}")
        } else {
            let digits = format!("{frac:03}");
            write!(f, "{sign}{int}.{}", digits.trim_end_matches('0'))
        }
    }
}

impl FromStr for Credits {
    type Err = AmountError;

    /// Exact decimal parsing: `12`, `-3`, `0.6`, `1.125`, `1e3` is refused.
    fn from_str(text: &str) -> Result<Credits, AmountError> {
        let malformed = || AmountError::Malformed { text: text.into() };
        let (negative, body) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (int, frac) = body.split_once('.').map_or((body, ""), |(i, f)| (i, f));
        let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty()
            || !digits_only(int)
            || !digits_only(frac)
            || (body.contains('.') && frac.is_empty())
        {
            return Err(malformed());
        }
        let frac_trimmed = frac.trim_end_matches('0');
        if frac_trimmed.len() > 3 {
            return Err(AmountError::TooPrecise { text: text.into() });
        }
        let too_large = || AmountError::TooLarge { text: text.into() };
        let int_val: i64 = int.parse().map_err(|_| too_large())?;
        let frac_val: i64 = if frac_trimmed.is_empty() {
            0
        } else {
            format!("{frac_trimmed:0<3}")
                .parse()
                .map_err(|_| malformed())?
        };
        let millis = int_val
            .checked_mul(MILLIS_PER_CREDIT)
            .and_then(|v| v.checked_add(frac_val))
            .ok_or_else(too_large)?;
        if millis > Credits::MAX_INPUT.0 {
            return Err(too_large());
        }
        Ok(Credits(if negative { -millis } else { millis }))
    }
}

impl Serialize for Credits {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.as_whole() {
            Some(n) => s.serialize_i64(n),
            // An exact quotient of two integers, correctly rounded, prints back as the
            // decimal it came from (at most three decimals, far below 15 digits).
            None => s.serialize_f64(self.0 as f64 / MILLIS_PER_CREDIT as f64),
        }
    }
}

impl<'de> Deserialize<'de> for Credits {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Credits, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Credits;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of credits with at most three decimals")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Credits, E> {
                v.to_string().parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Credits, E> {
                v.to_string().parse().map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Credits, E> {
                // The shortest text that reads back as `v` is the decimal the client wrote
                // (for up to 15 significant digits); it is then parsed exactly.
                if !v.is_finite() {
                    return Err(E::custom("credits must be a finite number"));
                }
                format!("{v}").parse().map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Credits, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Add for Credits {
    type Output = Credits;
    fn add(self, o: Credits) -> Credits {
        Credits(self.0 + o.0)
    }
}
impl Sub for Credits {
    type Output = Credits;
    fn sub(self, o: Credits) -> Credits {
        Credits(self.0 - o.0)
    }
}
impl AddAssign for Credits {
    fn add_assign(&mut self, o: Credits) {
        self.0 += o.0;
    }
}
impl SubAssign for Credits {
    fn sub_assign(&mut self, o: Credits) {
        self.0 -= o.0;
    }
}
impl Neg for Credits {
    type Output = Credits;
    fn neg(self) -> Credits {
        Credits(-self.0)
    }
}
impl std::iter::Sum for Credits {
    fn sum<I: Iterator<Item = Credits>>(iter: I) -> Credits {
        Credits(iter.map(|c| c.0).sum())
    }
}

/// Money in integer cents (US cents unless configured otherwise).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Cents(i64);

impl Cents {
    pub const ZERO: Cents = Cents(0);

    pub const fn new(c: i64) -> Cents {
        Cents(c)
    }

    pub const fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Cents {
    /// `$8.00`, `-$0.50`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}${}.{:02}", abs / 100, abs % 100)
    }
}

impl Add for Cents {
    type Output = Cents;
    fn add(self, o: Cents) -> Cents {
        Cents(self.0 + o.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_decimals() {
        assert_eq!("12".parse::<Credits>().unwrap(), Credits::whole(12));
        assert_eq!("0.6".parse::<Credits>().unwrap(), Credits::from_millis(600));
        assert_eq!(
            "-1.125".parse::<Credits>().unwrap(),
            Credits::from_millis(-1125)
        );
        assert_eq!(
            "2.500".parse::<Credits>().unwrap(),
            Credits::from_millis(2500)
        );
        for bad in ["", "-", "1.", ".5", "1e3", "abc", "1.2.3", "+1", " 1"] {
            assert!(bad.parse::<Credits>().is_err(), "{bad} should be refused");
        }
        assert!(matches!(
            "0.0001".parse::<Credits>(),
            Err(AmountError::TooPrecise { .. })
        ));
        assert!(matches!(
            "99999999999999999999".parse::<Credits>(),
            Err(AmountError::TooLarge { .. })
        ));
    }

    #[test]
    fn displays_like_the_contract() {
        assert_eq!(Credits::whole(847).to_string(), "847");
        assert_eq!(Credits::from_millis(600).to_string(), "0.6");
        assert_eq!(Credits::from_millis(-1).to_string(), "-0.001");
        assert_eq!(Credits::from_millis(-1500).to_string(), "-1.5");
        assert_eq!(Credits::whole(25_000).grouped(), "25,000");
        assert_eq!(Credits::whole(1_000).grouped(), "1,000");
        assert_eq!(Credits::whole(100).grouped(), "100");
        assert_eq!(Credits::from_millis(-1_234_500).grouped(), "-1,234.5");
        assert_eq!(Cents::new(800).to_string(), "$8.00");
        assert_eq!(Cents::new(-5).to_string(), "-$0.05");
    }

    #[test]
    fn json_round_trip_is_exact() {
        let json = serde_json::to_string(&[
            Credits::whole(847),
            Credits::from_millis(600),
            Credits::from_millis(-1),
        ])
        .unwrap();
        assert_eq!(json, "[847,0.6,-0.001]");
        let back: Vec<Credits> =
            serde_json::from_str("[847, 0.6, -0.001, 1234567.891, \"2.5\"]").unwrap();
        assert_eq!(
            back,
            vec![
                Credits::whole(847),
                Credits::from_millis(600),
                Credits::from_millis(-1),
                Credits::from_millis(1_234_567_891),
                Credits::from_millis(2500)
            ]
        );
        assert!(serde_json::from_str::<Credits>("0.0005").is_err());
        assert!(serde_json::from_str::<Credits>("true").is_err());
    }
}
