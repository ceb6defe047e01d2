//! Paging of every list call: page sizes with a default and a maximum, a byte budget
//! per page, and page tokens.
//!
//! Owns the token format (opaque to callers: hex of a kind and an exact position)
//! and the walk over a list sorted by name. A token names the position after the
//! last item sent, never an offset, so items added or removed between two pages shift
//! nothing. It must never put anything in a token the caller could not see.

use prost::Message;
use tonic::Status;

use crate::status::invalid;

/// Items of a name-ordered list (connections, workflows, connectors) per page when
/// the request sets no size.
pub(crate) const DEFAULT_PAGE: usize = 100;
/// The most items of a name-ordered list per page.
pub(crate) const MAX_PAGE: usize = 1_000;
/// Encoded bytes of a page's items: a page ends before passing it (one item at
/// least), so an answer stays under every client's default 4 MiB decoding limit.
pub(crate) const PAGE_BYTES: usize = 3 << 20;

/// The page size for a request asking `asked` (0: `default`; capped at `max`).
pub(crate) fn size(asked: u32, default: usize, max: usize) -> usize {
    match asked {
        0 => default,
        n => usize::try_from(n).unwrap_or(max).min(max),
    }
}

/// A page token for `kind` at `position` (its parts joined by newlines).
pub(crate) fn token(kind: &str, position: &[&str]) -> String {
    let mut text = kind.to_owned();
    for p in position {
        text.push('\n');
        text.push_str(p);
    }
    hex::encode(text)
}

/// The position a page token of `kind` holds (`None` for an empty token: the first
/// page).
#[allow(clippy::result_large_err, reason = "handlers return tonic's Status")]
pub(crate) fn position(kind: &str, token: &str) -> Result<Option<Vec<String>>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || {
        invalid(
            "page_token",
            "is not a page token of this call (pass back `next_page_token` as it came)",
        )
    };
    let text = hex::decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad)?;
    let mut parts = text.split('\n').map(str::to_owned);
    if parts.next().as_deref() != Some(kind) {
        return Err(bad());
    }
    Ok(Some(parts.collect()))
}

/// Whether a page holding `count` items of `bytes` encoded bytes has room for one
/// more of `next` bytes.
pub(crate) fn room(count: usize, bytes: usize, next: usize, size: usize) -> bool {
    count == 0 || (count < size && bytes.saturating_add(next) <= PAGE_BYTES)
}

/// One page of `items` (sorted by name, names unique) after the token's name: the
/// messages and the next page's token (empty on the last page).
#[allow(clippy::result_large_err, reason = "handlers return tonic's Status")]
pub(crate) fn by_name<T, M: Message>(
    items: impl IntoIterator<Item = T>,
    name: impl Fn(&T) -> &str,
    message: impl Fn(T) -> M,
    page_size: u32,
    page_token: &str,
) -> Result<(Vec<M>, String), Status> {
    let size = size(page_size, DEFAULT_PAGE, MAX_PAGE);
    let after = position("name", page_token)?.map(|p| p.join("\n"));
    let mut out = Vec::new();
    let mut bytes = 0;
    let mut last = String::new();
    for item in items {
        if after.as_deref().is_some_and(|a| name(&item) <= a) {
            continue;
        }
        let item_name = name(&item).to_owned();
        let m = message(item);
        let len = m.encoded_len();
        if !room(out.len(), bytes, len, size) {
            return Ok((out, token("name", &[&last])));
        }
        bytes += len;
        last = item_name;
        out.push(m);
    }
    Ok((out, String::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_walk_pages_without_gaps_and_refuses_foreign_tokens() {
        let names: Vec<String> = (0..25).map(|i| format!("c{i:03}")).collect();
        let mut seen = Vec::new();
        let mut next = String::new();
        loop {
            let (page, token) = by_name(names.clone(), |n| n.as_str(), |n| n, 10, &next)
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(page.len() <= 10);
            seen.extend(page);
            if token.is_empty() {
                break;
            }
            next = token;
        }
        assert_eq!(seen, names);
        let runs_token = token("run", &["1", "x"]);
        assert!(by_name(names, |n| n.as_str(), |n| n, 10, &runs_token).is_err());
        assert_eq!(size(0, 100, 1000), 100);
        assert_eq!(size(5000, 100, 1000), 1000);
    }
}
