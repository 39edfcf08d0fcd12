//! Global IDs that carry their type: base64url("Type:uuid"). A malformed or mistyped ID is
//! indistinguishable from one that does not exist.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub fn encode(kind: &str, id: impl std::fmt::Display) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{id}"))
}

/// Returns the raw id part when `gid` names an object of `kind`.
pub fn decode(kind: &str, gid: &str) -> Option<String> {
    if gid.len() > 200 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(gid.as_bytes()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (k, id) = text.split_once(':')?;
    (k == kind).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_checks_the_type() {
        let g = encode("StaffMember", "0190-abc");
        assert_eq!(decode("StaffMember", &g).as_deref(), Some("0190-abc"));
        assert_eq!(decode("ApiKey", &g), None);
        assert_eq!(decode("StaffMember", "not base64 !!"), None);
        assert_eq!(decode("StaffMember", ""), None);
    }
}
