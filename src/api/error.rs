//! The one error shape of the API: every handler's failure is an [`ApiError`], answered as
//! `{"error": code, "message": …}` with the fields of its own (a `head`, a denial's `reason`) and headers
//! (`WWW-Authenticate`) it carries.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{Map, Value};

use crate::store::StoreError;

/// An answer that is not a success.
#[derive(Clone, Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Map<String, Value>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error with a status, a stable code (`error`) and a message for people.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        let mut body = Map::new();
        body.insert("error".into(), Value::String(code.into()));
        body.insert("message".into(), Value::String(message.into()));
        ApiError {
            status,
            body,
            headers: Vec::new(),
        }
    }

    /// A 400 with a code and a message.
    pub fn bad_request(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A 404 with a code and a message.
    pub fn not_found(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    /// The same error with one more field in its body.
    pub fn with(mut self, key: &str, value: impl serde::Serialize) -> ApiError {
        self.body.insert(
            key.into(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
        self
    }

    /// The same error with a response header.
    pub fn header(mut self, name: HeaderName, value: &'static str) -> ApiError {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }

    /// Its status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// A request that needs a bearer token.
    pub fn unauthorized(self) -> ApiError {
        self.header(header::WWW_AUTHENTICATE, "Bearer")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(Value::Object(self.body))).into_response();
        for (name, value) in self.headers {
            r.headers_mut().insert(name, value);
        }
        r
    }
}

/// Storage failures reach clients as 507 (`insufficient_storage`, when the disk reserve refused a write: free
/// space and retry) or 500 (`internal`, with the details in the server's log, never in the answer).
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        if let StoreError::WriteFailed { message } = &e {
            return ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
                message.clone(),
            );
        }
        if let StoreError::Unreachable { .. } = &e {
            tracing::warn!(error = %e, "the database cannot be reached");
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "the ledger's database cannot be reached right now; retry later (GET /healthz says when it is back)",
            )
            .header(header::RETRY_AFTER, "1");
        }
        tracing::error!(error = %e, "storage failed while answering a request");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the ledger's storage failed; see the server log",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_error_answers_its_status_code_message_fields_and_headers() {
        let r = ApiError::bad_request("beyond_head", "too far")
            .with("head", 7)
            .unauthorized()
            .into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": "beyond_head", "message": "too far", "head": 7})
        );
    }

    #[test]
    fn a_full_disk_is_507_and_other_storage_failures_500_without_details() {
        let full = ApiError::from(StoreError::WriteFailed {
            message: "the disk is full".into(),
        });
        assert_eq!(full.status(), StatusCode::INSUFFICIENT_STORAGE);
        let other = ApiError::from(StoreError::FailStopped);
        assert_eq!(other.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!format!("{other:?}").contains("reopen"), "{other:?}");
    }
}
