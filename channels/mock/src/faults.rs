//! Fault injection: a seeded RNG per platform decides each API call's fate, and a throttle
//! answer bans the app for `ban_seconds` (later calls are refused until it runs out).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::types::{FaultStats, Faults, Platform};

/// What the injector decided for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    None,
    /// Answer with this HTTP status and a plain body.
    Http(u16),
    /// The platform's throttling answer; the app is banned for this many more seconds.
    Throttle {
        ban_left_secs: u64,
    },
    /// Sleep this long, then answer normally.
    Delay(Duration),
}

pub(crate) struct FaultState {
    seed: u64,
    faults: [Faults; 3],
    rngs: [StdRng; 3],
    bans: HashMap<(Platform, String), Instant>,
    pub stats: [FaultStats; 3],
}

fn rng_for(seed: u64, p: Platform) -> StdRng {
    StdRng::seed_from_u64(seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(p.idx() as u64 + 1)))
}

impl FaultState {
    pub fn new(seed: u64) -> Self {
        FaultState {
            seed,
            faults: [Faults::default(); 3],
            rngs: Platform::ALL.map(|p| rng_for(seed, p)),
            bans: HashMap::new(),
            stats: [FaultStats::default(); 3],
        }
    }

    /// Sets a platform's faults and restarts its RNG from the seed, so the same sequence of
    /// calls meets the same faults. Bans already running keep running.
    pub fn set(&mut self, p: Platform, f: Faults) {
        let clamp = |r: f64| {
            if r.is_finite() {
                r.clamp(0.0, 1.0)
            } else {
                0.0
            }
        };
        self.faults[p.idx()] = Faults {
            error_5xx_rate: clamp(f.error_5xx_rate),
            throttle_rate: clamp(f.throttle_rate),
            timeout_rate: clamp(f.timeout_rate),
            ..f
        };
        self.rngs[p.idx()] = rng_for(self.seed, p);
    }

    pub fn get(&self, p: Platform) -> Faults {
        self.faults[p.idx()]
    }

    pub fn decide(&mut self, p: Platform, app_key: &str, now: Instant) -> Fault {
        let i = p.idx();
        self.stats[i].calls += 1;
        let ban_key = (p, app_key.to_string());
        if let Some(until) = self.bans.get(&ban_key) {
            if *until > now {
                self.stats[i].refused_banned += 1;
                let left = until.saturating_duration_since(now);
                return Fault::Throttle {
                    ban_left_secs: left.as_millis().div_ceil(1000) as u64,
                };
            }
            self.bans.remove(&ban_key);
        }
        let f = self.faults[i];
        if f.error_5xx_rate + f.throttle_rate + f.timeout_rate <= 0.0 {
            return Fault::None;
        }
        let rng = &mut self.rngs[i];
        let r: f64 = rng.r#gen();
        if r < f.error_5xx_rate {
            self.stats[i].error_5xx += 1;
            let status = if p == Platform::Taobao || rng.r#gen::<bool>() {
                502
            } else {
                503
            };
            return Fault::Http(status);
        }
        if r < f.error_5xx_rate + f.throttle_rate {
            self.stats[i].throttled += 1;
            if f.ban_seconds > 0 {
                self.bans
                    .insert(ban_key, now + Duration::from_secs(u64::from(f.ban_seconds)));
            }
            return Fault::Throttle {
                ban_left_secs: u64::from(f.ban_seconds),
            };
        }
        if r < f.error_5xx_rate + f.throttle_rate + f.timeout_rate {
            self.stats[i].timeouts += 1;
            return Fault::Delay(Duration::from_millis(f.timeout_ms));
        }
        Fault::None
    }
}

/// `5xx=0.2,throttle=0.05,timeout=0.02,ban=2,timeout_ms=15000`, optionally per platform
/// (`taobao.5xx=0.3`). Returns the faults of every platform, starting from `base`.
pub(crate) fn parse_spec(spec: &str, base: Faults) -> anyhow::Result<[Faults; 3]> {
    let mut out = [base; 3];
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("fault `{part}` is not key=value"))?;
        let (targets, key): (Vec<Platform>, &str) = match key.split_once('.') {
            Some((p, k)) => (
                vec![Platform::parse(p).ok_or_else(|| anyhow::anyhow!("unknown platform {p}"))?],
                k,
            ),
            None => (Platform::ALL.to_vec(), key),
        };
        for p in targets {
            let f = &mut out[p.idx()];
            match key {
                "5xx" => f.error_5xx_rate = value.parse()?,
                "throttle" => f.throttle_rate = value.parse()?,
                "timeout" => f.timeout_rate = value.parse()?,
                "ban" => f.ban_seconds = value.parse()?,
                "timeout_ms" => f.timeout_ms = value.parse()?,
                other => anyhow::bail!(
                    "unknown fault `{other}` (5xx, throttle, timeout, ban, timeout_ms)"
                ),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_global_and_per_platform_keys() {
        let base = Faults {
            ban_seconds: 2,
            timeout_ms: 100,
            ..Faults::default()
        };
        let f = parse_spec("5xx=0.2,throttle=0.05,xhs.timeout=0.5", base).unwrap_or([base; 3]);
        assert_eq!(f[0].error_5xx_rate, 0.2);
        assert_eq!(f[2].timeout_rate, 0.5);
        assert_eq!(f[1].timeout_rate, 0.0);
        assert_eq!(f[1].ban_seconds, 2);
        assert!(parse_spec("nonsense=1", base).is_err());
    }

    #[test]
    fn the_same_seed_meets_the_same_faults() {
        let f = Faults {
            error_5xx_rate: 0.3,
            throttle_rate: 0.1,
            ..Faults::default()
        };
        let run = || {
            let mut s = FaultState::new(7);
            s.set(Platform::Douyin, f);
            let now = Instant::now();
            (0..200)
                .map(|_| s.decide(Platform::Douyin, "k", now))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
