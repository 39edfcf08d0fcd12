//! Consumers of identity events.

use anyhow::Context;
use uphub_tenants::TenantTx;
use uuid::Uuid;

use crate::Core;
use crate::consumer::Handler;
use crate::mailer::Mailer;
use crate::outbox::Envelope;

/// Sends the invitation e-mail of `staff.invited`.
pub struct InvitationMailer {
    pub mailer: Mailer,
}

#[async_trait::async_trait]
impl Handler for InvitationMailer {
    fn name(&self) -> &'static str {
        "invitation-mailer"
    }
    fn topics(&self) -> &'static [&'static str] {
        &["staff.invited"]
    }
    async fn handle(&self, core: &Core, tx: &TenantTx, ev: &Envelope) -> anyhow::Result<()> {
        let staff_id: Uuid =
            serde_json::from_value(ev.payload["staffId"].clone()).context("staffId")?;
        let cipher = ev.payload["tokenCipher"].as_str().context("tokenCipher")?;
        crate::staff::send_invitation(core, tx, &self.mailer, staff_id, cipher).await
    }
}

/// Welcomes a new tenant's owner and records that provisioning finished.
pub struct TenantProvisioner;

#[async_trait::async_trait]
impl Handler for TenantProvisioner {
    fn name(&self) -> &'static str {
        "tenant-provisioner"
    }
    fn topics(&self) -> &'static [&'static str] {
        &["tenant.created"]
    }
    async fn handle(&self, core: &Core, tx: &TenantTx, ev: &Envelope) -> anyhow::Result<()> {
        let ctx = uphub_tenants::RequestCtx::system(tx.tenant(), ev.id.to_string());
        crate::audit::record(
            core,
            tx,
            &ctx,
            "tenant.provisioned",
            None,
            ev.payload.clone(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    }
}

/// Upserts a batch of fetched marketplace orders (`channel.orders_fetched`).
#[derive(Default)]
pub struct OrderIngest {
    /// Live events of a handled message, published once its transaction committed.
    pending: std::sync::Mutex<std::collections::HashMap<Uuid, Vec<crate::orders::LiveOrderEvent>>>,
}

#[async_trait::async_trait]
impl Handler for OrderIngest {
    fn name(&self) -> &'static str {
        "order-ingest"
    }
    fn topics(&self) -> &'static [&'static str] {
        &[crate::orders::FETCHED_TOPIC]
    }
    /// Batches of different channels upsert side by side (one channel's are serialized by the
    /// advisory lock in `orders::ingest`).
    fn concurrency(&self) -> usize {
        4
    }
    async fn handle(&self, _core: &Core, tx: &TenantTx, ev: &Envelope) -> anyhow::Result<()> {
        let batch: crate::orders::FetchedBatch =
            serde_json::from_value(ev.payload.clone()).context("orders batch")?;
        let (stats, live) = crate::orders::ingest(tx, &batch)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        tracing::debug!(?stats, "orders ingested");
        if let Ok(mut p) = self.pending.lock() {
            p.insert(ev.id, live);
        }
        Ok(())
    }
    async fn after_commit(&self, core: &Core, ev: &Envelope) {
        let live = self
            .pending
            .lock()
            .ok()
            .and_then(|mut p| p.remove(&ev.id))
            .unwrap_or_default();
        crate::orders::publish_live(core, uphub_tenants::TenantId(ev.tenant_id), &live).await;
    }
}

/// Pushes a SKU's new available quantity to its marketplace listings (`inventory.available_changed`).
pub struct ChannelStockPush;

#[async_trait::async_trait]
impl Handler for ChannelStockPush {
    fn name(&self) -> &'static str {
        "channel-stock-push"
    }
    fn topics(&self) -> &'static [&'static str] {
        &["inventory.available_changed"]
    }
    async fn handle(&self, core: &Core, tx: &TenantTx, ev: &Envelope) -> anyhow::Result<()> {
        let sku: Uuid = serde_json::from_value(ev.payload["skuId"].clone()).context("skuId")?;
        let available = ev.payload["available"].as_i64().context("available")?;
        crate::channel_sync::push_available(core, tx, sku, available).await?;
        Ok(())
    }
}
