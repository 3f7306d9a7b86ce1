//! Conditional reads of the views (docs/api.md, "Caching"): every view carries a weak `ETag` that changes exactly
//! when what the view says about its entity changes, and `If-None-Match` with a matching tag is answered 304 with
//! no body.
//!
//! The tag is a digest of the view without its `as_of` block. `as_of` names the log's head and its business time,
//! which move with every command to any entity; everything else in a view changes only with the entity's own events,
//! with the profile events of the parties it names, or with business time crossing one of its end dates (a GDAP
//! relationship that expires without an event of its own). Digesting the rest covers all three, where the position of
//! the entity's last event would miss the last two. The tag is weak (`W/`) because two bodies with the same tag may
//! differ in `as_of`: the same statement about the entity, observed at different heads.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Caches may keep a view only for the caller who asked (confined principals see different bodies) and must
/// revalidate it before use.
pub const CACHE_CONTROL: &str = "private, no-cache";

/// The weak entity tag of a view body: the first 128 bits of the SHA-256 of its canonical JSON without `as_of`.
pub fn etag_of(body: &Value) -> String {
    let digest = match body {
        Value::Object(map) if map.contains_key("as_of") => {
            let mut rest = map.clone();
            rest.remove("as_of");
            Sha256::digest(Value::Object(rest).to_string().as_bytes())
        }
        other => Sha256::digest(other.to_string().as_bytes()),
    };
    format!("W/\"{}\"", hex::encode(&digest[..16]))
}

/// Whether `If-None-Match` in `headers` names `tag` (weak comparison, as RFC 9110 prescribes for it) or is `*`.
pub fn matches(headers: &HeaderMap, tag: &str) -> bool {
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let ours = opaque(tag);
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == "*" || opaque(t) == ours)
}

/// The response for a view: 304 without a body when the caller already holds it, else 200 with the JSON; both with
/// the tag and the cache headers.
pub fn respond(headers: &HeaderMap, body: Value) -> Response {
    let tag = etag_of(&body);
    let mut response = if matches(headers, &tag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        axum::Json(body).into_response()
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    h.append(header::VARY, HeaderValue::from_static("authorization"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn asking(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn the_tag_ignores_as_of_and_follows_everything_else() {
        let a = json!({"customer": "c", "as_of": {"position": 1}, "partners": []});
        let b = json!({"customer": "c", "as_of": {"position": 9}, "partners": []});
        let c = json!({"customer": "c", "as_of": {"position": 9}, "partners": ["p"]});
        assert_eq!(etag_of(&a), etag_of(&b));
        assert_ne!(etag_of(&b), etag_of(&c));
        assert!(etag_of(&a).starts_with("W/\"") && etag_of(&a).len() == 2 + 32 + 2);
    }

    #[test]
    fn if_none_match_compares_weakly_in_lists_and_accepts_a_star() {
        let tag = etag_of(&json!({"x": 1}));
        let strong = tag.trim_start_matches("W/").to_string();
        assert!(matches(&asking(&tag), &tag));
        assert!(matches(&asking(&strong), &tag));
        assert!(matches(&asking(&format!("\"other\", {tag}")), &tag));
        assert!(matches(&asking("*"), &tag));
        assert!(!matches(&asking("\"other\""), &tag));
        assert!(!matches(&HeaderMap::new(), &tag));
    }
}
