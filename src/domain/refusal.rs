//! Refusals: the business answer "no", with a stable code, the rule it comes from and a message naming the entities;
//! and the record the refusal audit trail keeps of each refused command.

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

use super::{Actor, CommandId, EntityRef, Timestamp};

/// Every refusal code of DOMAIN.md. The serialized names are part of the wire contract and never change.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    NotAuthorized,
    NotPartnerOfRecord,
    TenantIsPartner,
    TenantIsCustomer,
    CloudMismatch,
    MarketNotAuthorized,
    DapRetired,
    DapRequiredInCloud,
    GdapUnavailableInCloud,
    InvalidName,
    DuplicateName,
    InvalidDuration,
    AutoExtendWithGlobalAdmin,
    RequestExpired,
    RelationshipFinal,
    NoResellerRelationship,
    CustomerAgreementMissing,
    DuplicateSubscription,
    InvalidQuantity,
    SubscriptionCancelled,
    AzurePlanHasActiveSubscriptions,
    AzurePlanSuspended,
    ResellerNotLinked,
    ResellerRequired,
    RelationshipHasActiveSubscriptions,
    TimeWentBackwards,
    TimeOutOfRange,
    InvalidText,
    UnknownPartner,
    UnknownCustomer,
    UnknownRequest,
    UnknownSubscription,
    UnknownAdminRelationship,
    UnknownRole,
    InvalidState,
    CommandIdReused,
}

impl Code {
    /// Every code, for documentation and for tests that must cover them all.
    pub const ALL: [Code; 36] = [
        Code::NotAuthorized,
        Code::NotPartnerOfRecord,
        Code::TenantIsPartner,
        Code::TenantIsCustomer,
        Code::CloudMismatch,
        Code::MarketNotAuthorized,
        Code::DapRetired,
        Code::DapRequiredInCloud,
        Code::GdapUnavailableInCloud,
        Code::InvalidName,
        Code::DuplicateName,
        Code::InvalidDuration,
        Code::AutoExtendWithGlobalAdmin,
        Code::RequestExpired,
        Code::RelationshipFinal,
        Code::NoResellerRelationship,
        Code::CustomerAgreementMissing,
        Code::DuplicateSubscription,
        Code::InvalidQuantity,
        Code::SubscriptionCancelled,
        Code::AzurePlanHasActiveSubscriptions,
        Code::AzurePlanSuspended,
        Code::ResellerNotLinked,
        Code::ResellerRequired,
        Code::RelationshipHasActiveSubscriptions,
        Code::TimeWentBackwards,
        Code::TimeOutOfRange,
        Code::InvalidText,
        Code::UnknownPartner,
        Code::UnknownCustomer,
        Code::UnknownRequest,
        Code::UnknownSubscription,
        Code::UnknownAdminRelationship,
        Code::UnknownRole,
        Code::InvalidState,
        Code::CommandIdReused,
    ];

    /// The snake_case wire name.
    pub fn as_str(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// The vendor's own numeric code, where Partner Center has one for the same refusal.
    pub fn vendor_code(&self) -> Option<u32> {
        match self {
            Code::NoResellerRelationship => Some(20002),
            Code::CustomerAgreementMissing => Some(13605),
            Code::AzurePlanHasActiveSubscriptions => Some(900115),
            _ => None,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

/// A rule id of DOMAIN.md, printed as `R24`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct Rule(pub u8);

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "R{}", self.0)
    }
}

impl Serialize for Rule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A command the rules do not allow. Callers report it to the user as is; it is never retried unchanged.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Refusal {
    /// The stable code.
    pub code: Code,
    /// The rule of DOMAIN.md that refuses, where one applies.
    pub rule: Option<Rule>,
    /// A sentence naming the entities involved.
    pub message: String,
}

impl Refusal {
    /// A refusal under a rule.
    pub fn new(code: Code, rule: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            rule: Some(Rule(rule)),
            message: message.into(),
        }
    }
    /// A refusal that no single rule names (unknown entities, impossible state changes).
    pub fn plain(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            rule: None,
            message: message.into(),
        }
    }
}

/// Shorthand for returning a refusal under a rule.
pub fn refuse<T>(code: Code, rule: u8, message: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal::new(code, rule, message))
}

/// Shorthand for returning a refusal without a rule.
pub fn refuse_plain<T>(code: Code, message: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal::plain(code, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_snake_case_and_vendor_codes_are_kept() {
        assert_eq!(
            Code::NoResellerRelationship.as_str(),
            "no_reseller_relationship"
        );
        assert_eq!(Code::NoResellerRelationship.vendor_code(), Some(20002));
        assert_eq!(Code::CustomerAgreementMissing.vendor_code(), Some(13605));
        assert_eq!(
            Code::AzurePlanHasActiveSubscriptions.vendor_code(),
            Some(900115)
        );
        assert_eq!(Code::InvalidState.vendor_code(), None);
        let names: std::collections::BTreeSet<String> =
            Code::ALL.iter().map(Code::as_str).collect();
        assert_eq!(names.len(), Code::ALL.len());
    }
}

/// One refused command.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RefusalRecord {
    /// When the ledger refused it.
    pub recorded_at: Timestamp,
    /// Its business time.
    pub at: Timestamp,
    pub command_id: CommandId,
    pub actor: Actor,
    /// The command type.
    #[serde(rename = "type")]
    pub command_type: String,
    /// The customers, partners and subscriptions it named.
    pub entities: Vec<String>,
    pub code: String,
    pub rule: Option<String>,
    pub message: String,
}

impl RefusalRecord {
    /// Builds a record from a refusal.
    pub fn new(
        recorded_at: Timestamp,
        at: Timestamp,
        command_id: CommandId,
        actor: Actor,
        command_type: &str,
        entities: &[EntityRef],
        refusal: &Refusal,
    ) -> Self {
        Self {
            recorded_at,
            at,
            command_id,
            actor,
            command_type: command_type.to_string(),
            entities: entities.iter().map(entity_label).collect(),
            code: refusal.code.as_str(),
            rule: refusal.rule.map(|r| r.to_string()),
            message: refusal.message.clone(),
        }
    }
}

impl RefusalRecord {
    /// The entities its labels name (the inverse of what [`RefusalRecord::new`] wrote).
    pub fn named_entities(&self) -> Vec<EntityRef> {
        self.entities
            .iter()
            .filter_map(|l| entity_of_label(l))
            .collect()
    }
}

/// The entity a label of [`RefusalRecord::entities`] names (the inverse of `entity_label`).
fn entity_of_label(label: &str) -> Option<EntityRef> {
    let (kind, id) = label.split_once(':')?;
    match kind {
        "customer" => id.parse().ok().map(EntityRef::Customer),
        "partner" => id.parse().ok().map(EntityRef::Partner),
        "subscription" => id.parse().ok().map(EntityRef::Subscription),
        _ => None,
    }
}

fn entity_label(e: &EntityRef) -> String {
    match e {
        EntityRef::Customer(c) | EntityRef::CustomerProfile(c) => format!("customer:{c}"),
        EntityRef::Partner(p) | EntityRef::PartnerProfile(p) => format!("partner:{p}"),
        EntityRef::Subscription(s) => format!("subscription:{s}"),
    }
}
