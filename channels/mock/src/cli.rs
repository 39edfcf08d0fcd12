//! `uphub mock-platforms [--listen ADDR] [--faults SPEC] [--seed N] [--shops FILE]
//! [--top-lists-always-arrays]`: the mock as its own process, driven through `/_mock`.

use anyhow::Context;

use crate::MockPlatforms;
use crate::faults::parse_spec;
use crate::types::{Faults, MockConfig, Platform, ShopSpec};

const USAGE: &str = "usage: mock-platforms [--listen 127.0.0.1:7300] [--seed N] \
[--faults 5xx=0.2,throttle=0.05,timeout=0.02,ban=2,timeout_ms=15000] [--shops shops.json] \
[--top-lists-always-arrays]";

/// Defaults for fault keys the spec leaves out.
const BASE_FAULTS: Faults = Faults {
    error_5xx_rate: 0.0,
    throttle_rate: 0.0,
    ban_seconds: 2,
    timeout_rate: 0.0,
    timeout_ms: 15_000,
};

struct Args {
    listen: String,
    seed: u64,
    faults: Option<String>,
    shops: Option<String>,
    always_arrays: bool,
}

fn parse_args(args: &[String]) -> anyhow::Result<Args> {
    let mut a = Args {
        listen: "127.0.0.1:7300".into(),
        seed: 0,
        faults: None,
        shops: None,
        always_arrays: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || -> anyhow::Result<String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag {
            "--listen" => a.listen = value()?,
            "--seed" => a.seed = value()?.parse().context("--seed must be a number")?,
            "--faults" => a.faults = Some(value()?),
            "--shops" => a.shops = Some(value()?),
            "--top-lists-always-arrays" => a.always_arrays = true,
            "mock-platforms" => {}
            "-h" | "--help" => anyhow::bail!("{USAGE}"),
            other => anyhow::bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    Ok(a)
}

/// Runs the mock until Ctrl-C. `args` are the arguments after the subcommand (a leading
/// `mock-platforms` is tolerated).
pub async fn run_cli(args: &[String]) -> anyhow::Result<()> {
    let a = parse_args(args)?;
    let faults = match &a.faults {
        Some(spec) => Some(parse_spec(spec, BASE_FAULTS)?),
        None => None,
    };
    let m = MockPlatforms::new(MockConfig {
        seed: a.seed,
        top_single_as_object: !a.always_arrays,
        ..MockConfig::default()
    });
    if let Some(f) = faults {
        for p in Platform::ALL {
            m.set_faults(Some(p), f[p.idx()]);
        }
    }
    if let Some(path) = &a.shops {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        let shops: Vec<ShopSpec> = serde_json::from_str(&text)
            .with_context(|| format!("{path}: a JSON array of shops"))?;
        for s in shops {
            m.add_shop(s);
        }
    }
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .with_context(|| format!("binding {}", a.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, seed = a.seed, "mock platforms listening");
    println!("mock platforms listening on http://{addr} (admin under /_mock)");
    axum::serve(listener, m.router())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving the mock platforms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_take_spaced_and_inline_values() {
        let args: Vec<String> = ["--listen", "0.0.0.0:1", "--seed=9", "--faults", "5xx=0.1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let a = parse_args(&args).ok();
        assert_eq!(a.as_ref().map(|a| a.listen.as_str()), Some("0.0.0.0:1"));
        assert_eq!(a.as_ref().map(|a| a.seed), Some(9));
        assert_eq!(a.and_then(|a| a.faults), Some("5xx=0.1".to_string()));
        assert!(parse_args(&["--bogus".to_string()]).is_err());
    }
}
