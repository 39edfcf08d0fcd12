//! Parcels leaving the warehouse: carriers and their codes on each platform, tracking numbers,
//! and what shipping a parcel does to the status of the orders in it.

use crate::catalog::ChannelType;
use crate::identity::InvalidInput;
use crate::order::{OrderStatus, StockState};

/// The express carriers an operator can hand a parcel to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Carrier {
    Sf,
    Zto,
    Yto,
    Sto,
    Yunda,
    Ems,
    Jd,
    Jt,
    Deppon,
    ChinaPost,
}

impl Carrier {
    pub const ALL: [Carrier; 10] = [
        Carrier::Sf,
        Carrier::Zto,
        Carrier::Yto,
        Carrier::Sto,
        Carrier::Yunda,
        Carrier::Ems,
        Carrier::Jd,
        Carrier::Jt,
        Carrier::Deppon,
        Carrier::ChinaPost,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Carrier::Sf => "SF",
            Carrier::Zto => "ZTO",
            Carrier::Yto => "YTO",
            Carrier::Sto => "STO",
            Carrier::Yunda => "YUNDA",
            Carrier::Ems => "EMS",
            Carrier::Jd => "JD",
            Carrier::Jt => "JT",
            Carrier::Deppon => "DEPPON",
            Carrier::ChinaPost => "CHINA_POST",
        }
    }

    pub fn parse(s: &str) -> Option<Carrier> {
        Carrier::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The carrier's code on a marketplace: Taobao's `company_code` (as listed by
    /// `taobao.logistics.companies.get`), and the lowercase pinyin codes Doudian
    /// (`/order/logisticsCompanyList`) and Xiaohongshu (`common.getExpressCompanyList`) use,
    /// which are also kuaidi100's. `None` for own channels: nothing to report there.
    pub const fn platform_code(self, channel: ChannelType) -> Option<&'static str> {
        match channel {
            ChannelType::Taobao => Some(match self {
                Carrier::Sf => "SF",
                Carrier::Zto => "ZTO",
                Carrier::Yto => "YTO",
                Carrier::Sto => "STO",
                Carrier::Yunda => "YUNDA",
                Carrier::Ems => "EMS",
                Carrier::Jd => "JD",
                Carrier::Jt => "JTSD",
                Carrier::Deppon => "DBKD",
                Carrier::ChinaPost => "POSTB",
            }),
            ChannelType::Douyin | ChannelType::Xiaohongshu => Some(match self {
                Carrier::Sf => "shunfeng",
                Carrier::Zto => "zhongtong",
                Carrier::Yto => "yuantong",
                Carrier::Sto => "shentong",
                Carrier::Yunda => "yunda",
                Carrier::Ems => "ems",
                Carrier::Jd => "jd",
                Carrier::Jt => "jtexpress",
                Carrier::Deppon => "debangkuaidi",
                Carrier::ChinaPost => "youzhengguonei",
            }),
            ChannelType::WechatMini | ChannelType::AlipayMini | ChannelType::H5 => None,
        }
    }
}

/// A tracking number as the carrier prints it: 6-40 ASCII letters, digits or dashes, kept
/// upper-case (carriers and platforms compare them that way).
pub fn tracking_number(raw: &str) -> Result<String, InvalidInput> {
    let t = raw.trim();
    if !(6..=40).contains(&t.len()) {
        return Err(InvalidInput {
            field: "trackingNumber",
            message: "a tracking number has 6 to 40 characters".into(),
        });
    }
    if !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(InvalidInput {
            field: "trackingNumber",
            message: "a tracking number has only letters, digits and dashes".into(),
        });
    }
    Ok(t.to_ascii_uppercase())
}

/// One line of an order as a parcel leaves: refunded lines never ship, the rest has shipped
/// when its parcel (this one or an earlier one) has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShipLine {
    pub refunded: bool,
    pub shipped: bool,
}

