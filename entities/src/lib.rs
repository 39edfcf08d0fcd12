//! sea-orm entities, one module per table. Tenant tables carry `tenant_id` first in their key.

pub mod api_key;
pub mod audit_event;
pub mod dead_letter;
pub mod outbox;
pub mod refresh_token;
pub mod staff_user;
pub mod tenant;
pub mod tenant_key;

pub type Timestamp = chrono::DateTime<chrono::FixedOffset>;
