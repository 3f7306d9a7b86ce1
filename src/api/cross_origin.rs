//! Cross-origin calls from browser apps (CORS; docs/api.md, "Browser apps on other origins"), off unless origins are
//! configured (`serve --cors-origin`). An allowed origin may send the headers the API reads (`Authorization`, the
//! stream and caching headers) and read the headers it answers with (`ETag`, `Ledger-Position`, `X-Request-Id`,
//! `Retry-After`). Credentials are bearer tokens in `Authorization`, never cookies, so the answers do not say
//! `Access-Control-Allow-Credentials`.

use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Checks and normalises `--cors-origin` values: each is `scheme://host[:port]` (http or https), no path, no
/// trailing slash, no wildcard.
pub fn cors_origins(given: &[String]) -> anyhow::Result<Vec<HeaderValue>> {
    let mut out = Vec::new();
    for raw in given.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let uri: axum::http::Uri = raw
            .parse()
            .map_err(|e| anyhow::anyhow!("--cors-origin `{raw}` is not an origin: {e}"))?;
        let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
        let bare = uri.path_and_query().is_none_or(|p| p.as_str() == "/") && !raw.ends_with('/');
        if !scheme_ok || uri.host().is_none() || !bare || raw.contains('*') {
            anyhow::bail!(
                "--cors-origin `{raw}` is not an origin: give the scheme, host and port a browser app is served \
                 from, such as https://app.example.com or http://localhost:5173, without a path"
            );
        }
        let origin = HeaderValue::from_str(&raw.to_ascii_lowercase())
            .map_err(|_| anyhow::anyhow!("--cors-origin `{raw}` is not an origin"))?;
        if !out.contains(&origin) {
            out.push(origin);
        }
    }
    Ok(out)
}

/// The CORS layer for `origins`; `None` when there are none (CORS off).
pub fn layer(origins: &[HeaderValue]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().cloned()))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::ACCEPT,
                header::IF_NONE_MATCH,
                HeaderName::from_static("last-event-id"),
                HeaderName::from_static("ledger-min-position"),
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("traceparent"),
            ])
            .expose_headers([
                header::ETAG,
                header::RETRY_AFTER,
                HeaderName::from_static("ledger-position"),
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("traceparent"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        let ok = cors_origins(&[
            "https://App.example.com".into(),
            "http://localhost:5173".into(),
        ])
        .unwrap();
        assert_eq!(ok, ["https://app.example.com", "http://localhost:5173"]);
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/console",
            "ftp://app.example.com",
            "*",
            "https://*.example.com",
        ] {
            let e = cors_origins(&[bad.to_string()]).unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
        assert!(cors_origins(&[]).unwrap().is_empty());
    }
}
