//! Stock arithmetic: a level per SKU and warehouse, the movements that change it, and the
//! normalisation of multi-line reservations. The SQL guarded UPDATEs mirror `Level::apply`.

use std::collections::BTreeMap;

use crate::identity::InvalidInput;

/// Units on a shelf: on hand, promised to orders (reserved) and set aside for live streams (held).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Level {
    pub on_hand: i32,
    pub reserved: i32,
    pub held: i32,
}

impl Level {
    /// What can still be sold to anyone: never negative.
    pub fn available(self) -> i32 {
        self.on_hand - self.reserved - self.held
    }
}

/// A change to a level. Every movement is also one append-only ledger row of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Movement {
    /// An order (or ticket) promises units from general stock.
    Reserve(i32),
    /// An order of the hold's campaign promises units from the hold.
    ReserveFromHold(i32),
    /// A reservation ends unpaid: units go back to general stock.
    Release(i32),
    /// A reservation drawn from a still-active hold ends unpaid: units go back to the hold.
    ReleaseToHold(i32),
    /// Paid: the promised units leave the shelf.
    Confirm(i32),
    /// A live-stream hold sets units aside.
    Hold(i32),
    /// A hold ends (released or expired): its remainder returns to general stock.
    HoldRelease(i32),
    /// Stock counted or received: on hand moves by a signed delta.
    Adjust(i32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StockError {
    #[error("not enough stock: {available} available, {requested} requested")]
    Insufficient { available: i32, requested: i32 },
    #[error("the movement would make a level negative")]
    Negative,
}

impl Movement {
    /// The (on_hand, reserved, held) deltas of the movement, as written to the ledger.
    pub fn deltas(self) -> (i32, i32, i32) {
        match self {
            Movement::Reserve(q) => (0, q, 0),
            Movement::ReserveFromHold(q) => (0, q, -q),
            Movement::Release(q) => (0, -q, 0),
            Movement::ReleaseToHold(q) => (0, -q, q),
            Movement::Confirm(q) => (-q, -q, 0),
            Movement::Hold(q) => (0, 0, q),
            Movement::HoldRelease(q) => (0, 0, -q),
            Movement::Adjust(d) => (d, 0, 0),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Movement::Reserve(_) => "RESERVE",
            Movement::ReserveFromHold(_) => "RESERVE_FROM_HOLD",
            Movement::Release(_) => "RELEASE",
            Movement::ReleaseToHold(_) => "RELEASE_TO_HOLD",
            Movement::Confirm(_) => "SALE",
            Movement::Hold(_) => "HOLD",
            Movement::HoldRelease(_) => "HOLD_RELEASE",
            Movement::Adjust(_) => "ADJUSTMENT",
        }
    }
}

impl Level {
    /// Applies a movement, refusing anything that would oversell or go negative.
    pub fn apply(self, m: Movement) -> Result<Level, StockError> {
        let (d_on_hand, d_reserved, d_held) = m.deltas();
        let next = Level {
            on_hand: self.on_hand + d_on_hand,
            reserved: self.reserved + d_reserved,
            held: self.held + d_held,
        };
        if matches!(m, Movement::Reserve(_) | Movement::Hold(_)) && next.available() < 0 {
            return Err(StockError::Insufficient {
                available: self.available(),
                requested: d_reserved + d_held,
            });
        }
        if next.on_hand < 0 || next.reserved < 0 || next.held < 0 || next.available() < 0 {
            return Err(StockError::Negative);
        }
        Ok(next)
    }
}

/// A quantity a client asked for: 1..=100,000.
pub fn parse_quantity(field: &'static str, q: i64) -> Result<i32, InvalidInput> {
    if !(1..=100_000).contains(&q) {
        return Err(InvalidInput {
            field,
            message: "must be between 1 and 100000".into(),
        });
    }
    Ok(q as i32)
}

/// Merges lines for the same (sku, warehouse) and orders them, so concurrent multi-line
/// reservations lock rows in one global order and cannot deadlock.
pub fn normalize_lines<K: Ord + Copy>(
    lines: &[(K, K, i32)],
) -> Result<Vec<(K, K, i32)>, InvalidInput> {
    if lines.is_empty() || lines.len() > 100 {
        return Err(InvalidInput {
            field: "lines",
            message: "must have 1-100 lines".into(),
        });
    }
    let mut merged: BTreeMap<(K, K), i32> = BTreeMap::new();
    for (sku, wh, q) in lines {
        if *q <= 0 {
            return Err(InvalidInput {
                field: "lines",
                message: "quantities must be positive".into(),
            });
        }
        let e = merged.entry((*sku, *wh)).or_default();
        *e = e.checked_add(*q).ok_or(InvalidInput {
            field: "lines",
            message: "quantity overflow".into(),
        })?;
    }
    Ok(merged.into_iter().map(|((s, w), q)| (s, w, q)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(on_hand: i32, reserved: i32, held: i32) -> Level {
        Level {
            on_hand,
            reserved,
            held,
        }
    }

    #[test]
    fn reserving_more_than_available_is_refused_with_the_numbers() {
        assert_eq!(
            level(10, 4, 3).apply(Movement::Reserve(4)),
            Err(StockError::Insufficient {
                available: 3,
                requested: 4
            })
        );
        assert_eq!(
            level(10, 4, 3).apply(Movement::Reserve(3)),
            Ok(level(10, 7, 3))
        );
    }

    #[test]
    fn a_campaign_order_moves_units_from_held_to_reserved() {
        assert_eq!(
            level(10, 0, 5).apply(Movement::ReserveFromHold(2)),
            Ok(level(10, 2, 3))
        );
        assert_eq!(
            level(10, 0, 1).apply(Movement::ReserveFromHold(2)),
            Err(StockError::Negative)
        );
    }

    #[test]
    fn confirm_takes_units_off_the_shelf_and_keeps_available() {
        let l = level(10, 3, 2);
        let n = l.apply(Movement::Confirm(3)).unwrap();
        assert_eq!(n, level(7, 0, 2));
        assert_eq!(n.available(), l.available());
    }

    #[test]
    fn release_and_hold_release_give_units_back() {
        assert_eq!(
            level(10, 3, 2).apply(Movement::Release(3)),
            Ok(level(10, 0, 2))
        );
        assert_eq!(
            level(10, 3, 2).apply(Movement::ReleaseToHold(3)),
            Ok(level(10, 0, 5))
        );
        assert_eq!(
            level(10, 3, 2).apply(Movement::HoldRelease(2)),
            Ok(level(10, 3, 0))
        );
        assert_eq!(
            level(10, 3, 2).apply(Movement::Release(4)),
            Err(StockError::Negative)
        );
    }

    #[test]
    fn a_hold_larger_than_available_is_refused() {
        assert!(matches!(
            level(10, 8, 0).apply(Movement::Hold(3)),
            Err(StockError::Insufficient { .. })
        ));
    }

    #[test]
    fn adjusting_below_what_is_promised_is_refused() {
        assert_eq!(
            level(10, 8, 0).apply(Movement::Adjust(-3)),
            Err(StockError::Negative)
        );
        assert_eq!(
            level(10, 8, 0).apply(Movement::Adjust(-2)),
            Ok(level(8, 8, 0))
        );
    }

    #[test]
    fn lines_are_merged_sorted_and_validated() {
        let lines = [(2, 1, 1), (1, 1, 2), (2, 1, 3)];
        assert_eq!(normalize_lines(&lines).unwrap(), vec![(1, 1, 2), (2, 1, 4)]);
        assert!(normalize_lines::<i32>(&[]).is_err());
        assert!(normalize_lines(&[(1, 1, 0)]).is_err());
        assert!(normalize_lines(&[(1, 1, -5)]).is_err());
    }

    #[test]
    fn quantities_are_bounded() {
        assert!(parse_quantity("q", 0).is_err());
        assert!(parse_quantity("q", -1).is_err());
        assert!(parse_quantity("q", 100_001).is_err());
        assert_eq!(parse_quantity("q", 5), Ok(5));
    }
}

/// Cleans an activation-code import: trimmed, 1-128 visible characters, at most 10,000, and no
/// code twice (the duplicates are named).
pub fn parse_activation_codes(codes: &[String]) -> Result<Vec<String>, InvalidInput> {
    if codes.is_empty() || codes.len() > 10_000 {
        return Err(InvalidInput {
            field: "codes",
            message: "must have 1-10000 codes".into(),
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut dups = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(codes.len());
    for c in codes {
        let c = c.trim();
        if c.is_empty() || c.chars().count() > 128 || c.chars().any(char::is_control) {
            return Err(InvalidInput {
                field: "codes",
                message: "each code must be 1-128 visible characters".into(),
            });
        }
        if !seen.insert(c.to_string()) {
            dups.insert(c.to_string());
        }
        out.push(c.to_string());
    }
    if !dups.is_empty() {
        let list: Vec<String> = dups.into_iter().take(20).collect();
        return Err(InvalidInput {
            field: "codes",
            message: format!("duplicate codes in the import: {}", list.join(", ")),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod code_tests {
    use super::*;

    #[test]
    fn activation_code_imports_refuse_duplicates_and_blanks() {
        let ok = parse_activation_codes(&[" A-1 ".into(), "A-2".into()]).unwrap();
        assert_eq!(ok, vec!["A-1", "A-2"]);
        let dup = parse_activation_codes(&["A".into(), "B".into(), "A".into()]).unwrap_err();
        assert!(dup.message.contains("A"), "{dup:?}");
        assert!(parse_activation_codes(&["".into()]).is_err());
        assert!(parse_activation_codes(&[]).is_err());
    }
}

/// A manual stock reservation lasts an hour unless asked otherwise, and at most 30 days.
const DEFAULT_RESERVATION_TTL_SECS: i64 = 3600;
const MAX_RESERVATION_TTL_SECS: i64 = 30 * 24 * 3600;

/// The caller's name for the reservation: 1-64 printable characters, trimmed.
pub fn parse_reservation_reference(s: &str) -> Result<String, InvalidInput> {
    let s = s.trim();
    if s.is_empty() || s.chars().count() > 64 || s.chars().any(char::is_control) {
        return Err(InvalidInput {
            field: "reference",
            message: "must be 1-64 printable characters".into(),
        });
    }
    Ok(s.to_string())
}

/// How long it lasts: `ttl_secs` between 60 s and 30 days, an hour when absent.
pub fn parse_reservation_ttl(ttl_secs: Option<i64>) -> Result<std::time::Duration, InvalidInput> {
    match ttl_secs.unwrap_or(DEFAULT_RESERVATION_TTL_SECS) {
        s @ 60..=MAX_RESERVATION_TTL_SECS => Ok(std::time::Duration::from_secs(s as u64)),
        _ => Err(InvalidInput {
            field: "ttlSeconds",
            message: format!("must be between 60 and {MAX_RESERVATION_TTL_SECS}"),
        }),
    }
}

#[cfg(test)]
mod reservation_tests {
    use super::*;

    #[test]
    fn a_reference_is_trimmed_and_bounded() {
        assert_eq!(parse_reservation_reference("  PO-7 ").unwrap(), "PO-7");
        assert!(parse_reservation_reference("   ").is_err());
        assert!(parse_reservation_reference(&"x".repeat(65)).is_err());
        assert!(parse_reservation_reference("a\nb").is_err());
        assert_eq!(parse_reservation_reference("批发单-1").unwrap(), "批发单-1");
    }

    #[test]
    fn a_ttl_is_an_hour_by_default_and_bounded() {
        assert_eq!(parse_reservation_ttl(None).unwrap().as_secs(), 3600);
        assert_eq!(parse_reservation_ttl(Some(60)).unwrap().as_secs(), 60);
        assert!(parse_reservation_ttl(Some(59)).is_err());
        assert!(parse_reservation_ttl(Some(0)).is_err());
        assert!(parse_reservation_ttl(Some(-5)).is_err());
        assert!(parse_reservation_ttl(Some(MAX_RESERVATION_TTL_SECS + 1)).is_err());
    }
}
