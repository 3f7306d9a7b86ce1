//! The write model: everything the rules need to know, folded from events. `apply` never refuses.
//!
//! `apply` is deliberately tolerant (an entity it has not seen is created on demand) so that a subset of the log,
//! such as one customer's indexed history, folds into a correct partial state for point-in-time views.

use imbl::{OrdMap, OrdSet, Vector};

use serde::{Deserialize, Serialize};

use super::command::{Cloud, PartnerKind};
use super::ids::*;
use super::table::{packed_map, packed_set, Table};

/// DAP roles: Global Administrator and Helpdesk Administrator (R23).
pub const DAP_ROLES: [&str; 2] = [
    "62e90394-69f5-4237-9190-012177145e10",
    "729827e3-9c14-49f7-bb1b-9608f156bbb8",
];

/// When DAP was retired for new public-cloud requests (R13).
pub fn dap_retirement() -> Timestamp {
    Timestamp::ymd_hms(2023, 10, 9, 0, 0, 0)
}

/// How long a GDAP request may wait for approval (R19).
pub const GDAP_APPROVAL_DAYS: i64 = 90;
/// One auto-extension (R20).
pub const GDAP_EXTENSION_DAYS: i64 = 180;

#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Partner {
    pub id: PartnerId,
    pub program_id: ProgramId,
    pub name: String,
    pub kind: PartnerKind,
    pub cloud: Cloud,
    pub country: Country,
    pub markets: Vec<Country>,
}

#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Customer {
    pub id: CustomerId,
    pub company_name: String,
    pub domain: String,
    pub country: Country,
    pub cloud: Cloud,
    pub agreement_accepted: bool,
    /// Partners involved with this customer, in order of first involvement (the view's `partners` order).
    pub partners: Vec<PartnerId>,
    /// Subscriptions in the order they were added.
    pub subscriptions: Vec<SubscriptionId>,
    /// Billing partners of its Azure plans, in creation order.
    pub azure_plans: Vec<PartnerId>,
    /// GDAP admin relationships in request order.
    pub admin_relationships: Vec<AdminRelationshipId>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum RequestStatus {
    Pending,
    Accepted,
    Withdrawn,
}

#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Request {
    pub partner: PartnerId,
    pub customer: CustomerId,
    pub include_delegated_admin: bool,
    pub status: RequestStatus,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelationshipStatus {
    Active,
    Removed,
}

#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Relationship {
    pub status: RelationshipStatus,
    /// When it entered its current status.
    pub since: Timestamp,
    /// Whether DAP is granted.
    pub dap: bool,
}

/// The recorded status of a GDAP admin relationship. Time-driven changes are derived with [`AdminRelationship::at`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminStatus {
    ApprovalPending,
    Active,
    Expired,
    Terminated,
    RequestExpired,
}

impl AdminStatus {
    /// The wire name (WIRE.md).
    pub fn as_str(&self) -> &'static str {
        match self {
            AdminStatus::ApprovalPending => "approval_pending",
            AdminStatus::Active => "active",
            AdminStatus::Expired => "expired",
            AdminStatus::Terminated => "terminated",
            AdminStatus::RequestExpired => "request_expired",
        }
    }
    /// Expired and terminated relationships never change again (R20); neither does an expired request.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            AdminStatus::Expired | AdminStatus::Terminated | AdminStatus::RequestExpired
        )
    }
}

#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct AdminRelationship {
    pub id: AdminRelationshipId,
    pub partner: PartnerId,
    pub customer: CustomerId,
    pub name: String,
    pub roles: Vec<RoleId>,
    pub duration_days: i64,
    pub auto_extend: bool,
    pub request_expires_at: Timestamp,
    pub status: AdminStatus,
    /// The end as recorded by the last event (activation + duration, extensions, or the moment it ended).
    pub ends_at: Option<Timestamp>,
}

/// The status of an admin relationship at an instant, derived from its recorded deadlines (R19, R20, R36).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AdminAt {
    pub status: AdminStatus,
    pub ends_at: Option<Timestamp>,
}