/// The order's status once the lines marked `shipped` are on their way: SHIPPED when every
/// line that is not refunded has shipped, PARTIALLY_SHIPPED when only some have, `None` when
/// none has (nothing to change).
pub fn status_after_shipping(lines: &[ShipLine]) -> Option<OrderStatus> {
    let open: Vec<&ShipLine> = lines.iter().filter(|l| !l.refunded).collect();
    let shipped = open.iter().filter(|l| l.shipped).count();
    match shipped {
        0 => None,
        n if n == open.len() => Some(OrderStatus::Shipped),
        _ => Some(OrderStatus::PartiallyShipped),
    }
}

/// Whether an order may go out in a parcel: paid and not yet (fully) shipped, and covered by the
/// pool (a short order is fixed in the inventory, or split, first). The refusal completes
/// "order … ".
pub fn check_shippable(status: OrderStatus, stock: StockState) -> Result<(), String> {
    if !(status.unshipped() || status == OrderStatus::PartiallyShipped) {
        return Err(format!("is {}; only paid orders ship", status.as_str()));
    }
    if stock == StockState::Short {
        return Err(
            "is short of stock: correct the inventory (or split the order) before shipping".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carriers_round_trip_and_have_a_code_on_every_marketplace() {
        for c in Carrier::ALL {
            assert_eq!(Carrier::parse(c.as_str()), Some(c));
            for ch in [
                ChannelType::Taobao,
                ChannelType::Douyin,
                ChannelType::Xiaohongshu,
            ] {
                assert!(c.platform_code(ch).is_some_and(|s| !s.is_empty()));
            }
            assert_eq!(c.platform_code(ChannelType::H5), None);
        }
        assert_eq!(Carrier::parse("sf"), None);
        assert_eq!(Carrier::Zto.platform_code(ChannelType::Taobao), Some("ZTO"));
        assert_eq!(
            Carrier::Zto.platform_code(ChannelType::Douyin),
            Some("zhongtong")
        );
    }

    #[test]
    fn tracking_numbers_are_checked_and_normalised() {
        assert_eq!(tracking_number(" sf1234567890 ").unwrap(), "SF1234567890");
        assert_eq!(tracking_number("JT-0001-22").unwrap(), "JT-0001-22");
        assert_eq!(
            tracking_number("12345").unwrap_err().field,
            "trackingNumber"
        );
        assert!(tracking_number(&"9".repeat(41)).is_err());
        assert!(tracking_number("SF 123456").is_err());
        assert!(tracking_number("SF123456'; DROP").is_err());
        assert!(tracking_number("顺丰123456").is_err());
    }

    #[test]
    fn an_order_ships_in_full_only_when_every_open_line_has() {
        let l = |refunded, shipped| ShipLine { refunded, shipped };
        assert_eq!(status_after_shipping(&[l(false, false)]), None);
        assert_eq!(
            status_after_shipping(&[l(false, true)]),
            Some(OrderStatus::Shipped)
        );
        assert_eq!(
            status_after_shipping(&[l(false, true), l(false, false)]),
            Some(OrderStatus::PartiallyShipped)
        );
        // A refunded line does not hold the order back.
        assert_eq!(
            status_after_shipping(&[l(false, true), l(true, false)]),
            Some(OrderStatus::Shipped)
        );
        assert_eq!(status_after_shipping(&[l(true, false)]), None);
    }

    #[test]
    fn only_paid_covered_orders_ship() {
        use OrderStatus::*;
        for s in [Paid, Processing, PartiallyShipped] {
            assert_eq!(check_shippable(s, StockState::Reserved), Ok(()));
        }
        for s in [PendingPayment, Shipped, Completed, Cancelled] {
            assert!(check_shippable(s, StockState::Reserved).is_err(), "{s:?}");
        }
        assert!(
            check_shippable(Paid, StockState::Short)
                .unwrap_err()
                .contains("short of stock")
        );
    }
}
