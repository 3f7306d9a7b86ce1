//! The OpenAPI 3.1 document served at `/v1/openapi.json` (docs/api.md is the prose version). The bodies' schemas are
//! generated from the handlers' own types ([`schemas`]); the operations below name, for each route, its parameters
//! with the patterns the server enforces and every status it can answer. `tests/suite/openapi.rs` validates the
//! document and runs schemathesis against a server with it, so a route, a parameter or a status the document does not
//! describe fails the tests.

mod schemas;

use serde_json::{json, Map, Value};

use schemas::reference;

const U64_MAX: u64 = u64::MAX;

fn param(name: &str, place: &str, required: bool, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": place, "required": required, "schema": schema, "description": description})
}

fn position_schema(minimum: u64) -> Value {
    json!({"type": "integer", "minimum": minimum, "maximum": U64_MAX})
}

/// `Ledger-Min-Position`: read-your-writes across processes (docs/api.md). Every route honours it; the document
/// names it on the reads, where it is meant to be used.
fn min_position() -> Value {
    param(
        "Ledger-Min-Position",
        "header",
        false,
        position_schema(0),
        "wait (up to 5 s, then 503 position_not_reached) until this process reflects this position, as a command's \
         answer gave it in Ledger-Position; a position after the log's head is 400 beyond_head",
    )
}

fn as_of() -> Value {
    param(
        "as_of",
        "query",
        false,
        json!({"type": "string", "minLength": 1,
               "anyOf": [{"pattern": "^[0-9]{1,19}$"}, {"format": "date-time"}]}),
        "a position (a whole number, at most the head: after it is 400 as_of_beyond_head) or an RFC 3339 business time",
    )
}

fn id(component: &str) -> Value {
    param(
        "id",
        "path",
        true,
        reference(component),
        "a lowercase hyphenated UUID",
    )
}

