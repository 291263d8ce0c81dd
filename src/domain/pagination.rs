//! Cursor pagination: `?cursor=<last id seen>&limit=1..=100`.

use serde::Deserialize;
use utoipa::IntoParams;

use super::invalid::Invalid;

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Opaque cursor from the previous page's `nextCursor`.
    #[param(pattern = "^([1-9][0-9]{0,17})?$")]
    pub cursor: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// A validated page request. `after` is the id boundary (exclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub after: Option<i64>,
    pub limit: i64,
}

impl TryFrom<&PageQuery> for Page {
    type Error = Invalid;

    fn try_from(q: &PageQuery) -> Result<Self, Invalid> {
        let limit = page_limit(q.limit)?;
        let after = match q.cursor.as_deref() {
            None | Some("") => None,
            Some(c) => match c.parse::<i64>() {
                Ok(id) if id > 0 => Some(id),
                _ => {
                    return Err(Invalid::new("cursor", "is not a cursor this API issued"));
                }
            },
        };
        Ok(Page { after, limit })
    }
}

/// Validate a page size: 1..=[`MAX_LIMIT`], default [`DEFAULT_LIMIT`].
pub fn page_limit(limit: Option<i64>) -> Result<i64, Invalid> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Invalid::new(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    Ok(limit)
}

/// Validate a cursor over UUID-keyed rows (outbox events): the id of the last row seen, in the
/// hyphenated lowercase form the API issues. Anything else (garbage, a NUL) is refused before
/// it reaches the database.
pub fn uuid_cursor(cursor: Option<&str>) -> Result<Option<String>, Invalid> {
    match cursor {
        None | Some("") => Ok(None),
        Some(c) => uuid::Uuid::try_parse(c)
            .map(|id| Some(id.hyphenated().to_string()))
            .map_err(|_| Invalid::new("cursor", "is not a cursor this API issued")),
    }
}

impl Page {
    /// Rows to fetch: one more than the page, to know whether a next page exists.
    pub fn fetch_limit(&self) -> i64 {
        self.limit + 1
    }

    /// Trim the over-fetched row and compute the next cursor from the last item's id.
    pub fn finish<T>(
        &self,
        mut rows: Vec<T>,
        id_of: impl Fn(&T) -> i64,
    ) -> (Vec<T>, Option<String>) {
        let more = rows.len() as i64 > self.limit;
        rows.truncate(self.limit as usize);
        let next = if more {
            rows.last().map(|r| id_of(r).to_string())
        } else {
            None
        };
        (rows, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(cursor: Option<&str>, limit: Option<i64>) -> Result<Page, Invalid> {
        Page::try_from(&PageQuery {
            cursor: cursor.map(str::to_string),
            limit,
        })
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(
            page(None, None).unwrap(),
            Page {
                after: None,
                limit: 20
            }
        );
        assert!(page(None, Some(0)).is_err());
        assert!(page(None, Some(101)).is_err());
        assert_eq!(
            page(Some("42"), Some(100)).unwrap(),
            Page {
                after: Some(42),
                limit: 100
            }
        );
        assert!(page(Some("abc"), None).is_err());
        assert!(page(Some("-3"), None).is_err());
    }

    #[test]
    fn uuid_cursors_are_checked() {
        assert_eq!(uuid_cursor(None).unwrap(), None);
        assert_eq!(uuid_cursor(Some("")).unwrap(), None);
        let id = "0190b6c2-7d3e-7cc1-9a0e-1f2d3c4b5a69";
        assert_eq!(uuid_cursor(Some(id)).unwrap().as_deref(), Some(id));
        assert_eq!(
            uuid_cursor(Some(&id.to_uppercase())).unwrap().as_deref(),
            Some(id)
        );
        for bad in [
            "garbage",
            "0190b6c2\0",
            "0190b6c2-7d3e-7cc1-9a0e-1f2d3c4b5a6\0",
        ] {
            assert!(uuid_cursor(Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn finish_sets_next_cursor_only_when_more() {
        let p = Page {
            after: None,
            limit: 2,
        };
        assert_eq!(
            p.finish(vec![1, 2, 3], |x| *x),
            (vec![1, 2], Some("2".to_string()))
        );
        assert_eq!(p.finish(vec![1, 2], |x| *x), (vec![1, 2], None));
    }
}
