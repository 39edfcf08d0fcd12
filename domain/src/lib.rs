//! Pure business rules of UpHub: no I/O, no framework types.

pub mod catalog;
pub mod error;
pub mod gid;
pub mod identity;
pub mod inventory;
pub mod media;
pub mod money;
pub mod order;
pub mod pii;
pub mod rate;
pub mod shipping;
