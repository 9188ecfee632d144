//! Keyset pagination: `?limit=` (default 20, max 100) and an opaque `?cursor=`, answered as
//! `{"items": [...], "next_cursor": "..." | null}`.
//!
//! A store query asks for `limit + 1` rows after the cursor's key; [`Page::from_rows`] keeps
//! `limit` of them and makes the next cursor from the last one kept, only when more exist.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, FieldErrors};

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

/// The raw query parameters, as a handler extracts them.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (opaque; absent or empty for the first page).
    #[param(pattern = r"^[A-Za-z0-9_-]*$", max_length = 1024)]
    pub cursor: Option<String>,
}

/// Validated paging input: how many rows to fetch, after which key.
#[derive(Debug, Clone, PartialEq)]
pub struct PageRequest<K> {
    pub limit: u32,
    pub after: Option<K>,
}

impl<K> PageRequest<K> {
    /// The `LIMIT` to bind: one more than asked, to learn whether another page exists.
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.limit) + 1
    }
}

impl PageParams {
    /// Checks the limit and decodes the cursor into the key type `K` of the listing.
    pub fn parse<K: DeserializeOwned>(&self) -> Result<PageRequest<K>, ApiError> {
        let mut errors = FieldErrors::default();
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            errors.add("limit", format!("must be between 1 and {MAX_LIMIT}"));
        }
        let after = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(cursor) => errors.take("cursor", decode_cursor(cursor)),
        };
        errors.into_result()?;
        Ok(PageRequest { limit, after })
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `?cursor=` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows fetched in listing order; `key` gives the
    /// keyset key of a row and `item` its public form.
    pub fn from_rows<R, K: Serialize>(
        mut rows: Vec<R>,
        request: &PageRequest<impl Sized>,
        key: impl Fn(&R) -> K,
        item: impl FnMut(R) -> T,
    ) -> Self {
        let limit = request.limit as usize;
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|row| encode_cursor(&key(row)))
        } else {
            None
        };
        Page {
            items: rows.into_iter().map(item).collect(),
            next_cursor,
        }
    }
}

pub fn encode_cursor<K: Serialize>(key: &K) -> String {
    // A key is plain data (ids, timestamps): serialising it cannot fail.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).unwrap_or_default())
}

pub fn decode_cursor<K: DeserializeOwned>(cursor: &str) -> Result<K, &'static str> {
    const INVALID: &str = "is not a cursor returned by this listing";
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| INVALID)?;
    serde_json::from_slice(&bytes).map_err(|_| INVALID)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_cursors_are_validated() {
        let ok: PageRequest<(i64, String)> = PageParams::default().parse().unwrap();
        assert_eq!(
            ok,
            PageRequest {
                limit: 20,
                after: None
            }
        );

        for bad in [0, 101] {
            let err = PageParams {
                limit: Some(bad),
                cursor: None,
            }
            .parse::<i64>()
            .unwrap_err()
            .to_problem();
            assert_eq!(err.status, 422);
            assert!(err.errors.unwrap().contains_key("limit"));
        }
        let err = PageParams {
            limit: None,
            cursor: Some("%%%".into()),
        }
        .parse::<i64>()
        .unwrap_err()
        .to_problem();
        assert!(err.errors.unwrap().contains_key("cursor"));
    }

    #[test]
    fn next_cursor_only_when_more_rows_exist() {
        let request = PageRequest::<i64> {
            limit: 2,
            after: None,
        };
        let page = Page::from_rows(vec![5, 4, 3], &request, |r| *r, |r| r * 10);
        assert_eq!(page.items, vec![50, 40]);
        let key: i64 = decode_cursor(page.next_cursor.as_deref().unwrap()).unwrap();
        assert_eq!(key, 4);

        let last = Page::from_rows(vec![2, 1], &request, |r| *r, |r| r);
        assert_eq!(last.next_cursor, None);
    }
}
