//! Transactional outbox and its relay. An event is written in the transaction of the change;
//! the relay publishes it to RabbitMQ with publisher confirms and only then marks it published.
//! A relay that dies between publish and mark publishes again: consumers deduplicate by id.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};
use sea_orm::{ActiveModelTrait, ConnectionTrait, DbBackend, Set, Statement, TransactionTrait};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uphub_entities::outbox;
use uphub_tenants::TenantTx;
use uuid::Uuid;

use crate::{Core, ServiceResult};

/// The envelope every message carries on the bus.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub topic: String,
    pub payload: Value,
    pub created_at: DateTime<Utc>,
}

/// Records `topic` with `payload` in the caller's transaction.
pub async fn enqueue(
    core: &Core,
    tx: &TenantTx,
    topic: &str,
    payload: Value,
) -> ServiceResult<Uuid> {
    let id = Uuid::now_v7();
    outbox::ActiveModel {
        tenant_id: Set(tx.tenant().0),
        id: Set(id),
        topic: Set(topic.to_string()),
        payload: Set(payload),
        created_at: Set(core.now().into()),
        published_at: Set(None),
        attempts: Set(0),
    }
    .insert(&**tx)
    .await?;
    Ok(id)
}

/// Fault injection for tests: stop after publishing a batch and before marking it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RelayFaults {
    pub die_after_publish: bool,
}

/// Declares the instance's topic exchange (idempotent).
pub async fn declare_exchange(channel: &lapin::Channel, core: &Core) -> anyhow::Result<()> {
    channel
        .exchange_declare(
            core.exchange().as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .context("declaring events exchange")?;
    Ok(())
}

/// Publishes one envelope with confirm; returns when the broker has acknowledged it.
pub async fn publish_envelope(
    channel: &lapin::Channel,
    exchange: &str,
    routing_key: &str,
    env: &Envelope,
    attempts: u32,
) -> anyhow::Result<()> {
    let body = serde_json::to_vec(env)?;
    let mut headers = FieldTable::default();
    headers.insert("x-attempts".into(), AMQPValue::LongUInt(attempts));
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default()
                .with_message_id(env.id.to_string().into())
                .with_content_type("application/json".into())
                .with_delivery_mode(2)
                .with_headers(headers),
        )
        .await
        .context("publish")?
        .await
        .context("publisher confirm")?;
    if confirm.is_nack() {
        anyhow::bail!("broker nacked message {}", env.id);
    }
    Ok(())
}

/// Publishes up to `batch` unpublished events. Returns how many were published.
pub async fn relay_once(
    core: &Core,
    channel: &lapin::Channel,
    batch: u64,
    faults: RelayFaults,
) -> anyhow::Result<usize> {
    // The relay works across tenants, so it runs as the owner role (not in a TenantTx).
    let tx = core.db.begin().await?;
    let rows = tx
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT tenant_id, id, topic, payload, created_at FROM outbox
             WHERE published_at IS NULL ORDER BY created_at, id LIMIT $1 FOR UPDATE SKIP LOCKED",
            [(batch as i64).into()],
        ))
        .await?;
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(0);
    }
    let exchange = core.exchange();
    let mut ids = Vec::with_capacity(rows.len());
    for row in &rows {
        let env = Envelope {
            tenant_id: row.try_get("", "tenant_id")?,
            id: row.try_get("", "id")?,
            topic: row.try_get("", "topic")?,
            payload: row.try_get("", "payload")?,
            created_at: row
                .try_get::<chrono::DateTime<chrono::FixedOffset>>("", "created_at")?
                .with_timezone(&Utc),
        };
        publish_envelope(channel, &exchange, &env.topic, &env, 0).await?;
        ids.push(env.id);
    }
    if faults.die_after_publish {
        anyhow::bail!(
            "injected fault: relay died after publishing {} events",
            ids.len()
        );
    }
    tx.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "UPDATE outbox SET published_at = now(), attempts = attempts + 1 WHERE id = ANY($1)",
        [ids.clone().into()],
    ))
    .await?;
    tx.commit().await?;
    Ok(ids.len())
}

/// The relay loop of `uphub worker`: polls, publishes, backs off on errors, stops on shutdown.
pub async fn run_relay(
    core: Core,
    faults: RelayFaults,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let channel = core.amqp.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    declare_exchange(&channel, &core).await?;
    let mut backoff = Duration::from_millis(100);
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        match relay_once(&core, &channel, 200, faults).await {
            Ok(n) if n > 0 => {
                backoff = Duration::from_millis(100);
                continue;
            }
            Ok(_) => backoff = Duration::from_millis(100),
            Err(e) => {
                if faults.die_after_publish {
                    return Err(e);
                }
                tracing::warn!(error = %e, "outbox relay failed; backing off");
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(if backoff > Duration::from_millis(100) { backoff } else { Duration::from_millis(50) }) => {}
            _ = shutdown.changed() => {}
        }
    }
}
