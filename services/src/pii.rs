//! Per-tenant data keys: created at signup, wrapped by the master key, cached unwrapped.

use anyhow::Context;
use sea_orm::{ActiveModelTrait, EntityTrait, Set};
use uphub_domain::pii::DataKey;
use uphub_entities::tenant_key;
use uphub_tenants::{TenantId, TenantTx};

use crate::{Core, ServiceResult};

/// Creates and stores the tenant's data key inside the signup transaction.
pub async fn create_data_key(core: &Core, tx: &TenantTx) -> ServiceResult<DataKey> {
    let dek = DataKey::generate();
    let tenant = tx.tenant();
    tenant_key::ActiveModel {
        tenant_id: Set(tenant.0),
        wrapped_dek: Set(dek.wrap(&core.master_key, tenant.0.as_bytes())),
        created_at: Set(core.now().into()),
    }
    .insert(&**tx)
    .await?;
    cache(core, tenant, &dek);
    Ok(dek)
}

/// The tenant's data key, unwrapped once per process.
pub async fn data_key(core: &Core, tx: &TenantTx) -> ServiceResult<DataKey> {
    let tenant = tx.tenant();
    if let Some(dek) = core.deks.lock().ok().and_then(|m| m.get(&tenant).cloned()) {
        return Ok(dek);
    }
    let row = tenant_key::Entity::find_by_id(tenant.0)
        .one(&**tx)
        .await?
        .context("tenant has no data key")?;
    let dek = DataKey::unwrap(&row.wrapped_dek, &core.master_key, tenant.0.as_bytes())
        .map_err(|e| anyhow::anyhow!("unwrapping data key of {tenant}: {e}"))?;
    cache(core, tenant, &dek);
    Ok(dek)
}

/// The tenant's data key given its wrapped form (already read by the caller's query).
pub fn data_key_from_wrapped(
    core: &Core,
    tenant: TenantId,
    wrapped: &[u8],
) -> ServiceResult<DataKey> {
    if let Some(dek) = core.deks.lock().ok().and_then(|m| m.get(&tenant).cloned()) {
        return Ok(dek);
    }
    let dek = DataKey::unwrap(wrapped, &core.master_key, tenant.0.as_bytes())
        .map_err(|e| anyhow::anyhow!("unwrapping data key of {tenant}: {e}"))?;
    cache(core, tenant, &dek);
    Ok(dek)
}

fn cache(core: &Core, tenant: TenantId, dek: &DataKey) {
    if let Ok(mut m) = core.deks.lock() {
        m.insert(tenant, dek.clone());
    }
}

/// AAD binding a ciphertext to its tenant, table and column, so values cannot be swapped.
pub fn aad(tenant: TenantId, column: &str) -> Vec<u8> {
    let mut v = tenant.0.as_bytes().to_vec();
    v.extend_from_slice(column.as_bytes());
    v
}
