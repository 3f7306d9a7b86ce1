//! The request parts handlers read (path segments, query strings, JSON bodies), with every way they can be wrong
//! answered in the one error shape ([`ApiError`]) instead of the framework's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A query string, parsed strictly: an unknown value, a malformed number or a repeated parameter is 400
/// `invalid_query`, naming the problem.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// The path's parameters: a segment that does not decode (not UTF-8) is 400 `invalid_path`.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))
    }
}

/// A JSON body: `None` when the request has none; otherwise it must say `Content-Type: application/json` or another
/// `application/…+json` type (else 415
/// `unsupported_media_type`) and be a JSON object that decodes into `T`, unknown fields refused (else 400
/// `invalid_body`, naming the problem). An array is refused even where its items would fill `T`'s fields in order,
/// as serde would otherwise allow.
pub fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let media = media_type(headers);
    if media != "application/json"
        && !(media.starts_with("application/") && media.ends_with("+json"))
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send the body as application/json, not `{media}`"),
        ));
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the body must be a JSON object, such as {\"position\": 42}",
        ));
    }
    serde_json::from_slice(body).map(Some).map_err(|e| {
        ApiError::bad_request("invalid_body", format!("the body is not valid here: {e}"))
    })
}

/// A request's media type, lowercase and without parameters (empty when it gives none).
pub fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// 404 for a route that does not exist.
pub async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(
        "no_route",
        format!(
            "there is no route {method} {}; GET / lists the routes",
            uri.path()
        ),
    )
}

/// 405 for a route that exists but not with this method.
pub async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} does not take {method}; GET / lists the routes",
            uri.path()
        ),
    )
}
