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
