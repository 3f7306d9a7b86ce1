//! The customer view of WIRE.md, derived from a state at an instant.
//!
//! Statuses are derived at the view's instant from recorded deadlines (R36), so a view "as of" a moment between two
//! clock advances is still exact.

use serde::Serialize;

use super::delegated_admin::effective_roles;
use super::ids::*;
use super::state::{
    Customer, PlanStatus, RelationshipStatus, State, SubscriptionKind, SubscriptionStatus,
};

/// Which point of the log a view describes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, schemars::JsonSchema)]
pub struct AsOf {
    /// The last event position included.
    pub position: Position,
    /// The instant statuses are derived at.
    pub at: Timestamp,
}

#[derive(Clone, PartialEq, Debug, Serialize, schemars::JsonSchema)]
pub struct CustomerView {
    pub customer: CustomerId,
    pub company_name: String,
    pub domain: String,
    pub cloud: &'static str,
    pub country: Country,
    pub agreement_accepted: bool,
    pub as_of: AsOf,
    pub partners: Vec<PartnerEntry>,
    pub subscriptions: Vec<SubscriptionEntry>,
    pub azure_plans: Vec<PlanEntry>,
}

#[derive(Clone, PartialEq, Debug, Serialize, schemars::JsonSchema)]
pub struct PartnerEntry {
    pub partner: PartnerId,
    pub name: String,
    /// `active`, `removed` or `none`.
    pub relationship: &'static str,
    /// When the relationship entered its current status; null for `none`.
    pub since: Option<Timestamp>,
    pub delegated_admin: DelegatedAdminEntry,
}

#[derive(Clone, PartialEq, Debug, Serialize, schemars::JsonSchema)]
pub struct DelegatedAdminEntry {
    pub dap: bool,
    pub admin_relationships: Vec<AdminEntry>,
    /// R23: the roles the partner can use right now (GDAP if any is active, otherwise DAP's).
    pub effective_roles: Vec<RoleId>,
}

#[derive(Clone, PartialEq, Debug, Serialize, schemars::JsonSchema)]
pub struct AdminEntry {
    pub admin_relationship: AdminRelationshipId,
    pub name: String,
    pub roles: Vec<RoleId>,
    pub status: &'static str,
    pub ends_at: Option<Timestamp>,
    pub auto_extend: bool,
}

#[derive(Clone, PartialEq, Debug, Serialize, schemars::JsonSchema)]
pub struct SubscriptionEntry {
    pub subscription: SubscriptionId,
    /// `azure` or `licence`.
    pub kind: &'static str,
    pub partner_of_record: PartnerId,
    pub billing_partner: PartnerId,
    pub offer: Option<String>,
    pub quantity: Option<i64>,
    pub friendly_name: Option<String>,
    pub status: &'static str,
}

#[derive(Clone, PartialEq, Debug, Serialize, schemars::JsonSchema)]
pub struct PlanEntry {
    pub billing_partner: PartnerId,
    pub status: &'static str,
}

/// The relationship status, since when, and DAP, of a pair.
fn relationship_of(
    state: &State,
    p: PartnerId,
    c: CustomerId,
) -> (&'static str, Option<Timestamp>, bool) {
    match state.relationships.get(&(p, c)) {
        Some(r) if r.status == RelationshipStatus::Active => ("active", Some(r.since), r.dap),
        Some(r) => ("removed", Some(r.since), false),
        None => ("none", None, false),
    }
}

/// The admin relationships of partner `p` on customer `c`, with statuses derived at `t`.
fn admin_entries(state: &State, c: &Customer, p: PartnerId, t: Timestamp) -> Vec<AdminEntry> {
    c.admin_relationships
        .iter()
        .filter_map(|id| state.admin.get(id))
        .filter(|a| a.partner == p)
        .map(|a| {
            let now = a.at(t);
            AdminEntry {
                admin_relationship: a.id,
                name: a.name.clone(),
                roles: a.roles.clone(),
                status: now.status.as_str(),
                ends_at: now.ends_at,
                auto_extend: a.auto_extend,
            }
        })
        .collect()
}

