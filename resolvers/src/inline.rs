//! Objects resolved in place, without a future per field.
//!
//! async-graphql resolves every field of an object as its own boxed future, polled through a
//! `FuturesUnordered`. A catalog page asks ~1,000 fields whose data is already in memory, and that
//! machinery, not the resolvers, was most of the gateway's CPU. A type implementing [`FieldsNow`]
//! answers each field synchronously when the data is at hand, straight into the `Value` map the
//! executor would have built: same keys (aliases), same order, same merging of repeated keys,
//! same errors with the same paths. A field that has to wait (a dataloader) answers
//! [`Pending`], and the whole object then goes through its generated resolver exactly as before.
//!
//! `@skip`/`@include` are applied to the document before execution, so no directive reaches
//! here; any other directive on a field sends the object down the generated path as well.

use std::borrow::Cow;

use async_graphql::indexmap::IndexMap;
use async_graphql::indexmap::map::Entry;
use async_graphql::parser::types::{Field, Selection};
use async_graphql::registry::Registry;
use async_graphql::resolver_utils::{ContainerType, resolve_container};
use async_graphql::{
    Context, ContextSelectionSet, Name, OutputType, Positioned, ServerError, ServerResult, Value,
};

/// The field cannot be answered without awaiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending;

/// A field's value now: `Ok(Ok(v))`, a resolver error `Ok(Err(e))` (the field is left out and
/// the error reported, as the executor does), or `Err(Pending)`.
pub type Now = Result<ServerResult<Value>, Pending>;

/// Errors met while resolving in place; reported only if the whole object resolves in place, so
/// a fallback to the generated path never reports an error twice.
#[derive(Default)]
pub struct Errors(Vec<ServerError>);

/// An object whose fields can be answered in place.
pub trait FieldsNow {
    /// The GraphQL type name (for `__typename` and fragment type conditions).
    fn graphql_type(&self) -> &'static str;
    /// The value of the field `ctx` selects. Nested objects use [`object_now`] and lists
    /// [`list_now`] with `errors`.
    fn field_now(&self, ctx: &Context<'_>, errors: &mut Errors) -> Now;
}

impl<T: FieldsNow + ?Sized> FieldsNow for &T {
    fn graphql_type(&self) -> &'static str {
        (**self).graphql_type()
    }
    fn field_now(&self, ctx: &Context<'_>, errors: &mut Errors) -> Now {
        (**self).field_now(ctx, errors)
    }
}

/// The value of a nested object field (`ctx` is the field) resolved in place.
pub fn object_now<T: FieldsNow + ?Sized>(
    ctx: &Context<'_>,
    object: &T,
    errors: &mut Errors,
) -> Now {
    let selection = ctx.with_selection_set(&ctx.item.node.selection_set);
    selection_now(&selection, object, errors).map(Ok)
}

/// The value of a list-of-objects field (`ctx` is the field), items resolved in place.
pub fn list_now<T: FieldsNow>(
    ctx: &Context<'_>,
    items: impl IntoIterator<Item = T>,
    errors: &mut Errors,
) -> Now {
    let items = items.into_iter();
    let mut out = Vec::with_capacity(items.size_hint().0);
    for (idx, item) in items.enumerate() {
        let at = ctx.with_index(idx);
        let selection = at.with_selection_set(&ctx.item.node.selection_set);
        out.push(selection_now(&selection, &item, errors)?);
    }
    Ok(Ok(Value::List(out)))
}

/// A resolver's result as the generated code reports it: converted at the field's position,
/// with the field's path.
pub fn reported<T>(
    ctx: &Context<'_>,
    r: async_graphql::Result<T>,
    ok: impl FnOnce(T) -> Value,
) -> Now {
    Ok(r.map(ok)
        .map_err(|e| ctx.set_error_path(e.into_server_error(ctx.item.pos))))
}

fn selection_now<T: FieldsNow + ?Sized>(
    ctx: &ContextSelectionSet<'_>,
    object: &T,
    errors: &mut Errors,
) -> Result<Value, Pending> {
    let mut map = IndexMap::with_capacity(ctx.item.node.items.len());
    collect(ctx, object, &mut map, errors)?;
    Ok(if map.is_empty() {
        Value::Null
    } else {
        Value::Object(map)
    })
}

