//! What the server says about itself: `GET /` (an index of the routes), `/healthz` (head and integrity) and
//! `/metrics` (Prometheus text).

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AppState;

/// `GET /`: what this server is and where to go from here (the routes and the documentation in the repository).
pub(super) async fn index(State(s): State<AppState>) -> Response {
    Json(json!({
        "name": "partner-ledger",
        "version": env!("CARGO_PKG_VERSION"),
        "head": s.ledger.store().head().position,
        "openapi": "/v1/openapi.json",
        "routes": {
            "commands": "POST /v1/commands (application/json: one command; application/x-ndjson: many)",
            "customer": "GET /v1/customers/{id}[?as_of=POSITION|TIME]",
            "customer_history": "GET /v1/customers/{id}/history[?include_refusals=true]",
            "partner": "GET /v1/partners/{id}[?as_of=…]",
            "subscription": "GET /v1/subscriptions/{id}[?as_of=…]",
            "events": "GET /v1/events[?from=N&to=M&limit=K&customer=ID&partner=ID&types=A,B&format=cloudevents] (SSE, or NDJSON with Accept: application/x-ndjson)",
            "consumers": "GET|PUT|DELETE /v1/consumers/{name}, GET /v1/consumers/{name}/events, POST /v1/consumers/{name}/ack",
            "backup": "GET /v1/backup, GET /v1/checkpoint, GET /v1/verify",
            "health": "GET /healthz, GET /metrics",
        },
        "docs": ["README.md", "docs/api.md", "docs/commands.md", "docs/events.md", "docs/errors.md",
            "docs/security.md", "docs/audit.md", "docs/recovery.md", "docs/streams.md"],
    }))
    .into_response()
}

/// `GET /healthz`: `200 {"status": "ok", …}`, or `503 {"status": "damaged", …}` once the background verification
/// found damage (writes are then refused; docs/recovery.md).
pub(super) async fn healthz(State(s): State<AppState>) -> Response {
    let integrity = s.ledger.integrity();
    let damaged = integrity.status == crate::ledger::IntegrityStatus::Damaged;
    let ledger = std::sync::Arc::clone(&s.ledger);
    let reachable = tokio::task::spawn_blocking(move || ledger.store().reachable())
        .await
        .unwrap_or_else(|_| Err("the check did not finish".into()));
    // A follower that cannot follow the writer serves an ever older state: out of rotation until it can again.
    let following = s.ledger.following_error();
    let status = match (&reachable, damaged) {
        (_, true) => "damaged",
        (Err(_), false) => "unavailable",
        (Ok(()), false) if following.is_some() => "unavailable",
        (Ok(()), false) => "ok",
    };
    let mut body = json!({"status": status,
        "head": s.ledger.store().head().position, "integrity": integrity});
    if let Err(why) = reachable {
        body["storage"] = json!(why);
    }
    if s.insecure_http {
        // Listening beyond loopback without TLS, on purpose (--insecure-http): say so to whoever probes.
        body["insecure_http"] = json!(true);
    }
    body["tls"] = json!(s.tls.is_some());
    // Where several processes share a PostgreSQL ledger: which one writes (docs/operations.md).
    if s.ledger.lease_period().is_some() {
        body["role"] = match s.ledger.role() {
            crate::ledger::Role::Writer => json!("writer"),
            crate::ledger::Role::Follower { .. } if s.ledger.on_replica() => json!("replica"),
            crate::ledger::Role::Follower { .. } => json!("follower"),
        };
        if let Some(lag) = s.ledger.replica_lag() {
            body["replica"] = json!({"lag_seconds": lag.seconds, "replay_lag_bytes": lag.replay_bytes,
                "streaming": lag.streaming});
        }
        if let crate::ledger::Role::Follower { writer: Some(w) } = s.ledger.role() {
            body["writer"] = json!({"name": w.name, "address": w.address, "epoch": w.epoch});
        }
        body["live"] = json!(s.ledger.live().position());
        if let Some(why) = following {
            body["following"] = json!(why);
        }
    }
    if let Some(r) = &s.relay {
        // The relay's trouble is not the ledger's: it falls behind, and says why here, without taking the server
        // out of rotation.
        let (phase, error) = r.phase();
        let head = s.ledger.store().head().position;
        body["relay"] = json!({"nats": r.config.place(), "stream": r.config.stream, "phase": phase,
            "relayed": r.relayed(), "lag": head.0.saturating_sub(r.relayed().0), "error": error});
    }
    let body = Json(body);
    if status != "ok" {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    } else {
        body.into_response()
    }
}

pub(super) async fn metrics(State(s): State<AppState>) -> Response {
    let t = metrics_text(&s);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], t).into_response()
}

