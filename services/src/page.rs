//! Cursor pagination over uuid v7 ids (time-ordered), capped page sizes.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uphub_domain::identity::InvalidInput;
use uuid::Uuid;

pub const MAX_PAGE: u64 = 100;

#[derive(Debug, Clone, Copy)]
pub struct PageArgs {
    pub first: u64,
    pub after: Option<Uuid>,
}

impl PageArgs {
    pub fn parse(first: Option<i32>, after: Option<&str>) -> Result<PageArgs, InvalidInput> {
        let first = match first {
            None => 20,
            Some(n) if (1..=MAX_PAGE as i32).contains(&n) => n as u64,
            Some(_) => {
                return Err(InvalidInput {
                    field: "first",
                    message: format!("must be between 1 and {MAX_PAGE}"),
                });
            }
        };
        let after = match after {
            None => None,
            Some(c) => Some(decode_cursor(c).ok_or(InvalidInput {
                field: "after",
                message: "is not a valid cursor".into(),
            })?),
        };
        Ok(PageArgs { first, after })
    }
}

pub fn encode_cursor(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

pub fn decode_cursor(c: &str) -> Option<Uuid> {
    let bytes = URL_SAFE_NO_PAD.decode(c.as_bytes()).ok()?;
    Uuid::from_slice(&bytes).ok()
}

/// One page of results plus whether more follow.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_next: bool,
}

impl<T> Page<T> {
    /// Builds a page from `first + 1` fetched rows.
    pub fn from_overfetch(mut rows: Vec<T>, first: u64) -> Page<T> {
        let has_next = rows.len() as u64 > first;
        rows.truncate(first as usize);
        Page {
            items: rows,
            has_next,
        }
    }

    /// The same page with each item converted.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            has_next: self.has_next,
        }
    }
}