fn kind_name(k: SubscriptionKind) -> &'static str {
    match k {
        SubscriptionKind::Azure => "azure",
        SubscriptionKind::Licence => "licence",
    }
}

fn plan_status_name(p: PlanStatus) -> &'static str {
    match p {
        PlanStatus::Active => "active",
        PlanStatus::Suspended => "suspended",
    }
}

/// The view of `customer` in `state`, with statuses derived at `as_of.at`; `None` if the customer is not registered.
pub fn customer_view(state: &State, customer: CustomerId, as_of: AsOf) -> Option<CustomerView> {
    let c = state.customers.get(&customer)?;
    let t = as_of.at;
    let partners = c
        .partners
        .iter()
        .map(|p| {
            let rel = state.relationships.get(&(*p, customer));
            let (relationship, since, dap) = match rel {
                Some(r) if r.status == RelationshipStatus::Active => {
                    ("active", Some(r.since), r.dap)
                }
                Some(r) => ("removed", Some(r.since), false),
                None => ("none", None, false),
            };
            let admin_relationships = admin_entries(state, c, *p, t);
            PartnerEntry {
                partner: *p,
                name: state
                    .partners
                    .get(p)
                    .map(|x| x.name.clone())
                    .unwrap_or_default(),
                relationship,
                since,
                delegated_admin: DelegatedAdminEntry {
                    dap,
                    admin_relationships,
                    effective_roles: effective_roles(state, *p, customer, t),
                },
            }
        })
        .collect();
    let subscriptions = c
        .subscriptions
        .iter()
        .filter_map(|id| state.subscriptions.get(id))
        .map(|s| SubscriptionEntry {
            subscription: s.id,
            kind: kind_name(s.kind),
            partner_of_record: s.partner_of_record,
            billing_partner: s.billing_partner,
            offer: s.offer.clone(),
            quantity: s.quantity,
            friendly_name: s.friendly_name.clone(),
            status: s.status.as_str(),
        })
        .collect();
    let azure_plans = c
        .azure_plans
        .iter()
        .filter_map(|p| state.plans.get(&(*p, customer)).map(|plan| (p, plan)))
        .map(|(p, plan)| PlanEntry {
            billing_partner: *p,
            status: plan_status_name(plan.status),
        })
        .collect();
    Some(CustomerView {
        customer,
        company_name: c.company_name.clone(),
        domain: c.domain.clone(),
        cloud: c.cloud.as_str(),
        country: c.country,
        agreement_accepted: c.agreement_accepted,
        as_of,
        partners,
        subscriptions,
        azure_plans,
    })
}

/// A partner's view: its customers with relationship status, delegated admin and subscription counts by status.
#[derive(Clone, PartialEq, Debug, Serialize, schemars::JsonSchema)]
pub struct PartnerView {
    pub partner: PartnerId,
    pub partner_id: ProgramId,
    pub name: String,
    pub kind: super::command::PartnerKind,
    pub cloud: &'static str,
    pub country: Country,
    pub markets: Vec<Country>,
    pub as_of: AsOf,
    pub customers: Vec<PartnerCustomerEntry>,
}

