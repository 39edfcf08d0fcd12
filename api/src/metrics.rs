//! A small Prometheus registry: request counts and latency by route and status, GraphQL
//! operations by name, errors by code. Text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    operations: Mutex<BTreeMap<String, u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn observe_request(&self, route: &str, status: u16, elapsed: Duration) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route.to_string(), status)).or_default() += 1;
        }
        if let Ok(mut m) = self.latency.lock() {
            let h = m.entry(route.to_string()).or_default();
            let secs = elapsed.as_secs_f64();
            for (i, b) in BUCKETS.iter().enumerate() {
                if secs <= *b {
                    h.counts[i] += 1;
                }
            }
            h.sum += secs;
            h.count += 1;
        }
    }

    pub fn observe_operation(&self, name: &str) {
        // Operation names are client-chosen: cap their length and the number of series.
        let name: String = name.chars().take(64).collect();
        if let Ok(mut m) = self.operations.lock() {
            if m.len() < 500 || m.contains_key(&name) {
                *m.entry(name).or_default() += 1;
            } else {
                *m.entry("_other".into()).or_default() += 1;
            }
        }
    }

    pub fn observe_error(&self, code: &str) {
        if let Ok(mut m) = self.errors.lock() {
            *m.entry(code.chars().take(40).collect()).or_default() += 1;
        }
    }

    /// `extra`: (name, Prometheus type, value) of metrics kept elsewhere.
    pub fn render(&self, extra: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP uphub_http_requests_total HTTP requests by route and status."
        );
        let _ = writeln!(out, "# TYPE uphub_http_requests_total counter");
        if let Ok(m) = self.requests.lock() {
            for ((route, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "uphub_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                    escape(route)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP uphub_http_request_duration_seconds Request latency."
        );
        let _ = writeln!(out, "# TYPE uphub_http_request_duration_seconds histogram");
        if let Ok(m) = self.latency.lock() {
            for (route, h) in m.iter() {
                let r = escape(route);
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "uphub_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"{b}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "uphub_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    out,
                    "uphub_http_request_duration_seconds_sum{{route=\"{r}\"}} {}",
                    h.sum
                );
                let _ = writeln!(
                    out,
                    "uphub_http_request_duration_seconds_count{{route=\"{r}\"}} {}",
                    h.count
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP uphub_graphql_operations_total GraphQL operations by name."
        );
        let _ = writeln!(out, "# TYPE uphub_graphql_operations_total counter");
        if let Ok(m) = self.operations.lock() {
            for (name, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "uphub_graphql_operations_total{{operation=\"{}\"}} {n}",
                    escape(name)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP uphub_graphql_errors_total GraphQL errors by code."
        );
        let _ = writeln!(out, "# TYPE uphub_graphql_errors_total counter");
        if let Ok(m) = self.errors.lock() {
            for (code, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "uphub_graphql_errors_total{{code=\"{}\"}} {n}",
                    escape(code)
                );
            }
        }
        for (name, kind, v) in extra {
            let _ = writeln!(out, "# TYPE {name} {kind}\n{name} {v}");
        }
        out
    }
}
