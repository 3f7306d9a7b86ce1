//! Who may see and do what (docs/security.md): principals, their read scope, and the checks made before a command
//! reaches the rules. Pure: it reads a [`State`] and bytes, does no I/O, and knows nothing of HTTP (the adapter in
//! `api::auth` authenticates callers and turns a "no" into 401/403/404).
//!
//! Confinement follows the program: a partner sees the customers it has (or had) a relationship, admin relationship
//! or subscription with, and in them only its own subscriptions and delegated admin (R3); a reseller of record sees
//! the subscriptions it is partner of record of; a customer sees its own tenant; operators, `system` and auditors see
//! everything, and auditors change nothing.

use crate::domain::view::CustomerView;
use crate::domain::{
    Actor, AdminRelationshipId, CustomerId, PartnerId, RequestId, Role, State, Submitted,
    SubscriptionId, TenantId,
};

/// What a principal is allowed to be.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// A WIRE.md actor role: commands are issued as this actor.
    Role(Role),
    /// Reads everything, issues nothing.
    Auditor,
    /// `serve` without a tokens file, on loopback: every caller is an operator and commands carry their own actor.
    Local,
}

/// An authenticated caller.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Principal {
    /// The name the tokens file gives it (logs and audit).
    pub name: String,
    pub kind: Kind,
    /// Its tenant (absent only for auditors and local callers).
    pub tenant: Option<TenantId>,
    /// Its user (principal name or application id).
    pub user: String,
}

/// What a principal may read.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Scope {
    /// Everything (operators, `system`, auditors, local callers).
    #[default]
    All,
    /// One partner's own share (its admin and sales agents).
    Partner(PartnerId),
    /// One customer's own tenant (its Global admin and users).
    Customer(CustomerId),
}

impl Principal {
    /// The caller of a server in local mode.
    pub fn local() -> Principal {
        Principal {
            name: "local".into(),
            kind: Kind::Local,
            tenant: None,
            user: "local".into(),
        }
    }

    /// The actor its commands are issued as (`None`: local callers name their own; auditors issue none).
    pub fn actor(&self) -> Option<Actor> {
        match (self.kind, self.tenant) {
            (Kind::Role(role), Some(tenant)) => Some(Actor {
                tenant,
                user: self.user.clone(),
                role,
            }),
            _ => None,
        }
    }

    /// What it may read.
    pub fn scope(&self) -> Scope {
        match (self.kind, self.tenant) {
            (Kind::Role(Role::PartnerAdminAgent | Role::PartnerSalesAgent), Some(t)) => {
                Scope::Partner(t.as_partner())
            }
            (Kind::Role(Role::CustomerGlobalAdmin | Role::CustomerUser), Some(t)) => {
                Scope::Customer(t.as_customer())
            }
            _ => Scope::All,
        }
    }

    /// Operators (and local callers) run the ledger: consumers, metrics.
    pub fn is_operator(&self) -> bool {
        matches!(self.kind, Kind::Local | Kind::Role(Role::Operator))
    }

    /// Sees everything: operators, `system`, auditors and local callers.
    pub fn reads_everything(&self) -> bool {
        self.scope() == Scope::All
    }

    /// A short label for logs and metrics: `name (role)`.
    pub fn label(&self) -> String {
        let role = match self.kind {
            Kind::Role(r) => crate::domain::role_name(r),
            Kind::Auditor => "auditor",
            Kind::Local => "local",
        };
        format!("{} ({role})", self.name)
    }

