//! Doudian order messages pushed to `POST /push/doudian/{tenant}/{connection}`. A push is only a
//! hint that something changed: it makes the connection due (durably, in Postgres) and the next
//! incremental pull fetches the orders, so a lost, late, replayed or duplicated push changes
//! nothing but how soon a change shows up.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use uphub_channels::doudian_push::{BadPush, parse_messages};
use uphub_channels::sign::{doudian_event_sign, same_signature};
use uphub_domain::catalog::ChannelType;
use uphub_domain::error::ErrorCode;
use uphub_tenants::{RequestCtx, TenantTx};
use uuid::Uuid;

use crate::channel_sync::{SETTLE_LAG, open_credentials};
use crate::{Core, ServiceError};

/// Doudian stamps messages in whole seconds, and our clock is not the platform's.
const STAMP_SLACK: Duration = Duration::from_millis(1500);

/// Why a push was refused. An unknown connection and a bad signature are the same answer, so
/// connection ids cannot be probed.
#[derive(Debug, thiserror::Error)]
pub enum PushRejected {
    #[error("unknown connection or invalid event-sign")]
    BadSignature,
    #[error("malformed message body: {0}")]
    BadBody(String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl PushRejected {
    pub fn code(&self) -> ErrorCode {
        match self {
            PushRejected::BadSignature => ErrorCode::Unauthenticated,
            PushRejected::BadBody(_) => ErrorCode::BadRequest,
            PushRejected::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The code in Doudian's own vocabulary (`code` of the answer; anything but 0 is retried):
    /// 40003 invalid platform parameter (`isv.signature-invalid`), 40004 invalid business
    /// parameter, 50001 platform failure.
    pub fn platform_code(&self) -> i64 {
        match self {
            PushRejected::BadSignature => 40003,
            PushRejected::BadBody(_) => 40004,
            PushRejected::Internal(_) => 50001,
        }
    }
}

impl From<ServiceError> for PushRejected {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Internal(e) => PushRejected::Internal(e),
            other => PushRejected::Internal(anyhow::anyhow!("{other}")),
        }
    }
}

impl From<BadPush> for PushRejected {
    fn from(e: BadPush) -> Self {
        PushRejected::BadBody(e.0)
    }
}

impl From<sea_orm::DbErr> for PushRejected {
    fn from(e: sea_orm::DbErr) -> Self {
        ServiceError::from(e).into()
    }
}

/// The signed parts of a push request.
pub struct DoudianPush<'a> {
    /// Header `event-sign`: MD5(app_key + raw body + app_secret), hex.
    pub event_sign: Option<&'a str>,
    /// Header `app-id`; when sent it must be the connection's app key.
    pub app_id: Option<&'a str>,
    pub body: &'a [u8],
}

/// Verifies and records a push for `connection` of `ctx.tenant`. Returns the number of order
/// messages for the connection's shop; when there is at least one, the connection is due by the
/// time those changes have settled, committed before this returns.
pub async fn doudian_push_receive(
    core: &Core,
    ctx: &RequestCtx,
    connection: Uuid,
    push: DoudianPush<'_>,
) -> Result<usize, PushRejected> {
    let tx = TenantTx::begin(&core.db, ctx.tenant).await?;
    let row = tx
        .query_one_raw(stmt(
            "SELECT c.credentials_ct, s.shop_id FROM channel_connections c
             JOIN sales_channels s ON s.tenant_id = c.tenant_id AND s.id = c.channel_id
             WHERE c.tenant_id = $1 AND c.channel_id = $2 AND s.type = $3",
            vec![
                ctx.tenant.0.into(),
                connection.into(),
                ChannelType::Douyin.as_str().into(),
            ],
        ))
        .await?;
    let creds = match row {
        Some(r) => {
            let ct: Vec<u8> = r.try_get("", "credentials_ct")?;
            let dek = crate::pii::data_key(core, &tx).await?;
            let mut creds = open_credentials(&dek, ctx.tenant, connection, &ct)?;
            creds.shop_id = r.try_get("", "shop_id")?;
            Some(creds)
        }
        None => None,
    };
    if !signature_ok(creds.as_ref(), &push) {
        tracing::warn!(request_id = %ctx.request_id, %connection, "doudian push refused: unknown connection or bad signature");
        return Err(PushRejected::BadSignature);
    }
    let Some(creds) = creds else {
        return Err(PushRejected::BadSignature);
    };
    let hints = parse_messages(push.body, &creds.shop_id)?;
    if hints.foreign > 0 {
        tracing::warn!(%connection, foreign = hints.foreign, "doudian push names another shop; ignored");
    }
    if hints.order_ids.is_empty() {
        tx.commit().await?;
        return Ok(0);
    }
    let delay = due_in(core.now(), hints.newest_update);
    // `sync_requested` is the pending hint. On a free (or abandoned) lease, `lease_until` doubles
    // as "not before", so the round runs once the pull window can see the change. A pending
    // "not before" is never pushed back (a busy shop's pushes must not starve its pulls), and a
    // live lease is left alone: the flag makes the connection due again when that round ends.
    tx.execute_raw(stmt(
        "UPDATE channel_connections SET sync_requested = true,
            lease_owner = CASE WHEN lease_until IS NULL OR lease_until < now() THEN NULL ELSE lease_owner END,
            lease_until = CASE WHEN lease_until IS NULL OR lease_until < now()
                THEN now() + make_interval(secs => $3) ELSE lease_until END
         WHERE tenant_id = $1 AND channel_id = $2",
        vec![
            ctx.tenant.0.into(),
            connection.into(),
            delay.as_secs_f64().into(),
        ],
    ))
    .await?;
    tx.commit().await?;
    tracing::debug!(%connection, orders = ?hints.order_ids, "doudian push recorded");
    Ok(hints.order_ids.len())
}

fn stmt(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// Constant time against the connection's app; an unknown connection is checked against a
/// throw-away key so both refusals cost the same.
fn signature_ok(creds: Option<&uphub_channels::Credentials>, push: &DoudianPush<'_>) -> bool {
    let (key, secret) = creds
        .map(|c| (c.app_key.as_str(), c.app_secret.as_str()))
        .unwrap_or(("", "unknown-connection"));
    let expected = doudian_event_sign(key, secret, push.body);
    let sign_ok = same_signature(&expected, push.event_sign.unwrap_or(""));
    let app_ok = push.app_id.is_none_or(|id| id.trim() == key);
    creds.is_some() && sign_ok && app_ok
}

/// How long until a round started now sees a change stamped `newest`: the pull leaves the
/// newest [`SETTLE_LAG`] for later, so a round run at once would miss the very change pushed.
pub fn due_in(now: DateTime<Utc>, newest: Option<DateTime<Utc>>) -> Duration {
    let most = SETTLE_LAG + STAMP_SLACK;
    match newest {
        None => most,
        Some(t) => {
            let settled = t + chrono::Duration::from_std(most).unwrap_or_default();
            (settled - now).to_std().unwrap_or(Duration::ZERO).min(most)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_body_is_a_bad_request_in_both_vocabularies() {
        let e: PushRejected = parse_messages(b"{}", "1").unwrap_err().into();
        assert!(matches!(e, PushRejected::BadBody(_)));
        assert_eq!(e.code(), ErrorCode::BadRequest);
        assert_eq!(e.platform_code(), 40004);
    }

    #[test]
    fn a_push_is_due_once_the_pull_window_can_see_its_change() {
        let now = DateTime::from_timestamp(1_700_000_100, 0).unwrap();
        let most = SETTLE_LAG + STAMP_SLACK;
        assert_eq!(due_in(now, None), most);
        assert_eq!(due_in(now, Some(now)), most);
        assert_eq!(
            due_in(now, Some(now - chrono::Duration::seconds(1))),
            most - Duration::from_secs(1)
        );
        // An old change (a retried push) is due at once; a stamp from the future waits no more.
        assert_eq!(
            due_in(now, Some(now - chrono::Duration::seconds(60))),
            Duration::ZERO
        );
        assert_eq!(
            due_in(now, Some(now + chrono::Duration::seconds(600))),
            most
        );
    }

    #[test]
    fn only_the_connections_app_signs_and_unknown_connections_fail_the_same_way() {
        let creds = uphub_channels::Credentials {
            base_url: "http://x".into(),
            app_key: "k".into(),
            app_secret: "s".into(),
            access_token: "t".into(),
            refresh_token: None,
            shop_id: "1".into(),
        };
        let check = |creds: Option<&uphub_channels::Credentials>, sign: &str, app: Option<&str>| {
            signature_ok(
                creds,
                &DoudianPush {
                    event_sign: Some(sign),
                    app_id: app,
                    body: b"[]",
                },
            )
        };
        let good = doudian_event_sign("k", "s", b"[]");
        assert!(check(Some(&creds), &good, Some("k")));
        assert!(check(Some(&creds), &good.to_uppercase(), None));
        assert!(!check(Some(&creds), &good, Some("other")));
        assert!(!check(
            Some(&creds),
            &doudian_event_sign("k", "t", b"[]"),
            None
        ));
        assert!(!check(Some(&creds), "", None));
        let throwaway = doudian_event_sign("", "unknown-connection", b"[]");
        assert!(!check(None, &throwaway, Some("")));
        assert!(!check(None, &good, None));
    }
}
