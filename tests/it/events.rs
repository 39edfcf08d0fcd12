use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::json;
use uphub_services::Core;
use uphub_services::consumer::{self, Handler};
use uphub_services::outbox::{self, Envelope, RelayFaults};
use uphub_tenants::{TenantId, TenantTx};

use crate::helpers::{Options, spawn_app, spawn_app_with};

#[tokio::test]
async fn an_invitation_committed_while_the_relay_was_down_is_mailed_exactly_once_after_a_crash_between_publish_and_mark()
 {
    let mut app = spawn_app().await;
    // Committed with no relay running.
    app.invite(&app.a.token, "crash@alpha.test", &["OPERATOR"])
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.sink.count(), 0);
    // Declare consumers' queues, then a relay publishes and dies before marking the rows.
    let handlers = uphub_api::handlers(&app.core).unwrap();
    uphub_api::declare_topology(&app.core, &handlers)
        .await
        .unwrap();
    let channel = app.core.amqp.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    let died = outbox::relay_once(
        &app.core,
        &channel,
        100,
        RelayFaults {
            die_after_publish: true,
        },
    )
    .await;
    assert!(died.is_err());
    // A healthy worker starts: the events are published a second time.
    app.start_worker(RelayFaults::default()).await;
    let mails = app.sink.wait_for(1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mails_after = app.sink.all();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails_after.len(), 1, "the consumer applied a duplicate");
    let unpublished = uphub_count(
        &app.core,
        "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL",
    )
    .await;
    assert_eq!(unpublished, 0);
    let processed = uphub_count(
        &app.core,
        "SELECT count(*) AS n FROM processed_events WHERE consumer = 'invitation-mailer'",
    )
    .await;
    assert_eq!(processed, 1);
}

async fn uphub_count(core: &Core, sql: &str) -> i64 {
    use sea_orm::ConnectionTrait;
    core.db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            sql.to_string(),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "n")
        .unwrap()
}

/// A consumer that fails until told otherwise.
struct Flaky {
    fail: Arc<std::sync::atomic::AtomicBool>,
    calls: Arc<AtomicU32>,
}

#[async_trait::async_trait]
impl Handler for Flaky {
    fn name(&self) -> &'static str {
        "flaky"
    }
    fn topics(&self) -> &'static [&'static str] {
        &["test.flaky"]
    }
    async fn handle(&self, _core: &Core, _tx: &TenantTx, _ev: &Envelope) -> anyhow::Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            anyhow::bail!("downstream unavailable");
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_failing_consumer_retries_then_dead_letters_and_an_admin_replays_it() {
    let mut app = spawn_app().await;
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let calls = Arc::new(AtomicU32::new(0));
    let flaky: Arc<dyn Handler> = Arc::new(Flaky {
        fail: fail.clone(),
        calls: calls.clone(),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    {
        let channel = app.core.amqp.create_channel().await.unwrap();
        consumer::declare(&app.core, &channel, flaky.as_ref())
            .await
            .unwrap();
    }
    tokio::spawn(consumer::run(app.core.clone(), flaky.clone(), stop_rx));
    app.start_worker(RelayFaults::default()).await;
    let tenant = uphub_services::identity::tenant_by_slug(&app.core, &app.a.slug)
        .await
        .unwrap()
        .unwrap()
        .id;
    let tx = TenantTx::begin(&app.core.db, TenantId(tenant))
        .await
        .unwrap();
    outbox::enqueue(&app.core, &tx, "test.flaky", json!({"n": 1}))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let q = "{ deadLetters { edges { node { id consumer topic attempts error replayedAt } } } }";
    let mut dl = json!(null);
    for _ in 0..100 {
        dl = app.gql(Some(&app.a.token), q, json!({})).await;
        if !dl["data"]["deadLetters"]["edges"]
            .as_array()
            .unwrap()
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let node = dl["data"]["deadLetters"]["edges"][0]["node"].clone();
    assert_eq!(node["consumer"], "flaky", "{dl}");
    assert_eq!(node["attempts"], consumer::MAX_ATTEMPTS);
    assert_eq!(calls.load(Ordering::SeqCst), consumer::MAX_ATTEMPTS);
    // Tenant B sees no dead letters and cannot replay A's.
    let b = app.gql(Some(&app.b.token), q, json!({})).await;
    assert_eq!(b["data"]["deadLetters"]["edges"], json!([]));
    let replay = "mutation($id: ID!) { deadLetterReplay(input: {id: $id}) { deadLetter { replayedAt } userErrors { code } } }";
    let from_b = app
        .gql(Some(&app.b.token), replay, json!({"id": node["id"]}))
        .await;
    assert_eq!(
        from_b["data"]["deadLetterReplay"]["userErrors"],
        json!([{"code": "NOT_FOUND"}])
    );
    fail.store(false, Ordering::SeqCst);
    let r = app
        .gql(Some(&app.a.token), replay, json!({"id": node["id"]}))
        .await;
    assert!(
        r["data"]["deadLetterReplay"]["deadLetter"]["replayedAt"].is_string(),
        "{r}"
    );
    for _ in 0..100 {
        if uphub_count(
            &app.core,
            "SELECT count(*) AS n FROM processed_events WHERE consumer = 'flaky'",
        )
        .await
            == 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        uphub_count(
            &app.core,
            "SELECT count(*) AS n FROM processed_events WHERE consumer = 'flaky'"
        )
        .await,
        1
    );
    let twice = app
        .gql(Some(&app.a.token), replay, json!({"id": node["id"]}))
        .await;
    assert_eq!(
        twice["data"]["deadLetterReplay"]["userErrors"],
        json!([{"code": "CONFLICT"}])
    );
    let _ = stop_tx.send(true);
}

#[tokio::test]
async fn instances_sharing_rabbitmq_never_consume_each_others_messages() {
    let mut one = spawn_app().await;
    let mut two = spawn_app_with(Options::default()).await;
    one.start_worker(RelayFaults::default()).await;
    two.start_worker(RelayFaults::default()).await;
    one.invite(&one.a.token, "only-one@alpha.test", &["OPERATOR"])
        .await;
    assert_eq!(one.sink.wait_for(1).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(two.sink.count(), 0);
    assert_ne!(one.core.exchange(), two.core.exchange());
}
