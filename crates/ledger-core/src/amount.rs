//! Exact quantities: [`Credits`] in thousandths of a credit, [`Cents`] for money.
//!
//! Neither type ever holds a float. JSON numbers are read by their decimal text and
//! written back so that whole credits print as integers (`847`) and fractional ones with
//! up to three decimals (`0.6`).
//!
//! # Limits
//! Every amount one operation moves is at most [`Credits::MAX_AMOUNT`] and every balance
//! stays within `±`[`Credits::MAX_BALANCE`] (both one trillion credits, `10^15`
//! thousandths). Why that number:
//! - **Exact JSON.** A fractional amount is written as a JSON number through an `f64`. A
//!   decimal of at most 15 significant digits survives that round trip exactly; one
//!   trillion credits with three decimals is 15 digits (`999999999999.999`), one more digit
//!   would not be.
//! - **Room for sums.** `i64::MAX` thousandths is about 9.2 × 10^15 credits, 9,223 times
//!   the maximum balance. A book's own sums (remaining of all grants, active holds,
//!   overdraft: together at most twice the maximum balance) and `verify`'s running totals
//!   of valid data therefore never come near it; on data that is not valid they are
//!   computed with the `checked_*` methods and an overflow is reported, never wrapped.
//! - **Nobody needs more.** One trillion credits is a trillion screenshots; the largest
//!   pack sells 25,000.
//!
//! Arithmetic: the operators (`+`, `-`, `+=`, `-=`, unary `-`, `sum()`) panic on overflow
//! in every build profile instead of wrapping; code that handles amounts which can be
//! large (anything from a client, a database row or a running total) uses the `checked_*`
//! methods and turns `None` into an error.

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
    #[error("`{text}` has more than three decimals; credits are exact to a thousandth (0.001)")]
    TooPrecise { text: String },
    #[error(
        "`{text}` is more than the largest amount accepted, {} credits",
        Credits::MAX_AMOUNT
    )]
    TooLarge { text: String },
    #[error("`{text}` must be greater than zero")]
    NotPositive { text: String },
}

/// One trillion credits in thousandths (see the module's "Limits").
const LIMIT_MILLIS: i64 = 1_000_000_000_000 * MILLIS_PER_CREDIT;

impl Credits {
    pub const ZERO: Credits = Credits(0);
    /// The largest amount one operation may move: a grant, a debit, a hold, a capture, a
    /// refund (one trillion credits; see the module's "Limits"). The parser refuses more.
    pub const MAX_AMOUNT: Credits = Credits(LIMIT_MILLIS);
    /// The largest balance the ledger keeps, and the furthest below zero an overdraft may
    /// take it: an operation that would push a balance past `±MAX_BALANCE` is refused with
    /// [`crate::LedgerError::BalanceLimit`] (one trillion credits; see the module's
    /// "Limits").
    pub const MAX_BALANCE: Credits = Credits(LIMIT_MILLIS);
    /// The largest amount accepted from clients: [`Credits::MAX_AMOUNT`].
    pub const MAX_INPUT: Credits = Credits::MAX_AMOUNT;

    /// Whole credits. Panics (also in `const` contexts) if `n` thousandths overflow; use
    /// [`Credits::checked_whole`] for numbers that are not constants.
    pub const fn whole(n: i64) -> Credits {
        match Credits::checked_whole(n) {
            Some(c) => c,
            None => panic!("whole credits overflow i64 thousandths"),
        }
    }

