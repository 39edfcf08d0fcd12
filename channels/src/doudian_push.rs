//! Doudian order messages (the shop's webhook): `[{tag, msg_id, data}]`. Parsed here, in the
//! platform's vocabulary, into what the rest of UpHub needs: which orders changed and when.
//! Checking `event-sign` needs the connection's secret and lives with the receiver.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// What a push said about one shop.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PushHints {
    /// Parent order ids the messages name (for the log; the pull fetches them anyway).
    pub order_ids: Vec<String>,
    /// The newest `update_time` among them.
    pub newest_update: Option<DateTime<Utc>>,
    /// Messages for another shop, ignored.
    pub foreign: usize,
}

/// A message list that is not what Doudian sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed Doudian push: {0}")]
pub struct BadPush(pub String);

/// Parses a Doudian message list: `[{tag, msg_id, data}]`, `data` a JSON string (or object)
/// with `p_id`, `s_ids`, `shop_id`, `order_status`, `update_time` (Unix seconds). Messages
/// without an order id (e.g. the platform's URL check) carry no hint.
pub fn parse_messages(body: &[u8], shop_id: &str) -> Result<PushHints, BadPush> {
    let bad = |m: &str| BadPush(m.to_string());
    let list: Value = serde_json::from_slice(body).map_err(|e| BadPush(e.to_string()))?;
    let list = list
        .as_array()
        .ok_or_else(|| bad("expected a JSON array"))?;
    let mut hints = PushHints::default();
    for m in list {
        let m = m
            .as_object()
            .ok_or_else(|| bad("a message is not an object"))?;
        if text(m.get("tag")).is_none() {
            return Err(bad("a message has no tag"));
        }
        let data = match m.get("data") {
            Some(Value::String(s)) => {
                serde_json::from_str::<Value>(s).map_err(|e| BadPush(format!("data: {e}")))?
            }
            Some(v @ Value::Object(_)) => v.clone(),
            _ => return Err(bad("a message has no data")),
        };
        let data = data
            .as_object()
            .ok_or_else(|| bad("data is not an object"))?;
        let Some(order) = text(data.get("p_id")) else {
            continue;
        };
        if text(data.get("shop_id")).is_some_and(|s| s != shop_id) {
            hints.foreign += 1;
            continue;
        }
        if order.len() > 64 {
            return Err(bad("p_id is too long"));
        }
        let updated = match data.get("update_time") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                text(Some(v))
                    .and_then(|s| s.parse::<i64>().ok())
                    .and_then(|s| DateTime::from_timestamp(s, 0))
                    .ok_or_else(|| bad("update_time is not Unix seconds"))?,
            ),
        };
        hints.newest_update = hints.newest_update.max(updated);
        hints.order_ids.push(order);
    }
    Ok(hints)
}

/// A string or an integer, as text (Doudian sends ids either way).
fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(shop: Value, pid: Value, update: i64) -> Value {
        json!({"tag": "101", "msg_id": "7000:101", "data": json!({
            "p_id": pid, "s_ids": [1], "shop_id": shop, "order_status": 105, "update_time": update
        }).to_string()})
    }

    #[test]
    fn messages_of_this_shop_are_hints_and_others_are_ignored() {
        let body = json!([
            msg(json!(123), json!(6920000000000000001u64), 1_700_000_000),
            msg(json!("123"), json!("6920000000000000002"), 1_700_000_005),
            msg(json!(999), json!(1), 1_700_000_009),
            {"tag": "0", "msg_id": "check", "data": "{}"},
        ]);
        let h = parse_messages(body.to_string().as_bytes(), "123").unwrap();
        assert_eq!(
            h.order_ids,
            vec!["6920000000000000001", "6920000000000000002"]
        );
        assert_eq!(h.foreign, 1);
        assert_eq!(h.newest_update.unwrap().timestamp(), 1_700_000_005);
    }

    #[test]
    fn malformed_bodies_are_refused_never_panic() {
        for body in [
            &b"not json"[..],
            b"{}",
            b"[1]",
            b"[{\"data\": \"{}\"}]",
            b"[{\"tag\": \"100\"}]",
            b"[{\"tag\": \"100\", \"data\": \"{not json\"}]",
            b"[{\"tag\": \"100\", \"data\": \"[]\"}]",
            b"[{\"tag\": \"100\", \"data\": {\"p_id\": 1, \"update_time\": \"soon\"}}]",
            b"[{\"tag\": \"100\", \"data\": {\"p_id\": 1, \"update_time\": 99999999999999999}}]",
        ] {
            let r = parse_messages(body, "1");
            assert!(r.is_err(), "{:?}: {r:?}", String::from_utf8_lossy(body));
        }
        assert_eq!(parse_messages(b"[]", "1").unwrap(), PushHints::default());
    }
}
