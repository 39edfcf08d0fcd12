//! Use cases. Only services open transactions, call domain rules, persist and write the outbox.

pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod buyers;
pub mod catalog;
pub mod catalog_cache;
pub mod channel_push;
pub mod channel_sync;
pub mod checkout;
pub mod config;
pub mod consumer;
pub mod core;
pub mod demo;
pub mod error;
pub mod fulfillment;
pub mod holds;
pub mod identity;
pub mod inventory;
pub mod mailer;
pub mod media;
pub mod notifications;
pub mod orders;
pub mod outbox;
pub mod page;
pub mod payments;
pub mod pii;
pub mod pubsub;
pub mod ratelimit;
pub mod reservation;
pub mod seckill;
pub mod shipping;
pub mod staff;
pub mod stock_cache;
pub mod stock_reservations;

pub use crate::core::Core;
pub use error::{ServiceError, ServiceResult};
