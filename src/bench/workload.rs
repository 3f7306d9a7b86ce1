//! The benchmark's commands: the realistic generated workload, cut into customer stories that concurrent submitters
//! can run side by side.
//!
//! Each story (a customer's registration and everything that follows for it) keeps its own order, so requests are
//! accepted after they were made. Explicit business times are dropped (the ledger clock stamps each command), because
//! concurrent submitters would otherwise offer them out of order and R35 would refuse them; the generator's few
//! `AdvanceClock` commands are dropped for the same reason.

use crate::workload::{generate, WorkloadSpec};

/// The set-up (partners and links, run first, not timed) and the stories.
pub struct Stories {
    pub setup: Vec<String>,
    pub stories: Vec<Vec<String>>,
}

impl Stories {
    /// How many commands the stories hold.
    pub fn commands(&self) -> usize {
        self.stories.iter().map(Vec::len).sum()
    }
}

/// About `commands` commands of the generated workload for `seed`, cut into stories.
pub fn stories(commands: usize, seed: u64) -> Stories {
    let mut setup = Vec::new();
    let mut stories: Vec<Vec<String>> = Vec::new();
    let spec = WorkloadSpec {
        commands,
        seed,
        ..WorkloadSpec::default()
    };
    for line in generate(spec) {
        let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let kind = v["type"].as_str().unwrap_or_default().to_string();
        if kind == "AdvanceClock" {
            continue;
        }
        if let Some(m) = v.as_object_mut() {
            m.remove("at");
        }
        let line = v.to_string();
        match kind.as_str() {
            "EnrollPartner" | "LinkIndirectReseller" if stories.is_empty() => setup.push(line),
            "RegisterCustomer" => stories.push(vec![line]),
            _ => match stories.last_mut() {
                Some(s) => s.push(line),
                None => setup.push(line),
            },
        }
    }
    Stories { setup, stories }
}
