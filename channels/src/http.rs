//! What every adapter shares: one HTTP client with a per-request timeout, the retry policy
//! (announced bans honoured, exponential back-off with jitter for outages), and the small readers
//! the adapters use to pull typed values out of platform JSON without panicking.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use serde_json::Value;
use uphub_domain::order::ChannelOrder;

use crate::{ChannelError, Window};

/// Timeouts and retry limits of one adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConfig {
    /// The whole request: connect, send, read the answer.
    pub timeout: Duration,
    /// Calls per operation, the first one included.
    pub max_attempts: u32,
    /// The first back-off after an outage (5xx, timeout); doubled per attempt.
    pub backoff_start: Duration,
    /// The first back-off after a throttle that announced no ban time (Doudian 60000,
    /// Xiaohongshu -9013); doubled per attempt. Longer than `backoff_start`: those limits are
    /// per second or longer, and an early retry only meets the same ban again.
    pub throttle_backoff_start: Duration,
    /// The longest back-off between two attempts.
    pub backoff_cap: Duration,
    /// The longest announced ban the adapter sleeps through. A longer ban (TOP's daily quota
    /// announces hours) is handed to the caller at once, so it can reschedule instead of holding
    /// a worker and hitting the ban again.
    pub max_ban_wait: Duration,
    /// One more trusted root (PEM) besides the public web PKI the platforms use: a private
    /// gateway in front of them, or a test server.
    pub extra_root_pem: Option<&'static str>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_attempts: 6,
            backoff_start: Duration::from_millis(100),
            throttle_backoff_start: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(5),
            max_ban_wait: Duration::from_secs(60),
            extra_root_pem: None,
        }
    }
}

/// The margin added to an announced ban: the platform counts whole seconds.
const BAN_MARGIN: Duration = Duration::from_secs(1);