    /// Whether this principal may submit `cmd`, checked before the rules run. `Err` names why not (403).
    ///
    /// The body's actor must be the principal itself; and a scoped principal may act only for its own tenant: a
    /// partner's agents for that partner (a provider also for its linked reseller's relationship, R32), a customer's
    /// users for that customer. Which role may issue which command is left to the rules (R7, R8, R21, R27), which now
    /// see the real role.
    pub fn may_submit(&self, state: &State, cmd: &Submitted) -> Result<(), Denial> {
        let not_yours = |message: String| Denial {
            reason: "not_your_tenant",
            message,
        };
        if self.kind == Kind::Auditor {
            return Err(Denial {
                reason: "read_only",
                message: "auditors read; they issue no commands".into(),
            });
        }
        if let Some(actor) = self.actor() {
            if cmd.actor != actor {
                return Err(Denial {
                    reason: "actor_mismatch",
                    message: format!(
                        "the command's actor ({}, {}) is not the authenticated principal ({}, {})",
                        cmd.actor.tenant, cmd.actor.user, actor.tenant, actor.user
                    ),
                });
            }
        }
        // Business time is the ledger clock for partners and customers: an explicit `at` up to R37's five minutes
        // ahead would hold back everyone's clock advances and explicit times. Operators and `system` keep it.
        if self.scope() != Scope::All && cmd.at.is_some() {
            return Err(Denial {
                reason: "explicit_time_not_allowed",
                message: "partners and customers act at the ledger clock; leave out `at` (only operators and system set business time)".into(),
            });
        }
        let named = cmd.body.parties();
        match self.scope() {
            Scope::All => Ok(()),
            Scope::Partner(me) => {
                // Only the tenants the command names itself: a request or admin relationship of another tenant is
                // answered by the writer as if it did not exist (`Scope::hidden`), never by naming its owner.
                let acts_for = named.partners.first().copied();
                match acts_for {
                    Some(p) if p == me => Ok(()),
                    // A provider removes its linked reseller's relationship (R32: actor the provider, partner the
                    // reseller).
                    Some(p)
                        if matches!(cmd.body, crate::domain::Body::RemoveRelationship(_))
                            && state.links.contains(&(me, p)) =>
                    {
                        Ok(())
                    }
                    Some(p) => Err(not_yours(format!(
                        "acting for partner {p}, which is not {me}"
                    ))),
                    None => Ok(()),
                }
            }
            Scope::Customer(me) => match named.customer {
                Some(c) if c == me => Ok(()),
                Some(c) => Err(not_yours(format!(
                    "acting for customer {c}, which is not {me}"
                ))),
                None => match named.partners.first() {
                    Some(p) => Err(not_yours(format!(
                        "acting for partner {p}, as customer {me}"
                    ))),
                    None => Ok(()),
                },
            },
        }
    }
}

/// An existing entity a command names that its (confined) principal may not see: the writer decides such a command
/// as if the entity did not exist, so the answer and the refusal filed are those of a random id (docs/security.md).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Hidden {
    Request(RequestId),
    AdminRelationship(AdminRelationshipId),
    Subscription(SubscriptionId),
}

impl Scope {
    /// The entity `body` names that exists but is not this principal's to see, if any. Only commands that act on an
    /// existing request, admin relationship or subscription are concerned: creating commands name new ids.
    pub fn hidden(&self, state: &State, body: &crate::domain::Body) -> Option<Hidden> {
        use crate::domain::Body;
        let me = *self;
        if me == Scope::All {
            return None;
        }
        let request = |id: RequestId| {
            let r = state.requests.get(&id)?;
            let mine = match me {
                Scope::Partner(p) => r.partner == p,
                Scope::Customer(c) => r.customer == c,
                Scope::All => true,
            };
            (!mine).then_some(Hidden::Request(id))
        };
        let admin = |id: AdminRelationshipId| {
            let a = state.admin.get(&id)?;
            let mine = match me {
                Scope::Partner(p) => a.partner == p,
                Scope::Customer(c) => a.customer == c,
                Scope::All => true,
            };
            (!mine).then_some(Hidden::AdminRelationship(id))
        };
        let subscription = |id: SubscriptionId| {
            state.subscriptions.get(&id)?;
            (!self.sees_subscription(state, id)).then_some(Hidden::Subscription(id))
        };
        match body {
            Body::WithdrawRelationshipRequest(b) => request(b.request),
            Body::AcceptRelationship(b) => request(b.request),
            Body::GrantDelegatedAdmin(b) => admin(b.admin_relationship),
            Body::TerminateDelegatedAdmin(b) => admin(b.admin_relationship),
            Body::SuspendSubscription(b) => subscription(b.subscription),
            Body::ReactivateSubscription(b) => subscription(b.subscription),
            Body::CancelSubscription(b) => subscription(b.subscription),
            _ => None,
        }
    }
}

/// Why a principal may not submit a command: a stable reason code (for `/metrics` and the 403 body) and a message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Denial {
    /// `actor_mismatch`, `not_your_tenant`, `explicit_time_not_allowed` or `read_only`.
    pub reason: &'static str,
    pub message: String,
}

