//! Catalog rules: product kinds and what each needs, the status machine, SKU fields, sales
//! channels, listing prices and the search pattern. Pure functions over values.

use crate::identity::InvalidInput;
use crate::money::Money;

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidInput {
    InvalidInput {
        field,
        message: message.into(),
    }
}

pub const MAX_SKUS_PER_PRODUCT: usize = 100;
pub const MAX_TAGS: usize = 20;
pub const MAX_OPTIONS: usize = 10;
/// Heavier than any parcel a carrier takes; catches kilograms typed as grams × 1000.
pub const MAX_WEIGHT_GRAMS: i32 = 1_000_000;

/// What a product is, which decides what selling it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProductKind {
    /// Shipped goods; every SKU has a weight.
    Physical,
    /// Grants access to a course (`course_id`).
    Course,
    /// Each sold unit consumes one imported code; the pool is the stock.
    ActivationCode,
    /// Grants a membership plan (`membership_plan_id`).
    Membership,
}

impl ProductKind {
    pub const ALL: [ProductKind; 4] = [
        ProductKind::Physical,
        ProductKind::Course,
        ProductKind::ActivationCode,
        ProductKind::Membership,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ProductKind::Physical => "PHYSICAL",
            ProductKind::Course => "COURSE",
            ProductKind::ActivationCode => "ACTIVATION_CODE",
            ProductKind::Membership => "MEMBERSHIP",
        }
    }

    pub fn parse(s: &str) -> Option<ProductKind> {
        ProductKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn has_weight(self) -> bool {
        self == ProductKind::Physical
    }
}

/// The kind-specific references of a product, checked against its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindRefs<P> {
    pub course_id: Option<String>,
    pub membership_plan_id: Option<P>,
}

/// COURSE needs a course id, MEMBERSHIP a plan; the other kinds take neither. Whether the plan
/// exists is the caller's to check.
pub fn check_kind_refs<P>(
    kind: ProductKind,
    refs: KindRefs<P>,
) -> Result<KindRefs<P>, InvalidInput> {
    let course_id = match refs.course_id.as_deref().map(str::trim) {
        Some("") | None => None,
        Some(c) if c.chars().count() > 64 || c.chars().any(char::is_control) => {
            return Err(invalid("courseId", "must be 1-64 characters"));
        }
        Some(c) => Some(c.to_string()),
    };
    match kind {
        ProductKind::Course if course_id.is_none() => Err(invalid(
            "courseId",
            "a COURSE product needs the course it grants",
        )),
        ProductKind::Membership if refs.membership_plan_id.is_none() => Err(invalid(
            "membershipPlanId",
            "a MEMBERSHIP product needs the plan it grants",
        )),
        k if k != ProductKind::Course && course_id.is_some() => {
            Err(invalid("courseId", "only COURSE products grant a course"))
        }
        k if k != ProductKind::Membership && refs.membership_plan_id.is_some() => Err(invalid(
            "membershipPlanId",
            "only MEMBERSHIP products grant a membership plan",
        )),
        _ => Ok(KindRefs {
            course_id,
            membership_plan_id: refs.membership_plan_id,
        }),
    }
}

/// DRAFT (being prepared), ACTIVE (sellable), ARCHIVED (retired, hidden from lists by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProductStatus {
    Draft,
    Active,
    Archived,
}

