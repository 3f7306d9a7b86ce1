//! How each event folds into the write model: [`State::apply`]. It never refuses: events about entities it has not
//! seen are tolerated, so a subset of the log (one customer's history) folds into a correct partial state.

use super::event::Event;
use super::ids::*;
use super::state::*;

impl State {
    fn customer_mut(&mut self, id: CustomerId) -> Option<&mut Customer> {
        self.customers.get_mut(&id)
    }

    fn involve(&mut self, customer: CustomerId, partner: PartnerId) {
        if let Some(c) = self.customer_mut(customer) {
            if !c.partners.contains(&partner) {
                c.partners.push(partner);
                let list = self.partner_customers.entry(partner).or_default();
                self.partner_customer_ordinal
                    .insert((partner, customer), list.len() as u64);
                list.push_back(customer);
                self.involved_at.insert((partner, customer), self.folded);
            }
        }
    }

    /// Folds one event recorded at business time `at`.
    pub fn apply(&mut self, at: Timestamp, event: &Event) {
        self.folded += 1;
        if self.clock.is_none_or(|c| c < at) {
            self.clock = Some(at);
        }
        match event {
            Event::PartnerEnrolled {
                partner,
                partner_id,
                name,
                kind,
                cloud,
                country,
                markets,
            } => {
                self.partners.insert(
                    *partner,
                    Partner {
                        id: *partner,
                        program_id: partner_id.clone(),
                        name: name.clone(),
                        kind: *kind,
                        cloud: *cloud,
                        country: *country,
                        markets: markets.clone(),
                    },
                );
            }
            Event::PartnerUpdated {
                partner,
                name,
                markets,
            } => {
                if let Some(p) = self.partners.get_mut(partner) {
                    if let Some(n) = name {
                        p.name = n.clone();
                    }
                    if let Some(m) = markets {
                        p.markets = m.clone();
                    }
                }
            }
            Event::IndirectResellerLinked { provider, reseller } => {
                self.links.insert((*provider, *reseller));
            }
            Event::IndirectResellerUnlinked { provider, reseller } => {
                self.links.remove(&(*provider, *reseller));
            }
            Event::CustomerRegistered {
                customer,
                company_name,
                domain,
                country,
                cloud,
            }
            | Event::CustomerCreated {
                customer,
                company_name,
                domain,
                country,
                cloud,
                ..
            } => {
                self.customers.insert(
                    *customer,
                    Customer {
                        id: *customer,
                        company_name: company_name.clone(),
                        domain: domain.clone(),
                        country: *country,
                        cloud: *cloud,
                        agreement_accepted: false,
                        partners: Vec::new(),
                        subscriptions: Vec::new(),
                        azure_plans: Vec::new(),
                        admin_relationships: Vec::new(),
                    },
                );
            }
            Event::CustomerUpdated {
                customer,
                company_name,
                domain,
            } => {
                if let Some(c) = self.customer_mut(*customer) {
                    if let Some(n) = company_name {
                        c.company_name = n.clone();
                    }
                    if let Some(d) = domain {
                        c.domain = d.clone();
                    }
                }
            }
            Event::CustomerAgreementAccepted { customer, .. } => {
                if let Some(c) = self.customer_mut(*customer) {
                    c.agreement_accepted = true;
                }
            }
            Event::RelationshipRequested {
                request,
                partner,
                customer,
                include_delegated_admin,
            } => {
                self.requests.insert(
                    *request,
                    Request {
                        partner: *partner,
                        customer: *customer,
                        include_delegated_admin: *include_delegated_admin,
                        status: RequestStatus::Pending,
                    },
                );
            }
            Event::RelationshipRequestWithdrawn { request, .. } => {
                if let Some(r) = self.requests.get_mut(request) {
                    r.status = RequestStatus::Withdrawn;
                }
            }
            Event::ResellerRelationshipEstablished {
                partner,
                customer,
                request,
                delegated_admin,
            } => {
                if let Some(r) = request.and_then(|id| self.requests.get_mut(&id)) {
                    r.status = RequestStatus::Accepted;
                }
                self.relationships.insert(
                    (*partner, *customer),
                    Relationship {
                        status: RelationshipStatus::Active,
                        since: at,
                        dap: *delegated_admin,
                    },
                );
                self.involve(*customer, *partner);
            }
            Event::ResellerRelationshipRemoved {
                partner, customer, ..
            } => {
                let r = self
                    .relationships
                    .entry((*partner, *customer))
                    .or_insert(Relationship {
                        status: RelationshipStatus::Removed,
                        since: at,
                        dap: false,
                    });
                r.status = RelationshipStatus::Removed;
                r.since = at;
                r.dap = false;
            }
            Event::DelegatedAdminRemoved {
                partner, customer, ..
            } => {
                if let Some(r) = self.relationships.get_mut(&(*partner, *customer)) {
                    r.dap = false;
                }
            }
            Event::DelegatedAdminRequested {
                admin_relationship,
                partner,
                customer,
                name,
                roles,
                duration_days,
                auto_extend,
                request_expires_at,
            } => {
                self.admin.insert(
                    *admin_relationship,
                    AdminRelationship {
                        id: *admin_relationship,
                        partner: *partner,
                        customer: *customer,
                        name: name.clone(),
                        roles: roles.clone(),
                        duration_days: *duration_days,
                        auto_extend: *auto_extend,
                        request_expires_at: *request_expires_at,
                        status: AdminStatus::ApprovalPending,
                        ends_at: None,
                    },
                );
                self.admin_open.insert(*admin_relationship);
                self.admin_open_by_partner
                    .entry(*partner)
                    .or_default()
                    .insert(*admin_relationship);
                if let Some(c) = self.customer_mut(*customer) {
                    c.admin_relationships.push(*admin_relationship);
                }
                self.involve(*customer, *partner);
            }
            Event::DelegatedAdminGranted {
                admin_relationship,
                ends_at,
                ..
            } => self.set_admin(*admin_relationship, AdminStatus::Active, Some(*ends_at)),
            Event::DelegatedAdminExtended {
                admin_relationship,
                ends_at,
                ..
            } => self.set_admin(*admin_relationship, AdminStatus::Active, Some(*ends_at)),
            Event::DelegatedAdminExpired {
                admin_relationship,
                expired_at,
                ..
            } => self.set_admin(*admin_relationship, AdminStatus::Expired, Some(*expired_at)),
            Event::DelegatedAdminTerminated {
                admin_relationship, ..
            } => self.set_admin(*admin_relationship, AdminStatus::Terminated, Some(at)),
            Event::DelegatedAdminRequestExpired {
                admin_relationship, ..
            } => self.set_admin(*admin_relationship, AdminStatus::RequestExpired, None),
            Event::SubscriptionAdded {
                subscription,
                customer,
                billing_partner,
                partner_of_record,
                offer,
                quantity,
            } => self.add_subscription(Subscription {
                id: *subscription,
                kind: SubscriptionKind::Licence,
                customer: *customer,
                billing_partner: *billing_partner,
                partner_of_record: *partner_of_record,
                offer: Some(offer.clone()),
                quantity: Some(*quantity),
                friendly_name: None,
                status: SubscriptionStatus::Active,
            }),
            Event::AzurePlanCreated {
                billing_partner,
                customer,
            } => {
                self.plans.insert(
                    (*billing_partner, *customer),
                    AzurePlan {
                        status: PlanStatus::Active,
                        subscriptions: Vec::new(),
                    },
                );
                if let Some(c) = self.customer_mut(*customer) {
                    c.azure_plans.push(*billing_partner);
                }
            }
            Event::AzureSubscriptionAdded {
                subscription,
                customer,
                billing_partner,
                partner_of_record,
                friendly_name,
            } => {
                if let Some(plan) = self.plans.get_mut(&(*billing_partner, *customer)) {
                    plan.subscriptions.push(*subscription);
                }
                self.add_subscription(Subscription {
                    id: *subscription,
                    kind: SubscriptionKind::Azure,
                    customer: *customer,
                    billing_partner: *billing_partner,
                    partner_of_record: *partner_of_record,
                    offer: None,
                    quantity: None,
                    friendly_name: Some(friendly_name.clone()),
                    status: SubscriptionStatus::Active,
                })
            }
            Event::SubscriptionSuspended { subscription, .. } => {
                self.set_subscription(*subscription, SubscriptionStatus::Suspended)
            }
            Event::SubscriptionReactivated { subscription, .. } => {
                self.set_subscription(*subscription, SubscriptionStatus::Active)
            }
            Event::SubscriptionCancelled { subscription, .. } => {
                self.set_subscription(*subscription, SubscriptionStatus::Cancelled)
            }
            Event::AzurePlanSuspended {
                billing_partner,
                customer,
            } => self.set_plan(*billing_partner, *customer, PlanStatus::Suspended),
            Event::AzurePlanReactivated {
                billing_partner,
                customer,
            } => self.set_plan(*billing_partner, *customer, PlanStatus::Active),
        }
    }

    fn set_admin(
        &mut self,
        id: AdminRelationshipId,
        status: AdminStatus,
        ends_at: Option<Timestamp>,
    ) {
        if let Some(a) = self.admin.get_mut(&id) {
            a.status = status;
            a.ends_at = ends_at;
            if status.is_final() {
                self.admin_open.remove(&id);
                if let Some(open) = self.admin_open_by_partner.get_mut(&a.partner) {
                    open.remove(&id);
                }
            }
        }
    }

    fn add_subscription(&mut self, s: Subscription) {
        let (customer, por, id) = (s.customer, s.partner_of_record, s.id);
        self.subscriptions.insert(id, s);
        if let Some(c) = self.customer_mut(customer) {
            c.subscriptions.push(id);
        }
        self.involve(customer, por);
    }

    fn set_subscription(&mut self, id: SubscriptionId, status: SubscriptionStatus) {
        if let Some(s) = self.subscriptions.get_mut(&id) {
            s.status = status;
        }
    }

    fn set_plan(&mut self, partner: PartnerId, customer: CustomerId, status: PlanStatus) {
        if let Some(p) = self.plans.get_mut(&(partner, customer)) {
            p.status = status;
        }
    }
}