impl AdminRelationship {
    /// What is true at instant `t`, even if no clock advance has recorded the transition yet.
    pub fn at(&self, t: Timestamp) -> AdminAt {
        match self.status {
            AdminStatus::ApprovalPending if t > self.request_expires_at => AdminAt {
                status: AdminStatus::RequestExpired,
                ends_at: None,
            },
            AdminStatus::ApprovalPending => AdminAt {
                status: AdminStatus::ApprovalPending,
                ends_at: None,
            },
            AdminStatus::Active => {
                let mut ends = self.ends_at.unwrap_or(t);
                if self.auto_extend {
                    while ends <= t {
                        ends = ends.plus_days(GDAP_EXTENSION_DAYS);
                    }
                    AdminAt {
                        status: AdminStatus::Active,
                        ends_at: Some(ends),
                    }
                } else if t >= ends {
                    AdminAt {
                        status: AdminStatus::Expired,
                        ends_at: Some(ends),
                    }
                } else {
                    AdminAt {
                        status: AdminStatus::Active,
                        ends_at: Some(ends),
                    }
                }
            }
            status => AdminAt {
                status,
                ends_at: self.ends_at,
            },
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionKind {
    Licence,
    Azure,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Active,
    Suspended,
    Cancelled,
}

impl SubscriptionStatus {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::Suspended => "suspended",
            SubscriptionStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Subscription {
    pub id: SubscriptionId,
    pub kind: SubscriptionKind,
    pub customer: CustomerId,
    pub billing_partner: PartnerId,
    pub partner_of_record: PartnerId,
    pub offer: Option<String>,
    pub quantity: Option<i64>,
    pub friendly_name: Option<String>,
    pub status: SubscriptionStatus,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanStatus {
    Active,
    Suspended,
}

#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct AzurePlan {
    pub status: PlanStatus,
    pub subscriptions: Vec<SubscriptionId>,
}

/// Everything the rules decide against. Serializable for write-model snapshots (`src/snapshot/`), which store it in
/// a binary format; its JSON form is never stored. Every map is persistent (`table.rs`): a copy of the whole state
/// costs nothing and shares everything with the original, which is how the writer and the readers hold it once.
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// The latest business time recorded in the log (R35).
    pub clock: Option<Timestamp>,
    pub partners: Table<PartnerId, Partner>,
    pub customers: Table<CustomerId, Customer>,
    /// Active two-tier links, as (provider, reseller).
    #[serde(deserialize_with = "packed_set")]
    pub links: OrdSet<(PartnerId, PartnerId)>,
    pub requests: Table<RequestId, Request>,
    #[serde(deserialize_with = "packed_map")]
    pub relationships: OrdMap<(PartnerId, CustomerId), Relationship>,
    pub admin: Table<AdminRelationshipId, AdminRelationship>,
    /// Admin relationships whose recorded status is pending or active: the ones a clock advance can change.
    #[serde(deserialize_with = "packed_set")]
    pub admin_open: OrdSet<AdminRelationshipId>,
    /// The same, per partner, for the name-uniqueness rule (R16) without scanning every partner's.
    #[serde(deserialize_with = "packed_map")]
    pub admin_open_by_partner: OrdMap<PartnerId, OrdSet<AdminRelationshipId>>,
    pub subscriptions: Table<SubscriptionId, Subscription>,
    pub plans: Table<(PartnerId, CustomerId), AzurePlan>,
    /// Customers each partner is involved with, in order of first involvement (the partner view's order).
    #[serde(deserialize_with = "packed_map")]
    pub partner_customers: OrdMap<PartnerId, Vector<CustomerId>>,
    /// The index of each customer in its partner's `partner_customers` list (stable: the list only grows).
    #[serde(deserialize_with = "packed_map")]
    pub partner_customer_ordinal: OrdMap<(PartnerId, CustomerId), u64>,
    /// How many events were folded into this state: for a fold of the whole log, the position of the last one.
    pub folded: u64,
    /// For a fold of the whole log: the position of the event that first involved each partner with each customer
    /// (what a partner's stream may carry of a customer's own events starts there; docs/security.md).
    #[serde(deserialize_with = "packed_map")]
    pub involved_at: OrdMap<(PartnerId, CustomerId), u64>,
}

impl State {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many entities of each kind the model holds (`/metrics`, the growth benchmark).
    pub fn entity_counts(&self) -> [(&'static str, usize); 6] {
        [
            ("partners", self.partners.len()),
            ("customers", self.customers.len()),
            ("relationships", self.relationships.len()),
            ("admin_relationships", self.admin.len()),
            ("subscriptions", self.subscriptions.len()),
            ("requests", self.requests.len()),
        ]
    }

    /// Whether the pair has an active reseller relationship.
    pub fn is_active(&self, partner: PartnerId, customer: CustomerId) -> bool {
        self.relationships
            .get(&(partner, customer))
            .is_some_and(|r| r.status == RelationshipStatus::Active)
    }
}
