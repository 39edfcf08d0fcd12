//! Personal data protection: envelope encryption with per-tenant data keys, blind indexes
//! for equality search over encrypted columns, and the normalization and masking rules shared
//! by every surface that stores or shows buyer contact data.

use std::fmt;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use hmac::digest::Key;
use hmac::{Hmac, Mac};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::Sha256;
use zeroize::Zeroizing;

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const FORMAT_V1: u8 = 1;
const HEADER_LEN: usize = 1 + NONCE_LEN;
const WRAPPED_LEN: usize = HEADER_LEN + KEY_LEN + TAG_LEN;

const DEK_WRAP_AAD_PREFIX: &[u8] = b"uphub-dek-v1";
const ENC_SUBKEY_LABEL: &[u8] = b"uphub-pii-enc-v1";
const BIDX_SUBKEY_LABEL: &[u8] = b"uphub-pii-bidx-v1";

/// Why a key could not be loaded or a ciphertext could not be opened. Messages never carry
/// key material or plaintext, so they are safe to log.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PiiError {
    #[error("invalid master key: {0}")]
    InvalidMasterKey(String),
    #[error("decryption failed")]
    Decrypt,
    #[error("malformed ciphertext")]
    Malformed,
}

/// The process-wide key that wraps tenant data keys. It only ever encrypts other keys, so a
/// leaked database dump is useless without it; Debug is redacted and the bytes are wiped on drop.
pub struct MasterKey(Zeroizing<[u8; KEY_LEN]>);

impl MasterKey {
    /// Parses the key as configured: exactly 64 hex characters, so a truncated or padded
    /// secret fails at startup instead of silently yielding a different key.
    pub fn from_hex(s: &str) -> Result<Self, PiiError> {
        if s.len() != KEY_LEN * 2 {
            return Err(PiiError::InvalidMasterKey(format!(
                "expected {} hex characters, got {}",
                KEY_LEN * 2,
                s.chars().count()
            )));
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        hex::decode_to_slice(s, &mut key[..])
            .map_err(|_| PiiError::InvalidMasterKey("not a hex string".to_owned()))?;
        Ok(Self(key))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// A tenant's data encryption key. Each tenant gets its own so that one tenant's data can be
/// crypto-shredded by deleting its wrapped key; Debug is redacted and the bytes are wiped on drop.
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; KEY_LEN]>);

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    /// A fresh key from the operating system's CSPRNG, for a newly created tenant.
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        OsRng.fill_bytes(&mut key[..]);
        Self(key)
    }

    /// Seals this key under the master key for storage. The tenant id is bound as associated
    /// data so a wrapped key copied onto another tenant's row cannot be opened there.
    pub fn wrap(&self, master: &MasterKey, tenant_id: &[u8]) -> Vec<u8> {
        seal(&master.0, &self.0[..], &dek_wrap_aad(tenant_id))
    }

    /// Opens a key sealed by [`DataKey::wrap`]; a different tenant id or master key yields
    /// [`PiiError::Decrypt`], a value of the wrong shape [`PiiError::Malformed`].
    pub fn unwrap(wrapped: &[u8], master: &MasterKey, tenant_id: &[u8]) -> Result<Self, PiiError> {
        if wrapped.len() != WRAPPED_LEN {
            return Err(PiiError::Malformed);
        }
        let plain = Zeroizing::new(open(&master.0, wrapped, &dek_wrap_aad(tenant_id))?);
        if plain.len() != KEY_LEN {
            return Err(PiiError::Malformed);
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&plain);
        Ok(Self(key))
    }

    /// Encrypts one PII value. `aad` should name where the value lives (table, column, row id)
    /// so ciphertexts cannot be swapped between rows or fields without detection. A random nonce
    /// makes equal plaintexts encrypt differently; use [`DataKey::blind_index`] for lookups.
    /// Panics only for plaintexts over 64 GiB, which AES-GCM cannot encrypt.
    pub fn encrypt(&self, plaintext: &str, aad: &[u8]) -> Vec<u8> {
        let key = self.subkey(ENC_SUBKEY_LABEL);
        seal(&key, plaintext.as_bytes(), aad)
    }

    /// Reverses [`DataKey::encrypt`] given the same `aad`. Input too short or of an unknown
    /// version is [`PiiError::Malformed`]; anything that fails authentication is
    /// [`PiiError::Decrypt`].
    pub fn decrypt(&self, ciphertext: &[u8], aad: &[u8]) -> Result<String, PiiError> {
        let key = self.subkey(ENC_SUBKEY_LABEL);
        let plain = open(&key, ciphertext, aad)?;
        String::from_utf8(plain).map_err(|e| {
            let mut bytes = e.into_bytes();
            zeroize::Zeroize::zeroize(&mut bytes);
            PiiError::Malformed
        })
    }

    /// A deterministic keyed hash for exact-match search over encrypted values. It uses its own
    /// subkey so the index reveals nothing about the encryption key, and `kind` separates
    /// domains so an email and a phone with the same text never share an index value.
    /// Pass a value already normalized with the matching `normalize_*` function.
    pub fn blind_index(&self, kind: &str, normalized: &str) -> Vec<u8> {
        let key = self.subkey(BIDX_SUBKEY_LABEL);
        hmac_sha256(&key, &[kind.as_bytes(), &[0x00], normalized.as_bytes()]).to_vec()
    }

    fn subkey(&self, label: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
        Zeroizing::new(hmac_sha256(&self.0, &[label]))
    }
}

