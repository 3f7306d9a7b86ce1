//! Events: the facts the ledger records, named in the past tense. Their `data` shapes are part of the wire contract.

use serde::{Deserialize, Serialize};

use super::command::{Cloud, PartnerKind};
use super::ids::*;

/// Who removed DAP (R15), or why it ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovedBy {
    Partner,
    Customer,
    System,
    /// Ended because the reseller relationship was removed (R33).
    RelationshipRemoved,
}

/// Who terminated a GDAP admin relationship (R21), or why it ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminatedBy {
    Partner,
    Customer,
    /// Ended because the reseller relationship was removed (R33).
    RelationshipRemoved,
}

/// A recorded fact. Serialized adjacently tagged, as `{"type": …, "data": {…}}`, which is how the envelope carries it.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", deny_unknown_fields)]
pub enum Event {
    PartnerEnrolled {
        partner: PartnerId,
        partner_id: ProgramId,
        name: String,
        kind: PartnerKind,
        cloud: Cloud,
        country: Country,
        markets: Vec<Country>,
    },
    PartnerUpdated {
        partner: PartnerId,
        name: Option<String>,
        markets: Option<Vec<Country>>,
    },
    IndirectResellerLinked {
        provider: PartnerId,
        reseller: PartnerId,
    },
    IndirectResellerUnlinked {
        provider: PartnerId,
        reseller: PartnerId,
    },
    CustomerRegistered {
        customer: CustomerId,
        company_name: String,
        domain: String,
        country: Country,
        cloud: Cloud,
    },
    /// A partner created the tenant (R14); a `ResellerRelationshipEstablished` follows in the same command.
    CustomerCreated {
        partner: PartnerId,
        customer: CustomerId,
        company_name: String,
        domain: String,
        country: Country,
        cloud: Cloud,
    },
    CustomerUpdated {
        customer: CustomerId,
        company_name: Option<String>,
        domain: Option<String>,
    },
    CustomerAgreementAccepted {
        customer: CustomerId,
        /// The tenant that recorded it: the customer itself, or a partner attesting.
        accepted_by: TenantId,
    },
    RelationshipRequested {
        request: RequestId,
        partner: PartnerId,
        customer: CustomerId,
        include_delegated_admin: bool,
    },
    RelationshipRequestWithdrawn {
        request: RequestId,
        partner: PartnerId,
        customer: CustomerId,
    },
    /// The reseller relationship is active; `delegated_admin` says whether DAP came with it (R13).
    ResellerRelationshipEstablished {
        partner: PartnerId,
        customer: CustomerId,
        /// The accepted request; null for a partner-created customer (R14).
        request: Option<RequestId>,
        delegated_admin: bool,
    },
    ResellerRelationshipRemoved {
        partner: PartnerId,
        customer: CustomerId,
        /// The partner whose agent removed it: the partner itself or, for an indirect reseller, its provider (R31).
        removed_by: PartnerId,
    },
    /// DAP ended (R15, R33).
    DelegatedAdminRemoved {
        partner: PartnerId,
        customer: CustomerId,
        removed_by: RemovedBy,
    },
    /// A GDAP admin relationship was requested (R16); it expires unapproved at `request_expires_at` (R19).
    DelegatedAdminRequested {
        admin_relationship: AdminRelationshipId,
        partner: PartnerId,
        customer: CustomerId,
        name: String,
        roles: Vec<RoleId>,
        duration_days: i64,
        auto_extend: bool,
        request_expires_at: Timestamp,
    },
    /// The customer approved it (R18).
    DelegatedAdminGranted {
        admin_relationship: AdminRelationshipId,
        partner: PartnerId,
        customer: CustomerId,
        activated_at: Timestamp,
        ends_at: Timestamp,
    },
    /// Auto-extension moved the end by 180 days (R20).
    DelegatedAdminExtended {
        admin_relationship: AdminRelationshipId,
        partner: PartnerId,
        customer: CustomerId,
        previous_ends_at: Timestamp,
        ends_at: Timestamp,
    },
    /// It reached its end without auto-extend (R20).
    DelegatedAdminExpired {
        admin_relationship: AdminRelationshipId,
        partner: PartnerId,
        customer: CustomerId,
        expired_at: Timestamp,
    },
    DelegatedAdminTerminated {
        admin_relationship: AdminRelationshipId,
        partner: PartnerId,
        customer: CustomerId,
        terminated_by: TerminatedBy,
    },
    /// It was not approved within 90 days (R19).
    DelegatedAdminRequestExpired {
        admin_relationship: AdminRelationshipId,
        partner: PartnerId,
        customer: CustomerId,
        expired_at: Timestamp,
    },
    /// A licence subscription was bought.
    SubscriptionAdded {
        subscription: SubscriptionId,
        customer: CustomerId,
        billing_partner: PartnerId,
        partner_of_record: PartnerId,
        offer: String,
        quantity: i64,
    },
    /// The billing partner's Azure plan for this customer was created (R26).
    AzurePlanCreated {
        billing_partner: PartnerId,
        customer: CustomerId,
    },
    AzureSubscriptionAdded {
        subscription: SubscriptionId,
        customer: CustomerId,
        billing_partner: PartnerId,
        partner_of_record: PartnerId,
        friendly_name: String,
    },
    SubscriptionSuspended {
        subscription: SubscriptionId,
        customer: CustomerId,
        billing_partner: PartnerId,
    },
    SubscriptionReactivated {
        subscription: SubscriptionId,
        customer: CustomerId,
        billing_partner: PartnerId,
    },
    SubscriptionCancelled {
        subscription: SubscriptionId,
        customer: CustomerId,
        billing_partner: PartnerId,
    },
    AzurePlanSuspended {
        billing_partner: PartnerId,
        customer: CustomerId,
    },
    AzurePlanReactivated {
        billing_partner: PartnerId,
        customer: CustomerId,
    },
}

