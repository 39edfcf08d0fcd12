//! Storefront buyers: logins on the creator's own channels (WeChat / Alipay mini-program, SMS),
//! the signed-in buyer and their addresses, and the staff-side login settings.

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use uphub_services::ServiceError;
use uphub_services::buyers::{
    self as svc, AddressInput, AlipaySettingsInput, BuyerAddress as AddressRow, BuyerProfile,
    BuyerSession, LoginSettings, LoginSettingsInput, SmsSettingsInput, WechatSettingsInput,
};

use crate::caller::{UserError, authed, caller, core, decode_id, encode_id, field, user_errors};

/// A buyer of the store, as the buyer sees themself.
pub struct Buyer(BuyerProfile);

#[Object]
impl Buyer {
    async fn id(&self) -> ID {
        encode_id("Buyer", self.0.id)
    }
    /// e.g. `138****8000`; null until a phone is bound or used to sign in.
    async fn phone_masked(&self) -> Option<&str> {
        self.0.phone_masked.as_deref()
    }
    async fn nickname(&self) -> Option<&str> {
        self.0.nickname.as_deref()
    }
    /// Signed in with the store's WeChat mini-program at least once.
    async fn has_wechat(&self) -> bool {
        self.0.has_wechat
    }
    /// Signed in with the store's Alipay mini-program at least once.
    async fn has_alipay(&self) -> bool {
        self.0.has_alipay
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// The buyer's delivery addresses, default first.
    async fn addresses(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<BuyerAddress>> {
        let (core, rctx) = authed(ctx)?;
        // Addresses are read for the caller; a Buyer is only ever the caller, and stays so.
        if rctx.buyer_id() != Some(self.0.id) {
            return field(
                ctx,
                Err(ServiceError::forbidden(
                    "only a buyer can see their addresses",
                )),
            );
        }
        let rows = field(ctx, svc::buyer_addresses(core, rctx).await)?;
        Ok(rows.into_iter().map(BuyerAddress).collect())
    }
}

/// A delivery address, in clear for its own buyer.
pub struct BuyerAddress(AddressRow);

#[Object]
impl BuyerAddress {
    async fn id(&self) -> ID {
        encode_id("BuyerAddress", self.0.id)
    }
    async fn receiver_name(&self) -> &str {
        &self.0.receiver_name
    }
    /// Digits only, as normalized.
    async fn receiver_phone(&self) -> &str {
        &self.0.receiver_phone
    }
    async fn province(&self) -> &str {
        &self.0.province
    }
    async fn city(&self) -> &str {
        &self.0.city
    }
    async fn district(&self) -> &str {
        &self.0.district
    }
    /// Street, building and room.
    async fn detail(&self) -> &str {
        &self.0.detail
    }
    async fn is_default(&self) -> bool {
        self.0.is_default
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// The store's buyer-login credentials, without secrets. A null base URL means the platform's
/// production endpoint.
pub struct StorefrontLoginSettings(LoginSettings);

#[Object]
impl StorefrontLoginSettings {
    async fn wechat_configured(&self) -> bool {
        self.0.wechat_appid.is_some()
    }
    async fn wechat_app_id(&self) -> Option<&str> {
        self.0.wechat_appid.as_deref()
    }
    async fn wechat_base_url(&self) -> Option<&str> {
        self.0.wechat_base_url.as_deref()
    }
    async fn alipay_configured(&self) -> bool {
        self.0.alipay_app_id.is_some()
    }
    async fn alipay_app_id(&self) -> Option<&str> {
        self.0.alipay_app_id.as_deref()
    }
    async fn alipay_gateway_url(&self) -> Option<&str> {
        self.0.alipay_gateway_url.as_deref()
    }
    async fn sms_configured(&self) -> bool {
        self.0.sms_access_key_id.is_some()
    }
    async fn sms_base_url(&self) -> Option<&str> {
        self.0.sms_base_url.as_deref()
    }
    async fn sms_access_key_id(&self) -> Option<&str> {
        self.0.sms_access_key_id.as_deref()
    }
    async fn sms_sign_name(&self) -> Option<&str> {
        self.0.sms_sign_name.as_deref()
    }
    async fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.0.updated_at
    }
}

#[derive(Default)]
pub struct BuyersQuery;

#[Object]
impl BuyersQuery {
    /// The signed-in buyer (buyer tokens only; staff and API keys get FORBIDDEN).
    async fn buyer_me(&self, ctx: &Context<'_>) -> async_graphql::Result<Buyer> {
        let (core, rctx) = authed(ctx)?;
        field(ctx, svc::buyer_me(core, rctx).await).map(Buyer)
    }

    /// The signed-in buyer's delivery addresses, default first (buyer tokens only).
    async fn buyer_addresses(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<BuyerAddress>> {
        let (core, rctx) = authed(ctx)?;
        let rows = field(ctx, svc::buyer_addresses(core, rctx).await)?;
        Ok(rows.into_iter().map(BuyerAddress).collect())
    }

    /// The store's buyer-login settings, without secrets. CHANNEL_MANAGE.
    async fn storefront_login_settings(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<StorefrontLoginSettings> {
        let (core, rctx) = authed(ctx)?;
        field(ctx, svc::login_settings(core, rctx).await).map(StorefrontLoginSettings)
    }
}

/// A buyer's tokens: a short-lived access token and a single-use refresh token for
/// `buyerTokenRefresh` (a mini-program may also just sign in again silently).
#[derive(SimpleObject, Default)]
pub struct BuyerSessionPayload {
    pub access_token: Option<String>,
    /// Unix seconds when the access token expires.
    pub access_token_expires_at: Option<i64>,
    /// Single use: `buyerTokenRefresh` swaps it for a new pair; presenting a used one again
    /// ends every session since that login.
    pub refresh_token: Option<String>,
    pub buyer_id: Option<ID>,
    /// This login created the buyer.
    pub new_buyer: Option<bool>,
    pub user_errors: Vec<UserError>,
}

fn session_payload(r: (Option<BuyerSession>, Vec<UserError>)) -> BuyerSessionPayload {
    match r {
        (Some(s), errs) => BuyerSessionPayload {
            access_token: Some(s.access_token),
            access_token_expires_at: Some(s.access_expires_at),
            refresh_token: Some(s.refresh_token),
            buyer_id: Some(encode_id("Buyer", s.buyer_id)),
            new_buyer: Some(s.new_buyer),
            user_errors: errs,
        },
        (None, errs) => BuyerSessionPayload {
            user_errors: errs,
            ..Default::default()
        },
    }
}

#[derive(InputObject)]
pub struct BuyerLoginWechatInput {
    pub tenant_slug: String,
    /// The code from `wx.login`.
    pub code: String,
}

#[derive(SimpleObject, Default)]
pub struct BuyerLoginWechatPayload {
    #[graphql(flatten)]
    pub session: BuyerSessionPayload,
}

#[derive(InputObject)]
pub struct BuyerLoginAlipayInput {
    pub tenant_slug: String,
    /// The code from `my.getAuthCode`.
    pub code: String,
}

#[derive(SimpleObject, Default)]
pub struct BuyerLoginAlipayPayload {
    #[graphql(flatten)]
    pub session: BuyerSessionPayload,
}

#[derive(InputObject)]
pub struct BuyerSmsCodeSendInput {
    pub tenant_slug: String,
    /// A mainland China mobile number.
    pub phone: String,
}

#[derive(SimpleObject, Default)]
pub struct BuyerSmsCodeSendPayload {
    /// The code was sent. The same for every phone, whether or not it belongs to a buyer.
    pub sent: bool,
    /// Seconds before another code can be asked for this phone.
    pub resend_after_seconds: Option<i32>,
    /// Seconds the code stays valid.
    pub expires_in_seconds: Option<i32>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct BuyerLoginSmsInput {
    pub tenant_slug: String,
    pub phone: String,
    /// The 6-digit code from the SMS. Five wrong codes burn it.
    pub code: String,
}

#[derive(SimpleObject, Default)]
pub struct BuyerLoginSmsPayload {
    #[graphql(flatten)]
    pub session: BuyerSessionPayload,
}

#[derive(InputObject)]
pub struct BuyerPhoneBindInput {
    /// The code from the mini-program's phone-number button (`getPhoneNumber`).
    pub code: String,
}

#[derive(SimpleObject, Default)]
pub struct BuyerPhoneBindPayload {
    pub buyer: Option<Buyer>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct BuyerAddressCreateInput {
    pub receiver_name: String,
    pub receiver_phone: String,
    pub province: String,
    pub city: String,
    /// Empty for the few cities without districts.
    #[graphql(default)]
    pub district: String,
    pub detail: String,
    /// Make it the default address (the first address always is).
    #[graphql(default)]
    pub is_default: bool,
}

#[derive(SimpleObject, Default)]
pub struct BuyerAddressCreatePayload {
    pub address: Option<BuyerAddress>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct BuyerAddressDeleteInput {
    pub id: ID,
}

#[derive(SimpleObject, Default)]
pub struct BuyerAddressDeletePayload {
    pub deleted_id: Option<ID>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct WechatMiniProgramLoginInput {
    pub app_id: String,
    pub app_secret: String,
    /// Leave empty for `https://api.weixin.qq.com`; other URLs are refused in prod.
    pub base_url: Option<String>,
}

#[derive(InputObject)]
pub struct AlipayMiniProgramLoginInput {
    pub app_id: String,
    /// The application private key (PEM or the bare base64 of Alipay's key tool).
    pub app_private_key: String,
    /// The "Alipay public key" of the app.
    pub alipay_public_key: String,
    /// Leave empty for `https://openapi.alipay.com/gateway.do`; other URLs are refused in prod.
    pub gateway_url: Option<String>,
}

#[derive(InputObject)]
pub struct SmsProviderLoginInput {
    /// https in prod.
    pub base_url: String,
    pub access_key_id: String,
    pub access_key_secret: String,
    /// The sender signature shown in the message.
    pub sign_name: String,
}

/// Sections left out keep their stored values.
#[derive(InputObject)]
pub struct StorefrontLoginSettingsSetInput {
    pub wechat: Option<WechatMiniProgramLoginInput>,
    pub alipay: Option<AlipayMiniProgramLoginInput>,
    pub sms: Option<SmsProviderLoginInput>,
}

#[derive(SimpleObject, Default)]
pub struct StorefrontLoginSettingsSetPayload {
    pub settings: Option<StorefrontLoginSettings>,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct BuyerLogoutInput {
    /// The refresh token of this device's session: revoked with every token since its login.
    pub refresh_token: Option<String>,
}

#[derive(SimpleObject, Default)]
pub struct BuyerLogoutPayload {
    pub logged_out: bool,
    pub user_errors: Vec<UserError>,
}

#[derive(InputObject)]
pub struct BuyerTokenRefreshInput {
    /// A buyer refresh token from a buyer login or an earlier refresh (staff ones are refused).
    pub refresh_token: String,
    /// The store the client believes it is signed in to; when given it must be the token's.
    pub tenant_slug: Option<String>,
}

#[derive(SimpleObject, Default)]
pub struct BuyerTokenRefreshPayload {
    #[graphql(flatten)]
    pub session: BuyerSessionPayload,
}

#[derive(Default)]
pub struct BuyersMutation;

#[Object]
impl BuyersMutation {
    /// Signs a buyer in with a WeChat mini-program login code; creates the buyer on first login.
    async fn buyer_login_wechat(
        &self,
        ctx: &Context<'_>,
        input: BuyerLoginWechatInput,
    ) -> async_graphql::Result<BuyerLoginWechatPayload> {
        let r = svc::buyer_login_wechat(core(ctx)?, &input.tenant_slug, &input.code).await;
        Ok(BuyerLoginWechatPayload {
            session: session_payload(user_errors(ctx, r)?),
        })
    }

    /// Signs a buyer in with an Alipay mini-program auth code; creates the buyer on first login.
    async fn buyer_login_alipay(
        &self,
        ctx: &Context<'_>,
        input: BuyerLoginAlipayInput,
    ) -> async_graphql::Result<BuyerLoginAlipayPayload> {
        let r = svc::buyer_login_alipay(core(ctx)?, &input.tenant_slug, &input.code).await;
        Ok(BuyerLoginAlipayPayload {
            session: session_payload(user_errors(ctx, r)?),
        })
    }

    /// Exchanges a buyer refresh token for a new pair. Reusing a refresh token revokes every
    /// token since its login; a bad, expired, reused or staff token is UNAUTHENTICATED.
    async fn buyer_token_refresh(
        &self,
        ctx: &Context<'_>,
        input: BuyerTokenRefreshInput,
    ) -> async_graphql::Result<BuyerTokenRefreshPayload> {
        let c = caller(ctx)?;
        let r = svc::buyer_token_refresh(
            core(ctx)?,
            &c.request_id,
            Some(c.ip.clone()),
            &input.refresh_token,
            input.tenant_slug.as_deref(),
        )
        .await;
        Ok(BuyerTokenRefreshPayload {
            session: session_payload(user_errors(ctx, r)?),
        })
    }

    /// Texts a 6-digit login code (valid 5 minutes). Limited per phone and per client address.
    async fn buyer_sms_code_send(
        &self,
        ctx: &Context<'_>,
        input: BuyerSmsCodeSendInput,
    ) -> async_graphql::Result<BuyerSmsCodeSendPayload> {
        let c = caller(ctx)?;
        let r = svc::buyer_sms_code_send(core(ctx)?, &input.tenant_slug, &input.phone, &c.ip).await;
        let (sent, user_errors) = user_errors(ctx, r)?;
        Ok(BuyerSmsCodeSendPayload {
            sent: sent.is_some(),
            resend_after_seconds: sent
                .map(|s| i32::try_from(s.resend_after_secs).unwrap_or(i32::MAX)),
            expires_in_seconds: sent.map(|s| i32::try_from(s.expires_in_secs).unwrap_or(i32::MAX)),
            user_errors,
        })
    }

    /// Signs a buyer in with a phone and the code texted to it; creates the buyer on first login.
    async fn buyer_login_sms(
        &self,
        ctx: &Context<'_>,
        input: BuyerLoginSmsInput,
    ) -> async_graphql::Result<BuyerLoginSmsPayload> {
        let r =
            svc::buyer_login_sms(core(ctx)?, &input.tenant_slug, &input.phone, &input.code).await;
        Ok(BuyerLoginSmsPayload {
            session: session_payload(user_errors(ctx, r)?),
        })
    }

    /// Binds the phone WeChat verified (`getPhoneNumber`) to the signed-in buyer.
    async fn buyer_phone_bind(
        &self,
        ctx: &Context<'_>,
        input: BuyerPhoneBindInput,
    ) -> async_graphql::Result<BuyerPhoneBindPayload> {
        let (core, rctx) = authed(ctx)?;
        let r = svc::buyer_bind_phone(core, rctx, &input.code).await;
        let (buyer, user_errors) = user_errors(ctx, r)?;
        Ok(BuyerPhoneBindPayload {
            buyer: buyer.map(Buyer),
            user_errors,
        })
    }

    /// Adds a delivery address for the signed-in buyer.
    async fn buyer_address_create(
        &self,
        ctx: &Context<'_>,
        input: BuyerAddressCreateInput,
    ) -> async_graphql::Result<BuyerAddressCreatePayload> {
        let (core, rctx) = authed(ctx)?;
        let r = svc::buyer_address_create(
            core,
            rctx,
            AddressInput {
                receiver_name: input.receiver_name,
                receiver_phone: input.receiver_phone,
                province: input.province,
                city: input.city,
                district: input.district,
                detail: input.detail,
                is_default: input.is_default,
            },
        )
        .await;
        let (address, user_errors) = user_errors(ctx, r)?;
        Ok(BuyerAddressCreatePayload {
            address: address.map(BuyerAddress),
            user_errors,
        })
    }

    /// Deletes one of the signed-in buyer's addresses.
    /// Ends the buyer's session on this device: the access token stops working at once and the
    /// given refresh token's family is revoked. Buyer tokens only.
    async fn buyer_logout(
        &self,
        ctx: &Context<'_>,
        input: BuyerLogoutInput,
    ) -> async_graphql::Result<BuyerLogoutPayload> {
        let (core, rctx) = authed(ctx)?;
        let r = svc::buyer_logout(core, rctx, input.refresh_token.as_deref()).await;
        let (done, user_errors) = user_errors(ctx, r)?;
        Ok(BuyerLogoutPayload {
            logged_out: done.is_some(),
            user_errors,
        })
    }

    async fn buyer_address_delete(
        &self,
        ctx: &Context<'_>,
        input: BuyerAddressDeleteInput,
    ) -> async_graphql::Result<BuyerAddressDeletePayload> {
        let (core, rctx) = authed(ctx)?;
        let r = match decode_id("BuyerAddress", &input.id) {
            Ok(id) => svc::buyer_address_delete(core, rctx, id).await,
            Err(e) => Err(e),
        };
        let (deleted, user_errors) = user_errors(ctx, r)?;
        Ok(BuyerAddressDeletePayload {
            deleted_id: deleted.map(|id| encode_id("BuyerAddress", id)),
            user_errors,
        })
    }

    /// Stores the credentials buyers sign in with (secrets encrypted). CHANNEL_MANAGE.
    async fn storefront_login_settings_set(
        &self,
        ctx: &Context<'_>,
        input: StorefrontLoginSettingsSetInput,
    ) -> async_graphql::Result<StorefrontLoginSettingsSetPayload> {
        let (core, rctx) = authed(ctx)?;
        let input = LoginSettingsInput {
            wechat: input.wechat.map(|w| WechatSettingsInput {
                appid: w.app_id,
                secret: w.app_secret,
                base_url: w.base_url,
            }),
            alipay: input.alipay.map(|a| AlipaySettingsInput {
                app_id: a.app_id,
                app_private_key: a.app_private_key,
                alipay_public_key: a.alipay_public_key,
                gateway_url: a.gateway_url,
            }),
            sms: input.sms.map(|s| SmsSettingsInput {
                base_url: s.base_url,
                access_key_id: s.access_key_id,
                access_key_secret: s.access_key_secret,
                sign_name: s.sign_name,
            }),
        };
        let r = svc::login_settings_set(core, rctx, input).await;
        let (settings, user_errors) = user_errors(ctx, r)?;
        Ok(StorefrontLoginSettingsSetPayload {
            settings: settings.map(StorefrontLoginSettings),
            user_errors,
        })
    }
}
