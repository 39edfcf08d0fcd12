use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextRequest, NextValidation,
};
use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
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

/// Whether any string in the document's arguments, variable defaults or the variables holds
/// U+0000. Postgres text cannot store it, so such input is refused up front as VALIDATION
/// rather than failing deep inside a write as INTERNAL.
fn has_nul(doc: &ExecutableDocument, variables: &Variables) -> bool {
    use async_graphql::Positioned;
    use async_graphql::Value as Const;
    use async_graphql::parser::types::Directive;
    type Arguments = [(
        Positioned<async_graphql::Name>,
        Positioned<async_graphql_value::Value>,
    )];
    // Argument values with variables: variables are checked on their own, so they count as null.
    fn args(a: &Arguments) -> bool {
        a.iter().any(|(_, v)| {
            v.node
                .clone()
                .into_const_with(|_| Ok::<_, ()>(Const::Null))
                .is_ok_and(|c| konst(&c))
        })
    }
    fn konst(v: &Const) -> bool {
        match v {
            Const::String(s) => s.contains('\0'),
            Const::List(l) => l.iter().any(konst),
            Const::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || konst(v)),
            _ => false,
        }
    }
    fn directives(ds: &[Positioned<Directive>]) -> bool {
        ds.iter().any(|d| args(&d.node.arguments))
    }
    fn set(s: &SelectionSet) -> bool {
        s.items.iter().any(|sel| match &sel.node {
            Selection::Field(f) => {
                args(&f.node.arguments)
                    || directives(&f.node.directives)
                    || set(&f.node.selection_set.node)
            }
            Selection::InlineFragment(fr) => {
                directives(&fr.node.directives) || set(&fr.node.selection_set.node)
            }
            Selection::FragmentSpread(sp) => directives(&sp.node.directives),
        })
    }
    variables.iter().any(|(_, v)| konst(v))
        || doc
            .fragments
            .iter()
            .any(|(_, f)| directives(&f.node.directives) || set(&f.node.selection_set.node))
        || doc.operations.iter().any(|(_, op)| {
            directives(&op.node.directives)
                || set(&op.node.selection_set.node)
                || op.node.variable_definitions.iter().any(|d| {
                    d.node
                        .default_value
                        .as_ref()
                        .is_some_and(|v| konst(&v.node))
                })
        })
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
            .map(|c| c.request_id.as_str())
            .unwrap_or_default();
        finish(&mut resp, stage, request_id, cost);
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
        if has_nul(&doc, variables) {
            self.set_stage(ErrorCode::Validation);
            return Err(coded(
                "strings must not contain the NUL character (U+0000)",
                ErrorCode::Validation,
            ));
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
                // A ticket is only handed to queries (`MemoKey::of`); introspection returned
                // above, uncharged, so it is never memoized.
                if let Some(ticket) = ctx.data_opt::<MemoTicket>() {
                    ticket.record(cost);
                }
                Ok(result)
            }
            Err(e) => {
                self.set_stage(e.code());
                Err(vec![charge_error(e)])
            }
        }
    }
}

/// The coded error for a refused or failed cost charge.
pub(crate) fn charge_error(e: ServiceError) -> ServerError {
    let mut err = coded(e.to_string(), e.code());
    if let ServiceError::RateLimited { retry_after_ms } = e
        && let Some(ext) = err.extensions.as_mut()
    {
        ext.set("retryAfterMs", retry_after_ms);
    }
    if let ServiceError::Internal(inner) = &e {
        tracing::error!(error = %format!("{inner:#}"), "rate limiter unavailable");
        err.message = "internal error".into();
    }
    err
}

/// Gives every error of `resp` a code (from the failed stage, or classified), hides INTERNAL
/// details behind the request id, and reports the charged cost in `extensions.cost`.
pub(crate) fn finish(
    resp: &mut Response,
    stage: Option<ErrorCode>,
    request_id: &str,
    cost: Option<(u64, u64)>,
) {
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
            ext.set("requestId", request_id);
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
}

/// Queries (with their variables) that passed parsing, the alias, depth and complexity limits
/// and validation once, with their cost. Such a query is deterministic in all of that, so a
/// repeat skips the Protection extension: it is charged by `crate::Schemas::execute` and run
/// on the schema without extensions, where async-graphql does not route every field through
/// the extension chain. Mutations and subscriptions always take the full path.
#[derive(Default)]
pub struct Memo {
    costs: Mutex<HashMap<MemoKey, u64>>,
}

/// Memo entries kept; a full memo is cleared (bounded and simple; an entry costs one full run).
const MEMO_CAPACITY: usize = 2048;
/// Requests with longer variables are not memoized (they are rarely repeated).
const MEMO_MAX_VARIABLES: usize = 2048;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MemoKey {
    query: String,
    operation: Option<String>,
    variables: String,
}

impl MemoKey {
    /// The key of a request that may be memoized: a parsed document whose operations are all
    /// queries, and short variables.
    pub(crate) fn of(req: &mut async_graphql::Request) -> Option<MemoKey> {
        let variables = serde_json::to_string(&req.variables).ok()?;
        if variables.len() > MEMO_MAX_VARIABLES {
            return None;
        }
        let doc = req.parsed_query().ok()?;
        let queries_only = doc
            .operations
            .iter()
            .all(|(_, op)| op.node.ty == OperationType::Query);
        queries_only.then(|| MemoKey {
            query: req.query.clone(),
            operation: req.operation_name.clone(),
            variables,
        })
    }
}

impl Memo {
    pub(crate) fn cost(&self, key: &MemoKey) -> Option<u64> {
        self.costs.lock().ok()?.get(key).copied()
    }

    fn record(&self, key: MemoKey, cost: u64) {
        if let Ok(mut m) = self.costs.lock() {
            if m.len() >= MEMO_CAPACITY {
                m.clear();
            }
            m.insert(key, cost);
        }
    }
}

/// Put into a request's data on the full path: the extension records the request's cost here
/// once it has passed every check.
pub(crate) struct MemoTicket {
    pub(crate) memo: Arc<Memo>,
    pub(crate) key: MemoKey,
}

impl MemoTicket {
    fn record(&self, cost: u64) {
        self.memo.record(self.key.clone(), cost);
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
