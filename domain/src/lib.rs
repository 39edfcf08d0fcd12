//! Pure business rules of UpHub: no I/O, no framework types.

pub mod error;
pub mod gid;
pub mod identity;
pub mod inventory;
pub mod pii;
pub mod rate;