fn consumer_name() -> Value {
    param(
        "name",
        "path",
        true,
        json!({"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}),
        "the consumer's name: 1 to 64 letters, digits, '-', '_' or '.'",
    )
}

/// An answer with a JSON body of `schema`.
fn json_answer(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn error(description: &str) -> Value {
    json_answer(description, reference("Error"))
}

/// The statuses every route can answer: a bad parameter or header, authentication and permission (with a tokens
/// file), an internal failure, and storage out of reach or a `Ledger-Min-Position` not reached.
fn common(responses: &mut Map<String, Value>) {
    let add = |r: &mut Map<String, Value>, code: &str, v: Value| {
        r.entry(code.to_string()).or_insert(v);
    };
    add(
        responses,
        "400",
        error("a malformed parameter or header, or a position after the log's head"),
    );
    add(responses, "401", error("with a tokens file: no bearer token, or one the server does not know (docs/security.md)"));
    add(
        responses,
        "403",
        error("the caller's principal may not do this (docs/security.md)"),
    );
    add(
        responses,
        "500",
        error("an internal failure; the server log says more"),
    );
    add(responses, "503", error("storage out of reach, or a Ledger-Min-Position not reached in 5 s; Retry-After says when to retry"));
}

fn with_body_errors(responses: &mut Map<String, Value>) {
    responses.insert("408".into(), error("the body did not arrive in time"));
    responses.insert(
        "413".into(),
        error("the body is larger than the server's limit (16 MiB by default)"),
    );
    responses.insert("415".into(), error("the body is not JSON"));
}

fn operation(summary: &str, parameters: Vec<Value>, mut responses: Map<String, Value>) -> Value {
    common(&mut responses);
    json!({"summary": summary, "parameters": parameters, "responses": responses})
}

fn responses(pairs: Vec<(&str, Value)>) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// A view: 200 with the tag, 304 when `If-None-Match` names it, 404 for an id the ledger does not know.
fn view(summary: &str, component: &str, id_component: &str, with_as_of: bool) -> Value {
    let tagged = json!({
        "ETag": {"description": "a weak tag that changes when what the answer says about the entity changes", "schema": {"type": "string"}},
        "Cache-Control": {"description": "private, no-cache", "schema": {"type": "string"}}});
    let mut ok = json_answer(summary, reference(component));
    ok["headers"] = tagged.clone();
    let mut parameters = vec![
        id(id_component),
        param(
            "If-None-Match",
            "header",
            false,
            json!({"type": "string"}),
            "a tag this route answered earlier: 304 without a body while it still holds",
        ),
        min_position(),
    ];
    if with_as_of {
        parameters.insert(1, as_of());
    } else {
        parameters.insert(
            1,
            param(
                "include_refusals",
                "query",
                false,
                json!({"type": "boolean"}),
                "also list the refused commands that named the customer",
            ),
        );
    }
    json!({"get": operation(summary, parameters, responses(vec![
        ("200", ok),
        ("304", json!({"description": "the caller's copy is current", "headers": tagged})),
        ("404", error("not in this ledger (at that point), or not visible to the caller")),
    ]))})
}

/// A stream's answer: SSE or NDJSON by `Accept`, 406 when neither is acceptable.
fn stream_answers(extra: Vec<(&str, Value)>) -> Map<String, Value> {
    let mut r = responses(vec![
        (
            "200",
            json!({"description": "events (and heartbeats) after the start, live, until the bound if one was given",
            "content": {"text/event-stream": {"schema": sse_event()},
                        "application/x-ndjson": {"schema": {"type": "string"}, "x-item": reference("Envelope")}}}),
        ),
        (
            "406",
            error("Accept takes neither text/event-stream nor application/x-ndjson"),
        ),
    ]);
    r.extend(extra.into_iter().map(|(k, v)| (k.to_string(), v)));
    r
}

/// One Server-Sent Event of a stream: `id` the position, `event` the type (or `heartbeat`), `data` the envelope (or
/// the CloudEvent, or the heartbeat's position) as JSON.
fn sse_event() -> Value {
    json!({"type": "object", "required": ["id", "event", "data"],
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9]+$"},
            "event": {"type": "string"},
            "data": {"type": "string", "contentMediaType": "application/json"}}})
}

fn bound_params() -> Vec<Value> {
    vec![
        min_position(),
        param("to", "query", false, position_schema(0), "end the stream once it has scanned through this position"),
        param("limit", "query", false, position_schema(1), "end the stream after this many events"),
        param("format", "query", false, json!({"type": "string", "enum": ["envelope", "cloudevents"]}),
              "cloudevents: each event a structured CloudEvent whose data is the envelope (docs/streams.md)"),
        param("Last-Event-ID", "header", false, position_schema(0),
              "resume after this position (takes precedence over from)"),
    ]
}

fn types_param() -> Value {
    let one = format!("({})", crate::domain::Event::TYPE_NAMES.join("|"));
    param(
        "types",
        "query",
        false,
        json!({"type": "string", "pattern": format!("^({one}(,{one})*)?$")}),
        "comma-separated event types (empty: all)",
    )
}

fn paths() -> Value {
    let ndjson = |d: &str, item: &str| {
        json!({"description": d, "content": {"application/x-ndjson": {"schema": {"type": "string"},
               "x-item": reference(item)}}})
    };
    let position_header = json!({"Ledger-Position": {
        "description": "the log's head when the command was answered: send it as Ledger-Min-Position with a following read",
        "schema": {"type": "integer", "minimum": 0}}});
    let command_answer = |d: &str| {
        json!({"description": d, "headers": position_header,
               "content": {"application/json": {"schema": {"anyOf": [reference("Outcome"), reference("Error")]}},
                           "application/x-ndjson": {"schema": {"type": "string"}, "x-item": reference("Outcome")}}})
    };
    let mut command_responses = responses(vec![
        ("200", command_answer("committed (JSON), or one outcome line per command line (NDJSON)")),
        ("400", command_answer("the single command is malformed: outcome invalid")),
        ("422", command_answer("refused by a rule: outcome refused")),
        ("503", command_answer("storage failed or the writer is out of reach: outcome unknown; retry with the same command_id")),
        ("507", command_answer("the disk is full: outcome unknown; retry with the same command_id once there is room")),
    ]);
    with_body_errors(&mut command_responses);
    command_responses.insert(
        "415".into(),
        error("neither application/json nor application/x-ndjson"),
    );
    let mut create_responses = responses(vec![
        (
            "200",
            json_answer(
                "it exists already, with the same filter",
                reference("ConsumerStatus"),
            ),
        ),
        ("201", json_answer("created", reference("ConsumerStatus"))),
        ("409", error("it exists with another filter")),
    ]);
    with_body_errors(&mut create_responses);
    let mut ack_responses = responses(vec![
        ("200", json_answer("moved", reference("ConsumerStatus"))),
        ("404", error("no such consumer")),
        ("409", error("the checkpoint would move backwards")),
    ]);
    with_body_errors(&mut ack_responses);
    common(&mut command_responses);
    common(&mut create_responses);
    common(&mut ack_responses);
    let mut consumer_stream_params = vec![consumer_name()];
    consumer_stream_params.extend(bound_params());
    let stream_params = {
        let mut p = vec![
            param(
                "from",
                "query",
                false,
                position_schema(0),
                "events after this position (default 0: all)",
            ),
            param(
                "customer",
                "query",
                false,
                reference("CustomerId"),
                "only events about this customer",
            ),
            param(
                "partner",
                "query",
                false,
                reference("PartnerId"),
                "only events about this partner",
            ),
            types_param(),
        ];
        p.extend(bound_params());
        p
    };
    json!({
        "/": {"get": operation("What this server is, its routes and documentation", vec![],
            responses(vec![("200", json_answer("an index", json!({"type": "object"})))]))},
        "/healthz": {"get": operation("Liveness, head position and integrity", vec![], responses(vec![
            ("200", json_answer("serving", reference("Health"))),
            ("503", json_answer("damaged, or its storage out of reach", reference("Health")))]))},
        "/metrics": {"get": operation("Prometheus text metrics", vec![], responses(vec![
            ("200", json!({"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}))]))},
        "/v1/openapi.json": {"get": operation("This document", vec![], responses(vec![
            ("200", json_answer("the OpenAPI document", json!({"type": "object"})))]))},
        "/v1/commands": {"post": {
            "summary": "One command (application/json) or many (application/x-ndjson); outcomes as in docs/wire.md",
            "requestBody": {"required": true, "content": {
                "application/json": {"schema": reference("Command")},
                "application/x-ndjson": {"schema": {"type": "string"}, "x-item": reference("Command")}}},
            "responses": command_responses}},
        "/v1/customers/{id}": view("The customer view, now or as of a position or an instant", "CustomerView", "CustomerId", true),
        "/v1/customers/{id}/history": view("The customer's events, oldest first, and its refused commands", "History", "CustomerId", false),
        "/v1/partners/{id}": view("A partner's customers with relationship, delegated admin and subscription counts", "PartnerView", "PartnerId", true),
        "/v1/subscriptions/{id}": view("One subscription", "SubscriptionView", "SubscriptionId", true),
        "/v1/events": {"get": operation("Catch-up then live: SSE (id = position) or NDJSON, with heartbeats", stream_params,
            stream_answers(vec![]))},
        "/v1/consumers": {"get": operation("Durable consumers with checkpoint and lag", vec![], responses(vec![
            ("200", json_answer("the consumers", json!({"type": "array", "items": reference("ConsumerStatus")})))]))},
        "/v1/consumers/{name}": {
            "put": {
                "summary": "Create a durable consumer (idempotent with the same filter)",
                "parameters": [consumer_name()],
                "requestBody": {"required": false, "content": {"application/json": {"schema": reference("CreateBody")}}},
                "responses": create_responses},
            "get": operation("One consumer", vec![consumer_name()], responses(vec![
                ("200", json_answer("the consumer", reference("ConsumerStatus"))),
                ("404", error("no such consumer"))])),
            "delete": operation("Remove a consumer", vec![consumer_name()], responses(vec![
                ("204", json!({"description": "removed"})),
                ("404", error("no such consumer"))]))},
        "/v1/consumers/{name}/events": {"get": operation("The consumer's stream, from its checkpoint",
            consumer_stream_params,
            stream_answers(vec![("404", error("no such consumer"))]))},
        "/v1/consumers/{name}/ack": {"post": {
            "summary": "Move the consumer's checkpoint forward",
            "parameters": [consumer_name()],
            "requestBody": {"required": true, "content": {"application/json": {"schema": reference("AckBody")}}},
            "responses": ack_responses}},
        "/v1/backup": {"get": operation("A complete backup at a consistent cut (docs/audit.md)", vec![], responses(vec![
            ("200", json!({"description": "the backup, one record per line", "content": {"application/x-ndjson": {"schema": {"type": "string"}}}}))]))},
        "/v1/checkpoint": {"get": operation("The head's position and hash", vec![], responses(vec![
            ("200", json_answer("the checkpoint", reference("Checkpoint")))]))},
        "/v1/verify": {"get": operation("Walks the hash chain up to the head", vec![], responses(vec![
            ("200", ndjson("progress lines, then verified or damaged", "VerifyLine"))]))},
    })
}

/// The document.
pub fn document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {"title": "partner-ledger", "version": env!("CARGO_PKG_VERSION"),
                 "description": "An event-sourced ledger of CSP partner relationships. See docs/api.md. With a tokens file every request needs a bearer token (401 without one, 403 when not allowed; docs/security.md); in local mode none. Every error is JSON: {\"error\": code, \"message\": text, …}."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas::components(),
        },
        "security": [{"bearer": []}, {}],
        "paths": with_not_acceptable(paths()),
    })
}

/// Every read answers 406 when `Accept` takes none of its media types (docs/api.md).
fn with_not_acceptable(mut paths: Value) -> Value {
    for item in paths
        .as_object_mut()
        .into_iter()
        .flat_map(|p| p.values_mut())
    {
        if let Some(r) = item
            .pointer_mut("/get/responses")
            .and_then(Value::as_object_mut)
        {
            r.entry("406")
                .or_insert_with(|| error("Accept takes none of this route's media types"));
        }
    }
    paths
}
