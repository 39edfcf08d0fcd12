//! Doudian order messages: POSTed to the shop's webhook in the background, signed with
//! `event-sign`, retried with doubling back-off until the receiver answers `{"code":0}`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use uphub_channels::sign::doudian_event_sign;

use crate::state::PushJob;
use crate::types::PushStats;
use crate::wire::int;

const MAX_DELAY: Duration = Duration::from_secs(30);

#[derive(Default)]
pub(crate) struct PushCounters {
    attempts: AtomicU64,
    delivered: AtomicU64,
    abandoned: AtomicU64,
}

impl PushCounters {
    pub fn snapshot(&self) -> PushStats {
        PushStats {
            attempts: self.attempts.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            abandoned: self.abandoned.load(Ordering::Relaxed),
        }
    }
}

/// Takes jobs off the queue and delivers each in its own task, so one slow receiver never
/// holds up the others (or the API).
pub(crate) async fn dispatcher(
    mut rx: UnboundedReceiver<PushJob>,
    counters: Arc<PushCounters>,
    base: Duration,
    max_attempts: u32,
) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "doudian push client failed to build; pushes are dropped");
            return;
        }
    };
    while let Some(job) = rx.recv().await {
        tokio::spawn(deliver(
            client.clone(),
            job,
            counters.clone(),
            base,
            max_attempts.max(1),
        ));
    }
}

async fn deliver(
    client: reqwest::Client,
    job: PushJob,
    counters: Arc<PushCounters>,
    base: Duration,
    max_attempts: u32,
) {
    let sign = doudian_event_sign(&job.app_key, &job.app_secret, job.body.as_bytes());
    let mut delay = base;
    for attempt in 1..=max_attempts {
        counters.attempts.fetch_add(1, Ordering::Relaxed);
        let sent = client
            .post(&job.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("event-sign", &sign)
            .header("app-id", &job.app_key)
            .body(job.body.clone())
            .send()
            .await;
        let accepted = match sent {
            Ok(resp) if resp.status().is_success() => resp
                .json::<serde_json::Value>()
                .await
                .is_ok_and(|v| int(v.get("code")) == Some(0)),
            _ => false,
        };
        if accepted {
            counters.delivered.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if attempt < max_attempts {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_DELAY);
        }
    }
    tracing::warn!(url = %job.url, "doudian push given up after {max_attempts} attempts");
    counters.abandoned.fetch_add(1, Ordering::Relaxed);
}