fn collect<T: FieldsNow + ?Sized>(
    ctx: &ContextSelectionSet<'_>,
    object: &T,
    map: &mut IndexMap<Name, Value>,
    errors: &mut Errors,
) -> Result<(), Pending> {
    for selection in &ctx.item.node.items {
        let selection_set = match &selection.node {
            Selection::Field(field) => {
                if !field.node.directives.is_empty() {
                    return Err(Pending);
                }
                let key = field.node.response_key().node.clone();
                if field.node.name.node == "__typename" {
                    insert(map, key, Value::String(object.graphql_type().to_string()));
                    continue;
                }
                let ctx_field = ctx.with_field(field);
                match object.field_now(&ctx_field, errors)? {
                    Ok(value) => insert(map, key, value),
                    Err(e) => errors.0.push(e),
                }
                continue;
            }
            Selection::FragmentSpread(spread) => {
                let Some(fragment) = ctx.query_env.fragments.get(&spread.node.fragment_name.node)
                else {
                    return Err(Pending);
                };
                let on = fragment.node.type_condition.node.on.node.as_str();
                if !applies(ctx, object.graphql_type(), Some(on)) {
                    continue;
                }
                &fragment.node.selection_set
            }
            Selection::InlineFragment(fragment) => {
                let on = fragment
                    .node
                    .type_condition
                    .as_ref()
                    .map(|c| c.node.on.node.as_str());
                if !applies(ctx, object.graphql_type(), on) {
                    continue;
                }
                &fragment.node.selection_set
            }
        };
        collect(&ctx.with_selection_set(selection_set), object, map, errors)?;
    }
    Ok(())
}

/// Whether a fragment with type condition `on` applies to an object of type `type_name`.
fn applies(ctx: &ContextSelectionSet<'_>, type_name: &str, on: Option<&str>) -> bool {
    match on {
        None => true,
        Some(on) if on == type_name => true,
        Some(on) => ctx
            .schema_env
            .registry
            .implements
            .get(type_name)
            .is_some_and(|interfaces| interfaces.contains(on)),
    }
}

/// A value under a response key; a repeated key merges objects as the executor does.
fn insert(map: &mut IndexMap<Name, Value>, key: Name, value: Value) {
    let previous = match map.entry(key) {
        Entry::Vacant(slot) => {
            slot.insert(value);
            return;
        }
        Entry::Occupied(slot) => slot.into_mut(),
    };
    match (previous, value) {
        (Value::Object(into), Value::Object(from)) => {
            for (k, v) in from {
                insert(into, k, v);
            }
        }
        (Value::List(into), Value::List(from)) => {
            for (target, v) in into.iter_mut().zip(from) {
                if let (Value::Object(into), Value::Object(from)) = (target, v) {
                    for (k, v) in from {
                        insert(into, k, v);
                    }
                }
            }
        }
        _ => {}
    }
}

/// An object type that resolves in place when it can. Its schema type (name, fields, docs) is
/// `T`'s; only the execution differs.
pub struct Inlined<T>(pub T);

impl<T: FieldsNow + ContainerType> OutputType for Inlined<T> {
    fn type_name() -> Cow<'static, str> {
        T::type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        T::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        _field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        let mut errors = Errors::default();
        match selection_now(ctx, &self.0, &mut errors) {
            Ok(value) => {
                for e in errors.0 {
                    ctx.add_error(e);
                }
                Ok(value)
            }
            Err(Pending) => resolve_container(ctx, &self.0).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::{EmptyMutation, EmptySubscription, Object, Request, Schema, SimpleObject};

    use super::*;

    #[derive(SimpleObject, Clone)]
    struct Leaf {
        a: i32,
        b: String,
    }

    impl FieldsNow for Leaf {
        fn graphql_type(&self) -> &'static str {
            "Leaf"
        }
        fn field_now(&self, ctx: &Context<'_>, _: &mut Errors) -> Now {
            Ok(Ok(match ctx.item.node.name.node.as_str() {
                "a" => Value::from(self.a),
                "b" => Value::String(self.b.clone()),
                _ => return Err(Pending),
            }))
        }
    }

    #[derive(Clone)]
    struct Thing {
        id: i32,
        leaves: Vec<Leaf>,
        fail: bool,
    }

