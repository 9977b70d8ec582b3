//! Pagination of history: `limit` (default 50, 1..=100) and `offset` (default 0).

use crate::error::QueryError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    limit: u32,
    offset: u64,
}

impl Page {
    pub const DEFAULT_LIMIT: u32 = 50;
    pub const MAX_LIMIT: u32 = 100;

    /// Builds a page from already-typed numbers, with the same bounds as [`Page::parse`].
    pub fn new(limit: u32, offset: u64) -> Result<Page, QueryError> {
        if !(1..=Self::MAX_LIMIT).contains(&limit) {
            return Err(QueryError::new(
                "limit",
                "limit must be an integer from 1 to 100",
            ));
        }
        Ok(Page { limit, offset })
    }

    /// Reads the raw query values; absent means default.
    pub fn parse(limit: Option<&str>, offset: Option<&str>) -> Result<Page, QueryError> {
        let limit = match limit {
            None => Self::DEFAULT_LIMIT,
            Some(l) => l
                .trim()
                .parse::<u32>()
                .map_err(|_| QueryError::new("limit", "limit must be an integer from 1 to 100"))?,
        };
        let offset = match offset {
            None => 0,
            Some(o) => o
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|o| *o <= i64::MAX as u64)
                .ok_or_else(|| {
                    QueryError::new("offset", "offset must be a non-negative integer")
                })?,
        };
        Page::new(limit, offset)
    }

    pub fn limit(self) -> u32 {
        self.limit
    }

    pub fn offset(self) -> u64 {
        self.offset
    }
}

impl Default for Page {
    fn default() -> Self {
        Page {
            limit: Self::DEFAULT_LIMIT,
            offset: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        assert_eq!(
            Page::parse(None, None).unwrap(),
            Page {
                limit: 50,
                offset: 0
            }
        );
        assert_eq!(
            Page::parse(Some("100"), Some("7")).unwrap(),
            Page {
                limit: 100,
                offset: 7
            }
        );
        assert_eq!(Page::parse(Some("1"), None).unwrap().limit(), 1);
        for bad in ["0", "101", "-1", "ten", "1.5", ""] {
            assert_eq!(
                Page::parse(Some(bad), None).unwrap_err().field(),
                "limit",
                "{bad}"
            );
        }
        for bad in ["-1", "x", "0.5"] {
            assert_eq!(
                Page::parse(None, Some(bad)).unwrap_err().field(),
                "offset",
                "{bad}"
            );
        }
    }
}
