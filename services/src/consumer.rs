//! The consumer framework: each consumer has its own queue bound to its topics, applies an event
//! at most once per event id (a processed_events row written in the handler's transaction),
//! retries failures with exponential back-off through a delay queue, and after the last attempt
//! parks the message in a dead-letter queue and in `dead_letters`, from where it can be replayed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set, Statement,
};
use uphub_domain::identity::Permission;
use uphub_entities::dead_letter;
use uphub_tenants::{RequestCtx, TenantId, TenantTx};
use uuid::Uuid;

use crate::audit::require;
use crate::outbox::{Envelope, publish_envelope};
use crate::page::{Page, PageArgs};
use crate::{Core, ServiceError, ServiceResult};

pub const MAX_ATTEMPTS: u32 = 5;

/// One consumer: a name (its queue), the topics it takes, and the effect of one event.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn topics(&self) -> &'static [&'static str];
    /// Applies the event. Database effects go through `tx`, which also records the event as
    /// processed; an error rolls both back and schedules a retry.
    async fn handle(&self, core: &Core, tx: &TenantTx, event: &Envelope) -> anyhow::Result<()>;
    /// Runs after the event's transaction committed (live notifications and the like).
    async fn after_commit(&self, _core: &Core, _event: &Envelope) {}
    /// Events handled side by side by one consumer (1: strictly one after another). Handlers
    /// that allow more serialize what must be serialized themselves (e.g. an advisory lock).
    fn concurrency(&self) -> usize {
        1
    }
}

/// Back-off before attempt `n` (1-based): 200 ms, 400 ms, 800 ms, … capped at 30 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((200u64 << attempt.saturating_sub(1).min(8)).min(30_000))
}

fn retry_queue(core: &Core, name: &str) -> String {
    format!("{}.retry", core.queue(name))
}

fn dlq(core: &Core, name: &str) -> String {
    format!("{}.dlq", core.queue(name))
}

fn queue_args(core: &Core) -> FieldTable {
    let mut args = FieldTable::default();
    if let Some(ms) = core.cfg.queue_expires_ms {
        args.insert("x-expires".into(), AMQPValue::LongUInt(ms));
    }
    args
}

/// Declares the consumer's queue, its delay queue and its dead-letter queue.
pub async fn declare(
    core: &Core,
    channel: &lapin::Channel,
    handler: &dyn Handler,
) -> anyhow::Result<()> {
    crate::outbox::declare_exchange(channel, core).await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let main = core.queue(handler.name());
    channel
        .queue_declare(main.as_str().into(), durable, queue_args(core))
        .await?;
    for topic in handler.topics() {
        channel
            .queue_bind(
                main.as_str().into(),
                core.exchange().as_str().into(),
                (*topic).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    // Expired messages in the delay queue dead-letter straight back to the main queue.
    let mut retry_args = queue_args(core);
    retry_args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    retry_args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(main.as_str().into()),
    );
    channel
        .queue_declare(
            retry_queue(core, handler.name()).as_str().into(),
            durable,
            retry_args,
        )
        .await?;
    channel
        .queue_declare(
            dlq(core, handler.name()).as_str().into(),
            durable,
            queue_args(core),
        )
        .await?;
    Ok(())
}

/// Runs `handler` until shutdown.
pub async fn run(
    core: Core,
    handler: Arc<dyn Handler>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let channel = core.amqp.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    declare(&core, &channel, handler.as_ref()).await?;
    channel.basic_qos(32, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            core.queue(handler.name()).as_str().into(),
            format!("{}-{}", handler.name(), Uuid::new_v4().simple())
                .as_str()
                .into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let limit = handler.concurrency().max(1);
    let mut in_flight = futures_util::stream::FuturesUnordered::new();
    loop {
        // Full: finish one before taking the next delivery (the prefetch bounds the rest).
        if in_flight.len() >= limit {
            tokio::select! {
                done = in_flight.next() => {
                    if let Some(r) = done {
                        r?;
                    }
                    continue;
                }
                _ = shutdown.changed() => return Ok(()),
            }
        }
        let delivery = tokio::select! {
            d = consumer.next() => d,
            Some(r) = in_flight.next(), if !in_flight.is_empty() => {
                r?;
                continue;
            }
            _ = shutdown.changed() => return Ok(()),
        };
        let Some(delivery) = delivery else {
            anyhow::bail!("consumer {} stream ended", handler.name());
        };
        let delivery = delivery.context("delivery")?;
        in_flight.push(deliver(&core, &channel, handler.as_ref(), delivery));
    }
}

/// Handles one delivery: applied, scheduled for a retry, or dead-lettered; then acknowledged.
async fn deliver(
    core: &Core,
    channel: &lapin::Channel,
    handler: &dyn Handler,
    delivery: lapin::message::Delivery,
) -> anyhow::Result<()> {
    let attempts = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-attempts").cloned())
        .and_then(|v| match v {
            AMQPValue::LongUInt(n) => Some(n),
            AMQPValue::LongLongInt(n) => Some(n as u32),
            AMQPValue::LongInt(n) => Some(n as u32),
            _ => None,
        })
        .unwrap_or(0);
    match serde_json::from_slice::<Envelope>(&delivery.data) {
        Err(e) => {
            // Unparseable: nothing to retry. Park the raw bytes on the DLQ and move on.
            tracing::error!(consumer = handler.name(), error = %e, "malformed message parked");
            let _ = channel
                .basic_publish(
                    "".into(),
                    dlq(core, handler.name()).as_str().into(),
                    Default::default(),
                    &delivery.data,
                    lapin::BasicProperties::default(),
                )
                .await;
        }
        Ok(env) => {
            if let Err(e) = process(core, handler, &env).await {
                let attempt = attempts + 1;
                tracing::warn!(consumer = handler.name(), event = %env.id, attempt, error = %format!("{e:#}"), "handler failed");
                if attempt >= MAX_ATTEMPTS {
                    dead_letter(
                        core,
                        channel,
                        handler.name(),
                        &env,
                        attempt,
                        &format!("{e:#}"),
                    )
                    .await?;
                } else {
                    schedule_retry(core, channel, handler.name(), &env, attempt).await?;
                }
            }
        }
    }
    delivery.ack(BasicAckOptions::default()).await?;
    Ok(())
}

/// Applies one event exactly once: the processed marker and the effect commit together.
pub async fn process(core: &Core, handler: &dyn Handler, env: &Envelope) -> anyhow::Result<()> {
    let tx = TenantTx::begin(&core.db, TenantId(env.tenant_id)).await?;
    let inserted = tx
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO processed_events (tenant_id, consumer, event_id) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            [env.tenant_id.into(), handler.name().into(), env.id.into()],
        ))
        .await?
        .rows_affected();
    if inserted == 0 {
        tracing::debug!(consumer = handler.name(), event = %env.id, "duplicate delivery skipped");
        tx.commit().await?;
        return Ok(());
    }
    handler.handle(core, &tx, env).await?;
    tx.commit().await?;
    handler.after_commit(core, env).await;
    Ok(())
}

