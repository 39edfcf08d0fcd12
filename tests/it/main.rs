#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The one integration-test binary: every test runs against real Postgres, Redis and RabbitMQ,
//! each with its own database and namespace.

mod buyers;
mod catalog;
mod checkout;
mod events;
mod helpers;
mod identity;
mod isolation;
mod media;
mod orders;
mod orders_tenancy;
mod protection;
mod push;
mod seckill;
mod shipping;
mod stock;