impl ProductStatus {
    pub const ALL: [ProductStatus; 3] = [
        ProductStatus::Draft,
        ProductStatus::Active,
        ProductStatus::Archived,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ProductStatus::Draft => "DRAFT",
            ProductStatus::Active => "ACTIVE",
            ProductStatus::Archived => "ARCHIVED",
        }
    }

    pub fn parse(s: &str) -> Option<ProductStatus> {
        ProductStatus::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Every allowed status change (staying put is always allowed). An archived product comes back
/// as a draft first, so nothing retired goes on sale by a single click.
const TRANSITIONS: [(ProductStatus, ProductStatus); 5] = [
    (ProductStatus::Draft, ProductStatus::Active),
    (ProductStatus::Draft, ProductStatus::Archived),
    (ProductStatus::Active, ProductStatus::Draft),
    (ProductStatus::Active, ProductStatus::Archived),
    (ProductStatus::Archived, ProductStatus::Draft),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a product cannot go from {} to {}", from.as_str(), to.as_str())]
pub struct StatusChangeError {
    pub from: ProductStatus,
    pub to: ProductStatus,
}

pub fn transition(
    from: ProductStatus,
    to: ProductStatus,
) -> Result<ProductStatus, StatusChangeError> {
    if from == to || TRANSITIONS.contains(&(from, to)) {
        Ok(to)
    } else {
        Err(StatusChangeError { from, to })
    }
}

/// A trimmed text of `min..=max` characters without control characters.
fn text(field: &'static str, s: &str, min: usize, max: usize) -> Result<String, InvalidInput> {
    let s = s.trim();
    let n = s.chars().count();
    if n < min || n > max || s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(invalid(
            field,
            format!("must be {min}-{max} characters without control characters"),
        ));
    }
    Ok(s.to_string())
}

pub fn parse_title(s: &str) -> Result<String, InvalidInput> {
    let t = text("title", s, 1, 200)?;
    if t.contains('\n') {
        return Err(invalid("title", "must be one line"));
    }
    Ok(t)
}

pub fn parse_description(s: &str) -> Result<String, InvalidInput> {
    text("description", s, 0, 10_000)
}

/// Up to 20 distinct tags of 1-32 characters, trimmed, in the order given.
pub fn parse_tags(tags: &[String]) -> Result<Vec<String>, InvalidInput> {
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for t in tags {
        let t = text("tags", t, 1, 32)?;
        if t.contains(['\n', '\t', ',']) {
            return Err(invalid(
                "tags",
                "a tag is one word or phrase without commas",
            ));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    if out.len() > MAX_TAGS {
        return Err(invalid("tags", format!("at most {MAX_TAGS} tags")));
    }
    Ok(out)
}

/// A SKU code: 1-64 of letters, digits, '-', '_' and '.', unique within the tenant.
pub fn parse_sku_code(s: &str) -> Result<String, InvalidInput> {
    let s = s.trim();
    if s.is_empty()
        || s.len() > 64
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(invalid(
            "code",
            "must be 1-64 of A-Z, a-z, 0-9, '-', '_' or '.'",
        ));
    }
    Ok(s.to_string())
}

pub fn parse_sku_name(s: &str) -> Result<String, InvalidInput> {
    let n = text("name", s, 1, 100)?;
    if n.contains('\n') {
        return Err(invalid("name", "must be one line"));
    }
    Ok(n)
}

/// One option value of a SKU, such as 颜色 = 红色.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OptionValue {
    pub name: String,
    pub value: String,
}

/// Up to 10 options with distinct names, order kept.
pub fn parse_options(options: &[(String, String)]) -> Result<Vec<OptionValue>, InvalidInput> {
    if options.len() > MAX_OPTIONS {
        return Err(invalid("options", format!("at most {MAX_OPTIONS} options")));
    }
    let mut out: Vec<OptionValue> = Vec::with_capacity(options.len());
    for (name, value) in options {
        let name = text("options", name, 1, 32)?;
        let value = text("options", value, 1, 64)?;
        if out.iter().any(|o| o.name == name) {
            return Err(invalid("options", format!("option {name} is given twice")));
        }
        out.push(OptionValue { name, value });
    }
    Ok(out)
}

/// Physical SKUs weigh something (0 allowed for envelopes of paper); virtual ones have no weight.
pub fn check_weight(kind: ProductKind, grams: Option<i32>) -> Result<Option<i32>, InvalidInput> {
    match (kind.has_weight(), grams) {
        (true, None) => Err(invalid(
            "weightGrams",
            "a PHYSICAL SKU needs its weight in grams",
        )),
        (true, Some(g)) if !(0..=MAX_WEIGHT_GRAMS).contains(&g) => Err(invalid(
            "weightGrams",
            format!("must be between 0 and {MAX_WEIGHT_GRAMS}"),
        )),
        (false, Some(_)) => Err(invalid(
            "weightGrams",
            format!("{} SKUs have no weight", kind.as_str()),
        )),
        (_, g) => Ok(g),
    }
}

/// A compare-at ("was") price is only shown when it is above the price, in the same currency.
pub fn check_compare_at(
    price: Money,
    compare_at: Option<Money>,
) -> Result<Option<Money>, InvalidInput> {
    match compare_at {
        Some(c) if c.currency != price.currency => Err(invalid(
            "compareAtPrice",
            "must be in the currency of the price",
        )),
        Some(c) if c.fen <= price.fen => {
            Err(invalid("compareAtPrice", "must be higher than the price"))
        }
        other => Ok(other),
    }
}

/// The price a channel sells a SKU at: its listing's when the SKU is listed there, else the base.
pub fn channel_price(base: Money, listing: Option<(Money, bool)>) -> Money {
    match listing {
        Some((price, true)) => price,
        _ => base,
    }
}

/// Where a tenant sells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelType {
    WechatMini,
    AlipayMini,
    H5,
    Taobao,
    Douyin,
    Xiaohongshu,
}

