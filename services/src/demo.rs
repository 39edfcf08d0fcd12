//! `uphub demo`: a demo tenant to click around in. Idempotent.

use crate::identity::{SignupInput, tenant_by_slug, tenant_signup};
use crate::{Core, ServiceResult};

pub const DEMO_SLUG: &str = "demo";
pub const DEMO_EMAIL: &str = "owner@demo.uphub.local";
pub const DEMO_PASSWORD: &str = "demo-password-123";

/// Creates the demo tenant unless it exists; returns true when it was created now.
pub async fn seed(core: &Core) -> ServiceResult<bool> {
    if tenant_by_slug(core, DEMO_SLUG).await?.is_some() {
        return Ok(false);
    }
    let created = tenant_signup(
        core,
        None,
        "demo-seed",
        SignupInput {
            name: "Demo Creator Shop".into(),
            slug: DEMO_SLUG.into(),
            owner_email: DEMO_EMAIL.into(),
            owner_password: DEMO_PASSWORD.into(),
        },
    )
    .await;
    match created {
        Ok(_) => Ok(true),
        // Another `uphub demo` won the race: the tenant exists, which is all we wanted.
        Err(crate::ServiceError::Conflict { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}
