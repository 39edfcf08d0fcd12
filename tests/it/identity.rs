use serde_json::json;
use uphub_services::outbox::RelayFaults;

use crate::helpers::{PASSWORD, code, invite_token, spawn_app};

const ME: &str = "{ me { id email roles tenant { id slug name } } }";

#[tokio::test]
async fn signup_returns_a_token_that_answers_me() {
    let app = spawn_app().await;
    let r = app.gql(Some(&app.a.token), ME, json!({})).await;
    assert_eq!(r["data"]["me"]["email"], app.a.owner_email, "{r}");
    assert_eq!(r["data"]["me"]["roles"], json!(["OWNER"]));
    assert_eq!(r["data"]["me"]["tenant"]["slug"], app.a.slug);
    assert!(r["extensions"]["cost"]["requested"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn signup_rejects_taken_slugs_and_bad_input_with_field_errors() {
    let app = spawn_app().await;
    let q = "mutation($i: TenantSignupInput!) { tenantSignup(input: $i) { accessToken userErrors { code field } } }";
    let r = app
        .gql(None, q, json!({"i": {"name": "x", "slug": app.a.slug, "ownerEmail": "a@b.co", "ownerPassword": PASSWORD}}))
        .await;
    assert_eq!(
        r["data"]["tenantSignup"]["userErrors"],
        json!([{"code": "CONFLICT", "field": "slug"}])
    );
    for (field, input) in [
        (
            "slug",
            json!({"name": "x", "slug": "a'; DROP TABLE tenants;--", "ownerEmail": "a@b.co", "ownerPassword": PASSWORD}),
        ),
        (
            "ownerEmail",
            json!({"name": "x", "slug": "okslug", "ownerEmail": "not-an-email", "ownerPassword": PASSWORD}),
        ),
        (
            "ownerPassword",
            json!({"name": "x", "slug": "okslug", "ownerEmail": "a@b.co", "ownerPassword": "短"}),
        ),
        (
            "name",
            json!({"name": "  ", "slug": "okslug", "ownerEmail": "a@b.co", "ownerPassword": PASSWORD}),
        ),
    ] {
        let r = app.gql(None, q, json!({"i": input})).await;
        assert_eq!(
            r["data"]["tenantSignup"]["userErrors"],
            json!([{"code": "VALIDATION", "field": field}]),
            "{r}"
        );
        assert_eq!(r["data"]["tenantSignup"]["accessToken"], json!(null));
    }
    // Unicode names are data, not a problem.
    let r = app
        .gql(None, q, json!({"i": {"name": "小红的店 🎀 ' OR 1=1 --", "slug": "xiaohong-shop", "ownerEmail": "hong@example.cn", "ownerPassword": PASSWORD}}))
        .await;
    assert_eq!(r["data"]["tenantSignup"]["userErrors"], json!([]), "{r}");
}

#[tokio::test]
async fn login_with_a_wrong_password_fails_and_is_throttled_per_account() {
    let app = spawn_app().await;
    let ok = app.login(&app.a.slug, &app.a.owner_email, PASSWORD).await;
    assert!(ok["data"]["login"]["accessToken"].is_string(), "{ok}");
    let mut last = json!(null);
    for _ in 0..5 {
        last = app
            .login(&app.a.slug, &app.a.owner_email, "wrong-password-x")
            .await;
        assert_eq!(
            last["data"]["login"]["userErrors"][0]["code"], "INVALID_CREDENTIALS",
            "{last}"
        );
    }
    // Unknown tenant and unknown e-mail answer exactly like a wrong password.
    let unknown = app
        .login("no-such-tenant", "x@y.zz", "wrong-password-x")
        .await;
    assert_eq!(
        unknown["data"]["login"]["userErrors"],
        last["data"]["login"]["userErrors"]
    );
    let throttled = app.login(&app.a.slug, &app.a.owner_email, PASSWORD).await;
    assert_eq!(code(&throttled), "RATE_LIMITED", "{throttled}");
    assert!(
        throttled["errors"][0]["extensions"]["retryAfterMs"]
            .as_u64()
            .unwrap()
            > 0
    );
    // The other tenant's owner is not affected.
    let other = app.login(&app.b.slug, &app.b.owner_email, PASSWORD).await;
    assert!(other["data"]["login"]["accessToken"].is_string(), "{other}");
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let app = spawn_app().await;
    let q = "mutation($t: String!) { tokenRefresh(input: {refreshToken: $t}) { accessToken refreshToken userErrors { code } } }";
    let first = app.gql(None, q, json!({"t": app.a.refresh})).await;
    let next = first["data"]["tokenRefresh"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_string();
    let access = first["data"]["tokenRefresh"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(next, app.a.refresh);
    let me = app.gql(Some(&access), ME, json!({})).await;
    assert_eq!(me["data"]["me"]["email"], app.a.owner_email);
    // Replaying the first token: reuse detected, the whole family dies.
    let replay = app.gql(None, q, json!({"t": app.a.refresh})).await;
    assert_eq!(code(&replay), "UNAUTHENTICATED", "{replay}");
    let after = app.gql(None, q, json!({"t": next})).await;
    assert_eq!(code(&after), "UNAUTHENTICATED", "{after}");
    // Garbage and another tenant's prefix are just invalid.
    let junk = app.gql(None, q, json!({"t": "uhr_zzz_' OR 1=1"})).await;
    assert_eq!(code(&junk), "UNAUTHENTICATED");
}

#[tokio::test]
async fn logout_revokes_the_access_token_at_once() {
    let app = spawn_app().await;
    let r = app
        .gql(
            Some(&app.a.token),
            "mutation($t: String) { logout(input: {refreshToken: $t}) { ok } }",
            json!({"t": app.a.refresh}),
        )
        .await;
    assert_eq!(r["data"]["logout"]["ok"], true, "{r}");
    let me = app.gql(Some(&app.a.token), ME, json!({})).await;
    assert_eq!(code(&me), "UNAUTHENTICATED", "{me}");
    let refresh = app
        .gql(
            None,
            "mutation($t: String!) { tokenRefresh(input: {refreshToken: $t}) { accessToken } }",
            json!({"t": app.a.refresh}),
        )
        .await;
    assert_eq!(code(&refresh), "UNAUTHENTICATED");
    // Tenant B's session is untouched.
    let me_b = app.gql(Some(&app.b.token), ME, json!({})).await;
    assert_eq!(me_b["data"]["me"]["email"], app.b.owner_email);
}

#[tokio::test]
async fn an_invited_member_gets_an_email_accepts_it_and_works_within_their_role() {
    let mut app = spawn_app().await;
    app.start_worker(RelayFaults::default()).await;
    let r = app
        .invite(&app.a.token, "packer@alpha.test", &["WAREHOUSE"])
        .await;
    let member = &r["data"]["staffInvite"]["staffMember"];
    assert_eq!(member["status"], "INVITED", "{r}");
    let mails = app.sink.wait_for(1).await;
    assert_eq!(mails.len(), 1);
    assert!(mails[0].contains("packer@alpha.test"));
    let token = invite_token(&mails[0]);
    let accepted = app
        .gql(
            None,
            "mutation($i: StaffInviteAcceptInput!) { staffInviteAccept(input: $i) { accessToken userErrors { code field } } }",
            json!({"i": {"tenantSlug": app.a.slug, "token": token, "password": "packing-boxes-42"}}),
        )
        .await;
    let packer = accepted["data"]["staffInviteAccept"]["accessToken"]
        .as_str()
        .expect("accepted")
        .to_string();
    // The token is single-use.
    let again = app
        .gql(None, "mutation($i: StaffInviteAcceptInput!) { staffInviteAccept(input: $i) { accessToken } }", json!({"i": {"tenantSlug": app.a.slug, "token": token, "password": "packing-boxes-42"}}))
        .await;
    assert_eq!(code(&again), "UNAUTHENTICATED");
    let me = app
        .gql(Some(&packer), "{ me { roles email } }", json!({}))
        .await;
    assert_eq!(me["data"]["me"]["roles"], json!(["WAREHOUSE"]));
    // WAREHOUSE cannot manage staff or read the audit log, but does see PII (to ship parcels).
    let denied = app.invite(&packer, "x@alpha.test", &["OPERATOR"]).await;
    assert_eq!(code(&denied), "FORBIDDEN", "{denied}");
    let audit = app
        .gql(
            Some(&packer),
            "{ auditEvents { edges { node { action } } } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&audit), "FORBIDDEN");
    // Tenant B never sees the invitation.
    let b = app
        .gql(
            Some(&app.b.token),
            "{ staffMembers { edges { node { email } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        b["data"]["staffMembers"]["edges"].as_array().unwrap().len(),
        1,
        "{b}"
    );
}

#[tokio::test]
async fn role_changes_follow_the_rules_and_apply_immediately() {
    let mut app = spawn_app().await;
    app.start_worker(RelayFaults::default()).await;
    let admin_id = app
        .invite(&app.a.token, "admin@alpha.test", &["ADMIN"])
        .await["data"]["staffInvite"]["staffMember"]["id"]
        .clone();
    let mails = app.sink.wait_for(1).await;
    let admin = app.accept_invite(&mails[0], "admin-password-1").await;
    // An ADMIN may invite an OPERATOR but not an OWNER.
    let op = app.invite(&admin, "op@alpha.test", &["OPERATOR"]).await;
    let op_id = op["data"]["staffInvite"]["staffMember"]["id"].clone();
    assert_eq!(op["data"]["staffInvite"]["userErrors"], json!([]), "{op}");
    let owner = app.invite(&admin, "owner2@alpha.test", &["OWNER"]).await;
    assert_eq!(code(&owner), "FORBIDDEN", "{owner}");
    let q = "mutation($i: StaffUpdateRolesInput!) { staffUpdateRoles(input: $i) { staffMember { roles } userErrors { code field } } }";
    let changed = app
        .gql(
            Some(&admin),
            q,
            json!({"i": {"id": op_id, "roles": ["FINANCE", "CS_AGENT"]}}),
        )
        .await;
    assert_eq!(
        changed["data"]["staffUpdateRoles"]["staffMember"]["roles"],
        json!(["CS_AGENT", "FINANCE"]),
        "{changed}"
    );
    let bad = app
        .gql(
            Some(&admin),
            q,
            json!({"i": {"id": op_id, "roles": ["ROOT"]}}),
        )
        .await;
    assert_eq!(
        bad["data"]["staffUpdateRoles"]["userErrors"],
        json!([{"code": "VALIDATION", "field": "roles"}])
    );
    // The owner demotes the admin: the admin's token stops working at once.
    let demote = app
        .gql(
            Some(&app.a.token),
            q,
            json!({"i": {"id": admin_id, "roles": ["OPERATOR"]}}),
        )
        .await;
    assert_eq!(
        demote["data"]["staffUpdateRoles"]["userErrors"],
        json!([]),
        "{demote}"
    );
    let gone = app.gql(Some(&admin), ME, json!({})).await;
    assert_eq!(code(&gone), "UNAUTHENTICATED");
    // A fresh login is not caught by the revocation and carries the new role.
    let again = app
        .login(&app.a.slug, "admin@alpha.test", "admin-password-1")
        .await;
    let fresh = again["data"]["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    let me_again = app.gql(Some(&fresh), "{ me { roles } }", json!({})).await;
    assert_eq!(
        me_again["data"]["me"]["roles"],
        json!(["OPERATOR"]),
        "{me_again}"
    );
    // The last owner cannot be deactivated, not even by themselves.
    let me = app
        .gql(Some(&app.a.token), "{ me { id } }", json!({}))
        .await;
    let d = app
        .gql(Some(&app.a.token), "mutation($i: StaffDeactivateInput!) { staffDeactivate(input: $i) { staffMember { status } userErrors { code } } }", json!({"i": {"id": me["data"]["me"]["id"]}}))
        .await;
    assert_eq!(code(&d), "FORBIDDEN", "{d}");
    // Role changes are audited.
    let audit = app
        .gql(
            Some(&app.a.token),
            "{ auditEvents(first: 50) { edges { node { action } } } }",
            json!({}),
        )
        .await;
    let actions: Vec<&str> = audit["data"]["auditEvents"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"staff.roles_changed"), "{actions:?}");
    assert!(actions.contains(&"login.succeeded"));
}

#[tokio::test]
async fn deactivated_staff_lose_access_and_other_tenants_cannot_deactivate_them() {
    let mut app = spawn_app().await;
    app.start_worker(RelayFaults::default()).await;
    let id = app
        .invite(&app.a.token, "temp@alpha.test", &["CS_AGENT"])
        .await["data"]["staffInvite"]["staffMember"]["id"]
        .clone();
    let mails = app.sink.wait_for(1).await;
    let temp = app.accept_invite(&mails[0], "temp-password-1").await;
    let q = "mutation($i: StaffDeactivateInput!) { staffDeactivate(input: $i) { staffMember { status } userErrors { code } } }";
    let from_b = app
        .gql(Some(&app.b.token), q, json!({"i": {"id": id}}))
        .await;
    assert_eq!(
        from_b["data"]["staffDeactivate"]["userErrors"],
        json!([{"code": "NOT_FOUND"}]),
        "{from_b}"
    );
    assert_eq!(
        app.gql(Some(&temp), "{ me { id } }", json!({})).await["errors"],
        json!(null)
    );
    let r = app
        .gql(Some(&app.a.token), q, json!({"i": {"id": id}}))
        .await;
    assert_eq!(
        r["data"]["staffDeactivate"]["staffMember"]["status"], "DEACTIVATED",
        "{r}"
    );
    assert_eq!(
        code(&app.gql(Some(&temp), "{ me { id } }", json!({})).await),
        "UNAUTHENTICATED"
    );
    let login = app
        .login(&app.a.slug, "temp@alpha.test", "temp-password-1")
        .await;
    assert_eq!(
        login["data"]["login"]["userErrors"][0]["code"],
        "INVALID_CREDENTIALS"
    );
}

#[tokio::test]
async fn api_keys_are_shown_once_scoped_and_revocable() {
    let app = spawn_app().await;
    let create = "mutation($i: ApiKeyCreateInput!) { apiKeyCreate(input: $i) { secret apiKey { id prefix scopes } userErrors { code field } } }";
    let r = app
        .gql(
            Some(&app.a.token),
            create,
            json!({"i": {"name": "ERP sync", "scopes": ["STAFF_READ", "TENANT_READ"]}}),
        )
        .await;
    let key = r["data"]["apiKeyCreate"]["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    let key_id = r["data"]["apiKeyCreate"]["apiKey"]["id"].clone();
    assert!(
        key.starts_with(
            r["data"]["apiKeyCreate"]["apiKey"]["prefix"]
                .as_str()
                .unwrap()
        )
    );
    // It reads…
    let list = app
        .gql(
            Some(&key),
            "{ tenant { slug } staffMembers { edges { node { email } } } }",
            json!({}),
        )
        .await;
    assert_eq!(list["data"]["tenant"]["slug"], app.a.slug, "{list}");
    assert!(
        list["data"]["staffMembers"]["edges"][0]["node"]["email"]
            .as_str()
            .unwrap()
            .contains("****"),
        "masked without PII_READ: {list}"
    );
    // …but cannot mutate.
    let w = app.invite(&key, "k@alpha.test", &["OPERATOR"]).await;
    assert_eq!(code(&w), "FORBIDDEN", "{w}");
    // Unknown scopes are a field error.
    let bad = app
        .gql(
            Some(&app.a.token),
            create,
            json!({"i": {"name": "x", "scopes": ["GOD_MODE"]}}),
        )
        .await;
    assert_eq!(
        bad["data"]["apiKeyCreate"]["userErrors"],
        json!([{"code": "VALIDATION", "field": "scopes"}])
    );
    // The list never shows the secret (there is no such field) and another tenant cannot revoke it.
    let revoke = "mutation($i: ApiKeyRevokeInput!) { apiKeyRevoke(input: $i) { apiKey { revokedAt } userErrors { code } } }";
    let from_b = app
        .gql(Some(&app.b.token), revoke, json!({"i": {"id": key_id}}))
        .await;
    assert_eq!(
        from_b["data"]["apiKeyRevoke"]["userErrors"],
        json!([{"code": "NOT_FOUND"}])
    );
    let r = app
        .gql(Some(&app.a.token), revoke, json!({"i": {"id": key_id}}))
        .await;
    assert!(
        r["data"]["apiKeyRevoke"]["apiKey"]["revokedAt"].is_string(),
        "{r}"
    );
    let after = app
        .post_json(Some(&key), &json!({"query": "{ tenant { slug } }"}))
        .await;
    assert_eq!(
        (after.0, code(&after.1)),
        (401, "UNAUTHENTICATED".to_string()),
        "{after:?}"
    );
    // Creation and revocation are audited.
    let audit = app
        .gql(
            Some(&app.a.token),
            "{ auditEvents(first: 50) { edges { node { action } } } }",
            json!({}),
        )
        .await
        .to_string();
    assert!(
        audit.contains("api_key.created") && audit.contains("api_key.revoked"),
        "{audit}"
    );
}

#[tokio::test]
async fn pii_is_masked_without_permission_and_unmasking_is_audited() {
    let app = spawn_app().await;
    let r = app
        .gql(Some(&app.a.token), "mutation { staffInvite(input: {email: \"li.lei@alpha.test\", phone: \"+86 138-1234-5678\", roles: [\"CS_AGENT\"]}) { staffMember { id email phone } } }", json!({}))
        .await;
    // The owner holds PII_READ: plain values.
    assert_eq!(
        r["data"]["staffInvite"]["staffMember"]["phone"], "13812345678",
        "{r}"
    );
    let key = app
        .gql(
            Some(&app.a.token),
            "mutation { apiKeyCreate(input: {name: \"ro\", scopes: [\"STAFF_READ\"]}) { secret } }",
            json!({}),
        )
        .await["data"]["apiKeyCreate"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let masked = app
        .gql(
            Some(&key),
            "{ staffMembers { edges { node { email phone } } } }",
            json!({}),
        )
        .await;
    let edges = masked["data"]["staffMembers"]["edges"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        edges.iter().any(|e| e["node"]["phone"] == "138****5678"),
        "{masked}"
    );
    assert!(
        edges
            .iter()
            .any(|e| e["node"]["email"] == "l****@alpha.test"),
        "{masked}"
    );
    // Stored ciphertext only: the plain e-mail is nowhere in the row.
    use sea_orm::ConnectionTrait;
    let rows = app
        .core
        .db
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT encode(email_cipher, 'escape') AS c FROM staff_users".to_string(),
        ))
        .await
        .unwrap();
    for row in rows {
        let c: String = row.try_get("", "c").unwrap();
        assert!(!c.contains("li.lei"));
    }
    let audit = app
        .gql(
            Some(&app.a.token),
            "{ auditEvents(first: 50) { edges { node { action } } } }",
            json!({}),
        )
        .await
        .to_string();
    assert!(audit.contains("pii.unmasked"), "{audit}");
}

#[tokio::test]
async fn audit_events_stream_over_graphql_ws_to_the_same_tenant_only() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let app = spawn_app().await;
    let connect = |token: String| {
        let url = format!("{}/graphql/ws", app.addr.replace("http://", "ws://"));
        async move {
            let mut req = url.into_client_request().unwrap();
            req.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                "graphql-transport-ws".parse().unwrap(),
            );
            let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
            ws.send(Message::text(json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}}).to_string())).await.unwrap();
            let ack = ws.next().await.unwrap().unwrap();
            assert!(ack.to_text().unwrap().contains("connection_ack"), "{ack:?}");
            ws.send(Message::text(json!({"id": "1", "type": "subscribe", "payload": {"query": "subscription { auditEvents { action target } }"}}).to_string())).await.unwrap();
            ws
        }
    };
    let mut ws_a = connect(app.a.token.clone()).await;
    let mut ws_b = connect(app.b.token.clone()).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    app.gql(
        Some(&app.a.token),
        "mutation { apiKeyCreate(input: {name: \"live\", scopes: [\"STAFF_READ\"]}) { secret } }",
        json!({}),
    )
    .await;
    let msg = tokio::time::timeout(std::time::Duration::from_secs(5), ws_a.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
    assert_eq!(
        v["payload"]["data"]["auditEvents"]["action"], "api_key.created",
        "{v}"
    );
    let nothing = tokio::time::timeout(std::time::Duration::from_millis(500), ws_b.next()).await;
    assert!(
        nothing.is_err(),
        "tenant B must not receive A's events: {nothing:?}"
    );
}

#[tokio::test]
async fn an_api_key_stops_working_when_its_creator_is_deactivated() {
    let mut app = spawn_app().await;
    app.start_worker(RelayFaults::default()).await;
    let id = app.invite(&app.a.token, "dev@alpha.test", &["ADMIN"]).await["data"]["staffInvite"]["staffMember"]["id"].clone();
    let mails = app.sink.wait_for(1).await;
    let dev = app.accept_invite(&mails[0], "dev-password-12").await;
    let key = app
        .gql(Some(&dev), "mutation { apiKeyCreate(input: {name: \"dev key\", scopes: [\"TENANT_READ\"]}) { secret } }", json!({}))
        .await["data"]["apiKeyCreate"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        app.gql(Some(&key), "{ tenant { slug } }", json!({})).await["data"]["tenant"]["slug"],
        app.a.slug
    );
    app.gql(Some(&app.a.token), "mutation($i: StaffDeactivateInput!) { staffDeactivate(input: $i) { staffMember { status } } }", json!({"i": {"id": id}}))
        .await;
    let after = app
        .post_json(Some(&key), &json!({"query": "{ tenant { slug } }"}))
        .await;
    assert_eq!(
        (after.0, code(&after.1)),
        (401, "UNAUTHENTICATED".to_string()),
        "{after:?}"
    );
}

/// `me` is cached per process (services::identity::me); a role change must still show on the
/// very next request, with no wait: the old token is refused and the new one reads afresh.
#[tokio::test]
async fn me_shows_changed_roles_on_the_next_request_although_it_was_cached() {
    let mut app = spawn_app().await;
    app.start_worker(RelayFaults::default()).await;
    app.invite(&app.a.token, "cached@alpha.test", &["OPERATOR"])
        .await;
    let mails = app.sink.wait_for(1).await;
    let member = app.accept_invite(&mails[0], "cached-password-1").await;
    // Prime the cache: several reads with the same token.
    for _ in 0..3 {
        let me = app.gql(Some(&member), ME, json!({})).await;
        assert_eq!(me["data"]["me"]["roles"], json!(["OPERATOR"]), "{me}");
        assert_eq!(me["data"]["me"]["email"], "cached@alpha.test", "{me}");
    }
    let id = app.gql(Some(&member), "{ me { id } }", json!({})).await["data"]["me"]["id"].clone();
    let q = "mutation($i: StaffUpdateRolesInput!) { staffUpdateRoles(input: $i) { userErrors { code } } }";
    let changed = app
        .gql(
            Some(&app.a.token),
            q,
            json!({"i": {"id": id, "roles": ["FINANCE"]}}),
        )
        .await;
    assert_eq!(
        changed["data"]["staffUpdateRoles"]["userErrors"],
        json!([]),
        "{changed}"
    );
    // The cached entry is never served to the old token: it is refused outright.
    let old = app.gql(Some(&member), ME, json!({})).await;
    assert_eq!(code(&old), "UNAUTHENTICATED", "{old}");
    let fresh = app
        .login(&app.a.slug, "cached@alpha.test", "cached-password-1")
        .await["data"]["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    let me = app.gql(Some(&fresh), ME, json!({})).await;
    assert_eq!(me["data"]["me"]["roles"], json!(["FINANCE"]), "{me}");
    // Deactivation: the cached ACTIVE row never lets the member back in.
    let d = app
        .gql(Some(&app.a.token), "mutation($i: StaffDeactivateInput!) { staffDeactivate(input: $i) { userErrors { code } } }", json!({"i": {"id": id}}))
        .await;
    assert_eq!(d["data"]["staffDeactivate"]["userErrors"], json!([]), "{d}");
    let gone = app.gql(Some(&fresh), ME, json!({})).await;
    assert_eq!(code(&gone), "UNAUTHENTICATED", "{gone}");
    // The other tenant's owner still sees only its own `me`.
    let b = app.gql(Some(&app.b.token), ME, json!({})).await;
    assert_eq!(b["data"]["me"]["email"], app.b.owner_email, "{b}");
}
