//! Money: integer fen inside, a decimal string in yuan at the edge ("12.30").

use crate::identity::InvalidInput;

/// The largest amount we accept: 10^12 fen (10 billion yuan), far below i64 overflow even when
/// a few amounts are summed.
pub const MAX_FEN: i64 = 1_000_000_000_000;

/// An ISO 4217 currency we trade in. Only CNY for now; the code is still parsed so that other
/// currencies are refused explicitly rather than silently read as yuan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Currency {
    Cny,
}

impl Currency {
    pub fn parse(field: &'static str, code: &str) -> Result<Currency, InvalidInput> {
        match code {
            "CNY" => Ok(Currency::Cny),
            c if c.len() == 3 && c.chars().all(|ch| ch.is_ascii_uppercase()) => Err(InvalidInput {
                field,
                message: format!("currency {c} is not supported; use CNY"),
            }),
            _ => Err(InvalidInput {
                field,
                message: "currency must be an ISO 4217 code such as CNY".into(),
            }),
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Currency::Cny => "CNY",
        }
    }
}

/// A non-negative amount of money in the currency's minor unit (fen for CNY).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    pub fen: i64,
    pub currency: Currency,
}

impl Money {
    /// Parses `amount` as a plain decimal in major units: digits, optionally a point and one or
    /// two more digits. No sign, exponent, separators or whitespace; at most [`MAX_FEN`].
    pub fn parse(field: &'static str, amount: &str, currency: &str) -> Result<Money, InvalidInput> {
        let currency = Currency::parse(field, currency)?;
        let bad = || InvalidInput {
            field,
            message: format!(
                "amount must be a non-negative decimal with at most 2 decimals, e.g. \"12.30\" (got {:?})",
                truncate(amount, 24)
            ),
        };
        let (whole, frac) = match amount.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (amount, None),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || frac.is_some_and(|f| !digits(f) || f.len() > 2) {
            return Err(bad());
        }
        let too_large = || InvalidInput {
            field,
            message: format!(
                "amount must be at most {}",
                Money::from_fen_unchecked(MAX_FEN)
            ),
        };
        // Leading zeros are harmless; strip them so the length check below is about magnitude.
        let whole = whole.trim_start_matches('0');
        if whole.len() > 11 {
            return Err(too_large());
        }
        let yuan: i64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let cents: i64 = match frac {
            None => 0,
            Some(f) if f.len() == 1 => f.parse::<i64>().map_err(|_| bad())? * 10,
            Some(f) => f.parse().map_err(|_| bad())?,
        };
        let fen = yuan * 100 + cents;
        if fen > MAX_FEN {
            return Err(too_large());
        }
        Ok(Money { fen, currency })
    }

    /// An amount already in fen (from storage); refuses negative or oversized values.
    pub fn from_fen(
        field: &'static str,
        fen: i64,
        currency: Currency,
    ) -> Result<Money, InvalidInput> {
        if !(0..=MAX_FEN).contains(&fen) {
            return Err(InvalidInput {
                field,
                message: "amount out of range".into(),
            });
        }
        Ok(Money { fen, currency })
    }

    fn from_fen_unchecked(fen: i64) -> String {
        Money {
            fen,
            currency: Currency::Cny,
        }
        .to_decimal_string()
    }

    /// "12.30": always two decimals, so clients never meet floats.
    pub fn to_decimal_string(&self) -> String {
        let sign = if self.fen < 0 { "-" } else { "" };
        let abs = self.fen.unsigned_abs();
        format!("{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

impl std::fmt::Display for Money {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.to_decimal_string(), self.currency.as_str())
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fen(s: &str) -> Result<i64, InvalidInput> {
        Money::parse("price", s, "CNY").map(|m| m.fen)
    }

    #[test]
    fn parses_yuan_with_up_to_two_decimals_into_fen() {
        assert_eq!(fen("12.30"), Ok(1230));
        assert_eq!(fen("12.3"), Ok(1230));
        assert_eq!(fen("12"), Ok(1200));
        assert_eq!(fen("0"), Ok(0));
        assert_eq!(fen("0.01"), Ok(1));
        assert_eq!(fen("007.05"), Ok(705));
        assert_eq!(fen("10000000000"), Ok(MAX_FEN));
        assert_eq!(fen("10000000000.00"), Ok(MAX_FEN));
    }

    #[test]
    fn rejects_signs_exponents_whitespace_and_extra_decimals() {
        for s in [
            "", "-1", "+1", "1e5", "1E5", "1.234", " 1", "1 ", "1 000", "1,00", ".5", "5.", "1..2",
            "1.2.3", "abc", "１２", "0x10", "NaN", "inf", "1.-1", "1._5",
        ] {
            let e = fen(s).expect_err(s);
            assert_eq!(e.field, "price", "{s}");
        }
    }

    #[test]
    fn rejects_amounts_above_the_cap_without_overflowing() {
        assert!(fen("10000000000.01").is_err());
        assert!(fen("99999999999999999999999999").is_err());
        assert!(fen("000000000000000000000001.00").is_ok());
    }

    #[test]
    fn parses_the_currency_code_strictly() {
        assert_eq!(
            Money::parse("price", "1", "CNY").map(|m| m.currency),
            Ok(Currency::Cny)
        );
        for c in ["USD", "cny", "", "CN", "RMB ", "¥"] {
            assert!(Money::parse("price", "1", c).is_err(), "{c}");
        }
    }

    #[test]
    fn renders_two_decimals() {
        let m = |fen| Money {
            fen,
            currency: Currency::Cny,
        };
        assert_eq!(m(1230).to_decimal_string(), "12.30");
        assert_eq!(m(5).to_decimal_string(), "0.05");
        assert_eq!(m(0).to_decimal_string(), "0.00");
        assert_eq!(m(MAX_FEN).to_decimal_string(), "10000000000.00");
        assert_eq!(m(1230).to_string(), "12.30 CNY");
        for s in ["0.00", "1.00", "12.34", "99.90"] {
            assert_eq!(
                Money::parse("p", s, "CNY").map(|x| x.to_decimal_string()),
                Ok(s.to_string())
            );
        }
    }

    #[test]
    fn from_fen_refuses_negative_and_oversized_amounts() {
        assert!(Money::from_fen("p", -1, Currency::Cny).is_err());
        assert!(Money::from_fen("p", MAX_FEN + 1, Currency::Cny).is_err());
        assert_eq!(Money::from_fen("p", 7, Currency::Cny).map(|m| m.fen), Ok(7));
    }
}