async fn schedule_retry(
    core: &Core,
    channel: &lapin::Channel,
    name: &str,
    env: &Envelope,
    attempt: u32,
) -> anyhow::Result<()> {
    let body = serde_json::to_vec(env)?;
    let mut headers = FieldTable::default();
    headers.insert("x-attempts".into(), AMQPValue::LongUInt(attempt));
    channel
        .basic_publish(
            "".into(),
            retry_queue(core, name).as_str().into(),
            Default::default(),
            &body,
            lapin::BasicProperties::default()
                .with_message_id(env.id.to_string().into())
                .with_delivery_mode(2)
                .with_expiration(backoff(attempt).as_millis().to_string().as_str().into())
                .with_headers(headers),
        )
        .await?
        .await?;
    Ok(())
}

async fn dead_letter(
    core: &Core,
    channel: &lapin::Channel,
    name: &str,
    env: &Envelope,
    attempts: u32,
    error: &str,
) -> anyhow::Result<()> {
    publish_envelope(channel, "", &dlq(core, name), env, attempts).await?;
    let tx = TenantTx::begin(&core.db, TenantId(env.tenant_id)).await?;
    dead_letter::ActiveModel {
        tenant_id: Set(env.tenant_id),
        id: Set(Uuid::now_v7()),
        consumer: Set(name.to_string()),
        event_id: Set(env.id),
        topic: Set(env.topic.clone()),
        payload: Set(serde_json::to_value(env)?),
        error: Set(error.chars().take(2000).collect()),
        attempts: Set(attempts as i32),
        created_at: Set(core.now().into()),
        replayed_at: Set(None),
    }
    .insert(&*tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub type DeadLetter = dead_letter::Model;

pub async fn dead_letters(
    core: &Core,
    ctx: &RequestCtx,
    page: PageArgs,
) -> ServiceResult<Page<DeadLetter>> {
    require(ctx, Permission::EventsManage)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let mut q = dead_letter::Entity::find()
        .filter(dead_letter::Column::TenantId.eq(ctx.tenant.0))
        .order_by_desc(dead_letter::Column::Id)
        .limit(page.first + 1);
    if let Some(after) = page.after {
        q = q.filter(dead_letter::Column::Id.lt(after));
    }
    let rows = q.all(&*tx).await?;
    tx.commit().await?;
    Ok(Page::from_overfetch(rows, page.first))
}

/// Sends a dead letter back to its consumer's queue with a fresh attempt count.
pub async fn dead_letter_replay(
    core: &Core,
    ctx: &RequestCtx,
    id: Uuid,
) -> ServiceResult<DeadLetter> {
    require(ctx, Permission::EventsManage)?;
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let row = dead_letter::Entity::find_by_id((ctx.tenant.0, id))
        .one(&*tx)
        .await?
        .ok_or(ServiceError::NotFound)?;
    if row.replayed_at.is_some() {
        return Err(ServiceError::conflict(
            "id",
            "this dead letter was already replayed",
        ));
    }
    let env: Envelope = serde_json::from_value(row.payload.clone()).context("stored envelope")?;
    let channel = core.amqp.create_channel().await.context("amqp channel")?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .context("confirm select")?;
    publish_envelope(&channel, "", &core.queue(&row.consumer), &env, 0).await?;
    let _ = channel.close(200, "done".into()).await;
    let mut active: dead_letter::ActiveModel = row.into();
    active.replayed_at = Set(Some(core.now().into()));
    let row = active.update(&*tx).await?;
    crate::audit::record(
        core,
        &tx,
        ctx,
        "dead_letter.replayed",
        Some(id.to_string()),
        serde_json::json!({"consumer": row.consumer, "eventId": row.event_id}),
    )
    .await?;
    tx.commit().await?;
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(4), Duration::from_millis(1600));
        assert_eq!(backoff(40), Duration::from_millis(30_000));
    }
}