    #[Object]
    impl Thing {
        async fn id(&self) -> i32 {
            self.id
        }
        async fn name(&self, shout: Option<bool>) -> String {
            match shout {
                Some(true) => format!("THING {}", self.id),
                _ => format!("thing {}", self.id),
            }
        }
        async fn leaves(&self) -> Vec<Leaf> {
            self.leaves.clone()
        }
        async fn first_leaf(&self) -> Option<Leaf> {
            self.leaves.first().cloned()
        }
        async fn broken(&self) -> async_graphql::Result<Option<i32>> {
            match self.fail {
                true => Err("broken thing".into()),
                false => Ok(Some(self.id)),
            }
        }
        /// Answered only by the generated resolver.
        async fn slow(&self) -> i32 {
            self.id * 10
        }
    }

    impl FieldsNow for Thing {
        fn graphql_type(&self) -> &'static str {
            "Thing"
        }
        fn field_now(&self, ctx: &Context<'_>, errors: &mut Errors) -> Now {
            Ok(Ok(match ctx.item.node.name.node.as_str() {
                "id" => Value::from(self.id),
                "name" => {
                    let shout = match ctx.param_value::<Option<bool>>("shout", None) {
                        Ok((_, shout)) => shout,
                        Err(e) => return Ok(Err(ctx.set_error_path(e))),
                    };
                    let name = match shout {
                        Some(true) => format!("THING {}", self.id),
                        _ => format!("thing {}", self.id),
                    };
                    Value::String(name)
                }
                "leaves" => return list_now(ctx, &self.leaves, errors),
                "firstLeaf" => match self.leaves.first() {
                    Some(leaf) => return object_now(ctx, leaf, errors),
                    None => Value::Null,
                },
                "broken" => {
                    let r = match self.fail {
                        true => Err("broken thing".into()),
                        false => Ok(self.id),
                    };
                    return reported(ctx, r, Value::from);
                }
                _ => return Err(Pending),
            }))
        }
    }

    fn things() -> Vec<Thing> {
        (0..3)
            .map(|i| Thing {
                id: i,
                leaves: (0..i)
                    .map(|j| Leaf {
                        a: j,
                        b: format!("leaf {i}.{j}"),
                    })
                    .collect(),
                fail: i == 1,
            })
            .collect()
    }

    struct Query;

    #[Object]
    impl Query {
        async fn inlined(&self) -> Vec<Inlined<Thing>> {
            things().into_iter().map(Inlined).collect()
        }
        /// Same length as `inlined`, so error locations compare equal.
        async fn derived(&self) -> Vec<Thing> {
            things()
        }
    }

    /// The response (data and errors, as JSON text, so key order counts) of `query` with
    /// `ROOT` replaced by `r: <root>`.
    async fn answer(query: &str, root: &str, variables: serde_json::Value) -> String {
        let schema = Schema::new(Query, EmptyMutation, EmptySubscription);
        let query = query.replace("ROOT", &format!("r: {root}"));
        let request = Request::new(query).variables(async_graphql::Variables::from_json(variables));
        serde_json::to_string(&schema.execute(request).await).unwrap()
    }

    #[tokio::test]
    async fn in_place_resolution_answers_exactly_what_the_generated_resolvers_answer() {
        let cases = [
            "{ ROOT { id name __typename leaves { a b __typename } } }",
            "{ ROOT { x: id x: id leaves { a } leaves { b } n: name(shout: true) y: name } }",
            "{ ROOT { firstLeaf { a } firstLeaf { b } l: leaves { a } l: leaves { b } } }",
            "fragment F on Thing { name leaves { b } } { ROOT { ...F ... on Thing { id } ... { broken } } }",
            "{ ROOT { id broken leaves { a } } }",
            "{ ROOT { id slow leaves { a } } }",
            "{ ROOT { leaves { a } broken slow } }",
            "query($s: Boolean!) { ROOT { id @skip(if: $s) name @include(if: $s) leaves @include(if: $s) { a } } }",
            "query($shout: Boolean) { ROOT { name(shout: $shout) } }",
            "{ ROOT { __typename } }",
        ];
        for query in cases {
            for variables in [
                serde_json::json!({"s": true, "shout": true}),
                serde_json::json!({"s": false}),
            ] {
                let inlined = answer(query, "inlined", variables.clone()).await;
                let derived = answer(query, "derived", variables).await;
                assert_eq!(inlined, derived, "{query}");
            }
        }
        // The cases do reach both outcomes: values and a located, pathed error.
        let broken = answer("{ ROOT { id broken } }", "inlined", serde_json::json!({})).await;
        assert!(broken.contains(r#""path":["r",1,"broken"]"#), "{broken}");
        assert!(broken.contains(r#""broken":2"#), "{broken}");
    }
}
