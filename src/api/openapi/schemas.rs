//! The document's `components.schemas`: generated from the types the handlers serialize and deserialize (schemars
//! reads their serde attributes), so a renamed field or a new command changes the document with the code. The few
//! answers built as JSON by hand (outcomes, errors, health) are described here next to the code that builds them.

use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

use crate::domain::command::Body;
use crate::domain::{Code, Event};

/// A `$ref` to a component.
pub fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// Every component schema.
pub fn components() -> Map<String, Value> {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator();
    generator.subschema_for::<crate::domain::view::CustomerView>();
    generator.subschema_for::<crate::domain::view::PartnerView>();
    generator.subschema_for::<crate::domain::view::SubscriptionView>();
    generator.subschema_for::<crate::query::HistoryLine>();
    generator.subschema_for::<crate::domain::RefusalRecord>();
    generator.subschema_for::<crate::store::Envelope>();
    generator.subschema_for::<super::super::consumers::ConsumerStatus>();
    generator.subschema_for::<super::super::consumers::CreateBody>();
    generator.subschema_for::<super::super::consumers::AckBody>();
    let command_types = Body::schemas(&mut generator);
    let mut all = generator.take_definitions(true);
    commands(&mut all, command_types);
    event_types(&mut all);
    all.insert("History".into(), history());
    all.insert("Outcome".into(), outcome());
    all.insert("Error".into(), error());
    all.insert("Health".into(), health());
    all.insert("Checkpoint".into(), checkpoint());
    all.insert("VerifyLine".into(), verify_line());
    all
}

/// Each command type: its own fields (generated) plus `type` and the fields every command may carry. `actor` is
/// required here because a caller without a token must name it; a caller with one may leave it out (the token's
/// principal acts).
fn commands(all: &mut Map<String, Value>, types: &[&str]) {
    let mut one_of = Vec::new();
    for name in types {
        let Some(Value::Object(schema)) = all.get_mut(*name) else {
            continue;
        };
        let properties = schema
            .entry("properties")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        let mut merged = Map::new();
        merged.insert("type".into(), json!({"const": name}));
        merged.insert(
            "command_id".into(),
            json!({"$ref": "#/components/schemas/CommandId", "description": "the idempotency key: a retry with the same id is answered with the original outcome (default: a fresh id)"}),
        );
        merged.insert(
            "at".into(),
            json!({"$ref": "#/components/schemas/Timestamp", "description": "business time (default: the clock's time)"}),
        );
        merged.insert("actor".into(), reference("Actor"));
        merged.insert("correlation_id".into(), reference("CorrelationId"));
        merged.extend(properties);
        schema.insert("properties".into(), Value::Object(merged));
        let required = schema
            .entry("required")
            .or_insert_with(|| json!([]))
            .as_array_mut();
        if let Some(required) = required {
            required.insert(0, json!("type"));
            required.push(json!("actor"));
        }
        schema.insert("additionalProperties".into(), json!(false));
        one_of.push(reference(name));
    }
    // Every definition a command's fields need is generated with them; `CommandId`, `CorrelationId`, `Actor` and
    // `Timestamp` are named above even when no command field uses them.
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    generator.subschema_for::<crate::domain::CommandId>();
    generator.subschema_for::<crate::domain::CorrelationId>();
    generator.subschema_for::<crate::domain::Actor>();
    generator.subschema_for::<crate::domain::Timestamp>();
    for (k, v) in generator.take_definitions(true) {
        all.entry(k).or_insert(v);
    }
    all.insert(
        "Command".into(),
        json!({"description": "one command (WIRE.md): its `type` picks its fields",
               "oneOf": one_of, "discriminator": {"propertyName": "type"}}),
    );
}

/// The event type names, for the `types` filters.
fn event_types(all: &mut Map<String, Value>) {
    all.insert(
        "EventType".into(),
        json!({"type": "string", "enum": Event::TYPE_NAMES}),
    );
}

fn history() -> Value {
    json!({"type": "object", "required": ["customer", "events"], "additionalProperties": false,
        "properties": {
            "customer": reference("CustomerId"),
            "events": {"type": "array", "items": reference("HistoryLine")},
            "refusals": {"type": "array", "items": reference("RefusalRecord"),
                         "description": "with include_refusals=true: the refused commands that named the customer"}}})
}

/// The outcomes of `crate::ledger::Outcome::to_json`.
fn outcome() -> Value {
    let codes: Vec<String> = Code::ALL.iter().map(Code::as_str).collect();
    let position = json!({"type": "integer", "minimum": 1});
    json!({"oneOf": [
        {"type": "object", "required": ["command_id", "outcome", "positions"], "additionalProperties": false,
         "properties": {"command_id": reference("CommandId"), "outcome": {"const": "committed"},
             "positions": {"type": "array", "items": position},
             "duplicate": {"const": true, "description": "the command_id was committed before; these are its positions"}}},
        {"type": "object", "required": ["command_id", "outcome", "code", "rule", "message"], "additionalProperties": false,
         "properties": {"command_id": reference("CommandId"), "outcome": {"const": "refused"},
             "code": {"type": "string", "enum": codes},
             "rule": {"type": ["string", "null"], "pattern": "^R[0-9]+$"},
             "message": {"type": "string"},
             "vendor_code": {"type": "integer", "description": "Partner Center's error code for the same refusal"}}},
        {"type": "object", "required": ["command_id", "outcome", "message"], "additionalProperties": false,
         "properties": {"command_id": reference("CommandId"), "outcome": {"const": "unknown"},
             "message": {"type": "string"}}},
        {"type": "object", "required": ["outcome", "line", "message"], "additionalProperties": false,
         "properties": {"command_id": reference("CommandId"), "outcome": {"const": "invalid"},
             "line": {"type": "integer", "minimum": 1}, "message": {"type": "string"}}}
    ]})
}

/// [`super::super::ApiError`]'s body: a stable code, a message, and fields of its own.
fn error() -> Value {
    json!({"type": "object", "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "description": "a stable machine-readable code (docs/api.md, Errors)"},
            "message": {"type": "string", "description": "what is wrong, for people"},
            "head": {"type": "integer", "minimum": 0, "description": "with the *beyond_head codes: the log's head"},
            "reason": {"type": "string", "description": "with 401 and 403: why (docs/security.md)"},
            "position": {"type": "integer", "minimum": 0, "description": "with position_not_reached: this process's position"}},
        "additionalProperties": true})
}

fn health() -> Value {
    json!({"type": "object", "required": ["status", "head", "integrity"],
        "properties": {"status": {"enum": ["ok", "damaged", "unavailable"]},
            "head": {"type": "integer", "minimum": 0},
            "integrity": {"type": "object"}},
        "additionalProperties": true})
}

fn checkpoint() -> Value {
    json!({"type": "object", "required": ["position", "hash", "checkpoint"], "additionalProperties": false,
        "properties": {"position": {"type": "integer", "minimum": 0},
            "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "checkpoint": {"type": "string", "pattern": "^[0-9]+:[0-9a-f]{64}$"}}})
}

fn verify_line() -> Value {
    json!({"type": "object", "description": "progress ({verified_upto, head}), then {status: verified|damaged, …}",
        "additionalProperties": true})
}