impl Scope {
    /// Whether the customer exists for this principal: a partner's if it has (or had) a relationship, an admin
    /// relationship or a subscription of record with it; a customer's own tenant.
    pub fn sees_customer(&self, state: &State, customer: CustomerId) -> bool {
        match *self {
            Scope::All => true,
            Scope::Customer(me) => me == customer,
            Scope::Partner(me) => state.partner_customer_ordinal.contains_key(&(me, customer)),
        }
    }

    /// Whether the partner's own view is visible: only to itself (and to everyone who reads everything).
    pub fn sees_partner(&self, partner: PartnerId) -> bool {
        match *self {
            Scope::All => true,
            Scope::Partner(me) => me == partner,
            Scope::Customer(_) => false,
        }
    }

    /// Whether a subscription is visible: to its billing partner and its partner of record, and to its customer.
    pub fn sees_subscription(&self, state: &State, id: SubscriptionId) -> bool {
        match *self {
            Scope::All => true,
            _ => state.subscriptions.get(&id).is_some_and(|s| {
                self.sees_parties(s.customer, &[s.billing_partner, s.partner_of_record])
            }),
        }
    }

    fn sees_parties(&self, customer: CustomerId, partners: &[PartnerId]) -> bool {
        match *self {
            Scope::All => true,
            Scope::Customer(me) => me == customer,
            Scope::Partner(me) => partners.contains(&me),
        }
    }

    /// Cuts a customer view down to what a partner may see of it: its own entry (relationship and delegated admin),
    /// its own subscriptions (billing or of record) and its own Azure plan, never another partner's (R3).
    pub fn confine_customer_view(&self, view: &mut CustomerView) {
        if let Scope::Partner(me) = *self {
            view.partners.retain(|p| p.partner == me);
            view.subscriptions
                .retain(|s| s.billing_partner == me || s.partner_of_record == me);
            view.azure_plans.retain(|p| p.billing_partner == me);
        }
    }

    /// Whether a stored event (its canonical envelope) is visible. A partner sees events that name it (as partner,
    /// provider, reseller, billing partner or partner of record), events about a subscription it bills or is partner
    /// of record of, and the customer-level events (registration, agreement, corrections) of a customer it was
    /// already involved with at that event's position; a customer sees the events about itself.
    ///
    /// The answer depends on the log up to the event alone, never on what happened after it, provided `state`
    /// reflects at least the event's position (streams wait for that): so a live stream, a replay from 0 and a resume
    /// from any checkpoint carry the same events (docs/security.md).
    pub fn sees_event(&self, state: &State, envelope: &[u8]) -> bool {
        self.sees_event_as(state, envelope, true)
    }

    /// Like [`Scope::sees_event`] for a customer's history, which follows the views' rule instead of the streams':
    /// a partner that has or had the customer sees its customer-level events from before its involvement too.
    pub fn sees_event_in_history(&self, state: &State, envelope: &[u8]) -> bool {
        self.sees_event_as(state, envelope, false)
    }

    fn sees_event_as(&self, state: &State, envelope: &[u8], at_its_position: bool) -> bool {
        if *self == Scope::All {
            return true;
        }
        let Some((position, event)) = crate::store::decode_envelope(envelope) else {
            return false;
        };
        let p = event.parties();
        match *self {
            Scope::All => true,
            Scope::Customer(me) => p.customer == Some(me),
            Scope::Partner(me) => {
                if let Some(s) = p.subscription {
                    return self.sees_subscription(state, s) || p.partners.contains(&me);
                }
                if !p.partners.is_empty() {
                    return p.partners.contains(&me);
                }
                // Involvement starts at an event that names the partner and never ends.
                p.customer.is_some_and(|c| {
                    state
                        .involved_at
                        .get(&(me, c))
                        .is_some_and(|since| !at_its_position || *since <= position.0)
                })
            }
        }
    }

