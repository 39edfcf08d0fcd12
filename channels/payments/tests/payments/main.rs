//! Integration tests of uphub-payments: the clients against the mock platforms, the verifiers
//! against hand-built and SDK-built messages, and compatibility with the public Python SDKs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod alipay;
mod common;
mod mock;
mod sdk;
mod wechatpay;
