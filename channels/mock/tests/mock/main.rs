//! The mock platforms seen from outside: raw HTTP calls signed with `uphub_channels::sign`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod douyin;
mod faults;
mod helpers;
mod malformed;
mod scenario;
mod taobao;
mod xhs;