impl ChannelType {
    pub const ALL: [ChannelType; 6] = [
        ChannelType::WechatMini,
        ChannelType::AlipayMini,
        ChannelType::H5,
        ChannelType::Taobao,
        ChannelType::Douyin,
        ChannelType::Xiaohongshu,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ChannelType::WechatMini => "WECHAT_MINI",
            ChannelType::AlipayMini => "ALIPAY_MINI",
            ChannelType::H5 => "H5",
            ChannelType::Taobao => "TAOBAO",
            ChannelType::Douyin => "DOUYIN",
            ChannelType::Xiaohongshu => "XIAOHONGSHU",
        }
    }

    pub fn parse(s: &str) -> Option<ChannelType> {
        ChannelType::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The shop's identity on its platform (app id, shop id): printable, no spaces, 1-64.
pub fn parse_shop_id(s: &str) -> Result<String, InvalidInput> {
    let s = s.trim();
    if s.is_empty()
        || s.chars().count() > 64
        || s.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid("shopId", "must be 1-64 characters without spaces"));
    }
    Ok(s.to_string())
}

/// A platform's own id for an item or SKU; empty means none.
pub fn parse_platform_id(
    field: &'static str,
    s: Option<&str>,
) -> Result<Option<String>, InvalidInput> {
    match s.map(str::trim) {
        None | Some("") => Ok(None),
        Some(s)
            if s.chars().count() > 128
                || s.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Err(invalid(
                field,
                "must be at most 128 characters without spaces",
            ))
        }
        Some(s) => Ok(Some(s.to_string())),
    }
}

pub fn parse_plan_duration(days: i32) -> Result<i32, InvalidInput> {
    if !(1..=3660).contains(&days) {
        return Err(invalid("durationDays", "must be between 1 and 3660"));
    }
    Ok(days)
}

