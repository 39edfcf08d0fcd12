//! Dead letters: events a consumer gave up on, for an operator to inspect and replay.

use async_graphql::connection::Connection;
use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use uphub_domain::identity::Permission;
use uphub_services::consumer::{self, DeadLetter as DeadLetterRow};

use crate::caller::{UserError, authed, decode_id, encode_id, field, page_args, user_errors};
use crate::staff::connection;

pub struct DeadLetter(pub DeadLetterRow);

#[Object]
impl DeadLetter {
    async fn id(&self) -> ID {
        encode_id("DeadLetter", self.0.id)
    }
    async fn consumer(&self) -> &str {
        &self.0.consumer
    }
    async fn event_id(&self) -> String {
        self.0.event_id.to_string()
    }
    async fn topic(&self) -> &str {
        &self.0.topic
    }
    async fn error(&self) -> &str {
        &self.0.error
    }
    async fn attempts(&self) -> i32 {
        self.0.attempts
    }
    async fn created_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.0.created_at.to_utc()
    }
    async fn replayed_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.0.replayed_at.map(|t| t.to_utc())
    }
}

#[derive(Default)]
pub struct EventsQuery;

#[Object]
impl EventsQuery {
    /// Dead letters of the tenant, newest first. EVENTS_MANAGE.
    #[graphql(complexity = "first.unwrap_or(20).clamp(1, 100) as usize * child_complexity")]
    async fn dead_letters(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, DeadLetter>> {
        let (core, rctx) = authed(ctx)?;
        let page = field(ctx, page_args(first, after))?;
        let page = field(ctx, consumer::dead_letters(core, rctx, page).await)?;
        Ok(connection(page, |r| r.id, DeadLetter))
    }
}

#[derive(InputObject)]
pub struct DeadLetterReplayInput {
    pub id: ID,
}

#[derive(SimpleObject, Default)]
pub struct DeadLetterReplayPayload {
    pub dead_letter: Option<DeadLetter>,
    pub user_errors: Vec<UserError>,
}

#[derive(Default)]
pub struct EventsMutation;

#[Object]
impl EventsMutation {
    /// Sends a dead letter back to its consumer. EVENTS_MANAGE.
    async fn dead_letter_replay(
        &self,
        ctx: &Context<'_>,
        input: DeadLetterReplayInput,
    ) -> async_graphql::Result<DeadLetterReplayPayload> {
        let (core, rctx) = authed(ctx)?;
        let r = match decode_id("DeadLetter", &input.id) {
            Ok(id) => consumer::dead_letter_replay(core, rctx, id).await,
            Err(e) => uphub_services::audit::require(rctx, Permission::EventsManage).and(Err(e)),
        };
        let (d, user_errors) = user_errors(ctx, r)?;
        Ok(DeadLetterReplayPayload {
            dead_letter: d.map(DeadLetter),
            user_errors,
        })
    }
}