#[derive(Clone, PartialEq, Debug, Serialize, schemars::JsonSchema)]
pub struct PartnerCustomerEntry {
    pub customer: CustomerId,
    pub company_name: String,
    pub relationship: &'static str,
    pub since: Option<Timestamp>,
    pub delegated_admin: DelegatedAdminEntry,
    /// Subscriptions this partner bills or is partner of record of, counted by status.
    pub subscriptions: SubscriptionCounts,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct SubscriptionCounts {
    pub active: u64,
    pub suspended: u64,
    pub cancelled: u64,
}

/// The view of `partner` in `state`, statuses derived at `as_of.at`; `None` if the partner is not enrolled.
pub fn partner_view(state: &State, partner: PartnerId, as_of: AsOf) -> Option<PartnerView> {
    let p = state.partners.get(&partner)?;
    let t = as_of.at;
    let customers = state
        .partner_customers
        .get(&partner)
        .into_iter()
        .flatten()
        .filter_map(|c| state.customers.get(c))
        .map(|c| {
            let (relationship, since, dap) = relationship_of(state, partner, c.id);
            let mut counts = SubscriptionCounts::default();
            for s in c
                .subscriptions
                .iter()
                .filter_map(|id| state.subscriptions.get(id))
            {
                if s.billing_partner == partner || s.partner_of_record == partner {
                    match s.status {
                        SubscriptionStatus::Active => counts.active += 1,
                        SubscriptionStatus::Suspended => counts.suspended += 1,
                        SubscriptionStatus::Cancelled => counts.cancelled += 1,
                    }
                }
            }
            PartnerCustomerEntry {
                customer: c.id,
                company_name: c.company_name.clone(),
                relationship,
                since,
                delegated_admin: DelegatedAdminEntry {
                    dap,
                    admin_relationships: admin_entries(state, c, partner, t),
                    effective_roles: effective_roles(state, partner, c.id, t),
                },
                subscriptions: counts,
            }
        })
        .collect();
    Some(PartnerView {
        partner,
        partner_id: p.program_id.clone(),
        name: p.name.clone(),
        kind: p.kind,
        cloud: p.cloud.as_str(),
        country: p.country,
        markets: p.markets.clone(),
        as_of,
        customers,
    })
}

/// One subscription.
#[derive(Clone, PartialEq, Debug, Serialize, schemars::JsonSchema)]
pub struct SubscriptionView {
    pub subscription: SubscriptionId,
    pub kind: &'static str,
    pub customer: CustomerId,
    pub company_name: String,
    pub partner_of_record: PartnerId,
    pub billing_partner: PartnerId,
    pub offer: Option<String>,
    pub quantity: Option<i64>,
    pub friendly_name: Option<String>,
    pub status: &'static str,
    /// The status of the Azure plan holding it (Azure subscriptions only).
    pub azure_plan: Option<&'static str>,
    pub as_of: AsOf,
}

/// The view of `subscription` in `state`; `None` if it does not exist.
pub fn subscription_view(
    state: &State,
    subscription: SubscriptionId,
    as_of: AsOf,
) -> Option<SubscriptionView> {
    let s = state.subscriptions.get(&subscription)?;
    Some(SubscriptionView {
        subscription,
        kind: kind_name(s.kind),
        customer: s.customer,
        company_name: state
            .customers
            .get(&s.customer)
            .map(|c| c.company_name.clone())
            .unwrap_or_default(),
        partner_of_record: s.partner_of_record,
        billing_partner: s.billing_partner,
        offer: s.offer.clone(),
        quantity: s.quantity,
        friendly_name: s.friendly_name.clone(),
        status: s.status.as_str(),
        azure_plan: (s.kind == SubscriptionKind::Azure)
            .then(|| {
                state
                    .plans
                    .get(&(s.billing_partner, s.customer))
                    .map(|p| plan_status_name(p.status))
            })
            .flatten(),
        as_of,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

    #[test]
    fn the_seed_customer_view_lists_both_partners_and_their_own_subscriptions() {
        let story = seed_with_b().with(azure(AZ_B, B, CONTOSO));
        let as_of = AsOf {
            position: Position(story.positions as u64),
            at: story.state.clock.unwrap(),
        };
        let v = customer_view(&story.state, id(CONTOSO), as_of).unwrap();
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["partners"].as_array().unwrap().len(), 2);
        assert_eq!(json["partners"][0]["partner"], A);
        assert_eq!(json["partners"][0]["relationship"], "active");
        assert_eq!(json["partners"][1]["partner"], B);
        assert_eq!(json["subscriptions"][0]["kind"], "licence");
        assert_eq!(json["subscriptions"][0]["partner_of_record"], A);
        assert_eq!(json["subscriptions"][1]["kind"], "azure");
        assert_eq!(json["subscriptions"][1]["billing_partner"], B);
        assert_eq!(json["azure_plans"][0]["billing_partner"], B);
        assert_eq!(json["azure_plans"][0]["status"], "active");
        assert_eq!(json["agreement_accepted"], true);
        assert_eq!(json["as_of"]["position"], story.positions);
    }

    #[test]
    fn statuses_are_derived_at_the_views_instant_between_clock_advances() {
        let story = seed()
            .with(gdap(
                GDAP_1,
                A,
                CONTOSO,
                "Helpdesk",
                &[HELPDESK_ADMIN],
                30,
                false,
            ))
            .with(at(grant(GDAP_1, CONTOSO), "2024-01-11T00:00:00Z"));
        let view = |t: &str| {
            let v = customer_view(
                &story.state,
                id(CONTOSO),
                AsOf {
                    position: Position(1),
                    at: id(t),
                },
            )
            .unwrap();
            let a = &v.partners[0].delegated_admin.admin_relationships[0];
            (a.status, a.ends_at.map(|t| t.to_string()))
        };
        assert_eq!(
            view("2024-02-01T00:00:00Z"),
            ("active", Some("2024-02-10T00:00:00Z".into()))
        );
        assert_eq!(
            view("2024-03-01T00:00:00Z"),
            ("expired", Some("2024-02-10T00:00:00Z".into()))
        );
    }

    fn as_of(story: &Story) -> AsOf {
        AsOf {
            position: Position(story.positions as u64),
            at: story.state.clock.unwrap(),
        }
    }

    #[test]
    fn the_partner_view_counts_its_own_subscriptions_per_customer() {
        let story = seed_with_b()
            .with(azure(AZ_B, B, CONTOSO))
            .with(sub_cmd("SuspendSubscription", AZ_B, B))
            .with(azure("5b000000-0000-4000-8000-000000000003", B, CONTOSO));
        let v = serde_json::to_value(partner_view(&story.state, id(B), as_of(&story)).unwrap())
            .unwrap();
        assert_eq!(v["customers"].as_array().unwrap().len(), 1);
        assert_eq!(v["customers"][0]["customer"], CONTOSO);
        assert_eq!(v["customers"][0]["relationship"], "active");
        assert_eq!(
            v["customers"][0]["subscriptions"],
            serde_json::json!({"active": 1, "suspended": 1, "cancelled": 0})
        );
        // A's licence is not counted for B (R3).
        let a = serde_json::to_value(partner_view(&story.state, id(A), as_of(&story)).unwrap())
            .unwrap();
        assert_eq!(a["customers"][0]["subscriptions"]["active"], 1);
    }

    #[test]
    fn slices_give_the_same_views_as_the_full_state() {
        use super::super::slice::Slice;
        let story = seed_with_b()
            .with(azure(AZ_B, B, CONTOSO))
            .with(gdap(
                GDAP_1,
                A,
                CONTOSO,
                "Helpdesk",
                &[HELPDESK_ADMIN],
                30,
                true,
            ))
            .with(grant(GDAP_1, CONTOSO));
        let a = as_of(&story);
        let full = &story.state;
        let c = Slice::customer(full, id(CONTOSO)).unwrap().into_state();
        assert_eq!(
            customer_view(&c, id(CONTOSO), a),
            customer_view(full, id(CONTOSO), a)
        );
        for p in [A, B] {
            let s = Slice::partner(full, id(p)).unwrap().into_state();
            assert_eq!(partner_view(&s, id(p), a), partner_view(full, id(p), a));
        }
        for sub in [SUB_A, AZ_B] {
            let s = Slice::subscription(full, id(sub)).unwrap().into_state();
            assert_eq!(
                subscription_view(&s, id(sub), a),
                subscription_view(full, id(sub), a)
            );
        }
        // Slices survive a JSON round trip, which is how projections store them.
        let json = serde_json::to_string(&Slice::customer(full, id(CONTOSO)).unwrap()).unwrap();
        let back: Slice = serde_json::from_str(&json).unwrap();
        assert_eq!(
            customer_view(&back.into_state(), id(CONTOSO), a),
            customer_view(full, id(CONTOSO), a)
        );
    }
}
