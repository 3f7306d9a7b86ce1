//! Schema evolution: stored events are never rewritten, so an old `schema_version` is brought up to today's shape
//! when it is read, one version step at a time.
//!
//! To change an event's `data` shape: bump [`crate::domain::SCHEMA_VERSION`] (or give the type its own version),
//! add an [`Upcaster`] from the old version to [`UPCASTERS`], and keep `fixtures/golden/` replaying to the same views
//! (`tests/suite/golden.rs`). Today every type is at version 1 and no step is needed.

use serde_json::Value;

use crate::domain::SCHEMA_VERSION;

/// One step: turns `(type, data)` stored at version `from` into version `from + 1` (it may rename the type).
#[derive(Clone, Copy)]
pub struct Upcaster {
    pub event_type: &'static str,
    pub from: u32,
    pub apply: fn(Value) -> (String, Value),
}

/// Every upcasting step the ledger knows. Empty: version 1 is the first and current shape of every type.
pub const UPCASTERS: &[Upcaster] = &[];

/// Brings `(type, version, data)` to the current version with `table`.
pub fn upcast_with(
    table: &[Upcaster],
    event_type: &str,
    version: u32,
    data: Value,
) -> Result<(String, Value), String> {
    let (mut t, mut v, mut d) = (event_type.to_string(), version, data);
    if v > SCHEMA_VERSION {
        return Err(format!(
            "{t} has schema_version {v}, newer than this build understands ({SCHEMA_VERSION}); upgrade partner-ledger"
        ));
    }
    while v < SCHEMA_VERSION {
        let step = table
            .iter()
            .find(|u| u.event_type == t && u.from == v)
            .ok_or_else(|| format!("no upcaster for {t} from schema_version {v}"))?;
        (t, d) = (step.apply)(d);
        v += 1;
    }
    Ok((t, d))
}

/// Brings a stored event to the current version with [`UPCASTERS`].
pub fn upcast(event_type: &str, version: u32, data: Value) -> Result<(String, Value), String> {
    upcast_with(UPCASTERS, event_type, version, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Event;
    use serde_json::json;

    /// A made-up version 0 of `ResellerRelationshipEstablished`, from before DAP was recorded, named differently.
    fn v0_relationship(data: Value) -> (String, Value) {
        let mut d = data;
        d["delegated_admin"] = json!(false);
        if let Some(m) = d.as_object_mut() {
            let request = m.remove("invitation").unwrap_or(Value::Null);
            m.insert("request".into(), request);
        }
        ("ResellerRelationshipEstablished".into(), d)
    }

    #[test]
    fn an_old_version_is_brought_up_step_by_step_to_a_current_event() {
        let table = [Upcaster {
            event_type: "ResellerAdded",
            from: 0,
            apply: v0_relationship,
        }];
        let old = json!({"partner": "a0000000-0000-4000-8000-00000000000a", "customer": "c0000000-0000-4000-8000-00000000000c", "invitation": null});
        let (t, d) = upcast_with(&table, "ResellerAdded", 0, old).unwrap();
        let event = Event::from_parts(&t, d).unwrap();
        assert!(matches!(
            event,
            Event::ResellerRelationshipEstablished {
                delegated_admin: false,
                request: None,
                ..
            }
        ));
    }

    #[test]
    fn the_current_version_passes_through_and_unknown_versions_are_explained() {
        let d = json!({"x": 1});
        assert_eq!(
            upcast("AzurePlanCreated", 1, d.clone()).unwrap(),
            ("AzurePlanCreated".into(), d.clone())
        );
        assert!(upcast("AzurePlanCreated", 2, d.clone())
            .unwrap_err()
            .contains("newer than this build"));
        assert!(upcast("AzurePlanCreated", 0, d)
            .unwrap_err()
            .contains("no upcaster for AzurePlanCreated from schema_version 0"));
    }
}
