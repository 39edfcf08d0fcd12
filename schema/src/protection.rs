use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextRequest, NextValidation,
};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Response, ServerError, ServerResult, ValidationResult, Value, Variables};
use uphub_domain::error::ErrorCode;
use uphub_resolvers::Caller;
use uphub_services::{Core, ServiceError, ratelimit};

/// Per-request guard: aliases, depth, complexity, then the cost budget in Redis.
pub struct Protection {
    core: Core,
}

impl Protection {
    pub fn new(core: Core) -> Self {
        Protection { core }
    }
}

impl ExtensionFactory for Protection {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ProtectionExt {
            core: self.core.clone(),
            state: Mutex::new(State::default()),
        })
    }
}

#[derive(Default)]
struct State {
    /// Only `__schema`/`__type`/`__typename` at the top: tooling introspection, exempt from the
    /// depth and cost limits (and disabled altogether in production).
    introspection_only: bool,
    stage_code: Option<ErrorCode>,
    cost: Option<(u64, u64)>,
}

struct ProtectionExt {
    core: Core,
    state: Mutex<State>,
}

fn coded(message: impl Into<String>, code: ErrorCode) -> ServerError {
    let mut e = ServerError::new(message, None);
    let mut ext = async_graphql::ErrorExtensionValues::default();
    ext.set("code", code.as_str());
    e.extensions = Some(ext);
    e
}

/// Counts aliased fields, following fragments once each.
fn count_aliases(doc: &ExecutableDocument) -> usize {
    fn walk(set: &SelectionSet, doc: &ExecutableDocument, seen: &mut Vec<String>) -> usize {
        set.items
            .iter()
            .map(|sel| match &sel.node {
                Selection::Field(f) => {
                    usize::from(f.node.alias.is_some())
                        + walk(&f.node.selection_set.node, doc, seen)
                }
                Selection::InlineFragment(fr) => walk(&fr.node.selection_set.node, doc, seen),
                Selection::FragmentSpread(sp) => {
                    let name = sp.node.fragment_name.node.to_string();
                    if seen.contains(&name) {
                        return 0;
                    }
                    seen.push(name.clone());
                    doc.fragments
                        .iter()
                        .find(|(n, _)| n.as_str() == name)
                        .map(|(_, f)| walk(&f.node.selection_set.node, doc, seen))
                        .unwrap_or(0)
                }
            })
            .sum()
    }
    let mut seen = Vec::new();
    doc.operations
        .iter()
        .map(|(_, op)| walk(&op.node.selection_set.node, doc, &mut seen))
        .sum()
}

impl ProtectionExt {
    fn set_stage(&self, code: ErrorCode) {
        if let Ok(mut s) = self.state.lock() {
            s.stage_code.get_or_insert(code);
        }
    }
}

