//! The customer view of WIRE.md, derived from a state at an instant.
//!
//! Statuses are derived at the view's instant from recorded deadlines (R36), so a view "as of" a moment between two
//! clock advances is still exact.

use serde::Serialize;

use super::delegated_admin::effective_roles;
use super::ids::*;
use super::state::{PlanStatus, RelationshipStatus, State, SubscriptionKind};

/// Which point of the log a view describes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
pub struct AsOf {
    /// The last event position included.
    pub position: Position,
    /// The instant statuses are derived at.
    pub at: Timestamp,
}

#[derive(Clone, PartialEq, Debug, Serialize)]
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

#[derive(Clone, PartialEq, Debug, Serialize)]
pub struct PartnerEntry {
    pub partner: PartnerId,
    pub name: String,
    /// `active`, `removed` or `none`.
    pub relationship: &'static str,
    /// When the relationship entered its current status; null for `none`.
    pub since: Option<Timestamp>,
    pub delegated_admin: DelegatedAdminEntry,
}

#[derive(Clone, PartialEq, Debug, Serialize)]
pub struct DelegatedAdminEntry {
    pub dap: bool,
    pub admin_relationships: Vec<AdminEntry>,
    /// R23: the roles the partner can use right now (GDAP if any is active, otherwise DAP's).
    pub effective_roles: Vec<RoleId>,
}

#[derive(Clone, PartialEq, Debug, Serialize)]
pub struct AdminEntry {
    pub admin_relationship: AdminRelationshipId,
    pub name: String,
    pub roles: Vec<RoleId>,
    pub status: &'static str,
    pub ends_at: Option<Timestamp>,
    pub auto_extend: bool,
}

#[derive(Clone, PartialEq, Debug, Serialize)]
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

#[derive(Clone, PartialEq, Debug, Serialize)]
pub struct PlanEntry {
    pub billing_partner: PartnerId,
    pub status: &'static str,
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
            let admin_relationships = c
                .admin_relationships
                .iter()
                .filter_map(|id| state.admin.get(id))
                .filter(|a| a.partner == *p)
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
                .collect();
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
            kind: match s.kind {
                SubscriptionKind::Azure => "azure",
                SubscriptionKind::Licence => "licence",
            },
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
            status: match plan.status {
                PlanStatus::Active => "active",
                PlanStatus::Suspended => "suspended",
            },
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
}