    /// Whole credits, or `None` if `n` thousandths do not fit in an `i64`.
    pub const fn checked_whole(n: i64) -> Option<Credits> {
        match n.checked_mul(MILLIS_PER_CREDIT) {
            Some(m) => Some(Credits(m)),
            None => None,
        }
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

    /// The magnitude. Panics on `i64::MIN` thousandths (see [`Credits::checked_abs`]).
    pub const fn abs(self) -> Credits {
        match self.checked_abs() {
            Some(c) => c,
            None => panic!("credits overflow: abs of the most negative amount"),
        }
    }

    pub const fn checked_abs(self) -> Option<Credits> {
        match self.0.checked_abs() {
            Some(m) => Some(Credits(m)),
            None => None,
        }
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

    pub fn checked_sub(self, other: Credits) -> Option<Credits> {
        self.0.checked_sub(other.0).map(Credits)
    }

    pub fn checked_neg(self) -> Option<Credits> {
        self.0.checked_neg().map(Credits)
    }

    /// The sum, or `None` if any partial sum overflows.
    pub fn checked_sum(items: impl IntoIterator<Item = Credits>) -> Option<Credits> {
        items
            .into_iter()
            .try_fold(Credits::ZERO, |acc, c| acc.checked_add(c))
    }

    /// Within `-MAX_BALANCE..=MAX_BALANCE`: a balance the ledger may keep.
    pub const fn within_balance_limit(self) -> bool {
        -LIMIT_MILLIS <= self.0 && self.0 <= LIMIT_MILLIS
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
            return Err(AmountError::NotPositive { text: text.into() });
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

/// Reads a JSON (or TOML) **number** of credits: `12`, `0.6`, `-1.125`. A string, a
/// boolean or `null` is refused with serde's "invalid type" error (a wire body's wrong type
/// is the client's mistake, to be named, not guessed at); so are more than three decimals,
/// more than [`Credits::MAX_AMOUNT`] and non-finite numbers. Configuration that wants to
/// accept quoted amounts as well (`"2.5"`) opts in with
/// `#[serde(deserialize_with = "ledger_core::amount::number_or_text")]`.
impl<'de> Deserialize<'de> for Credits {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Credits, D::Error> {
        d.deserialize_any(CreditsVisitor { text: false })
    }
}

/// Reads a number of credits given as a number or as decimal text (`2.5`, `"2.5"`), for
/// configuration read from files and environment variables. Wire bodies use the strict
/// [`Deserialize`] impl of [`Credits`].
pub fn number_or_text<'de, D: Deserializer<'de>>(d: D) -> Result<Credits, D::Error> {
    d.deserialize_any(CreditsVisitor { text: true })
}

/// Reads credits from a number, and from decimal text too when `text` is set.
struct CreditsVisitor {
    text: bool,
}

impl Visitor<'_> for CreditsVisitor {
    type Value = Credits;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(if self.text {
            "a number of credits with at most three decimals"
        } else {
            "a number of credits (a JSON number, not a string) with at most three decimals"
        })
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Credits, E> {
        v.to_string().parse().map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Credits, E> {
        v.to_string().parse().map_err(E::custom)
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Credits, E> {
        v.to_string().parse().map_err(E::custom)
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Credits, E> {
        v.to_string().parse().map_err(E::custom)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Credits, E> {
        if !v.is_finite() {
            return Err(E::custom("credits must be a finite number"));
        }
        // Far out of range: say so without printing hundreds of digits.
        if v.abs() >= 1e16 {
            return Err(E::custom(AmountError::TooLarge {
                text: format!("{v:e}"),
            }));
        }
        // The shortest text that reads back as `v` is the decimal the client wrote (for up
        // to 15 significant digits, which covers every amount up to the maximum with three
        // decimals); it is then parsed exactly.
        format!("{v}").parse().map_err(E::custom)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Credits, E> {
        if self.text {
            v.trim().parse().map_err(E::custom)
        } else {
            Err(E::invalid_type(de::Unexpected::Str(v), &self))
        }
    }
}

const OVERFLOW: &str = "credits overflow: use the checked_* methods for amounts that can be large";

impl Add for Credits {
    type Output = Credits;
    fn add(self, o: Credits) -> Credits {
        // An operator has no error channel: overflow panics as integer overflow does under
        // `overflow-checks`; amounts that can be large go through the checked_* methods.
        #[allow(clippy::expect_used)]
        self.checked_add(o).expect(OVERFLOW)
    }
}
impl Sub for Credits {
    type Output = Credits;
    fn sub(self, o: Credits) -> Credits {
        // An operator has no error channel: overflow panics as integer overflow does under
        // `overflow-checks`; amounts that can be large go through the checked_* methods.
        #[allow(clippy::expect_used)]
        self.checked_sub(o).expect(OVERFLOW)
    }
}
impl AddAssign for Credits {
    fn add_assign(&mut self, o: Credits) {
        *self = *self + o;
    }
}
impl SubAssign for Credits {
    fn sub_assign(&mut self, o: Credits) {
        *self = *self - o;
    }
}
impl Neg for Credits {
    type Output = Credits;
    fn neg(self) -> Credits {
        // An operator has no error channel: overflow panics as integer overflow does under
        // `overflow-checks`; amounts that can be large go through the checked_* methods.
        #[allow(clippy::expect_used)]
        self.checked_neg().expect(OVERFLOW)
    }
}
impl std::iter::Sum for Credits {
    fn sum<I: Iterator<Item = Credits>>(iter: I) -> Credits {
        // An operator has no error channel: overflow panics as integer overflow does under
        // `overflow-checks`; amounts that can be large go through the checked_* methods.
        #[allow(clippy::expect_used)]
        Credits::checked_sum(iter).expect(OVERFLOW)
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

    pub fn checked_add(self, other: Cents) -> Option<Cents> {
        self.0.checked_add(other.0).map(Cents)
    }

    pub fn checked_sub(self, other: Cents) -> Option<Cents> {
        self.0.checked_sub(other.0).map(Cents)
    }

    /// `self × n`, or `None` on overflow.
    pub fn checked_mul(self, n: i64) -> Option<Cents> {
        self.0.checked_mul(n).map(Cents)
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
    /// Panics on overflow (never wraps); see [`Cents::checked_add`].
    fn add(self, o: Cents) -> Cents {
        // An operator has no error channel: overflow panics as integer overflow does under
        // `overflow-checks`; see `Cents::checked_add`.
        #[allow(clippy::expect_used)]
        self.checked_add(o)
            .expect("cents overflow: use Cents::checked_add")
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
            serde_json::from_str("[847, 0.6, -0.001, 1234567.891, 1e3]").unwrap();
        assert_eq!(
            back,
            vec![
                Credits::whole(847),
                Credits::from_millis(600),
                Credits::from_millis(-1),
                Credits::from_millis(1_234_567_891),
                Credits::whole(1000),
            ]
        );
        assert!(serde_json::from_str::<Credits>("0.0005").is_err());
        assert!(serde_json::from_str::<Credits>("true").is_err());
    }

    #[test]
    fn json_reads_numbers_only() {
        for bad in ["\"2.5\"", "\"10\"", "\"\"", "true", "null", "[1]", "{}"] {
            let err = serde_json::from_str::<Credits>(bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains("invalid type"), "{bad}: {err}");
        }
        // Configuration may opt into quoted amounts.
        #[derive(serde::Deserialize)]
        struct Config {
            #[serde(deserialize_with = "number_or_text")]
            bonus: Credits,
        }
        for (text, millis) in [
            ("{\"bonus\": \"2.5\"}", 2500),
            ("{\"bonus\": 2.5}", 2500),
            ("{\"bonus\": 7}", 7000),
        ] {
            let c: Config = serde_json::from_str(text).unwrap();
            assert_eq!(c.bonus, Credits::from_millis(millis), "{text}");
        }
        assert!(serde_json::from_str::<Config>("{\"bonus\": \"lots\"}").is_err());
        assert!(serde_json::from_str::<Config>("{\"bonus\": true}").is_err());
    }

    #[test]
    fn the_limits_are_enforced_with_clear_messages() {
        let max = Credits::MAX_AMOUNT;
        assert_eq!(max, Credits::whole(1_000_000_000_000));
        assert_eq!(Credits::MAX_BALANCE, max);
        assert_eq!("1000000000000".parse::<Credits>().unwrap(), max);
        assert_eq!(
            "999999999999.999".parse::<Credits>().unwrap(),
            Credits::from_millis(max.millis() - 1)
        );
        assert_eq!("-1000000000000".parse::<Credits>().unwrap(), -max);
        for (text, says) in [
            (
                "1000000000000.001",
                "largest amount accepted, 1000000000000 credits",
            ),
            (
                "1000000000001",
                "largest amount accepted, 1000000000000 credits",
            ),
            ("-1000000000001", "largest amount accepted"),
            ("1.0001", "more than three decimals"),
            ("0", "greater than zero"),
        ] {
            let err = Credits::parse_positive(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
        // The same through JSON, also for floats far out of range, in a short message.
        for (json, says) in [
            ("1000000000001", "largest amount"),
            ("1e300", "largest amount"),
            ("-1e300", "largest amount"),
            ("1000000000000.5", "largest amount"),
            ("0.0001", "three decimals"),
        ] {
            let err = serde_json::from_str::<Credits>(json)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says) && err.len() < 200, "{json}: {err}");
        }
        // Every amount up to the maximum survives JSON exactly, whole or fractional.
        for millis in [
            1,
            999,
            1_001,
            max.millis() - 1,
            max.millis(),
            123_456_789_012_345,
        ] {
            for c in [Credits::from_millis(millis), Credits::from_millis(-millis)] {
                let json = serde_json::to_string(&c).unwrap();
                assert_eq!(serde_json::from_str::<Credits>(&json).unwrap(), c, "{json}");
            }
        }
    }

    #[test]
    fn arithmetic_is_checked() {
        let big = Credits::from_millis(i64::MAX);
        assert_eq!(big.checked_add(Credits::from_millis(1)), None);
        assert_eq!(
            Credits::from_millis(i64::MIN).checked_sub(Credits::from_millis(1)),
            None
        );
        assert_eq!(Credits::from_millis(i64::MIN).checked_neg(), None);
        assert_eq!(Credits::from_millis(i64::MIN).checked_abs(), None);
        assert_eq!(Credits::checked_whole(i64::MAX / 10), None);
        assert_eq!(Credits::checked_sum([big, Credits::from_millis(1)]), None);
        assert_eq!(
            Credits::checked_sum([big, Credits::from_millis(1), Credits::from_millis(-1)]),
            None,
            "a partial sum that overflows is an overflow"
        );
        assert_eq!(
            Credits::checked_sum([Credits::whole(2), Credits::whole(3)]),
            Some(Credits::whole(5))
        );
        assert!(Credits::MAX_BALANCE.within_balance_limit());
        assert!((-Credits::MAX_BALANCE).within_balance_limit());
        assert!(!Credits::from_millis(Credits::MAX_BALANCE.millis() + 1).within_balance_limit());
        assert_eq!(Cents::new(i64::MAX).checked_add(Cents::new(1)), None);
        assert_eq!(Cents::new(i64::MAX / 2).checked_mul(3), None);
        assert_eq!(Cents::new(400).checked_mul(3), Some(Cents::new(1200)));
        // The operators panic instead of wrapping, in every profile.
        for overflow in [
            std::panic::catch_unwind(|| big + Credits::from_millis(1)),
            std::panic::catch_unwind(|| -Credits::from_millis(i64::MIN)),
            std::panic::catch_unwind(|| [big, big].into_iter().sum::<Credits>()),
        ] {
            assert!(overflow.is_err());
        }
        assert!(std::panic::catch_unwind(|| Cents::new(i64::MAX) + Cents::new(1)).is_err());
    }
}
