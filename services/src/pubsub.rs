//! Live events across gateway processes: publishers PUBLISH to a per-tenant Redis channel; each
//! process holds one pattern subscription and fans messages out to its local subscribers.

use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use tokio::sync::broadcast;
use uphub_tenants::TenantId;

use crate::Core;

#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<(String, String)>,
}

impl Hub {
    /// Starts the subscription loop; it reconnects after Redis failures.
    pub fn start(client: redis::Client, pattern: String) -> Hub {
        let (tx, _) = broadcast::channel(4096);
        let sender = tx.clone();
        tokio::spawn(async move {
            loop {
                match client.get_async_pubsub().await {
                    Ok(mut ps) => {
                        if let Err(e) = ps.psubscribe(&pattern).await {
                            tracing::warn!(error = %e, "psubscribe failed");
                        } else {
                            let mut stream = ps.on_message();
                            while let Some(msg) = stream.next().await {
                                let channel = msg.get_channel_name().to_string();
                                if let Ok(payload) = msg.get_payload::<String>() {
                                    let _ = sender.send((channel, payload));
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "pubsub connect failed"),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Hub { tx }
    }

    /// Messages on exactly `channel`.
    pub fn subscribe(
        &self,
        channel: String,
    ) -> impl futures_util::Stream<Item = String> + Send + use<> {
        let rx = self.tx.subscribe();
        futures_util::stream::unfold((rx, channel), |(mut rx, channel)| async move {
            loop {
                match rx.recv().await {
                    Ok((c, payload)) if c == channel => return Some((payload, (rx, channel))),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }
}

pub async fn publish(
    core: &Core,
    tenant: TenantId,
    topic: &str,
    payload: &str,
) -> redis::RedisResult<()> {
    let mut conn = core.redis.clone();
    let _: i64 = conn
        .publish(core.live_channel(tenant, topic), payload)
        .await?;
    Ok(())
}