/// A title search: trimmed, at most 100 characters, with LIKE's wildcards escaped so that
/// "50%" finds "50%" and not everything starting with "50". Empty means no filter.
pub fn search_pattern(s: &str) -> Result<Option<String>, InvalidInput> {
    let s = s.trim();
    if s.chars().count() > 100 {
        return Err(invalid("search", "must be at most 100 characters"));
    }
    if s.is_empty() {
        return Ok(None);
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('%');
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;

    fn refs(course: Option<&str>, plan: Option<u8>) -> KindRefs<u8> {
        KindRefs {
            course_id: course.map(str::to_string),
            membership_plan_id: plan,
        }
    }

    #[test]
    fn each_kind_takes_exactly_its_own_reference() {
        use ProductKind::*;
        assert!(check_kind_refs(Physical, refs(None, None)).is_ok());
        assert!(check_kind_refs(ActivationCode, refs(None, None)).is_ok());
        assert_eq!(
            check_kind_refs(Course, refs(Some(" c-1 "), None)).map(|r| r.course_id),
            Ok(Some("c-1".into()))
        );
        assert_eq!(
            check_kind_refs(Course, refs(Some("  "), None)).map_err(|e| e.field),
            Err("courseId")
        );
        assert_eq!(
            check_kind_refs(Membership, refs(None, None)).map_err(|e| e.field),
            Err("membershipPlanId")
        );
        assert!(check_kind_refs(Membership, refs(None, Some(1))).is_ok());
        assert_eq!(
            check_kind_refs(Physical, refs(Some("c"), None)).map_err(|e| e.field),
            Err("courseId")
        );
        assert_eq!(
            check_kind_refs(Course, refs(Some("c"), Some(1))).map_err(|e| e.field),
            Err("membershipPlanId")
        );
    }

    #[test]
    fn archived_products_return_through_draft_only() {
        use ProductStatus::*;
        assert_eq!(transition(Draft, Active), Ok(Active));
        assert_eq!(transition(Active, Archived), Ok(Archived));
        assert_eq!(transition(Archived, Archived), Ok(Archived));
        assert_eq!(transition(Archived, Draft), Ok(Draft));
        let e = transition(Archived, Active).unwrap_err();
        assert_eq!(e.to_string(), "a product cannot go from ARCHIVED to ACTIVE");
    }

    #[test]
    fn kinds_statuses_and_channel_types_round_trip_their_names() {
        for k in ProductKind::ALL {
            assert_eq!(ProductKind::parse(k.as_str()), Some(k));
        }
        for s in ProductStatus::ALL {
            assert_eq!(ProductStatus::parse(s.as_str()), Some(s));
        }
        for c in ChannelType::ALL {
            assert_eq!(ChannelType::parse(c.as_str()), Some(c));
        }
        assert_eq!(ProductKind::parse("physical"), None);
    }

    #[test]
    fn physical_skus_need_a_weight_and_virtual_ones_have_none() {
        use ProductKind::*;
        assert_eq!(check_weight(Physical, Some(250)), Ok(Some(250)));
        assert_eq!(check_weight(Physical, Some(0)), Ok(Some(0)));
        for bad in [None, Some(-1), Some(MAX_WEIGHT_GRAMS + 1)] {
            assert_eq!(
                check_weight(Physical, bad).map_err(|e| e.field),
                Err("weightGrams")
            );
        }
        assert_eq!(check_weight(Course, None), Ok(None));
        assert!(check_weight(ActivationCode, Some(1)).is_err());
    }

    #[test]
    fn tags_are_trimmed_deduplicated_and_capped() {
        let t = |v: &[&str]| parse_tags(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            t(&[" 新品 ", "新品", "sale"]),
            Ok(vec!["新品".into(), "sale".into()])
        );
        assert!(t(&[""]).is_err());
        assert!(t(&["a,b"]).is_err());
        let many: Vec<String> = (0..21).map(|i| format!("t{i}")).collect();
        assert!(parse_tags(&many).is_err());
    }

    #[test]
    fn sku_codes_names_and_options_are_checked() {
        assert_eq!(parse_sku_code(" TS-RED-M "), Ok("TS-RED-M".into()));
        for bad in ["", "has space", "逗号", &"x".repeat(65), "a;b"] {
            assert!(parse_sku_code(bad).is_err(), "{bad}");
        }
        assert!(parse_sku_name("红色 M").is_ok());
        assert!(parse_sku_name("").is_err());
        let o = |v: &[(&str, &str)]| {
            parse_options(
                &v.iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(o(&[("颜色", "红"), ("尺码", "M")]).map(|v| v.len()), Ok(2));
        assert!(o(&[("颜色", "红"), ("颜色", "蓝")]).is_err());
        assert!(o(&[("颜色", "")]).is_err());
    }

    #[test]
    fn compare_at_price_must_be_above_the_price() {
        let m = |fen| Money {
            fen,
            currency: Currency::Cny,
        };
        assert_eq!(check_compare_at(m(100), Some(m(150))), Ok(Some(m(150))));
        assert_eq!(check_compare_at(m(100), None), Ok(None));
        assert!(check_compare_at(m(100), Some(m(100))).is_err());
    }

    #[test]
    fn a_channel_price_applies_only_while_listed() {
        let m = |fen| Money {
            fen,
            currency: Currency::Cny,
        };
        assert_eq!(channel_price(m(100), None), m(100));
        assert_eq!(channel_price(m(100), Some((m(80), true))), m(80));
        assert_eq!(channel_price(m(100), Some((m(80), false))), m(100));
    }

    #[test]
    fn search_escapes_like_wildcards() {
        assert_eq!(search_pattern("  "), Ok(None));
        assert_eq!(search_pattern("T恤"), Ok(Some("%T恤%".into())));
        assert_eq!(
            search_pattern("50%_off\\"),
            Ok(Some("%50\\%\\_off\\\\%".into()))
        );
        assert!(search_pattern(&"x".repeat(101)).is_err());
    }

    #[test]
    fn shop_and_platform_ids_are_printable() {
        assert_eq!(parse_shop_id(" wx123 "), Ok("wx123".into()));
        assert!(parse_shop_id("a b").is_err());
        assert_eq!(parse_platform_id("platformItemId", Some("")), Ok(None));
        assert!(parse_platform_id("platformItemId", Some("a b")).is_err());
        assert!(parse_plan_duration(0).is_err());
        assert_eq!(parse_plan_duration(30), Ok(30));
    }
}