    /// Withholds from an event (an envelope or a history line, as JSON) what would name another partner or its people
    /// to a partner: the `actor` when it is another partner's agent, and `data.accepted_by` when another partner
    /// attested the agreement. Withheld fields become `null` and are listed in `"withheld"`; the envelope's hash then
    /// no longer covers what the partner receives (docs/security.md). Returns whether anything was withheld.
    pub fn withhold(&self, event: &mut serde_json::Value) -> bool {
        let Scope::Partner(me) = *self else {
            return false;
        };
        let mine = me.tenant().to_string();
        let mut withheld = Vec::new();
        let actor = &event["actor"];
        let partner_agent = matches!(
            actor["role"].as_str(),
            Some("partner_admin_agent" | "partner_sales_agent")
        );
        if partner_agent && actor["tenant"].as_str() != Some(mine.as_str()) {
            event["actor"] = serde_json::Value::Null;
            withheld.push("actor");
        }
        let data = &event["data"];
        if let Some(by) = data["accepted_by"].as_str() {
            if by != mine && Some(by) != data["customer"].as_str() {
                event["data"]["accepted_by"] = serde_json::Value::Null;
                withheld.push("data.accepted_by");
            }
        }
        if withheld.is_empty() {
            return false;
        }
        event["withheld"] = serde_json::json!(withheld);
        true
    }

    /// [`Scope::withhold`] on a stored envelope's bytes: `None` when nothing is withheld (send the bytes as stored).
    pub fn withhold_bytes(&self, envelope: &[u8]) -> Option<Vec<u8>> {
        if !matches!(self, Scope::Partner(_)) {
            return None;
        }
        let mut v: serde_json::Value = serde_json::from_slice(envelope).ok()?;
        if self.withhold(&mut v) {
            serde_json::to_vec(&v).ok()
        } else {
            None
        }
    }

    /// Whether an actor's own record (a refused command) is visible: a scoped principal sees its own tenant's only.
    pub fn sees_actor(&self, actor: &Actor) -> bool {
        match *self {
            Scope::All => true,
            Scope::Partner(me) => actor.tenant == me.tenant(),
            Scope::Customer(me) => actor.tenant == me.tenant(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::parse_line;

    const P: &str = "a0000000-0000-4000-8000-00000000000a";
    const R: &str = "e0000000-0000-4000-8000-00000000000e";
    const C: &str = "c0000000-0000-4000-8000-00000000000c";

    fn agent(tenant: &str) -> Principal {
        Principal {
            name: "agent".into(),
            kind: Kind::Role(Role::PartnerAdminAgent),
            tenant: Some(tenant.parse().unwrap()),
            user: "u".into(),
        }
    }

    fn remove(partner: &str, actor: &str) -> Submitted {
        parse_line(&format!(r#"{{"type":"RemoveRelationship","actor":{{"tenant":"{actor}","user":"u","role":"partner_admin_agent"}},"partner":"{partner}","customer":"{C}"}}"#)).unwrap()
    }

    #[test]
    fn a_provider_may_remove_its_linked_resellers_relationship_and_no_other() {
        let mut state = State::new();
        let provider = agent(P);
        assert!(provider.may_submit(&state, &remove(P, P)).is_ok());
        assert!(
            provider.may_submit(&state, &remove(R, P)).is_err(),
            "not linked"
        );
        state.links.insert((P.parse().unwrap(), R.parse().unwrap()));
        assert!(provider.may_submit(&state, &remove(R, P)).is_ok(), "R32");
        // The link gives the reseller nothing over its provider.
        assert!(agent(R).may_submit(&state, &remove(P, R)).is_err());
        // And the actor must be the principal, whatever the link.
        assert_eq!(
            provider
                .may_submit(&state, &remove(R, R))
                .unwrap_err()
                .reason,
            "actor_mismatch"
        );
        assert_eq!(
            agent(R)
                .may_submit(&state, &remove(P, R))
                .unwrap_err()
                .reason,
            "not_your_tenant"
        );
    }

    /// The provider that removed its linked reseller's relationship (R32) sees that removal: `removed_by` names it
    /// as a party. A partner it does not name does not see it.
    #[test]
    fn a_provider_sees_the_removal_it_made_for_its_reseller() {
        let removal = format!(
            r#"{{"position":9,"type":"ResellerRelationshipRemoved","data":{{"partner":"{R}","customer":"{C}","removed_by":"{P}"}}}}"#
        );
        let state = State::new();
        let sees = |tenant: &str| agent(tenant).scope().sees_event(&state, removal.as_bytes());
        assert!(sees(R), "the reseller");
        assert!(sees(P), "its provider, which removed it");
        assert!(
            !sees("b0000000-0000-4000-8000-00000000000b"),
            "another partner"
        );
    }
}