/// The current schema version of every event type; the store records it in each envelope.
pub const SCHEMA_VERSION: u32 = 1;

/// An entity an event is about, for the history indexes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum EntityRef {
    Customer(CustomerId),
    Partner(PartnerId),
    Subscription(SubscriptionId),
    /// Only a partner's reference-data events (enrolment, corrections), so views can name partners cheaply.
    PartnerProfile(PartnerId),
    /// Only a customer's reference-data events (registration, creation, corrections).
    CustomerProfile(CustomerId),
}

impl Event {
    /// The event's type name as stored in the envelope.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::PartnerEnrolled { .. } => "PartnerEnrolled",
            Event::PartnerUpdated { .. } => "PartnerUpdated",
            Event::IndirectResellerLinked { .. } => "IndirectResellerLinked",
            Event::IndirectResellerUnlinked { .. } => "IndirectResellerUnlinked",
            Event::CustomerRegistered { .. } => "CustomerRegistered",
            Event::CustomerCreated { .. } => "CustomerCreated",
            Event::CustomerUpdated { .. } => "CustomerUpdated",
            Event::CustomerAgreementAccepted { .. } => "CustomerAgreementAccepted",
            Event::RelationshipRequested { .. } => "RelationshipRequested",
            Event::RelationshipRequestWithdrawn { .. } => "RelationshipRequestWithdrawn",
            Event::ResellerRelationshipEstablished { .. } => "ResellerRelationshipEstablished",
            Event::ResellerRelationshipRemoved { .. } => "ResellerRelationshipRemoved",
            Event::DelegatedAdminRemoved { .. } => "DelegatedAdminRemoved",
            Event::DelegatedAdminRequested { .. } => "DelegatedAdminRequested",
            Event::DelegatedAdminGranted { .. } => "DelegatedAdminGranted",
            Event::DelegatedAdminExtended { .. } => "DelegatedAdminExtended",
            Event::DelegatedAdminExpired { .. } => "DelegatedAdminExpired",
            Event::DelegatedAdminTerminated { .. } => "DelegatedAdminTerminated",
            Event::DelegatedAdminRequestExpired { .. } => "DelegatedAdminRequestExpired",
            Event::SubscriptionAdded { .. } => "SubscriptionAdded",
            Event::AzurePlanCreated { .. } => "AzurePlanCreated",
            Event::AzureSubscriptionAdded { .. } => "AzureSubscriptionAdded",
            Event::SubscriptionSuspended { .. } => "SubscriptionSuspended",
            Event::SubscriptionReactivated { .. } => "SubscriptionReactivated",
            Event::SubscriptionCancelled { .. } => "SubscriptionCancelled",
            Event::AzurePlanSuspended { .. } => "AzurePlanSuspended",
            Event::AzurePlanReactivated { .. } => "AzurePlanReactivated",
        }
    }

    /// Every event type name, for documentation and coverage tests.
    pub const TYPE_NAMES: [&'static str; 27] = [
        "PartnerEnrolled",
        "PartnerUpdated",
        "IndirectResellerLinked",
        "IndirectResellerUnlinked",
        "CustomerRegistered",
        "CustomerCreated",
        "CustomerUpdated",
        "CustomerAgreementAccepted",
        "RelationshipRequested",
        "RelationshipRequestWithdrawn",
        "ResellerRelationshipEstablished",
        "ResellerRelationshipRemoved",
        "DelegatedAdminRemoved",
        "DelegatedAdminRequested",
        "DelegatedAdminGranted",
        "DelegatedAdminExtended",
        "DelegatedAdminExpired",
        "DelegatedAdminTerminated",
        "DelegatedAdminRequestExpired",
        "SubscriptionAdded",
        "AzurePlanCreated",
        "AzureSubscriptionAdded",
        "SubscriptionSuspended",
        "SubscriptionReactivated",
        "SubscriptionCancelled",
        "AzurePlanSuspended",
        "AzurePlanReactivated",
    ];

    /// The entities this event belongs to, so that each one's history is read from an index, not a log scan: those
    /// of its [`Event::parties`].
    pub fn entities(&self) -> Vec<EntityRef> {
        self.parties().entities()
    }

    /// The payload alone, as stored in the envelope's `data`.
    pub fn data(&self) -> serde_json::Value {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut m)) => {
                m.remove("data").unwrap_or(serde_json::Value::Null)
            }
            _ => serde_json::Value::Null,
        }
    }

    /// Rebuilds an event from an envelope's `type` and `data`.
    pub fn from_parts(
        type_name: &str,
        data: serde_json::Value,
    ) -> Result<Event, serde_json::Error> {
        let mut m = serde_json::Map::with_capacity(2);
        m.insert("type".into(), serde_json::Value::String(type_name.into()));
        m.insert("data".into(), data);
        serde_json::from_value(serde_json::Value::Object(m))
    }
}
