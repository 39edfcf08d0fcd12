//! Parsed-document cache: clients send the same few query strings over and over, so each is
//! parsed once per process. Validation, limits and the cost budget still run on every request.

use std::collections::HashMap;
use std::sync::Mutex;

use async_graphql::BatchRequest;
use async_graphql::parser::types::ExecutableDocument;

/// Queries longer than this are parsed every time (and never fill the cache).
const MAX_QUERY_LEN: usize = 8 * 1024;

pub struct DocCache {
    capacity: usize,
    docs: Mutex<HashMap<String, ExecutableDocument>>,
}

impl DocCache {
    pub fn new(capacity: usize) -> Self {
        DocCache {
            capacity,
            docs: Mutex::new(HashMap::new()),
        }
    }

    /// Attaches a cached or freshly parsed document to every request it can. Unparseable
    /// queries are left alone so the normal path reports them with their code.
    pub fn prime(&self, batch: BatchRequest) -> BatchRequest {
        match batch {
            BatchRequest::Single(r) => BatchRequest::Single(self.prime_one(r)),
            BatchRequest::Batch(v) => {
                BatchRequest::Batch(v.into_iter().map(|r| self.prime_one(r)).collect())
            }
        }
    }

    fn prime_one(&self, mut req: async_graphql::Request) -> async_graphql::Request {
        if req.query.len() > MAX_QUERY_LEN {
            return req;
        }
        let cached = self
            .docs
            .lock()
            .ok()
            .and_then(|m| m.get(&req.query).cloned());
        let doc = match cached {
            Some(doc) => doc,
            None => match async_graphql::parser::parse_query(&req.query) {
                Ok(doc) => {
                    if let Ok(mut m) = self.docs.lock() {
                        // A full cache is cleared rather than tracked: simple, and bounded.
                        if m.len() >= self.capacity {
                            m.clear();
                        }
                        m.insert(req.query.clone(), doc.clone());
                    }
                    doc
                }
                Err(_) => return req,
            },
        };
        req.set_parsed_query(doc);
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_queries_are_parsed_once_and_bad_ones_left_alone() {
        let cache = DocCache::new(2);
        let q = "{ me { id } }";
        for _ in 0..3 {
            cache.prime(BatchRequest::Single(async_graphql::Request::new(q)));
        }
        assert_eq!(cache.docs.lock().unwrap().len(), 1);
        cache.prime(BatchRequest::Single(async_graphql::Request::new("{ me { ")));
        assert_eq!(cache.docs.lock().unwrap().len(), 1);
        cache.prime(BatchRequest::Single(async_graphql::Request::new("{ a }")));
        cache.prime(BatchRequest::Single(async_graphql::Request::new("{ b }")));
        assert!(cache.docs.lock().unwrap().len() <= 2);
    }
}