/// The `N` of TOP's "This ban will last for N more seconds".
pub(crate) fn parse_ban_seconds(message: &str) -> Option<u64> {
    const MARK: &str = "last for ";
    let at = message.find(MARK)? + MARK.len();
    let digits: String = message[at..]
        .chars()
        .skip_while(|c| *c == ' ')
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The back-off before attempt `attempt + 1` after `attempt` failed ones (1-based): doubling from
/// `start`, capped, then "equal jitter" (`jitter` in [0, 1) picks a point in the upper half) so
/// that shops throttled together do not come back together.
pub(crate) fn backoff(start: Duration, cap: Duration, attempt: u32, jitter: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(30);
    let full = start.saturating_mul(1u32 << doublings).min(cap);
    let half = full / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// How long to wait before trying again after `err` on attempt `attempt` (1-based), or `None`
/// when the error is final: not transient, attempts spent, or a ban longer than we wait out.
pub(crate) fn retry_delay(
    config: &HttpConfig,
    err: &ChannelError,
    attempt: u32,
    jitter: f64,
) -> Option<Duration> {
    if attempt >= config.max_attempts {
        return None;
    }
    match err {
        ChannelError::RateLimited { retry_after } if !retry_after.is_zero() => {
            let wait = *retry_after + BAN_MARGIN;
            (wait <= config.max_ban_wait).then_some(wait)
        }
        ChannelError::RateLimited { .. } => Some(backoff(
            config.throttle_backoff_start,
            config.backoff_cap,
            attempt,
            jitter,
        )),
        ChannelError::Unavailable(_) => Some(backoff(
            config.backoff_start,
            config.backoff_cap,
            attempt,
            jitter,
        )),
        ChannelError::Auth(_) | ChannelError::Rejected { .. } | ChannelError::Protocol(_) => None,
    }
}

/// Runs `op` until it succeeds, fails for good, or the attempts are spent (a client of its own).
#[cfg(test)]
pub(crate) async fn retrying<T, F, Fut>(
    config: &HttpConfig,
    what: &str,
    op: F,
) -> Result<T, ChannelError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ChannelError>>,
{
    Http::new(*config)?.retrying(what, op).await
}

/// A throttle closes the gate for every call of one adapter: calls in flight side by side must
/// not each meet the ban (and each sleep their own doubling back-off past its end).
#[derive(Debug, Default)]
struct Gate {
    until: Option<tokio::time::Instant>,
    /// Throttles in a row with no success between them: the next closing lasts longer.
    strikes: u32,
}

/// One adapter's client.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    pub(crate) client: reqwest::Client,
    pub(crate) config: HttpConfig,
    gate: std::sync::Arc<std::sync::Mutex<Gate>>,
}

impl Http {
    pub(crate) fn new(config: HttpConfig) -> Result<Self, ChannelError> {
        // HTTPS through rustls with the ring provider and the webpki roots (the workspace's
        // reqwest features): every platform endpoint is https.
        let mut builder = reqwest::Client::builder().timeout(config.timeout);
        if let Some(pem) = config.extra_root_pem {
            let root = reqwest::Certificate::from_pem(pem.as_bytes())
                .map_err(|e| ChannelError::Unavailable(format!("extra root certificate: {e}")))?;
            builder = builder.add_root_certificate(root);
        }
        let client = builder
            .build()
            .map_err(|e| ChannelError::Unavailable(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            client,
            config,
            gate: Default::default(),
        })
    }

    fn gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `op` until it succeeds, fails for good, or the attempts are spent; every attempt
    /// first waits for the adapter's gate. `op` builds its request afresh each time, so
    /// timestamps and signatures are current on every attempt.
    pub(crate) async fn retrying<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, ChannelError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ChannelError>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let until = self.gate().until;
            if let Some(until) = until {
                tokio::time::sleep_until(until).await;
            }
            let err = match op().await {
                Ok(v) => {
                    self.gate().strikes = 0;
                    return Ok(v);
                }
                Err(e) => e,
            };
            let Some(wait) = retry_delay(&self.config, &err, attempt, rand::random::<f64>()) else {
                return Err(err);
            };
            tracing::warn!(call = what, attempt, ?wait, error = %err, "platform call failed; retrying");
            match &err {
                ChannelError::RateLimited { retry_after } => {
                    let now = tokio::time::Instant::now();
                    let mut g = self.gate();
                    if g.until.is_none_or(|u| u <= now) {
                        // A fresh throttle, not one more of the calls already in flight.
                        g.strikes += 1;
                    }
                    let wait = if retry_after.is_zero() {
                        backoff(
                            self.config.throttle_backoff_start,
                            self.config.backoff_cap,
                            g.strikes,
                            1.0,
                        )
                    } else {
                        wait
                    };
                    g.until = Some(g.until.map_or(now + wait, |u| u.max(now + wait)));
                }
                _ => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Sends one request. Transport failures and 5xx are `Unavailable`, 429 is `RateLimited`;
    /// any other answer comes back with its status for the platform's own error format.
    pub(crate) async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, String), ChannelError> {
        let response = request.send().await.map_err(|e| transport_error(&e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|h| h.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok());
        let body = response.text().await.map_err(|e| transport_error(&e))?;
        if status.is_server_error() {
            return Err(ChannelError::Unavailable(format!(
                "HTTP {status}: {}",
                snippet(&body)
            )));
        }
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(ChannelError::RateLimited {
                retry_after: Duration::from_secs(retry_after.unwrap_or(0)),
            });
        }
        Ok((status, body))
    }
}

fn transport_error(e: &reqwest::Error) -> ChannelError {
    if e.is_builder() {
        ChannelError::Protocol(format!("cannot build the request: {e}"))
    } else if e.is_timeout() {
        ChannelError::Unavailable(format!("timed out: {e}"))
    } else {
        ChannelError::Unavailable(format!("transport: {e}"))
    }
}

/// The start of a body, for error messages.
pub(crate) fn snippet(body: &str) -> String {
    const MAX: usize = 200;
    let mut s: String = body.chars().take(MAX).collect();
    if body.chars().nth(MAX).is_some() {
        s.push('…');
    }
    s
}

/// Parses an answer body as JSON; a non-JSON answer is a protocol error naming the status.
pub(crate) fn parse_json(status: reqwest::StatusCode, body: &str) -> Result<Value, ChannelError> {
    serde_json::from_str(body).map_err(|e| {
        ChannelError::Protocol(format!("HTTP {status}, not JSON ({e}): {}", snippet(body)))
    })
}

// ---- Reading platform JSON -------------------------------------------------------------------

/// `v[key]`, with JSON null read as absent.
pub(crate) fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

/// A string or number field as text (platforms send ids either way).
pub(crate) fn text(v: &Value, key: &str) -> Option<String> {
    match field(v, key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Like [`text`], with an empty string read as absent.
pub(crate) fn non_empty(v: &Value, key: &str) -> Option<String> {
    text(v, key).filter(|s| !s.is_empty())
}

pub(crate) fn req_text(v: &Value, key: &str, what: &str) -> Result<String, ChannelError> {
    non_empty(v, key).ok_or_else(|| missing(what, key))
}

/// An integer field given as a number or a numeric string.
pub(crate) fn int(v: &Value, key: &str) -> Option<i64> {
    match field(v, key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub(crate) fn req_int(v: &Value, key: &str, what: &str) -> Result<i64, ChannelError> {
    match field(v, key) {
        None => Err(missing(what, key)),
        Some(_) => int(v, key)
            .ok_or_else(|| ChannelError::Protocol(format!("{what}: {key} is not an integer"))),
    }
}

/// A non-negative integer amount in fen.
pub(crate) fn fen(v: &Value, key: &str, what: &str) -> Result<i64, ChannelError> {
    let n = req_int(v, key, what)?;
    if n < 0 {
        return Err(ChannelError::Protocol(format!("{what}: {key} is negative")));
    }
    Ok(n)
}

pub(crate) fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    match field(v, key) {
        Some(Value::Array(a)) => a,
        _ => &[],
    }
}

pub(crate) fn missing(what: &str, key: &str) -> ChannelError {
    ChannelError::Protocol(format!("{what}: missing {key}"))
}

/// A quantity that must fit an `i32` and be positive.
pub(crate) fn quantity(v: &Value, key: &str, what: &str) -> Result<i32, ChannelError> {
    let n = req_int(v, key, what)?;
    i32::try_from(n)
        .ok()
        .filter(|q| *q > 0)
        .ok_or_else(|| ChannelError::Protocol(format!("{what}: {key} {n} is not a quantity")))
}

// ---- Time windows and results ----------------------------------------------------------------

/// The window in whole seconds: start rounded down, end up. Platforms filter by the second; a
/// widened window may repeat an order in the next one (harmless) but never skips one.
pub(crate) fn whole_seconds(w: Window) -> (i64, i64) {
    let start = w.start.timestamp();
    let end = w.end.timestamp() + i64::from(w.end.nanosecond() > 0);
    (start, end)
}

/// Splits `[start, end)` into consecutive windows of at most `max`.
pub(crate) fn split_window(w: Window, max: TimeDelta) -> Vec<Window> {
    let mut out = Vec::new();
    let mut start = w.start;
    while start < w.end {
        let end = (start + max).min(w.end);
        out.push(Window { start, end });
        start = end;
    }
    out
}

/// Unix seconds as UTC.
pub(crate) fn from_unix(secs: i64, what: &str) -> Result<DateTime<Utc>, ChannelError> {
    DateTime::from_timestamp(secs, 0)
        .ok_or_else(|| ChannelError::Protocol(format!("{what}: time {secs} out of range")))
}

/// Orders fetched across pages can repeat (an order modified while we page moves between pages):
/// one entry per order, at its first position, holding the newest snapshot (later fetch on a tie).
pub(crate) fn dedupe_newest(orders: Vec<ChannelOrder>) -> Vec<ChannelOrder> {
    let mut out: Vec<ChannelOrder> = Vec::with_capacity(orders.len());
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for o in orders {
        match at.get(&o.platform_order_id) {
            Some(&i) => {
                if o.modified_at >= out[i].modified_at {
                    out[i] = o;
                }
            }
            None => {
                at.insert(o.platform_order_id.clone(), out.len());
                out.push(o);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_ban_message_gives_its_seconds() {
        assert_eq!(
            parse_ban_seconds("This ban will last for 3 more seconds"),
            Some(3)
        );
        assert_eq!(
            parse_ban_seconds("App Call Limited. This ban will last for 71 more seconds"),
            Some(71)
        );
        assert_eq!(
            parse_ban_seconds("This ban will last for  more seconds"),
            None
        );
        assert_eq!(parse_ban_seconds("App Call Limited"), None);
        assert_eq!(parse_ban_seconds(""), None);
    }

    #[test]
    fn back_off_doubles_from_100ms_to_a_5s_cap_with_jitter_in_the_upper_half() {
        let c = HttpConfig::default();
        let b = |a, j| backoff(c.backoff_start, c.backoff_cap, a, j);
        let full: Vec<u128> = (1..=8).map(|a| b(a, 1.0).as_millis()).collect();
        assert_eq!(full, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        let low: Vec<u128> = (1..=8).map(|a| b(a, 0.0).as_millis()).collect();
        assert_eq!(low, [50, 100, 200, 400, 800, 1600, 2500, 2500]);
        assert_eq!(b(40, 1.0), Duration::from_secs(5));
        assert_eq!(b(0, 1.0), Duration::from_millis(100));
    }

    #[test]
    fn an_announced_ban_is_slept_through_plus_a_second_unless_it_is_too_long() {
        let c = HttpConfig::default();
        let ban = |s| ChannelError::RateLimited {
            retry_after: Duration::from_secs(s),
        };
        assert_eq!(
            retry_delay(&c, &ban(3), 1, 0.5),
            Some(Duration::from_secs(4))
        );
        assert_eq!(
            retry_delay(&c, &ban(59), 1, 0.5),
            Some(Duration::from_secs(60))
        );
        assert_eq!(retry_delay(&c, &ban(3600), 1, 0.5), None);
        // No announced time: back-off from 1 s (1, 2, 4, 5, 5 s before jitter).
        let unannounced: Vec<u128> = (1..=5)
            .map(|a| retry_delay(&c, &ban(0), a, 1.0).unwrap().as_millis())
            .collect();
        assert_eq!(unannounced, [1000, 2000, 4000, 5000, 5000]);
        assert_eq!(retry_delay(&c, &ban(0), 6, 1.0), None);
    }

    #[test]
    fn outages_back_off_and_only_transient_errors_are_retried_within_the_attempts() {
        let c = HttpConfig::default();
        let down = ChannelError::Unavailable("502".into());
        assert_eq!(
            retry_delay(&c, &down, 1, 1.0),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            retry_delay(&c, &down, 5, 1.0),
            Some(Duration::from_millis(1600))
        );
        assert_eq!(retry_delay(&c, &down, 6, 1.0), None);
        for final_err in [
            ChannelError::Auth("x".into()),
            ChannelError::Protocol("x".into()),
            ChannelError::Rejected {
                code: "41".into(),
                message: "x".into(),
            },
        ] {
            assert_eq!(retry_delay(&c, &final_err, 1, 0.5), None);
        }
    }

    #[tokio::test]
    async fn a_throttle_closes_the_gate_for_every_call_of_the_adapter() {
        let http = Http::new(HttpConfig {
            throttle_backoff_start: Duration::from_millis(300),
            ..HttpConfig::default()
        })
        .unwrap();
        let t0 = tokio::time::Instant::now();
        // The first call is throttled once (no announced ban) and then succeeds.
        let mut first = true;
        let a = http
            .retrying("a", || {
                let throttled = std::mem::replace(&mut first, false);
                async move {
                    if throttled {
                        Err(ChannelError::RateLimited {
                            retry_after: Duration::ZERO,
                        })
                    } else {
                        Ok(tokio::time::Instant::now())
                    }
                }
            })
            .await
            .unwrap();
        assert!(a - t0 >= Duration::from_millis(300), "{:?}", a - t0);
        // The gate is open again: the next call goes at once, and a success resets the strikes.
        let b = http
            .retrying("b", || async {
                Ok::<_, ChannelError>(tokio::time::Instant::now())
            })
            .await
            .unwrap();
        assert!(b - a < Duration::from_millis(100));
        assert_eq!(http.gate().strikes, 0);
        // A call that starts while another's throttle holds the gate waits for it too.
        let http2 = http.clone();
        let throttler = tokio::spawn(async move {
            let mut n = 0;
            http2
                .retrying("c", || {
                    n += 1;
                    let throttled = n == 1;
                    async move {
                        if throttled {
                            Err(ChannelError::RateLimited {
                                retry_after: Duration::ZERO,
                            })
                        } else {
                            Ok(())
                        }
                    }
                })
                .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let start = tokio::time::Instant::now();
        let d = http
            .retrying("d", || async {
                Ok::<_, ChannelError>(tokio::time::Instant::now())
            })
            .await
            .unwrap();
        assert!(d - start >= Duration::from_millis(200), "{:?}", d - start);
        throttler.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn the_retry_loop_stops_after_the_configured_attempts() {
        let c = HttpConfig {
            max_attempts: 3,
            backoff_start: Duration::from_millis(1),
            ..HttpConfig::default()
        };
        let mut calls = 0;
        let r: Result<(), _> = retrying(&c, "t", || {
            calls += 1;
            async { Err(ChannelError::Unavailable("down".into())) }
        })
        .await;
        assert_eq!(r, Err(ChannelError::Unavailable("down".into())));
        assert_eq!(calls, 3);
    }

    #[test]
    fn windows_split_into_consecutive_pieces_and_round_outwards_to_seconds() {
        let t = |s: i64| DateTime::from_timestamp(s, 0).unwrap();
        let w = Window {
            start: t(0),
            end: t(4000),
        };
        let parts = split_window(w, TimeDelta::minutes(30));
        assert_eq!(
            parts,
            vec![
                Window {
                    start: t(0),
                    end: t(1800)
                },
                Window {
                    start: t(1800),
                    end: t(3600)
                },
                Window {
                    start: t(3600),
                    end: t(4000)
                },
            ]
        );
        assert!(
            split_window(
                Window {
                    start: t(5),
                    end: t(5)
                },
                TimeDelta::minutes(30)
            )
            .is_empty()
        );
        let odd = Window {
            start: DateTime::from_timestamp(10, 500).unwrap(),
            end: DateTime::from_timestamp(20, 1).unwrap(),
        };
        assert_eq!(whole_seconds(odd), (10, 21));
    }

    #[test]
    fn json_readers_accept_numbers_or_strings_and_refuse_garbage() {
        let v = serde_json::json!({"a": 12, "b": "34", "c": "x", "d": null, "e": "", "f": -1});
        assert_eq!(text(&v, "a").as_deref(), Some("12"));
        assert_eq!(int(&v, "b"), Some(34));
        assert!(req_int(&v, "c", "t").is_err());
        assert!(req_int(&v, "d", "t").is_err());
        assert_eq!(non_empty(&v, "e"), None);
        assert!(fen(&v, "f", "t").is_err());
        assert!(quantity(&v, "f", "t").is_err());
        assert_eq!(quantity(&v, "a", "t"), Ok(12));
    }
}