fn dek_wrap_aad(tenant_id: &[u8]) -> Vec<u8> {
    [DEK_WRAP_AAD_PREFIX, tenant_id].concat()
}

/// HMAC-SHA256 with a 32-byte key. The key is zero-padded to the block size by hand, which is
/// exactly what HMAC does with short keys, so construction is infallible.
fn hmac_sha256(key: &[u8; KEY_LEN], parts: &[&[u8]]) -> [u8; KEY_LEN] {
    let mut block = Key::<Hmac<Sha256>>::default();
    block[..KEY_LEN].copy_from_slice(key);
    let mut mac = <Hmac<Sha256> as Mac>::new(&block);
    zeroize::Zeroize::zeroize(&mut block[..]);
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Output layout: version byte || 12-byte random nonce || ciphertext || 16-byte tag.
fn seal(key: &[u8; KEY_LEN], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new(key.into());
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let sealed = match cipher.encrypt(
        &nonce.into(),
        Payload {
            msg: plaintext,
            aad,
        },
    ) {
        Ok(sealed) => sealed,
        Err(_) => unreachable!("AES-GCM only refuses messages over 64 GiB"),
    };
    let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

fn open(key: &[u8; KEY_LEN], sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, PiiError> {
    if sealed.len() < HEADER_LEN + TAG_LEN || sealed[0] != FORMAT_V1 {
        return Err(PiiError::Malformed);
    }
    let (nonce, body) = sealed[1..].split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| PiiError::Malformed)?;
    Aes256Gcm::new(key.into())
        .decrypt(&nonce.into(), Payload { msg: body, aad })
        .map_err(|_| PiiError::Decrypt)
}

/// Emails compare case-insensitively in practice, so the blind index is taken over this form.
pub fn normalize_email(s: &str) -> String {
    s.trim().to_lowercase()
}

/// Buyers type phones as "+86 138-1234-5678", "138 1234 5678" or "008613812345678"; all of
/// them must produce the same blind index, so punctuation and the mainland country code go.
pub fn normalize_phone(s: &str) -> String {
    let digits: String = s
        .chars()
        .map(fullwidth_to_ascii)
        .filter(char::is_ascii_digit)
        .collect();
    for prefix in ["0086", "86"] {
        if let Some(rest) = digits.strip_prefix(prefix)
            && is_mainland_mobile(rest)
        {
            return rest.to_owned();
        }
    }
    digits
}

fn is_mainland_mobile(digits: &str) -> bool {
    digits.len() == 11 && digits.starts_with('1')
}

/// Names differ only by stray spaces when copied between systems; this is the indexed form.
pub fn normalize_name(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Chinese addresses carry no meaningful whitespace and often mix full-width digits and
/// letters from IME input, so both are folded away before indexing or masking.
pub fn normalize_address(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .map(fullwidth_to_ascii)
        .collect()
}

fn fullwidth_to_ascii(c: char) -> char {
    match c {
        '０'..='９' | 'Ａ'..='Ｚ' | 'ａ'..='ｚ' => {
            char::from_u32(u32::from(c) - 0xFEE0).unwrap_or(c)
        }
        _ => c,
    }
}

/// Shows enough of a phone for staff to confirm it with the buyer ("138****5678") without
/// exposing the number. Short numbers are fully starred because any kept digit is a large share.
pub fn mask_phone(s: &str) -> String {
    let digits = normalize_phone(s);
    let n = digits.len();
    if n >= 8 {
        format!("{}{}{}", &digits[..3], "*".repeat(n - 7), &digits[n - 4..])
    } else {
        "*".repeat(n)
    }
}

/// The family name (first character) is enough to address a buyer politely.
pub fn mask_name(s: &str) -> String {
    match s.trim().chars().next() {
        Some(first) => format!("{first}*"),
        None => String::new(),
    }
}

/// Keeps the domain (useful for support: "is it a QQ mailbox?") and the first character of the
/// local part; the local part's length is hidden by a fixed run of stars.
pub fn mask_email(s: &str) -> String {
    let s = s.trim();
    match s.rsplit_once('@') {
        Some((local, domain)) => {
            let first = local.chars().next().map(String::from).unwrap_or_default();
            format!("{first}****@{domain}")
        }
        None => mask_name(s),
    }
}

/// Keeps the address down to the district (province, city, district/county) so staff can see
/// where a parcel goes without the street, building or room. When no district can be found,
/// at most the first 6 characters are kept and never the whole address.
pub fn mask_address(s: &str) -> String {
    const FALLBACK_KEEP: usize = 6;
    let chars: Vec<char> = normalize_address(s).chars().collect();
    if chars.is_empty() {
        return String::new();
    }
    let keep = match admin_prefix(&chars) {
        AdminPrefix::District(end) => end,
        AdminPrefix::Partial(0) => FALLBACK_KEEP.min(chars.len() / 2),
        AdminPrefix::Partial(end) => end.min(FALLBACK_KEEP).min(chars.len() - 1),
    };
    let mut out: String = chars[..keep].iter().collect();
    out.push_str("****");
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum AdminLevel {
    Province,
    City,
    District,
}

#[derive(Debug, PartialEq, Eq)]
enum AdminPrefix {
    /// Characters up to and including the district-level name.
    District(usize),
    /// No district found; characters of the province/city names that were recognized.
    Partial(usize),
}

const MUNICIPALITIES: [&str; 4] = ["北京市", "天津市", "上海市", "重庆市"];
const ADMIN_SUFFIXES: [char; 7] = ['省', '市', '州', '盟', '区', '县', '旗'];
/// Longest real names are about 15 characters (e.g. 双江拉祜族佤族布朗族傣族自治县).
const MAX_ADMIN_NAME: usize = 16;
/// Endings that look like a district but name a place inside one.
const NON_ADMIN_ENDINGS: [&str; 12] = [
    "小区", "社区", "园区", "校区", "景区", "街区", "厂区", "营区", "超市", "菜市", "夜市", "集市",
];
/// Street-level words that never appear after the first character of a division name.
const STREET_WORDS: [char; 7] = ['镇', '街', '道', '路', '巷', '村', '号'];

/// Walks the leading administrative names in order (province, then city, then district),
/// allowing levels to be skipped as in "北京市朝阳区" or "赣州市章贡区".
fn admin_prefix(chars: &[char]) -> AdminPrefix {
    let mut pos = 0;
    let mut reached: Option<AdminLevel> = None;
    while let Some(len) = next_admin_name(&chars[pos..]) {
        let name: String = chars[pos..pos + len].iter().collect();
        let level = match classify_admin_name(&name) {
            Some(NameKind::Province | NameKind::Municipality) if reached.is_none() => {
                AdminLevel::Province
            }
            Some(NameKind::City) if reached < Some(AdminLevel::City) => AdminLevel::City,
            Some(NameKind::Municipality | NameKind::CityOrDistrict)
                if reached < Some(AdminLevel::City) =>
            {
                AdminLevel::City
            }
            Some(NameKind::CityOrDistrict) if reached == Some(AdminLevel::City) => {
                AdminLevel::District
            }
            Some(NameKind::District) => AdminLevel::District,
            _ => break,
        };
        pos += len;
        reached = Some(level);
        if level == AdminLevel::District {
            return AdminPrefix::District(pos);
        }
    }
    AdminPrefix::Partial(pos)
}

enum NameKind {
    Province,
    Municipality,
    City,
    CityOrDistrict,
    District,
}

fn classify_admin_name(name: &str) -> Option<NameKind> {
    if MUNICIPALITIES.contains(&name) {
        Some(NameKind::Municipality)
    } else if name.ends_with('省') || name.ends_with("自治区") || name.ends_with("特别行政区")
    {
        Some(NameKind::Province)
    } else if name.ends_with("地区") || name.ends_with('州') || name.ends_with('盟') {
        Some(NameKind::City)
    } else if name.ends_with('市') {
        Some(NameKind::CityOrDistrict)
    } else if name.ends_with('区') || name.ends_with('县') || name.ends_with('旗') {
        Some(NameKind::District)
    } else {
        None
    }
}

/// Length in characters of the administrative name at the start of `chars`, if any.
fn next_admin_name(chars: &[char]) -> Option<usize> {
    let window = &chars[..chars.len().min(MAX_ADMIN_NAME)];
    let idx = window
        .iter()
        .skip(1)
        .position(|c| ADMIN_SUFFIXES.contains(c))?
        + 1;
    let mut len = idx + 1;
    // "贵州省", "杭州市", "通州区", "沙市区": the first suffix character is part of the name.
    if let Some(&next) = chars.get(len) {
        let extends = matches!(
            (chars[idx], next),
            ('州', '省' | '市' | '区') | ('市', '区')
        );
        if extends {
            len += 1;
        }
    }
    let name = &chars[..len];
    let looks_like_street = name
        .iter()
        .any(|c| c.is_ascii_alphanumeric() || c.is_ascii_punctuation())
        || name[1..].iter().any(|c| STREET_WORDS.contains(c));
    let tail: String = name[name.len().saturating_sub(2)..].iter().collect();
    if looks_like_street || NON_ADMIN_ENDINGS.contains(&tail.as_str()) {
        return None;
    }
    Some(len)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const MASTER_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const OTHER_MASTER_HEX: &str =
        "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    fn master() -> MasterKey {
        MasterKey::from_hex(MASTER_HEX).unwrap()
    }

    #[test]
    fn master_key_parses_exactly_64_hex_characters() {
        assert!(MasterKey::from_hex(MASTER_HEX).is_ok());
        assert!(MasterKey::from_hex(&MASTER_HEX.to_uppercase()).is_ok());
        assert!(matches!(
            MasterKey::from_hex(&MASTER_HEX[..62]),
            Err(PiiError::InvalidMasterKey(_))
        ));
        assert!(matches!(
            MasterKey::from_hex(&format!("{MASTER_HEX}00")),
            Err(PiiError::InvalidMasterKey(_))
        ));
        assert!(matches!(
            MasterKey::from_hex(&format!("zz{}", &MASTER_HEX[2..])),
            Err(PiiError::InvalidMasterKey(_))
        ));
        assert!(matches!(
            MasterKey::from_hex(""),
            Err(PiiError::InvalidMasterKey(_))
        ));
    }

    #[test]
    fn master_key_errors_do_not_echo_the_input() {
        let bad = format!("{}zz", &OTHER_MASTER_HEX[..62]);
        let err = MasterKey::from_hex(&bad).unwrap_err().to_string();
        assert!(!err.contains(&OTHER_MASTER_HEX[..16]), "{err}");
    }

    #[test]
    fn debug_output_does_not_leak_key_bytes() {
        let m = master();
        assert_eq!(format!("{m:?}"), "MasterKey(..)");
        assert!(!format!("{m:#?}").contains("0a0b"));
        assert!(!format!("{m:#?}").contains("[0, 1, 2"));
        let dek = DataKey::generate();
        assert_eq!(format!("{dek:?}"), "DataKey(..)");
        assert_eq!(format!("{dek:#?}"), "DataKey(..)");
        assert_eq!(format!("{:?}", Some(dek.clone())), "Some(DataKey(..))");
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(DataKey::generate().0[..], DataKey::generate().0[..]);
    }

    #[test]
    fn wrapped_key_round_trips_for_the_same_tenant_and_master() {
        let dek = DataKey::generate();
        let wrapped = dek.wrap(&master(), b"tenant-1");
        assert_eq!(wrapped.len(), 1 + 12 + 32 + 16);
        assert_eq!(wrapped[0], 1);
        let back = DataKey::unwrap(&wrapped, &master(), b"tenant-1").unwrap();
        assert_eq!(back.0[..], dek.0[..]);
    }

    #[test]
    fn wrapping_twice_gives_different_bytes() {
        let dek = DataKey::generate();
        assert_ne!(dek.wrap(&master(), b"t"), dek.wrap(&master(), b"t"));
    }

    #[test]
    fn unwrap_fails_for_another_tenants_id() {
        let wrapped = DataKey::generate().wrap(&master(), b"tenant-1");
        assert_eq!(
            DataKey::unwrap(&wrapped, &master(), b"tenant-2").unwrap_err(),
            PiiError::Decrypt
        );
    }

    #[test]
    fn unwrap_fails_under_another_master_key() {
        let wrapped = DataKey::generate().wrap(&master(), b"tenant-1");
        let other = MasterKey::from_hex(OTHER_MASTER_HEX).unwrap();
        assert_eq!(
            DataKey::unwrap(&wrapped, &other, b"tenant-1").unwrap_err(),
            PiiError::Decrypt
        );
    }

    #[test]
    fn unwrap_fails_when_any_byte_of_the_wrapped_key_is_flipped() {
        let wrapped = DataKey::generate().wrap(&master(), b"tenant-1");
        for i in 1..wrapped.len() {
            let mut tampered = wrapped.clone();
            tampered[i] ^= 0x01;
            assert_eq!(
                DataKey::unwrap(&tampered, &master(), b"tenant-1").unwrap_err(),
                PiiError::Decrypt,
                "byte {i}"
            );
        }
    }

    #[test]
    fn unwrap_rejects_truncated_empty_or_unknown_version_input_as_malformed() {
        let wrapped = DataKey::generate().wrap(&master(), b"t");
        for len in 0..wrapped.len() {
            assert_eq!(
                DataKey::unwrap(&wrapped[..len], &master(), b"t").unwrap_err(),
                PiiError::Malformed,
                "len {len}"
            );
        }
        let mut longer = wrapped.clone();
        longer.push(0);
        assert_eq!(
            DataKey::unwrap(&longer, &master(), b"t").unwrap_err(),
            PiiError::Malformed
        );
        let mut v2 = wrapped;
        v2[0] = 2;
        assert_eq!(
            DataKey::unwrap(&v2, &master(), b"t").unwrap_err(),
            PiiError::Malformed
        );
    }

    #[test]
    fn encrypted_value_round_trips_with_the_same_aad() {
        let dek = DataKey::generate();
        for text in [
            "",
            "13812345678",
            "广东省深圳市南山区科技园南路88号",
            "alice@example.com",
        ] {
            let ct = dek.encrypt(text, b"orders.receiver_phone:42");
            assert_eq!(ct[0], 1);
            assert_eq!(ct.len(), 1 + 12 + text.len() + 16);
            assert_eq!(dek.decrypt(&ct, b"orders.receiver_phone:42").unwrap(), text);
        }
    }

    #[test]
    fn encrypting_the_same_value_twice_gives_different_ciphertexts() {
        let dek = DataKey::generate();
        assert_ne!(dek.encrypt("张三", b""), dek.encrypt("张三", b""));
    }

    #[test]
    fn a_data_key_survives_wrapping_and_still_decrypts_its_values() {
        let dek = DataKey::generate();
        let ct = dek.encrypt("姚小姐", b"aad");
        let back = DataKey::unwrap(&dek.wrap(&master(), b"t"), &master(), b"t").unwrap();
        assert_eq!(back.decrypt(&ct, b"aad").unwrap(), "姚小姐");
    }

    #[test]
    fn decrypt_fails_with_another_aad() {
        let dek = DataKey::generate();
        let ct = dek.encrypt("13812345678", b"orders.phone:1");
        assert_eq!(
            dek.decrypt(&ct, b"orders.phone:2").unwrap_err(),
            PiiError::Decrypt
        );
        assert_eq!(dek.decrypt(&ct, b"").unwrap_err(), PiiError::Decrypt);
    }

    #[test]
    fn decrypt_fails_with_another_data_key() {
        let ct = DataKey::generate().encrypt("13812345678", b"a");
        assert_eq!(
            DataKey::generate().decrypt(&ct, b"a").unwrap_err(),
            PiiError::Decrypt
        );
    }

    #[test]
    fn decrypt_fails_when_any_byte_of_the_ciphertext_is_flipped() {
        let dek = DataKey::generate();
        let ct = dek.encrypt("alice@example.com", b"a");
        for i in 1..ct.len() {
            let mut tampered = ct.clone();
            tampered[i] ^= 0x80;
            assert_eq!(
                dek.decrypt(&tampered, b"a").unwrap_err(),
                PiiError::Decrypt,
                "byte {i}"
            );
        }
    }

    #[test]
    fn decrypt_fails_when_the_tag_is_cut_off() {
        let dek = DataKey::generate();
        let ct = dek.encrypt("a long enough plaintext for this", b"a");
        assert_eq!(
            dek.decrypt(&ct[..ct.len() - 1], b"a").unwrap_err(),
            PiiError::Decrypt
        );
    }

    #[test]
    fn decrypt_rejects_empty_short_or_unknown_version_input_as_malformed() {
        let dek = DataKey::generate();
        let ct = dek.encrypt("x", b"a");
        assert_eq!(dek.decrypt(&[], b"a").unwrap_err(), PiiError::Malformed);
        for len in 0..(1 + 12 + 16) {
            assert_eq!(
                dek.decrypt(&ct[..len], b"a").unwrap_err(),
                PiiError::Malformed,
                "len {len}"
            );
        }
        let mut v0 = ct;
        v0[0] = 0;
        assert_eq!(dek.decrypt(&v0, b"a").unwrap_err(), PiiError::Malformed);
    }

    #[test]
    fn encryption_uses_a_subkey_not_the_data_key_itself() {
        let dek = DataKey::generate();
        let raw_key_ct = seal(&dek.0, b"secret", b"");
        assert_eq!(
            dek.decrypt(&raw_key_ct, b"").unwrap_err(),
            PiiError::Decrypt
        );
    }

    #[test]
    fn hand_padded_hmac_matches_the_library_with_a_slice_key() {
        let key = [7u8; KEY_LEN];
        let mut reference = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
        reference.update(b"abc");
        reference.update(b"def");
        let expected: [u8; 32] = reference.finalize().into_bytes().into();
        assert_eq!(hmac_sha256(&key, &[b"abc", b"def"]), expected);
    }

    #[test]
    fn blind_index_is_deterministic_and_32_bytes() {
        let dek = DataKey::generate();
        let a = dek.blind_index("phone", "13812345678");
        assert_eq!(a.len(), 32);
        assert_eq!(a, dek.blind_index("phone", "13812345678"));
        assert_eq!(a, dek.clone().blind_index("phone", "13812345678"));
        assert_ne!(a, dek.blind_index("phone", "13812345679"));
    }

    #[test]
    fn blind_index_differs_per_kind() {
        let dek = DataKey::generate();
        assert_ne!(
            dek.blind_index("email", "x@y.cn"),
            dek.blind_index("receiver", "x@y.cn")
        );
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(dek.blind_index("ab", "c"), dek.blind_index("a", "bc"));
    }

    #[test]
    fn blind_index_differs_per_key_and_survives_unwrapping() {
        let dek = DataKey::generate();
        let other = DataKey::generate();
        assert_ne!(
            dek.blind_index("phone", "13812345678"),
            other.blind_index("phone", "13812345678")
        );
        let back = DataKey::unwrap(&dek.wrap(&master(), b"t"), &master(), b"t").unwrap();
        assert_eq!(
            back.blind_index("phone", "13812345678"),
            dek.blind_index("phone", "13812345678")
        );
    }

    #[test]
    fn blind_index_matches_the_documented_construction() {
        let dek = DataKey(Zeroizing::new([9u8; KEY_LEN]));
        let mut sub = <Hmac<Sha256> as Mac>::new_from_slice(&[9u8; KEY_LEN]).unwrap();
        sub.update(b"uphub-pii-bidx-v1");
        let sub = sub.finalize().into_bytes();
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&sub).unwrap();
        mac.update(b"email\0alice@example.com");
        assert_eq!(
            dek.blind_index("email", "alice@example.com"),
            mac.finalize().into_bytes().to_vec()
        );
    }

    #[test]
    fn emails_are_trimmed_and_lowercased() {
        assert_eq!(
            normalize_email("  Alice@Example.COM \n"),
            "alice@example.com"
        );
    }

    #[test]
    fn phones_keep_digits_and_drop_the_mainland_country_code() {
        assert_eq!(normalize_phone("+86 138-1234-5678"), "13812345678");
        assert_eq!(normalize_phone("008613812345678"), "13812345678");
        assert_eq!(normalize_phone("8613812345678"), "13812345678");
        assert_eq!(normalize_phone("131-3519-6450"), "13135196450");
        assert_eq!(normalize_phone("136 3300 5254"), "13633005254");
        assert_eq!(normalize_phone("１３８１２３４５６７８"), "13812345678");
        assert_eq!(normalize_phone("(0755) 8613-1234"), "075586131234");
        assert_eq!(normalize_phone("86123"), "86123");
        assert_eq!(normalize_phone("+852 9123 4567"), "85291234567");
        assert_eq!(normalize_phone(""), "");
    }

    #[test]
    fn names_are_trimmed_with_inner_whitespace_collapsed() {
        assert_eq!(
            normalize_name("  Mary \t  Jane\nWatson "),
            "Mary Jane Watson"
        );
        assert_eq!(normalize_name(" 欧阳 梓薇 "), "欧阳 梓薇");
        assert_eq!(normalize_name("   "), "");
    }

    #[test]
    fn addresses_lose_whitespace_and_full_width_characters() {
        assert_eq!(
            normalize_address(" 天津 天津市 滨海新区\n松涛苑２０-４-２３０６ "),
            "天津天津市滨海新区松涛苑20-4-2306"
        );
        assert_eq!(
            normalize_address("恒信中心Ａ座　２７０１ｂ"),
            "恒信中心A座2701b"
        );
    }

    #[test]
    fn mainland_mobiles_mask_to_first_three_and_last_four() {
        assert_eq!(mask_phone("13812345678"), "138****5678");
        assert_eq!(mask_phone("+86 138-1234-5678"), "138****5678");
    }

    #[test]
    fn other_phone_lengths_keep_three_and_four_or_are_fully_starred() {
        assert_eq!(mask_phone("075586131234"), "075*****1234");
        assert_eq!(mask_phone("12345678"), "123*5678");
        assert_eq!(mask_phone("1234567"), "*******");
        assert_eq!(mask_phone("110"), "***");
        assert_eq!(mask_phone(""), "");
    }

    #[test]
    fn names_mask_to_the_first_character() {
        assert_eq!(mask_name("张三丰"), "张*");
        assert_eq!(mask_name("Alice"), "A*");
        assert_eq!(mask_name("司马岚梦"), "司*");
        assert_eq!(mask_name(" Nana潘"), "N*");
        assert_eq!(mask_name(""), "");
    }

    #[test]
    fn emails_keep_the_first_character_and_the_domain() {
        assert_eq!(mask_email("alice@example.com"), "a****@example.com");
        assert_eq!(mask_email("a@qq.com"), "a****@qq.com");
        assert_eq!(mask_email("@qq.com"), "****@qq.com");
        assert_eq!(mask_email("not-an-email"), "n*");
        assert_eq!(mask_email(""), "");
    }

    #[test]
    fn addresses_mask_after_the_district() {
        let cases = [
            ("广东省深圳市南山区科技园南路88号", "广东省深圳市南山区****"),
            ("北京市朝阳区建国路1号", "北京市朝阳区****"),
            (
                "新疆维吾尔自治区乌鲁木齐市天山区人民路5号",
                "新疆维吾尔自治区乌鲁木齐市天山区****",
            ),
            (
                "内蒙古自治区呼和浩特市新城区xx路",
                "内蒙古自治区呼和浩特市新城区****",
            ),
            ("浙江省杭州市余杭区五常街道", "浙江省杭州市余杭区****"),
            ("江苏省苏州市昆山市玉山镇1号", "江苏省苏州市昆山市****"),
        ];
        for (address, masked) in cases {
            assert_eq!(mask_address(address), masked, "{address}");
        }
    }

    #[test]
    fn addresses_from_the_sample_data_mask_after_the_district() {
        let cases = [
            (
                "天津市天津市滨海新区松涛苑20-4-2306",
                "天津市天津市滨海新区****",
            ),
            (
                "贵州省黔南布依族苗族自治州都匀市银杏路290号知行学院10号宿舍楼127",
                "贵州省黔南布依族苗族自治州都匀市****",
            ),
            (
                "湖南省岳阳市岳阳楼区迎宾大道228号金桂园21栋4单元903",
                "湖南省岳阳市岳阳楼区****",
            ),
            (
                "河北省唐山市路北区云杉路202号景苑新村15幢4单元1601",
                "河北省唐山市路北区****",
            ),
            (
                "黑龙江省哈尔滨市道里区锦绣家园4-1-1804",
                "黑龙江省哈尔滨市道里区****",
            ),
            (
                "山东省青岛市市南区翠微路538号水岸人家11号楼4单元1802室",
                "山东省青岛市市南区****",
            ),
            (
                "重庆市重庆市云阳县丁香路509号枫林湾6栋1单元1901",
                "重庆市重庆市云阳县****",
            ),
            (
                "西藏自治区拉萨市堆龙德庆区金桥路909号阳光花园",
                "西藏自治区拉萨市堆龙德庆区****",
            ),
            (
                "广西壮族自治区南宁市西乡塘区育才街与团结路交叉口",
                "广西壮族自治区南宁市西乡塘区****",
            ),
            (
                "江苏省扬州市邗江区嘉禾苑10-1-2202",
                "江苏省扬州市邗江区****",
            ),
            (
                "台湾省台北市大安区中正路3段91号7楼",
                "台湾省台北市大安区****",
            ),
            (
                "赣州市章贡区云杉路868号澄溪学院12号宿舍楼223",
                "赣州市章贡区****",
            ),
            (
                "甘肃酒泉市肃州区人民路586号恒信中心A座2701",
                "甘肃酒泉市肃州区****",
            ),
            (
                "内蒙呼和浩特赛罕区云杉路935号望江苑30号",
                "内蒙呼和浩特赛罕区****",
            ),
            ("北京市通州区梨园镇1号", "北京市通州区****"),
            ("湖北省荆州市沙市区北京路1号", "湖北省荆州市沙市区****"),
            (
                "福建省厦门市思明区绿洲雅苑11-3-404",
                "福建省厦门市思明区****",
            ),
            ("江苏省盐城市亭湖区人民路1号", "江苏省盐城市亭湖区****"),
            ("天津 天津市 滨海新区 松涛苑", "天津天津市滨海新区****"),
        ];
        for (address, masked) in cases {
            assert_eq!(mask_address(address), masked, "{address}");
        }
    }

    #[test]
    fn addresses_without_a_district_keep_at_most_six_characters() {
        let cases = [
            ("海南省文昌市文城镇嘉禾苑6-2-1403", "海南省文昌市****"),
            (
                "广东省东莞市虎门镇云杉路与银杏路交叉口翠湖苑北门菜鸟驿站",
                "广东省东莞市****",
            ),
            (
                "湖北省仙桃市干河街道花溪街819号阳光花园24幢2单元2003",
                "湖北省仙桃市****",
            ),
            ("海南省文昌市文城镇云栖小区1-1-2005", "海南省文昌市****"),
            ("湖北省天门市竟陵街道致远路576号", "湖北省天门市****"),
            ("广东省东莞市长安镇超市旁", "广东省东莞市****"),
            ("新疆维吾尔自治区石河子市建设路797号", "新疆维吾尔自****"),
            (
                "香港特别行政区港岛铜锣湾利源东街110号荣信大厦16楼B室",
                "香港特别行政****",
            ),
            ("北京市建国路1号", "北京市****"),
            ("云栖小区1-1-2005", "云栖小区1-****"),
            ("人民路5号", "人民****"),
            ("广东省深圳市", "广东省深圳****"),
        ];
        for (address, masked) in cases {
            assert_eq!(mask_address(address), masked, "{address}");
        }
        assert_eq!(mask_address(""), "");
        assert_eq!(mask_address("   "), "");
    }

    #[test]
    fn masked_addresses_never_contain_the_street_part() {
        for address in [
            "广东省深圳市南山区科技园南路88号",
            "海南省琼海市嘉积镇西环路257号万象写字楼A座313",
            "某某路与某某街交叉口菜鸟驿站",
            "广东省深圳市",
            "短",
        ] {
            let masked = mask_address(address);
            assert!(masked.ends_with("****"), "{masked}");
            assert_ne!(masked.trim_end_matches('*'), address, "{address}");
            assert!(
                !masked.contains("88号") && !masked.contains("257号"),
                "{masked}"
            );
        }
    }
}
