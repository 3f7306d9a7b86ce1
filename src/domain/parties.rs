//! Who an event or a command names: its customer, its subscription and its partners, typed and read from the values
//! themselves by exhaustive matches, so a new event or command field that names a party cannot be missed by the
//! compiler. The history index (`Event::entities`), the refusal index (`Body::entities`) and access control
//! (`crate::access`) all read them from here.

use super::command::{body, Body};
use super::event::{EntityRef, Event};
use super::ids::{CustomerId, PartnerId, SubscriptionId};

/// The parties something names.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Parties {
    /// The customer it is about.
    pub customer: Option<CustomerId>,
    /// The subscription it is about.
    pub subscription: Option<SubscriptionId>,
    /// Every partner it names, without repeats, the one it is about (or acts for) first.
    pub partners: Vec<PartnerId>,
    /// For an event that records a customer's or a partner's reference data: that profile.
    pub profile: Option<EntityRef>,
}

impl Parties {
    fn with_partner(mut self, p: PartnerId) -> Parties {
        if !self.partners.contains(&p) {
            self.partners.push(p);
        }
        self
    }

    fn customer(c: CustomerId) -> Parties {
        Parties {
            customer: Some(c),
            ..Parties::default()
        }
    }

    fn partner(p: PartnerId) -> Parties {
        Parties::default().with_partner(p)
    }

    fn pair(p: PartnerId, c: CustomerId) -> Parties {
        Parties::customer(c).with_partner(p)
    }

    /// The entities whose histories they belong to: the customer, the first partner, the subscription, the other
    /// partners, then the profile.
    pub fn entities(&self) -> Vec<EntityRef> {
        let mut v = Vec::with_capacity(4);
        v.extend(self.customer.map(EntityRef::Customer));
        v.extend(self.partners.first().copied().map(EntityRef::Partner));
        v.extend(self.subscription.map(EntityRef::Subscription));
        v.extend(
            self.partners
                .iter()
                .skip(1)
                .copied()
                .map(EntityRef::Partner),
        );
        v.extend(self.profile);
        v
    }
}

impl Event {
    /// The parties this event names.
    pub fn parties(&self) -> Parties {
        match self {
            Event::PartnerEnrolled { partner, .. } | Event::PartnerUpdated { partner, .. } => {
                Parties {
                    profile: Some(EntityRef::PartnerProfile(*partner)),
                    ..Parties::partner(*partner)
                }
            }
            Event::IndirectResellerLinked { provider, reseller }
            | Event::IndirectResellerUnlinked { provider, reseller } => {
                Parties::partner(*provider).with_partner(*reseller)
            }
            Event::CustomerRegistered { customer, .. }
            | Event::CustomerUpdated { customer, .. } => Parties {
                profile: Some(EntityRef::CustomerProfile(*customer)),
                ..Parties::customer(*customer)
            },
            Event::CustomerAgreementAccepted { customer, .. } => Parties::customer(*customer),
            Event::CustomerCreated {
                partner, customer, ..
            } => Parties {
                profile: Some(EntityRef::CustomerProfile(*customer)),
                ..Parties::pair(*partner, *customer)
            },
            Event::RelationshipRequested {
                partner, customer, ..
            }
            | Event::RelationshipRequestWithdrawn {
                partner, customer, ..
            }
            | Event::ResellerRelationshipEstablished {
                partner, customer, ..
            }
            | Event::DelegatedAdminRemoved {
                partner, customer, ..
            }
            | Event::DelegatedAdminRequested {
                partner, customer, ..
            }
            | Event::DelegatedAdminGranted {
                partner, customer, ..
            }
            | Event::DelegatedAdminExtended {
                partner, customer, ..
            }
            | Event::DelegatedAdminExpired {
                partner, customer, ..
            }
            | Event::DelegatedAdminTerminated {
                partner, customer, ..
            }
            | Event::DelegatedAdminRequestExpired {
                partner, customer, ..
            } => Parties::pair(*partner, *customer),
            Event::ResellerRelationshipRemoved {
                partner,
                customer,
                removed_by,
            } => Parties::pair(*partner, *customer).with_partner(*removed_by),
            Event::AzurePlanCreated {
                billing_partner,
                customer,
            }
            | Event::AzurePlanSuspended {
                billing_partner,
                customer,
            }
            | Event::AzurePlanReactivated {
                billing_partner,
                customer,
            } => Parties::pair(*billing_partner, *customer),
            Event::SubscriptionAdded {
                subscription,
                customer,
                billing_partner,
                partner_of_record,
                ..
            }
            | Event::AzureSubscriptionAdded {
                subscription,
                customer,
                billing_partner,
                partner_of_record,
                ..
            } => Parties {
                subscription: Some(*subscription),
                ..Parties::pair(*billing_partner, *customer).with_partner(*partner_of_record)
            },
            Event::SubscriptionSuspended {
                subscription,
                customer,
                billing_partner,
            }
            | Event::SubscriptionReactivated {
                subscription,
                customer,
                billing_partner,
            }
            | Event::SubscriptionCancelled {
                subscription,
                customer,
                billing_partner,
            } => Parties {
                subscription: Some(*subscription),
                ..Parties::pair(*billing_partner, *customer)
            },
        }
    }
}

