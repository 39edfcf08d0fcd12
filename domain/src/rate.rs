//! Leaky-bucket arithmetic for query-cost budgets. The Redis Lua script in services/ratelimit
//! implements the same rule atomically; this is the reference the tests hold it to.

/// A bucket that leaks `rate_per_sec` cost units per second and holds at most `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub rate_per_sec: f64,
    pub burst: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    /// Admitted; `remaining` budget after charging.
    Allowed { level: f64, remaining: f64 },
    /// Refused; retry after this many milliseconds.
    Limited { level: f64, retry_after_ms: u64 },
}

impl Bucket {
    /// Leak since `last_ms`, then try to add `cost`.
    pub fn admit(self, level: f64, last_ms: u64, now_ms: u64, cost: f64) -> Admission {
        let elapsed = now_ms.saturating_sub(last_ms) as f64 / 1000.0;
        let level = (level - elapsed * self.rate_per_sec).max(0.0);
        if level + cost <= self.burst {
            let level = level + cost;
            Admission::Allowed {
                level,
                remaining: self.burst - level,
            }
        } else {
            let over = level + cost - self.burst;
            let retry_after_ms = ((over / self.rate_per_sec) * 1000.0).ceil().max(1.0) as u64;
            Admission::Limited {
                level,
                retry_after_ms,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_admitted_then_refused_then_leaks_back() {
        let b = Bucket {
            rate_per_sec: 10.0,
            burst: 100.0,
        };
        let Admission::Allowed { level, remaining } = b.admit(0.0, 0, 0, 100.0) else {
            panic!("first burst must pass")
        };
        assert_eq!((level, remaining), (100.0, 0.0));
        let Admission::Limited { retry_after_ms, .. } = b.admit(level, 0, 0, 5.0) else {
            panic!("must be limited")
        };
        assert_eq!(retry_after_ms, 500);
        assert!(matches!(
            b.admit(level, 0, 500, 5.0),
            Admission::Allowed { .. }
        ));
    }

    #[test]
    fn a_single_request_costlier_than_the_burst_is_always_refused() {
        let b = Bucket {
            rate_per_sec: 10.0,
            burst: 50.0,
        };
        assert!(matches!(
            b.admit(0.0, 0, 10_000_000, 51.0),
            Admission::Limited { .. }
        ));
    }
}
