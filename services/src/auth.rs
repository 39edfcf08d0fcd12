//! Credentials: argon2 passwords, short-lived HS256 access tokens, opaque refresh tokens and API
//! keys (stored as SHA-256, they are high-entropy), and turning a bearer token into a RequestCtx.

use anyhow::Context;
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uphub_domain::identity::Role;
use uphub_tenants::{RequestCtx, TenantId, UserId};
use uuid::Uuid;

use crate::{Core, ServiceError, ServiceResult};

/// Hashes off the async runtime: argon2 is deliberately slow.
pub async fn hash_password(password: String) -> ServiceResult<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))
    })
    .await
    .context("hash task")?
    .map_err(ServiceError::Internal)
}

/// Verifies against `hash`, or against a fixed dummy hash when there is no user, so that an
/// unknown e-mail costs the same time as a wrong password.
pub async fn verify_password(password: String, hash: Option<String>) -> ServiceResult<bool> {
    tokio::task::spawn_blocking(move || {
        let hash = hash.unwrap_or_else(|| DUMMY_HASH.to_string());
        let parsed = PasswordHash::new(&hash).map_err(|e| anyhow::anyhow!("argon2 hash: {e}"))?;
        Ok::<bool, anyhow::Error>(
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok(),
        )
    })
    .await
    .context("verify task")?
    .map_err(ServiceError::Internal)
}

const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$5oV2wYm2ZPr1y5T2m8m0QmFjqcBaNRu3eJZg0aJQ7yE";

pub fn sha256(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: Uuid,
    pub tid: Uuid,
    pub roles: Vec<String>,
    pub jti: Uuid,
    pub iat: i64,
    /// Issue time in milliseconds, compared with revocation markers.
    pub iatm: i64,
    pub exp: i64,
    pub typ: String,
}

pub fn issue_access_token(
    core: &Core,
    tenant: TenantId,
    user: UserId,
    roles: &[Role],
) -> ServiceResult<(String, i64)> {
    let now = core.now().timestamp();
    let exp = now + core.cfg.access_token_ttl.as_secs() as i64;
    let claims = AccessClaims {
        sub: user.0,
        tid: tenant.0,
        roles: roles.iter().map(|r| r.as_str().to_string()).collect(),
        jti: Uuid::new_v4(),
        iat: now,
        iatm: core.now().timestamp_millis(),
        exp,
        typ: "access".into(),
    };
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(core.cfg.jwt_secret.expose().as_bytes()),
    )
    .context("signing access token")?;
    Ok((token, exp))
}

/// A storefront buyer's access token: same signing key, `typ` "buyer", no roles. A buyer token
/// is never accepted where a staff token is expected and carries no staff permission.
pub fn issue_buyer_token(
    core: &Core,
    tenant: TenantId,
    buyer: Uuid,
) -> ServiceResult<(String, i64)> {
    let now = core.now().timestamp();
    let exp = now + core.cfg.access_token_ttl.as_secs() as i64;
    let claims = AccessClaims {
        sub: buyer,
        tid: tenant.0,
        roles: vec![],
        jti: Uuid::new_v4(),
        iat: now,
        iatm: core.now().timestamp_millis(),
        exp,
        typ: "buyer".into(),
    };
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(core.cfg.jwt_secret.expose().as_bytes()),
    )
    .context("signing buyer token")?;
    Ok((token, exp))
}

pub fn verify_access_token(core: &Core, token: &str) -> ServiceResult<AccessClaims> {
    let claims = verify_claims(core, token)?;
    if claims.typ != "access" {
        return Err(ServiceError::Unauthenticated("invalid access token".into()));
    }
    Ok(claims)
}

fn verify_claims(core: &Core, token: &str) -> ServiceResult<AccessClaims> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 5;
    validation.validate_exp = true;
    let data = jsonwebtoken::decode::<AccessClaims>(
        token,
        &DecodingKey::from_secret(core.cfg.jwt_secret.expose().as_bytes()),
        &validation,
    )
    .map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
            ServiceError::Unauthenticated("access token expired".into())
        }
        _ => ServiceError::Unauthenticated("invalid access token".into()),
    })?;
    Ok(data.claims)
}

/// Refresh tokens and API keys embed the tenant so the lookup can run inside its TenantTx:
/// `<prefix>_<tenant uuid simple>_<secret>`.
pub fn compose_token(prefix: &str, tenant: TenantId, secret: &str) -> String {
    format!("{prefix}_{}_{secret}", tenant.0.simple())
}

pub fn split_token<'a>(prefix: &str, token: &'a str) -> Option<(TenantId, &'a str)> {
    let rest = token.strip_prefix(prefix)?.strip_prefix('_')?;
    let (tenant, secret) = rest.split_once('_')?;
    let tenant = Uuid::try_parse(tenant).ok()?;
    (!secret.is_empty() && secret.len() <= 128).then_some((TenantId(tenant), secret))
}

pub const API_KEY_PREFIX: &str = "uhk";
pub const REFRESH_PREFIX: &str = "uhr";
/// Buyer refresh tokens: their own prefix and table, so a staff token never refreshes a buyer
/// session and a buyer token never refreshes a staff one.
pub const BUYER_REFRESH_PREFIX: &str = "ubr";

/// Turns an `Authorization` header value into a RequestCtx. Staff tokens are verified
/// statelessly (revocation is checked with the rate limit in one Redis call); API keys are
/// looked up inside their tenant's transaction.
pub async fn authenticate(core: &Core, bearer: &str) -> ServiceResult<RequestCtx> {
    if bearer.starts_with("uhk_") {
        return crate::api_keys::authenticate(core, bearer).await;
    }
    let claims = verify_claims(core, bearer)?;
    match claims.typ.as_str() {
        "access" => {}
        "buyer" => {
            return Ok(RequestCtx::buyer(
                TenantId(claims.tid),
                claims.sub,
                claims.jti,
                claims.iatm,
            ));
        }
        _ => return Err(ServiceError::Unauthenticated("invalid access token".into())),
    }
    let roles: Vec<Role> = claims.roles.iter().filter_map(|r| Role::parse(r)).collect();
    Ok(RequestCtx::staff(
        TenantId(claims.tid),
        UserId(claims.sub),
        roles,
        claims.jti,
        claims.iatm,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_their_tenant() {
        let t = TenantId(Uuid::new_v4());
        let token = compose_token(API_KEY_PREFIX, t, "abc-DEF_1");
        assert_eq!(split_token(API_KEY_PREFIX, &token), Some((t, "abc-DEF_1")));
        assert_eq!(split_token(REFRESH_PREFIX, &token), None);
        assert_eq!(split_token(API_KEY_PREFIX, "uhk_nope_x"), None);
        assert_eq!(split_token(API_KEY_PREFIX, "uhk_"), None);
        let buyer = compose_token(BUYER_REFRESH_PREFIX, t, "s3cret");
        assert_eq!(split_token(REFRESH_PREFIX, &buyer), None);
        assert_eq!(
            split_token(BUYER_REFRESH_PREFIX, &buyer),
            Some((t, "s3cret"))
        );
    }

    #[test]
    fn dummy_hash_parses() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }
}
