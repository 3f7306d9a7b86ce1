//! The answer to one command, in the shapes of docs/wire.md ("Outcomes").

use crate::domain::{CommandId, Position, Refusal};

/// The answer to one command (WIRE.md "Outcomes").
#[derive(Clone, PartialEq, Debug)]
pub enum Outcome {
    /// Appended durably (or, with `duplicate`, appended earlier under the same `command_id`).
    Committed {
        command_id: CommandId,
        positions: Vec<Position>,
        duplicate: bool,
    },
    /// The rules said no; nothing was appended.
    Refused {
        command_id: CommandId,
        refusal: Refusal,
    },
    /// Storage failed while the command was in flight: it may or may not be in the log. Retry with the same
    /// `command_id` after the ledger is reopened; idempotency makes that safe.
    Unknown {
        command_id: CommandId,
        message: String,
    },
    /// The line was not a valid command (it never reached the ledger); `line` counts from 1 in its request or file.
    Invalid { line: u64, message: String },
}

impl Outcome {
    /// The WIRE.md JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Outcome::Committed {
                command_id,
                positions,
                duplicate,
            } => {
                let mut v = json!({"command_id": command_id, "outcome": "committed", "positions": positions});
                if *duplicate {
                    v["duplicate"] = json!(true);
                }
                v
            }
            Outcome::Refused {
                command_id,
                refusal,
            } => {
                let mut v = json!({
                    "command_id": command_id,
                    "outcome": "refused",
                    "code": refusal.code,
                    "rule": refusal.rule,
                    "message": refusal.message,
                });
                if let Some(vc) = refusal.code.vendor_code() {
                    v["vendor_code"] = json!(vc);
                }
                v
            }
            Outcome::Unknown {
                command_id,
                message,
            } => json!({
                "command_id": command_id,
                "outcome": "unknown",
                "message": message,
            }),
            Outcome::Invalid { line, message } => json!({
                "outcome": "invalid",
                "line": line,
                "message": message,
            }),
        }
    }

    /// The command id the outcome is about (none for an invalid line).
    pub fn command_id(&self) -> Option<CommandId> {
        match self {
            Outcome::Committed { command_id, .. }
            | Outcome::Refused { command_id, .. }
            | Outcome::Unknown { command_id, .. } => Some(*command_id),
            Outcome::Invalid { .. } => None,
        }
    }
}
