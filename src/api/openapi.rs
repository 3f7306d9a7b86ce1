//! The OpenAPI description served at `/v1/openapi.json` (docs/api.md is the prose version).

use serde_json::{json, Value};

fn id_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}})
}

fn as_of() -> Value {
    json!({"name": "as_of", "in": "query", "required": false, "description": "a position or an RFC 3339 business time",
           "schema": {"type": "string"}})
}

/// A durable consumer's name, the path parameter of the `/v1/consumers/{name}` routes.
fn consumer_name() -> Value {
    json!({"name": "name", "in": "path", "required": true,
           "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}})
}

/// `Ledger-Min-Position`: read-your-writes across processes (docs/api.md).
fn min_position() -> Value {
    json!({"name": "Ledger-Min-Position", "in": "header", "required": false,
           "description": "wait (up to 5 s, then 503 position_not_reached) until this process reflects this position, as a command's answer gave it in Ledger-Position",
           "schema": {"type": "integer", "minimum": 0}})
}

/// `Ledger-Position` on a command's answer.
fn position_header() -> Value {
    json!({"Ledger-Position": {"description": "the log's head when the command was answered: send it as Ledger-Min-Position with a following read",
                               "schema": {"type": "integer", "minimum": 0}}})
}

fn errors() -> Value {
    json!({"400": {"description": "malformed id or parameter", "content": {"application/json": {}}},
           "404": {"description": "not in this ledger", "content": {"application/json": {}}}})
}

/// The document.
pub fn document() -> Value {
    let view = |summary: &str, param: &str| {
        let mut responses = errors();
        responses["200"] = json!({"description": summary, "content": {"application/json": {}}});
        json!({"get": {"summary": summary, "parameters": [id_param(param), as_of(), min_position()], "responses": responses}})
    };
    let customer = view("The customer view of WIRE.md, now or as of", "id");
    let partner = view(
        "A partner's customers with relationship, delegated admin and subscription counts",
        "id",
    );
    let subscription = view("One subscription", "id");
    let stream_params = json!([
        {"name": "from", "in": "query", "schema": {"type": "integer"}, "description": "events after this position"},
        {"name": "to", "in": "query", "schema": {"type": "integer", "minimum": 0}, "description": "end the stream after this position"},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}, "description": "end the stream after this many events"},
        {"name": "customer", "in": "query", "schema": {"type": "string", "format": "uuid"}},
        {"name": "partner", "in": "query", "schema": {"type": "string", "format": "uuid"}},
        {"name": "types", "in": "query", "schema": {"type": "string"}, "description": "comma-separated event types"},
        {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["envelope", "cloudevents"], "default": "envelope"}, "description": "cloudevents: each event a structured CloudEvent (application/cloudevents+json) whose data is the envelope (docs/streams.md)"},
        {"name": "Last-Event-ID", "in": "header", "schema": {"type": "integer"}, "description": "resume after this position"},
        min_position()
    ]);
    // A consumer's stream takes the same end and form (its filter and start are the consumer's own).
    let consumer_stream_params: Vec<serde_json::Value> = stream_params
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            ["to", "limit", "format", "Last-Event-ID"]
                .contains(&p["name"].as_str().unwrap_or_default())
        })
        .cloned()
        .collect();
    json!({
        "openapi": "3.0.3",
        "info": {"title": "partner-ledger", "version": env!("CARGO_PKG_VERSION"),
                 "description": "An event-sourced ledger of CSP partner relationships. See docs/api.md. With a tokens file every request needs a bearer token (401 without one, 403 when not allowed; docs/security.md); in local mode none."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}, {}],
        "paths": {
            "/healthz": {"get": {"summary": "Liveness and head position", "responses": {"200": {"description": "ok"}}}},
            "/metrics": {"get": {"summary": "Prometheus text metrics", "responses": {"200": {"description": "metrics", "content": {"text/plain": {}}}}}},
            "/v1/commands": {"post": {
                "summary": "One command (application/json) or many (application/x-ndjson); outcomes as in WIRE.md",
                "requestBody": {"required": true, "content": {"application/json": {}, "application/x-ndjson": {}}},
                "responses": {
                    "200": {"description": "committed (JSON), or one outcome line per input line (NDJSON)", "headers": position_header()},
                    "400": {"description": "the single command is malformed: {\"outcome\": \"invalid\", ...}", "headers": position_header()},
                    "413": {"description": "the body is larger than the server's limit (16 MiB by default)"},
                    "415": {"description": "neither application/json nor application/x-ndjson"},
                    "422": {"description": "refused by a rule: the refusal outcome", "headers": position_header()},
                    "503": {"description": "storage failed, or (several processes on one PostgreSQL ledger) the writer could not be reached: outcome unknown, retry with the same command_id", "headers": position_header()}}}},
            "/v1/customers/{id}": customer,
            "/v1/customers/{id}/history": {"get": {"summary": "The customer's events (and refusals with include_refusals=true)",
                "parameters": [id_param("id"), {"name": "include_refusals", "in": "query", "schema": {"type": "boolean"}}],
                "responses": errors()}},
            "/v1/partners/{id}": partner,
            "/v1/subscriptions/{id}": subscription,
            "/v1/events": {"get": {"summary": "Catch-up then live: SSE (id = position) or NDJSON (Accept: application/x-ndjson), with heartbeats",
                "parameters": stream_params, "responses": {"200": {"description": "a stream",
                    "content": {"text/event-stream": {}, "application/x-ndjson": {}}}}}},
            "/v1/consumers": {"get": {"summary": "Durable consumers with checkpoint and lag", "responses": {"200": {"description": "a list"}}}},
            "/v1/consumers/{name}": {
                "parameters": [consumer_name()],
                "put": {"summary": "Create a consumer: {customer?, partner?, types?, from?}", "responses": {
                    "201": {"description": "created"}, "200": {"description": "already exists with the same filter"},
                    "409": {"description": "exists with another filter"}}},
                "get": {"summary": "One consumer", "responses": {"200": {"description": "the consumer"}, "404": {"description": "none"}}},
                "delete": {"summary": "Remove a consumer", "responses": {"204": {"description": "removed"}, "404": {"description": "none"}}}},
            "/v1/consumers/{name}/events": {"parameters": [consumer_name()], "get": {"summary": "The consumer's stream from its checkpoint", "parameters": consumer_stream_params, "responses": {"200": {"description": "a stream"}}}},
            "/v1/consumers/{name}/ack": {"parameters": [consumer_name()], "post": {"summary": "Move the checkpoint: {\"position\": n}", "responses": {
                "200": {"description": "moved"}, "409": {"description": "backwards"}, "400": {"description": "beyond the head"}}}},
            "/v1/backup": {"get": {"summary": "A complete backup at a consistent cut (NDJSON; docs/audit.md)", "responses": {
                "200": {"description": "the backup", "content": {"application/x-ndjson": {}}}, "403": {"description": "not an operator, system or auditor"}}}},
            "/v1/checkpoint": {"get": {"summary": "The head's position and hash", "responses": {
                "200": {"description": "{\"position\", \"hash\", \"checkpoint\"}"}, "403": {"description": "not an operator, system or auditor"}}}},
            "/v1/verify": {"get": {"summary": "Walks the hash chain up to the head (NDJSON progress, then the result)", "responses": {
                "200": {"description": "progress lines, then verified or damaged", "content": {"application/x-ndjson": {}}}, "403": {"description": "not an operator, system or auditor"}}}}
        }
    })
}