#[async_trait::async_trait]
impl Extension for ProtectionExt {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut resp = next.run(ctx).await;
        let (stage, cost) = match self.state.lock() {
            Ok(s) => (s.stage_code, s.cost),
            Err(_) => (None, None),
        };
        let request_id = ctx
            .data_opt::<Caller>()
            .map(|c| c.request_id.clone())
            .unwrap_or_default();
        for err in &mut resp.errors {
            let has_code = err
                .extensions
                .as_ref()
                .is_some_and(|e| e.get("code").is_some());
            if has_code {
                continue;
            }
            let code = stage.unwrap_or_else(|| classify_execution_error(&err.message));
            let ext = err.extensions.get_or_insert_with(Default::default);
            ext.set("code", code.as_str());
            if code == ErrorCode::Internal {
                tracing::error!(request_id, message = %err.message, "uncoded execution error");
                err.message = "internal error".into();
                ext.set("requestId", request_id.as_str());
            }
        }
        if let Some((cost, remaining)) = cost {
            let mut map = async_graphql::indexmap::IndexMap::new();
            map.insert(async_graphql::Name::new("requested"), Value::from(cost));
            map.insert(
                async_graphql::Name::new("remaining"),
                Value::from(remaining),
            );
            resp.extensions.insert("cost".into(), Value::Object(map));
        }
        resp
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = match next.run(ctx, query, variables).await {
            Ok(doc) => doc,
            Err(mut e) => {
                let code = if e.message.contains("recursion") {
                    ErrorCode::QueryTooDeep
                } else {
                    ErrorCode::GraphqlParseFailed
                };
                self.set_stage(code);
                let ext = e.extensions.get_or_insert_with(Default::default);
                ext.set("code", code.as_str());
                return Err(e);
            }
        };
        let introspection_only = doc.operations.iter().all(|(_, op)| {
            op.node
                .selection_set
                .node
                .items
                .iter()
                .all(|sel| match &sel.node {
                    Selection::Field(f) => f.node.name.node.starts_with("__"),
                    _ => false,
                })
        });
        if let Ok(mut s) = self.state.lock() {
            s.introspection_only = introspection_only;
        }
        let max = self.core.cfg.limits.max_aliases;
        let aliases = count_aliases(&doc);
        if aliases > max {
            self.set_stage(ErrorCode::TooManyAliases);
            return Err(coded(
                format!("query uses {aliases} aliases; at most {max} are allowed"),
                ErrorCode::TooManyAliases,
            ));
        }
        Ok(doc)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await.inspect_err(|_| {
            self.set_stage(ErrorCode::GraphqlValidationFailed);
        })?;
        let limits = &self.core.cfg.limits;
        let exempt = self
            .state
            .lock()
            .map(|s| s.introspection_only)
            .unwrap_or(false);
        if exempt {
            return Ok(result);
        }
        if result.depth > limits.max_depth {
            self.set_stage(ErrorCode::QueryTooDeep);
            return Err(vec![coded(
                format!("query depth {} exceeds {}", result.depth, limits.max_depth),
                ErrorCode::QueryTooDeep,
            )]);
        }
        if result.complexity > limits.max_complexity {
            self.set_stage(ErrorCode::QueryTooComplex);
            return Err(vec![coded(
                format!(
                    "query cost {} exceeds {}",
                    result.complexity, limits.max_complexity
                ),
                ErrorCode::QueryTooComplex,
            )]);
        }
        let caller = ctx.data_opt::<Caller>();
        let rctx = caller.and_then(|c| c.ctx.as_ref());
        let ip = caller.map(|c| c.ip.as_str()).unwrap_or("unknown");
        let cost = result.complexity.max(1) as u64;
        match ratelimit::charge(&self.core, rctx, ip, cost).await {
            Ok(charge) => {
                if let Ok(mut s) = self.state.lock() {
                    s.cost = Some((charge.cost, charge.remaining));
                }
                Ok(result)
            }
            Err(e) => {
                let code = e.code();
                self.set_stage(code);
                let mut err = coded(e.to_string(), code);
                if let ServiceError::RateLimited { retry_after_ms } = e
                    && let Some(ext) = err.extensions.as_mut()
                {
                    ext.set("retryAfterMs", retry_after_ms);
                }
                if let ServiceError::Internal(inner) = &e {
                    tracing::error!(error = %format!("{inner:#}"), "rate limiter unavailable");
                    err.message = "internal error".into();
                }
                Err(vec![err])
            }
        }
    }
}

/// Execution errors that reach here without a code come from async-graphql itself: input
/// coercion failures are the client's; anything else is a bug and reported as INTERNAL.
fn classify_execution_error(message: &str) -> ErrorCode {
    if message.starts_with("Failed to parse")
        || message.starts_with("Invalid value")
        || message.contains("Unknown operation")
        || message.contains("Operation name required")
    {
        ErrorCode::Validation
    } else {
        ErrorCode::Internal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_counted_through_fragments() {
        let doc = async_graphql::parser::parse_query(
            "query { a: me { id } b: me { id x: email } ...F } fragment F on Query { c: me { id } }",
        )
        .unwrap();
        assert_eq!(count_aliases(&doc), 4);
    }
}
