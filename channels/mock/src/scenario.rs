//! The scenario driver: from a seed, plan every order's buyer, lines and lifecycle up front,
//! then play the plan out against the wall clock. The plan (and so the platform ids, which are
//! handed out in play order) depends only on the seed, the scenario and the registered shops.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::MockPlatforms;
use crate::types::{
    LineSpec, MockError, OrderEvent, OrderSpec, PerPlatform, Platform, Receiver, Scenario,
    ScenarioSku,
};
use crate::wire::token_hex;

const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭",
    "何", "高", "林", "罗", "欧阳",
];
const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟",
    "涛", "明", "超", "秀兰", "霞", "子涵", "浩然",
];
/// (province, city, districts); an empty city is a province-administered county-level unit.
const PLACES: &[(&str, &str, &[&str])] = &[
    (
        "浙江省",
        "杭州市",
        &["西湖区", "余杭区", "滨江区", "拱墅区"],
    ),
    (
        "广东省",
        "深圳市",
        &["南山区", "福田区", "宝安区", "龙岗区"],
    ),
    (
        "上海市",
        "上海市",
        &["浦东新区", "徐汇区", "静安区", "闵行区"],
    ),
    (
        "北京市",
        "北京市",
        &["朝阳区", "海淀区", "东城区", "丰台区"],
    ),
    (
        "四川省",
        "成都市",
        &["武侯区", "锦江区", "青羊区", "成华区"],
    ),
    (
        "江苏省",
        "南京市",
        &["鼓楼区", "玄武区", "江宁区", "建邺区"],
    ),
    ("湖北省", "武汉市", &["洪山区", "武昌区", "江汉区"]),
    ("海南省", "", &["琼海市", "儋州市"]),
];
const ROADS: &[&str] = &[
    "文一西路",
    "科技园南路",
    "人民路",
    "解放大道",
    "中山北路",
    "建国路",
    "天府大道",
    "学院路",
    "长江路",
    "滨江大道",
];
const PHONE_PREFIXES: &[&str] = &["138", "139", "150", "158", "186", "188", "135", "177"];

fn pick<'a, T>(rng: &mut StdRng, xs: &'a [T]) -> Option<&'a T> {
    xs.choose(rng)
}

fn street(rng: &mut StdRng) -> String {
    format!(
        "{}{}号{}栋{}室",
        pick(rng, ROADS).copied().unwrap_or("人民路"),
        rng.gen_range(1..=999),
        rng.gen_range(1..=30),
        rng.gen_range(101..=2_608)
    )
}

fn receiver(rng: &mut StdRng) -> Receiver {
    let (province, city, districts) = pick(rng, PLACES).copied().unwrap_or(PLACES[0]);
    Receiver {
        name: format!(
            "{}{}",
            pick(rng, SURNAMES).copied().unwrap_or("王"),
            pick(rng, GIVEN).copied().unwrap_or("伟")
        ),
        phone: format!(
            "{}{:08}",
            pick(rng, PHONE_PREFIXES).copied().unwrap_or("138"),
            rng.gen_range(0..100_000_000u32)
        ),
        province: province.into(),
        city: city.into(),
        district: pick(rng, districts).copied().unwrap_or_default().into(),
        address: street(rng),
    }
}

/// A buyer's account id on each platform (one person, three accounts).
fn buyer_ids(seed: u64, who: &str) -> [String; 3] {
    let s = seed.to_string();
    let t = token_hex(&["taobao", &s, who]);
    let d = token_hex(&["douyin", &s, who]);
    let x = token_hex(&["xhs", &s, who]);
    [
        format!("AAH{}", &t[..24]),
        format!("1@#{}", &d[..28]),
        x[..24].to_string(),
    ]
}

/// The buyer of `MockPlatforms::sell`: a generated person, fresh for every sale.
pub(crate) fn walk_in_buyer(seed: u64, n: u64, platform: Platform) -> (Receiver, String) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5e11 ^ n.wrapping_mul(0x9e37_79b9));
    let r = receiver(&mut rng);
    let ids = buyer_ids(seed, &format!("walk-in-{n}"));
    (r, ids[platform.idx()].clone())
}

fn default_skus(p: Platform) -> Vec<ScenarioSku> {
    (1..=5)
        .map(|i| {
            let (item, sku) = match p {
                Platform::Taobao => (format!("6{:011}", 10 + i), format!("5{:012}", 100 + i)),
                Platform::Douyin => (format!("3{:018}", 10 + i), format!("1{:015}", 100 + i)),
                Platform::Xiaohongshu => (
                    format!("64a{:021x}", 10 + i),
                    format!("64b{:021x}", 100 + i),
                ),
            };
            ScenarioSku {
                item_id: item,
                sku_id: sku,
                outer_sku_code: format!("SKU-{i:03}"),
                price_fen: 1_990 + 1_000 * i64::from(i),
            }
        })
        .collect()
}