fn metrics_text(s: &AppState) -> String {
    use std::fmt::Write;
    let st = s.ledger.stats();
    let h = s.ledger.histograms();
    let mut t = String::new();
    let _ = writeln!(t, "# HELP partner_ledger_commands_total Commands answered, by outcome.\n# TYPE partner_ledger_commands_total counter");
    for (outcome, n) in [
        ("committed", st.committed),
        ("duplicate", st.duplicates),
        ("refused", st.refused),
        ("unknown", st.unknown),
        ("invalid", s.metrics.invalid.load(Ordering::Relaxed)),
    ] {
        let _ = writeln!(
            t,
            "partner_ledger_commands_total{{outcome=\"{outcome}\"}} {n}"
        );
    }
    let _ = writeln!(t, "# HELP partner_ledger_events_appended_total Events appended.\n# TYPE partner_ledger_events_appended_total counter\npartner_ledger_events_appended_total {}", st.events);
    let _ = writeln!(t, "# HELP partner_ledger_fdatasyncs_total fdatasync calls, one per durable batch.\n# TYPE partner_ledger_fdatasyncs_total counter\npartner_ledger_fdatasyncs_total {}", st.fdatasyncs);
    latency_histogram(
        &mut t,
        "partner_ledger_commit_latency_seconds",
        "Time to decide, write, flush and sync a batch.",
        (&h.commit_latency_buckets, h.commit_latency_seconds_sum),
    );
    let _ = writeln!(t, "# HELP partner_ledger_commit_batch_size Commands per durable batch.\n# TYPE partner_ledger_commit_batch_size histogram");
    for (i, b) in crate::ledger::BATCH_BUCKETS.iter().enumerate() {
        let _ = writeln!(
            t,
            "partner_ledger_commit_batch_size_bucket{{le=\"{b}\"}} {}",
            h.batch_size_buckets[i]
        );
    }
    let batches = h.batch_size_buckets.last().copied().unwrap_or(0);
    let _ = writeln!(t, "partner_ledger_commit_batch_size_bucket{{le=\"+Inf\"}} {batches}\npartner_ledger_commit_batch_size_sum {}\npartner_ledger_commit_batch_size_count {batches}", st.committed);
    let _ = writeln!(t, "# HELP partner_ledger_stream_consumers Event streams connected.\n# TYPE partner_ledger_stream_consumers gauge\npartner_ledger_stream_consumers {}", s.metrics.streams.load(Ordering::Relaxed));
    let _ = writeln!(t, "# HELP partner_ledger_head_position The last position of the log.\n# TYPE partner_ledger_head_position gauge\npartner_ledger_head_position {}", s.ledger.store().head().position);
    if s.ledger.lease_period().is_some() {
        let writer = u8::from(s.ledger.role() == crate::ledger::Role::Writer);
        let _ = writeln!(t, "# HELP partner_ledger_writer 1 while this process holds the writer's lease of a shared PostgreSQL ledger, 0 while it follows.\n# TYPE partner_ledger_writer gauge\npartner_ledger_writer {writer}");
        let _ = writeln!(t, "# HELP partner_ledger_live_position The position this process's views reflect.\n# TYPE partner_ledger_live_position gauge\npartner_ledger_live_position {}", s.ledger.live().position());
    }
    if let Some(lag) = s.ledger.replica_lag() {
        let _ = writeln!(t, "# HELP partner_ledger_replica_lag_seconds On a replica: seconds since the last transaction it replayed committed on the primary, while WAL it received is still to be replayed (0 when all is replayed).\n# TYPE partner_ledger_replica_lag_seconds gauge\npartner_ledger_replica_lag_seconds {}", lag.seconds);
        let _ = writeln!(t, "# HELP partner_ledger_replica_replay_lag_bytes On a replica: WAL received from the primary and not replayed yet.\n# TYPE partner_ledger_replica_replay_lag_bytes gauge\npartner_ledger_replica_replay_lag_bytes {}", lag.replay_bytes);
        let _ = writeln!(t, "# HELP partner_ledger_replica_streaming On a replica: 1 while it streams from a primary.\n# TYPE partner_ledger_replica_streaming gauge\npartner_ledger_replica_streaming {}", u8::from(lag.streaming));
    }
    if let Some(r) = &s.relay {
        let head = s.ledger.store().head().position.0;
        let _ = writeln!(t, "# HELP partner_ledger_relay_position The last position the JetStream stream holds.\n# TYPE partner_ledger_relay_position gauge\npartner_ledger_relay_position {}", r.relayed());
        let _ = writeln!(t, "# HELP partner_ledger_relay_lag_events Events committed but not yet in the JetStream stream.\n# TYPE partner_ledger_relay_lag_events gauge\npartner_ledger_relay_lag_events {}", head.saturating_sub(r.relayed().0));
        let (buckets, sum) = r.latency();
        latency_histogram(
            &mut t,
            "partner_ledger_relay_latency_seconds",
            "From reading an event off the log (as it commits, when the relay keeps up) to the broker's acknowledgement.",
            (&buckets, sum),
        );
    }
    let _ = writeln!(t, "# HELP partner_ledger_entities Entities in the live write model, by kind (what its memory grows with).\n# TYPE partner_ledger_entities gauge");
    for (kind, n) in s.ledger.live().read(|st, _| st.entity_counts()) {
        let _ = writeln!(t, "partner_ledger_entities{{kind=\"{kind}\"}} {n}");
    }
    let _ = writeln!(t, "# HELP partner_ledger_denied_requests_total Requests refused by authentication (401) or authorisation (403).\n# TYPE partner_ledger_denied_requests_total counter");
    for ((status, reason), n) in s.auth.denied_counts() {
        let _ = writeln!(
            t,
            "partner_ledger_denied_requests_total{{status=\"{status}\",reason=\"{reason}\"}} {n}"
        );
    }
    t
}

/// A histogram in `crate::ledger::LATENCY_BUCKETS`, in Prometheus text: cumulative `buckets` (the last one counting
/// all) and their `sum` in seconds.
fn latency_histogram(t: &mut String, name: &str, help: &str, (buckets, sum): (&[u64], f64)) {
    use std::fmt::Write;
    let _ = writeln!(t, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (b, n) in crate::ledger::LATENCY_BUCKETS.iter().zip(buckets) {
        let _ = writeln!(t, "{name}_bucket{{le=\"{b}\"}} {n}");
    }
    let total = buckets.last().copied().unwrap_or(0);
    let _ = writeln!(
        t,
        "{name}_bucket{{le=\"+Inf\"}} {total}\n{name}_sum {sum}\n{name}_count {total}"
    );
}
