//! Alipay speaks yuan as decimal strings ("12.30"); we keep integer fen. No floats on the way.

use crate::error::PayError;

/// `"12.30"` → 1230, `"12.3"` → 1230, `"12"` → 1200. Rejects signs, exponents, more than two
/// decimals, empty parts and overflow.
pub fn yuan_to_fen(s: &str) -> Result<i64, PayError> {
    let bad = || PayError::InvalidAmount(s.to_owned());
    let (int_part, frac_part) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let mut fen: i64 = 0;
    for b in int_part.bytes() {
        fen = fen
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(b - b'0')))
            .ok_or_else(bad)?;
    }
    fen = fen.checked_mul(100).ok_or_else(bad)?;
    if let Some(f) = frac_part {
        if f.is_empty() || f.len() > 2 || !f.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let mut digits = f.bytes().map(|b| i64::from(b - b'0'));
        let jiao = digits.next().unwrap_or(0);
        let cents = digits.next().unwrap_or(0);
        fen = fen.checked_add(jiao * 10 + cents).ok_or_else(bad)?;
    }
    Ok(fen)
}

/// 1230 → `"12.30"`. Negative amounts are not a thing on these APIs; they print with a sign.
pub fn fen_to_yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn yuan_strings_become_exact_fen() {
        for (s, fen) in [
            ("12.30", 1230),
            ("12.3", 1230),
            ("12", 1200),
            ("0.01", 1),
            ("0.1", 10),
            ("0", 0),
            ("100000000.00", 10_000_000_000),
            ("0.29", 29), // 0.29 * 100 = 28.999999999999996 in floating point
        ] {
            assert_eq!(yuan_to_fen(s).unwrap(), fen, "{s}");
        }
    }

    #[test]
    fn malformed_yuan_strings_are_rejected() {
        for s in [
            "",
            ".",
            "1.",
            ".5",
            "-1",
            "+1",
            "1.234",
            "1e3",
            "1,00",
            " 1",
            "12.3x",
            "99999999999999999999",
        ] {
            assert!(yuan_to_fen(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn fen_prints_as_two_decimal_yuan() {
        assert_eq!(fen_to_yuan(1230), "12.30");
        assert_eq!(fen_to_yuan(1), "0.01");
        assert_eq!(fen_to_yuan(0), "0.00");
        assert_eq!(fen_to_yuan(-5), "-0.05");
        for fen in [0, 1, 9, 10, 99, 100, 12345, 10_000_000_000] {
            assert_eq!(yuan_to_fen(&fen_to_yuan(fen)).unwrap(), fen);
        }
    }
}