impl Body {
    /// The parties this command names itself, without looking anything up: the partner it acts for (its `partner`,
    /// else its `provider`) first, then any other partner it names as a party to a link; its customer; its
    /// subscription. A request's or admin relationship's owner is not named by the command, only found in the state
    /// (`Body::entities`); a subscription's reseller of record is an attribute, not a party.
    pub fn parties(&self) -> Parties {
        match self {
            Body::EnrollPartner(body::EnrollPartner { partner, .. })
            | Body::UpdatePartner(body::UpdatePartner { partner, .. }) => {
                Parties::partner(*partner)
            }
            Body::LinkIndirectReseller(body::LinkIndirectReseller { provider, reseller })
            | Body::UnlinkIndirectReseller(body::UnlinkIndirectReseller { provider, reseller }) => {
                Parties::partner(*provider).with_partner(*reseller)
            }
            Body::RegisterCustomer(body::RegisterCustomer { customer, .. })
            | Body::UpdateCustomer(body::UpdateCustomer { customer, .. })
            | Body::AcceptCustomerAgreement(body::AcceptCustomerAgreement { customer })
            | Body::AcceptRelationship(body::AcceptRelationship { customer, .. })
            | Body::GrantDelegatedAdmin(body::GrantDelegatedAdmin { customer, .. }) => {
                Parties::customer(*customer)
            }
            Body::CreateCustomer(body::CreateCustomer {
                partner, customer, ..
            })
            | Body::RequestRelationship(body::RequestRelationship {
                partner, customer, ..
            })
            | Body::RemoveRelationship(body::RemoveRelationship { partner, customer })
            | Body::RemoveDelegatedAdmin(body::RemoveDelegatedAdmin { partner, customer })
            | Body::RequestDelegatedAdmin(body::RequestDelegatedAdmin {
                partner, customer, ..
            })
            | Body::SuspendAzurePlan(body::SuspendAzurePlan { partner, customer })
            | Body::ReactivateAzurePlan(body::ReactivateAzurePlan { partner, customer }) => {
                Parties::pair(*partner, *customer)
            }
            Body::AddSubscription(body::AddSubscription {
                subscription,
                partner,
                customer,
                ..
            })
            | Body::AddAzureSubscription(body::AddAzureSubscription {
                subscription,
                partner,
                customer,
                ..
            }) => Parties {
                subscription: Some(*subscription),
                ..Parties::pair(*partner, *customer)
            },
            Body::SuspendSubscription(body::SuspendSubscription {
                subscription,
                partner,
            })
            | Body::ReactivateSubscription(body::ReactivateSubscription {
                subscription,
                partner,
            })
            | Body::CancelSubscription(body::CancelSubscription {
                subscription,
                partner,
            }) => Parties {
                subscription: Some(*subscription),
                ..Parties::partner(*partner)
            },
            Body::WithdrawRelationshipRequest(_)
            | Body::TerminateDelegatedAdmin(_)
            | Body::AdvanceClock(_) => Parties::default(),
        }
    }
}