fn carriers(p: Platform) -> &'static [&'static str] {
    match p {
        Platform::Taobao => &["YTO", "ZTO", "STO", "YUNDA", "SF"],
        Platform::Douyin => &["yuantong", "zhongtong", "shentong", "yunda", "shunfeng"],
        Platform::Xiaohongshu => &["yuantong", "zhongtong", "shentong", "yunda", "shunfeng"],
    }
}

pub(crate) enum Step {
    Create,
    Change(OrderEvent),
}

pub(crate) struct PlannedEvent {
    at_ms: u64,
    order: usize,
    step: Step,
}

pub(crate) struct Plan {
    pub orders: Vec<OrderSpec>,
    events: Vec<PlannedEvent>,
    pub changes: u64,
}

pub(crate) fn plan(s: &Scenario, shops: &PerPlatform<Vec<String>>) -> Result<Plan, MockError> {
    let frac = if s.shared_buyer_fraction.is_finite() {
        s.shared_buyer_fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    const MAX_ORDERS: u32 = 1_000_000;
    const MAX_DURATION_MS: u64 = 7 * 86_400_000;
    if s.buyers > MAX_ORDERS
        || Platform::ALL
            .iter()
            .any(|p| *s.orders_per_platform.get(*p) > MAX_ORDERS)
    {
        return Err(MockError::Invalid(format!(
            "at most {MAX_ORDERS} buyers and orders per platform"
        )));
    }
    if s.duration_ms > MAX_DURATION_MS {
        return Err(MockError::Invalid("duration_ms is at most 7 days".into()));
    }
    let mut rng = StdRng::seed_from_u64(s.seed);
    let active: Vec<Platform> = Platform::ALL
        .into_iter()
        .filter(|p| *s.orders_per_platform.get(*p) > 0)
        .collect();
    for p in &active {
        if shops.get(*p).is_empty() {
            return Err(MockError::Invalid(format!(
                "the scenario has {p} orders but no {p} shop is registered"
            )));
        }
    }

    // People: the first `shared` buy on every active platform, the rest on one platform each.
    let buyers = s.buyers as usize;
    let shared = ((buyers as f64) * frac).round() as usize;
    let mut people: Vec<(Receiver, [String; 3])> = (0..buyers)
        .map(|i| (receiver(&mut rng), buyer_ids(s.seed, &i.to_string())))
        .collect();
    let mut own: [Vec<usize>; 3] = Default::default();
    if !active.is_empty() {
        for (k, b) in (shared..buyers).enumerate() {
            own[active[k % active.len()].idx()].push(b);
        }
    }
    let mut assigned: [Vec<usize>; 3] = Default::default();
    for b in 0..shared.min(buyers) {
        for p in &active {
            if assigned[p.idx()].len() < *s.orders_per_platform.get(*p) as usize {
                assigned[p.idx()].push(b);
            }
        }
    }
    for p in &active {
        let want = *s.orders_per_platform.get(*p) as usize;
        let eligible: Vec<usize> = (0..shared.min(buyers))
            .chain(own[p.idx()].iter().copied())
            .collect();
        while assigned[p.idx()].len() < want {
            let b = match pick(&mut rng, &eligible) {
                Some(b) => *b,
                None => {
                    let i = people.len();
                    people.push((receiver(&mut rng), buyer_ids(s.seed, &i.to_string())));
                    i
                }
            };
            assigned[p.idx()].push(b);
        }
    }

    let dur = s.duration_ms;
    let mut orders = Vec::new();
    let mut events = Vec::new();
    let mut changes = 0u64;
    for p in &active {
        let skus = if s.skus.get(*p).is_empty() {
            default_skus(*p)
        } else {
            s.skus.get(*p).clone()
        };
        let shop_ids = shops.get(*p);
        for &b in &assigned[p.idx()] {
            let (person, ids) = &people[b];
            let n_lines = rng.gen_range(1..=skus.len().clamp(1, 3));
            let mut idx: Vec<usize> = (0..skus.len()).collect();
            idx.shuffle(&mut rng);
            let lines = idx
                .into_iter()
                .take(n_lines)
                .filter_map(|i| skus.get(i))
                .map(|k| LineSpec {
                    item_id: k.item_id.clone(),
                    sku_id: k.sku_id.clone(),
                    outer_sku_code: k.outer_sku_code.clone(),
                    title: format!("商品 {}", k.outer_sku_code),
                    quantity: rng.gen_range(1..=3),
                    price_fen: k.price_fen,
                })
                .collect();
            let shop_id = pick(&mut rng, shop_ids).cloned().unwrap_or_default();
            let post_fee_fen = *pick(&mut rng, &[0, 0, 0, 500, 800, 1_000]).unwrap_or(&0);
            let order = orders.len();
            orders.push(OrderSpec {
                platform: *p,
                shop_id,
                buyer_id: ids[p.idx()].clone(),
                receiver: person.clone(),
                lines,
                post_fee_fen,
                paid: false,
            });

            // The lifecycle: most pay; some cancel unpaid; of the paid some change address,
            // some are refunded before shipping, most ship and half of those complete.
            let mut steps = Vec::new();
            let r: f64 = rng.r#gen();
            if r < 0.08 {
                steps.push(OrderEvent::Cancel);
            } else if r >= 0.12 {
                steps.push(OrderEvent::Pay);
                if rng.gen_bool(0.10) {
                    steps.push(OrderEvent::ChangeAddress {
                        receiver: Receiver {
                            address: street(&mut rng),
                            ..person.clone()
                        },
                    });
                }
                let r2: f64 = rng.r#gen();
                if r2 < 0.10 {
                    steps.push(OrderEvent::Refund);
                } else if r2 < 0.75 {
                    steps.push(OrderEvent::Ship {
                        company_code: pick(&mut rng, carriers(*p))
                            .copied()
                            .unwrap_or("YTO")
                            .into(),
                        tracking_no: format!("YT{:013}", rng.gen_range(0..10_000_000_000_000u64)),
                        line_ids: Vec::new(),
                    });
                    if rng.gen_bool(0.5) {
                        steps.push(OrderEvent::Complete);
                    }
                }
            }
            let t0 = if dur == 0 {
                0
            } else {
                rng.gen_range(0..=dur / 10 * 6)
            };
            let mut times: Vec<u64> = steps
                .iter()
                .map(|_| rng.gen_range(t0..=dur.max(t0)))
                .collect();
            times.sort_unstable();
            events.push(PlannedEvent {
                at_ms: t0,
                order,
                step: Step::Create,
            });
            changes += steps.len() as u64;
            for (at_ms, e) in times.into_iter().zip(steps) {
                events.push(PlannedEvent {
                    at_ms,
                    order,
                    step: Step::Change(e),
                });
            }
        }
    }
    // Stable: an order's own steps keep their lifecycle order when their times tie.
    events.sort_by_key(|e| e.at_ms);
    Ok(Plan {
        orders,
        events,
        changes,
    })
}

/// Plays the plan: each event at its offset from the start, through the same calls a test
/// would make (so TMC messages and pushes follow).
pub(crate) async fn drive(m: MockPlatforms, plan: Plan) {
    let start = Instant::now();
    let mut ids: Vec<Option<String>> = vec![None; plan.orders.len()];
    for ev in plan.events {
        let due = start + Duration::from_millis(ev.at_ms);
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let Some(spec) = plan.orders.get(ev.order) else {
            continue;
        };
        match ev.step {
            Step::Create => match m.place_order(spec.clone()) {
                Ok(id) => {
                    if let Some(slot) = ids.get_mut(ev.order) {
                        *slot = Some(id);
                    }
                    m.scenario_mut().placed += 1;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "scenario order not placed");
                    m.scenario_mut().skipped += 1;
                }
            },
            Step::Change(event) => {
                let applied = match ids.get(ev.order).and_then(Option::as_ref) {
                    Some(id) => m.set_status(spec.platform, id, event).is_ok(),
                    None => false,
                };
                let mut p = m.scenario_mut();
                if applied {
                    p.changed += 1;
                } else {
                    p.skipped += 1;
                }
            }
        }
    }
    let mut p = m.scenario_mut();
    p.running = false;
    p.done = true;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shops() -> PerPlatform<Vec<String>> {
        PerPlatform {
            taobao: vec!["tb1".into()],
            douyin: vec!["dy1".into()],
            xiaohongshu: vec!["xhs1".into()],
        }
    }

    #[test]
    fn the_plan_depends_only_on_the_seed() {
        let s = Scenario {
            seed: 42,
            ..Scenario::default()
        };
        let a = plan(&s, &shops()).map(|p| (p.orders, p.changes)).ok();
        let b = plan(&s, &shops()).map(|p| (p.orders, p.changes)).ok();
        assert!(a.is_some());
        assert_eq!(a, b);
    }

    #[test]
    fn shared_buyers_order_on_every_platform_with_one_receiver() {
        let s = Scenario {
            seed: 3,
            buyers: 10,
            shared_buyer_fraction: 0.5,
            orders_per_platform: PerPlatform {
                taobao: 20,
                douyin: 20,
                xiaohongshu: 20,
            },
            ..Scenario::default()
        };
        let Ok(p) = plan(&s, &shops()) else {
            panic!("plan failed");
        };
        assert_eq!(p.orders.len(), 60);
        let on = |pl: Platform| -> std::collections::HashSet<Receiver> {
            p.orders
                .iter()
                .filter(|o| o.platform == pl)
                .map(|o| o.receiver.clone())
                .collect()
        };
        let common: Vec<_> = on(Platform::Taobao)
            .intersection(&on(Platform::Douyin))
            .cloned()
            .collect();
        assert!(common.len() >= 5, "{} shared receivers", common.len());
    }

    #[test]
    fn a_platform_with_orders_needs_a_shop() {
        let s = Scenario::default();
        let none = PerPlatform::default();
        assert!(plan(&s, &none).is_err());
    }
}
