//! Small wire helpers shared by the three platforms: form decoding, clocks, money, masks and
//! the deterministic tokens the mock hands out (oaid, openAddressId, cipher texts, tokens).

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone};
use serde_json::Value;

/// China Standard Time, the zone of TOP timestamps.
pub(crate) const CST: FixedOffset = match FixedOffset::east_opt(8 * 3600) {
    Some(o) => o,
    None => panic!("GMT+8 is a valid offset"),
};

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `application/x-www-form-urlencoded` (also query strings) into ordered pairs. Never fails:
/// broken escapes are kept literally, invalid UTF-8 is replaced.
pub(crate) fn parse_urlencoded(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                }
                _ => {
                    out.push(c);
                    i += 1;
                }
            },
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Ordered request parameters with first-wins lookup.
pub(crate) struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A parameter that is present and not blank.
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty())
    }
}

/// `yyyy-MM-dd HH:mm:ss` in GMT+8.
pub(crate) fn top_time(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|d| {
            d.with_timezone(&CST)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

/// Parses a GMT+8 `yyyy-MM-dd HH:mm:ss` into unix milliseconds.
pub(crate) fn parse_top_time(s: &str) -> Option<i64> {
    let naive = NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S").ok()?;
    CST.from_local_datetime(&naive)
        .single()
        .map(|d| d.timestamp_millis())
}

/// Yuan decimal string from fen: 1230 → "12.30".
pub(crate) fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let a = fen.unsigned_abs();
    format!("{sign}{}.{:02}", a / 100, a % 100)
}

/// An integer from a JSON number or a numeric string (SDKs send either).
pub(crate) fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A string from a JSON string or number.
pub(crate) fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(crate) fn boolean(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        Value::Number(n) => n.as_i64().map(|i| i != 0),
        _ => None,
    }
}

/// A numeric id goes out as a JSON number (as the platforms send it), anything else as a string.
pub(crate) fn id_value(id: &str) -> Value {
    match id.parse::<i64>() {
        Ok(n) => Value::from(n),
        Err(_) => Value::from(id),
    }
}

/// An id that goes out as a JSON number when numeric (as the platforms send ids), else a string.
pub(crate) struct Id<'a>(pub &'a str);

impl serde::Serialize for Id<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.parse::<i64>() {
            Ok(n) => s.serialize_i64(n),
            Err(_) => s.serialize_str(self.0),
        }
    }
}

/// A 200 answer whose JSON text is already built.
pub(crate) fn json_text(body: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/json;charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Serializes, falling back to `null` (our own view types do not fail).
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Adds `"key":"value"` (value needing no escaping) to a serialized JSON object.
pub(crate) fn with_field(object: String, key: &str, plain_value: &str) -> String {
    let body = object.trim_end();
    match body.strip_suffix('}') {
        Some(head) if head.trim_end().ends_with('{') => {
            format!("{head}\"{key}\":\"{plain_value}\"}}")
        }
        Some(head) => format!("{head},\"{key}\":\"{plain_value}\"}}"),
        None => object,
    }
}

/// "张三" → "张*".
pub(crate) fn mask_name(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => {
            let stars = chars.count().max(1);
            format!("{first}{}", "*".repeat(stars))
        }
        None => String::new(),
    }
}

/// "13812345678" → "138****5678".
pub(crate) fn mask_phone(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() < 7 {
        return "****".into();
    }
    let head: String = chars.iter().take(3).collect();
    let tail: String = chars.iter().skip(chars.len() - 4).collect();
    format!("{head}****{tail}")
}

/// Keeps the start of a street address, hides the rest (house numbers, rooms).
pub(crate) fn mask_address(s: &str) -> String {
    let head: String = s.chars().take(4).collect();
    format!("{head}****")
}

/// FNV-1a over the parts (with a separator), stable across runs and Rust versions.
pub(crate) fn fnv64(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.as_bytes().iter().chain(std::iter::once(&0xffu8)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// A 32-hex-digit opaque token derived from the parts.
pub(crate) fn token_hex(parts: &[&str]) -> String {
    let a = fnv64(parts);
    let mut salted: Vec<&str> = parts.to_vec();
    salted.push("salt");
    let b = fnv64(&salted);
    format!("{a:016x}{b:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencoded_decodes_plus_and_escapes_and_keeps_broken_ones() {
        let p = parse_urlencoded("a=1+2&b=%E5%BC%A0&c=%zz&d");
        assert_eq!(
            p,
            vec![
                ("a".into(), "1 2".into()),
                ("b".into(), "张".into()),
                ("c".into(), "%zz".into()),
                ("d".into(), "".into()),
            ]
        );
    }

    #[test]
    fn top_time_round_trips_in_gmt8() {
        let ms = parse_top_time("2016-01-01 12:00:00").unwrap_or_default();
        assert_eq!(ms, 1_451_620_800_000);
        assert_eq!(top_time(ms), "2016-01-01 12:00:00");
    }

    #[test]
    fn with_field_adds_to_empty_and_full_objects() {
        assert_eq!(with_field("{}".into(), "k", "v"), r#"{"k":"v"}"#);
        assert_eq!(
            with_field(r#"{"a":1}"#.into(), "k", "v"),
            r#"{"a":1,"k":"v"}"#
        );
        assert_eq!(to_json(&Id("12")), "12");
        assert_eq!(to_json(&Id("P12")), r#""P12""#);
    }

    #[test]
    fn money_and_masks_look_like_the_platforms() {
        assert_eq!(yuan(1230), "12.30");
        assert_eq!(yuan(5), "0.05");
        assert_eq!(mask_name("张三"), "张*");
        assert_eq!(mask_name("欧阳娜娜"), "欧***");
        assert_eq!(mask_phone("13812345678"), "138****5678");
    }
}
