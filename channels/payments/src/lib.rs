//! WeChat Pay v3 and Alipay: signing, verification, callbacks, and their mock servers.
//!
//! - [`wechatpay`]: `Authorization` signing, `Wechatpay-*` response/callback verification
//!   (platform keys by serial, 5-minute window), AEAD_AES_256_GCM callback decryption, a client
//!   for JSAPI prepay, query, close and refunds.
//! - [`alipay`]: RSA2 request signing, response verification over the raw `<method>_response`
//!   text, notify verification, a client for `alipay.trade.create/query/refund/close`.
//! - [`mock`]: both platforms on one axum router, for tests and local development.
//! - Buyer identity: [`miniprogram`] (WeChat code2Session, getPhoneNumber, cached access token),
//!   [`alipay_oauth`] (`alipay.system.oauth.token`), [`sms`] (a signed SMS provider API), their
//!   errors in [`identity_error`] and their mock in [`identity_mock`].
//!
//! Money is integer fen throughout; Alipay's yuan strings are converted by [`money`].

pub mod alipay;
pub mod alipay_oauth;
pub mod error;
pub mod identity_error;
pub mod identity_mock;
pub mod keys;
pub mod miniprogram;
pub mod mock;
pub mod money;
pub mod sms;
pub mod wechatpay;

pub use error::{ERROR_CODES, PayError, Platform};
pub use keys::{Clock, FixedClock, PrivateKey, PublicKey, SystemClock};
