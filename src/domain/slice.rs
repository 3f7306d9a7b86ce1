//! Slices: the part of the write model one view needs, serializable, so a projection can store it per entity and
//! derive the view at any instant when it is read.

use serde::{Deserialize, Serialize};

use super::ids::*;
use super::state::*;

/// A self-contained piece of the state. It holds no clock: a view's instant always comes from its `as_of`, and a
/// document must not change when nothing about its subject did.
/// Folding it back with [`Slice::into_state`] gives a state in which the views of
/// its subject are exactly those of the full state.
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct Slice {
    pub partners: Vec<Partner>,
    pub customers: Vec<Customer>,
    pub relationships: Vec<(PartnerId, CustomerId, Relationship)>,
    pub admin: Vec<AdminRelationship>,
    pub subscriptions: Vec<Subscription>,
    pub plans: Vec<(PartnerId, CustomerId, AzurePlan)>,
    pub partner_customers: Vec<(PartnerId, Vec<CustomerId>)>,
}

impl Slice {
    fn add_partner(&mut self, state: &State, p: PartnerId) {
        if let Some(partner) = state.partners.get(&p) {
            if !self.partners.iter().any(|x| x.id == p) {
                self.partners.push(partner.clone());
            }
        }
    }

    /// Everything the customer view of `c` reads.
    pub fn customer(state: &State, c: CustomerId) -> Option<Slice> {
        let customer = state.customers.get(&c)?;
        let mut s = Slice {
            customers: vec![customer.clone()],
            ..Slice::default()
        };
        for p in &customer.partners {
            s.add_partner(state, *p);
            if let Some(r) = state.relationships.get(&(*p, c)) {
                s.relationships.push((*p, c, r.clone()));
            }
        }
        s.admin = customer
            .admin_relationships
            .iter()
            .filter_map(|id| state.admin.get(id).cloned())
            .collect();
        s.subscriptions = customer
            .subscriptions
            .iter()
            .filter_map(|id| state.subscriptions.get(id).cloned())
            .collect();
        for p in &customer.azure_plans {
            if let Some(plan) = state.plans.get(&(*p, c)) {
                s.plans.push((*p, c, plan.clone()));
            }
        }
        Some(s)
    }

    /// The partner itself, without its customers (the partner projection's profile document).
    pub fn partner_profile(state: &State, p: PartnerId) -> Option<Slice> {
        let partner = state.partners.get(&p)?;
        Some(Slice {
            partners: vec![partner.clone()],
            ..Slice::default()
        })
    }

    /// What the partner view of `p` reads about one customer `c`: only this partner's part of it, so the document
    /// changes only when that part does.
    pub fn partner_customer(state: &State, p: PartnerId, c: CustomerId) -> Option<Slice> {
        let customer = state.customers.get(&c)?;
        let mut s = Slice::default();
        if let Some(r) = state.relationships.get(&(p, c)) {
            s.relationships.push((p, c, r.clone()));
        }
        s.admin = customer
            .admin_relationships
            .iter()
            .filter_map(|id| state.admin.get(id))
            .filter(|a| a.partner == p)
            .cloned()
            .collect();
        s.subscriptions = customer
            .subscriptions
            .iter()
            .filter_map(|id| state.subscriptions.get(id))
            .filter(|x| x.billing_partner == p || x.partner_of_record == p)
            .cloned()
            .collect();
        s.customers.push(Customer {
            partners: vec![p],
            subscriptions: s.subscriptions.iter().map(|x| x.id).collect(),
            azure_plans: Vec::new(),
            admin_relationships: s.admin.iter().map(|a| a.id).collect(),
            agreement_accepted: false,
            ..customer.clone()
        });
        Some(s)
    }

    /// Everything the partner view of `p` reads: its profile and one part per customer, in involvement order.
    pub fn partner(state: &State, p: PartnerId) -> Option<Slice> {
        let mut s = Slice::partner_profile(state, p)?;
        let customers: Vec<CustomerId> = state
            .partner_customers
            .get(&p)
            .map(|list| list.iter().copied().collect())
            .unwrap_or_default();
        for c in &customers {
            if let Some(part) = Slice::partner_customer(state, p, *c) {
                s.absorb(part);
            }
        }
        s.partner_customers = vec![(p, customers)];
        Some(s)
    }

    /// Adds another slice's entities to this one.
    pub fn absorb(&mut self, other: Slice) {
        self.partners.extend(other.partners);
        self.customers.extend(other.customers);
        self.relationships.extend(other.relationships);
        self.admin.extend(other.admin);
        self.subscriptions.extend(other.subscriptions);
        self.plans.extend(other.plans);
        self.partner_customers.extend(other.partner_customers);
    }

    /// Everything the subscription view of `id` reads.
    pub fn subscription(state: &State, id: SubscriptionId) -> Option<Slice> {
        let sub = state.subscriptions.get(&id)?;
        let mut s = Slice {
            subscriptions: vec![sub.clone()],
            ..Slice::default()
        };
        if let Some(c) = state.customers.get(&sub.customer) {
            // Only what the subscription view reads of its customer.
            s.customers.push(Customer {
                partners: Vec::new(),
                subscriptions: vec![id],
                azure_plans: Vec::new(),
                admin_relationships: Vec::new(),
                agreement_accepted: false,
                ..c.clone()
            });
        }
        s.add_partner(state, sub.billing_partner);
        s.add_partner(state, sub.partner_of_record);
        if sub.kind == SubscriptionKind::Azure {
            if let Some(plan) = state.plans.get(&(sub.billing_partner, sub.customer)) {
                // The view reads only the plan's status.
                let status_only = AzurePlan {
                    status: plan.status,
                    subscriptions: Vec::new(),
                };
                s.plans
                    .push((sub.billing_partner, sub.customer, status_only));
            }
        }
        Some(s)
    }

    /// The slice as a state the view functions can read.
    pub fn into_state(self) -> State {
        let mut st = State::new();
        st.partners = self.partners.into_iter().map(|p| (p.id, p)).collect();
        st.customers = self.customers.into_iter().map(|c| (c.id, c)).collect();
        st.relationships = self
            .relationships
            .into_iter()
            .map(|(p, c, r)| ((p, c), r))
            .collect();
        st.admin = self.admin.into_iter().map(|a| (a.id, a)).collect();
        st.subscriptions = self.subscriptions.into_iter().map(|s| (s.id, s)).collect();
        st.plans = self
            .plans
            .into_iter()
            .map(|(p, c, plan)| ((p, c), plan))
            .collect();
        st.partner_customers = self
            .partner_customers
            .into_iter()
            .map(|(p, list)| (p, list.into_iter().collect::<imbl::Vector<_>>()))
            .collect();
        st
    }
}

/// One row of the expiring view: an active admin relationship and when it ends.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ExpiringEntry {
    pub admin_relationship: AdminRelationshipId,
    pub name: String,
    pub partner: PartnerId,
    pub partner_name: String,
    pub customer: CustomerId,
    pub company_name: String,
    pub roles: Vec<RoleId>,
    pub ends_at: Timestamp,
    /// Whether it will extend by 180 days instead of expiring (R20).
    pub auto_extend: bool,
}
