//! The HTTP service: commands, views, event streams and durable consumers over the library (docs/api.md).
//!
//! The router is a plain function of [`AppState`]; [`serve`] takes an injected listener and shutdown future, so tests
//! run the real server on `127.0.0.1:0`. Streams never hold the writer up: they follow the head through a `watch`
//! channel and read the log themselves, so a slow or stalled client only delays itself.

pub mod auth;
mod backup;
mod caching;
mod commands;
mod connection;
mod consumers;
mod cross_origin;
mod encoding;
mod error;
mod extract;
mod forward;
mod framing;
mod health;
mod middleware;
mod openapi;
mod server;
mod stream;
pub mod tls;
mod views;

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::Value;
use tokio::sync::watch;

use crate::ledger::Ledger;

pub use consumers::Consumers;
pub use cross_origin::cors_origins;
pub use error::ApiError;
pub use server::{clock_advance, serve};

/// The OpenAPI description served at `/v1/openapi.json`.
pub fn openapi_document() -> Value {
    openapi::document()
}

/// Settings of a running server.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// How often an idle or filtered stream sends a heartbeat with the scanned position.
    pub heartbeat: Duration,
    /// How often the scheduler issues `AdvanceClock` (also once at start-up).
    pub clock_interval: Duration,
    /// The largest request body accepted (larger: 413).
    pub body_limit: usize,
    /// How long a client may take to send a request's headers; a slower one is disconnected (slow-loris). An idle
    /// keep-alive connection is closed after this long too.
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body (larger: 408, nothing of it submitted).
    pub body_timeout: Duration,
    /// How long shutdown waits for requests in flight (commands are answered, streams end) before it closes the
    /// connections that remain, such as a stream whose client stopped reading.
    pub shutdown_grace: Duration,
    /// The CloudEvents `source` of the streams' CloudEvents form (`?format=cloudevents`; docs/streams.md).
    pub cloudevents_source: String,
    /// The JetStream relay to run beside the server (`--nats`; docs/streams.md).
    pub relay: Option<crate::relay::Config>,
    /// The origins browser apps may call the API from (`--cors-origin`; none: CORS off).
    pub cors_origins: Vec<axum::http::HeaderValue>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(15),
            clock_interval: Duration::from_secs(60),
            body_limit: 16 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            cloudevents_source: crate::relay::cloudevents::DEFAULT_SOURCE.to_string(),
            relay: None,
            cors_origins: Vec::new(),
        }
    }
}

/// Counters of the HTTP layer.
#[derive(Default)]
pub struct ApiMetrics {
    /// Streams currently connected.
    pub streams: AtomicI64,
    /// Command lines answered `invalid`.
    pub invalid: AtomicU64,
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub ledger: Arc<Ledger>,
    pub consumers: Arc<Consumers>,
    pub metrics: Arc<ApiMetrics>,
    pub config: ServeConfig,
    /// Turns true when the server shuts down, so open streams end and graceful shutdown can finish.
    pub stopping: watch::Receiver<bool>,
    /// How callers are authenticated (local mode unless [`AppState::with_auth`]).
    pub auth: Arc<auth::Auth>,
    /// The certificate connections are served with (`None`: plain HTTP/1.1 and h2c).
    pub tls: Option<Arc<tls::Tls>>,
    /// Listening beyond loopback without TLS, on purpose (`--insecure-http`): `/healthz` says so.
    pub insecure_http: bool,
    /// `--insecure-http` was given: commands carrying a bearer token may be forwarded over plain HTTP to a writer
    /// beyond this host (docs/operations.md).
    pub cleartext_forwarding: bool,
    /// The JetStream relay running in this process (`serve --nats`), for `/healthz` and `/metrics`.
    pub relay: Option<Arc<crate::relay::Status>>,
}

impl AppState {
    /// Builds the state for a ledger; `stopping` ends the streams when it turns true.
    pub fn new(
        ledger: Arc<Ledger>,
        config: ServeConfig,
        stopping: watch::Receiver<bool>,
    ) -> Result<AppState, crate::store::StoreError> {
        Ok(AppState {
            consumers: Arc::new(Consumers::open(Arc::clone(&ledger))),
            ledger,
            metrics: Arc::new(ApiMetrics::default()),
            config,
            stopping,
            auth: Arc::new(auth::Auth::local()),
            tls: None,
            insecure_http: false,
            cleartext_forwarding: false,
            relay: None,
        })
    }

    /// The same state, serving connections over TLS with `tls`.
    pub fn with_tls(mut self, tls: Option<Arc<tls::Tls>>) -> AppState {
        self.tls = tls;
        self
    }

    /// The same state, authenticating callers with `auth`.
    pub fn with_auth(mut self, auth: Arc<auth::Auth>) -> AppState {
        self.auth = auth;
        self
    }
}

/// The routes (docs/api.md).
pub fn router(state: AppState) -> Router {
    use axum::middleware::from_fn_with_state;
    let limit = state.config.body_limit;
    let operations_routes = Router::new()
        .route("/metrics", get(health::metrics))
        .route("/v1/consumers", get(consumers::list))
        .route(
            "/v1/consumers/{name}",
            put(consumers::create)
                .get(consumers::show)
                .delete(consumers::remove),
        )
        .route("/v1/consumers/{name}/events", get(consumers::events))
        .route("/v1/consumers/{name}/ack", post(consumers::ack))
        .route("/v1/backup", get(backup::backup))
        .route("/v1/checkpoint", get(backup::checkpoint))
        .route("/v1/verify", get(backup::verify))
        .route_layer(from_fn_with_state(
            state.clone(),
            middleware::operations_gate,
        ));
    Router::new()
        .route("/", get(health::index))
        .route("/healthz", get(health::healthz))
        .route(
            "/v1/openapi.json",
            get(|| async { Json(openapi::document()) }),
        )
        .route("/v1/commands", post(commands::post_commands))
        .route("/v1/customers/{id}", get(views::get_customer))
        .route(
            "/v1/customers/{id}/history",
            get(views::get_customer_history),
        )
        .route("/v1/partners/{id}", get(views::get_partner))
        .route("/v1/subscriptions/{id}", get(views::get_subscription))
        .route("/v1/events", get(stream::events))
        .merge(operations_routes)
        .fallback(extract::no_route)
        .method_not_allowed_fallback(extract::wrong_method)
        .layer(axum::middleware::from_fn(middleware::acceptable))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            forward::min_position,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::read_body_in_time,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(encoding::compression())
        .layer(tower::util::option_layer(cross_origin::layer(
            &state.config.cors_origins,
        )))
        .layer(axum::middleware::from_fn(middleware::request_id))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::strict_transport_security,
        ))
        .with_state(state)
}
