//! Subscriptions and Azure plans: buying (R24–R26, R29, R30), the lifecycle (R27), plans (R28), and R3/R4.
//!
//! R4 holds by construction: no event can change a subscription's `partner_of_record` or `billing_partner`.

use super::command::body;
use super::refusal::refuse;
use super::state::{PlanStatus, SubscriptionKind, SubscriptionStatus};
use super::*;

/// Who bills and who is partner of record for a purchase by `partner` (R29).
fn parties(
    state: &State,
    partner: &state::Partner,
    reseller: Option<PartnerId>,
) -> Result<PartnerId, Refusal> {
    match (partner.kind, reseller) {
        (PartnerKind::IndirectReseller, _) => refuse(
            Code::NotAuthorized,
            29,
            format!(
                "partner {} is an indirect reseller; it sells through a linked indirect provider, which buys",
                partner.id
            ),
        ),
        (PartnerKind::IndirectProvider, None) => refuse(
            Code::ResellerRequired,
            29,
            format!("indirect provider {} must name the reseller of record", partner.id),
        ),
        (PartnerKind::IndirectProvider, Some(r)) if state.links.contains(&(partner.id, r)) => Ok(r),
        (_, Some(r)) => refuse(
            Code::ResellerNotLinked,
            29,
            format!("partner {r} is not an indirect reseller linked to provider {}", partner.id),
        ),
        (PartnerKind::DirectBill, None) => Ok(partner.id),
    }
}

/// The checks every purchase shares: the agent acts for its partner, the parties are right (R29), the relationship
/// exists (R24, R30) and the id is new (R26). Returns the partner of record.
fn check_purchase(
    state: &State,
    cmd: &Command,
    partner: PartnerId,
    customer: CustomerId,
    subscription: SubscriptionId,
    reseller: Option<PartnerId>,
) -> Result<PartnerId, Refusal> {
    require_tenant(cmd, partner.tenant(), PARTNER_AGENTS, 3)?;
    let p = find_partner(state, partner)?;
    find_customer(state, customer)?;
    let partner_of_record = parties(state, p, reseller)?;
    if !state.is_active(partner, customer) {
        return refuse(
            Code::NoResellerRelationship,
            24,
            format!(
                "partner {partner} has no active reseller relationship with customer {customer}"
            ),
        );
    }
    if state.subscriptions.contains_key(&subscription) {
        return refuse(
            Code::DuplicateSubscription,
            26,
            format!("subscription {subscription} already exists"),
        );
    }
    Ok(partner_of_record)
}

pub(super) fn add_licence(
    state: &State,
    cmd: &Command,
    b: &body::AddSubscription,
) -> Result<Vec<Event>, Refusal> {
    text("offer", &b.offer, 100)?;
    if b.quantity < 1 {
        return refuse(
            Code::InvalidQuantity,
            26,
            format!(
                "a licence subscription needs a quantity of at least 1, not {}",
                b.quantity
            ),
        );
    }
    let partner_of_record = check_purchase(
        state,
        cmd,
        b.partner,
        b.customer,
        b.subscription,
        b.reseller_of_record,
    )?;
    Ok(vec![Event::SubscriptionAdded {
        subscription: b.subscription,
        customer: b.customer,
        billing_partner: b.partner,
        partner_of_record,
        offer: b.offer.clone(),
        quantity: b.quantity,
    }])
}

pub(super) fn add_azure(
    state: &State,
    cmd: &Command,
    b: &body::AddAzureSubscription,
) -> Result<Vec<Event>, Refusal> {
    text("friendly_name", &b.friendly_name, 64)?;
    let partner_of_record = check_purchase(
        state,
        cmd,
        b.partner,
        b.customer,
        b.subscription,
        b.reseller_of_record,
    )?;
    if !state
        .customers
        .get(&b.customer)
        .is_some_and(|c| c.agreement_accepted)
    {
        return refuse(
            Code::CustomerAgreementMissing,
            25,
            format!(
                "customer {} has not accepted the customer agreement",
                b.customer
            ),
        );
    }
    let mut events = Vec::with_capacity(2);
    match state.plans.get(&(b.partner, b.customer)) {
        Some(plan) if plan.status == PlanStatus::Suspended => {
            return refuse(
                Code::AzurePlanSuspended,
                28,
                format!(
                    "the Azure plan of partner {} for customer {} is suspended",
                    b.partner, b.customer
                ),
            )
        }
        Some(_) => {}
        None => events.push(Event::AzurePlanCreated {
            billing_partner: b.partner,
            customer: b.customer,
        }),
    }
    events.push(Event::AzureSubscriptionAdded {
        subscription: b.subscription,
        customer: b.customer,
        billing_partner: b.partner,
        partner_of_record,
        friendly_name: b.friendly_name.clone(),
    });
    Ok(events)
}

/// R27 (and R3): the subscription exists, the agent acts for the partner that bills it, and it is not cancelled.
fn billed_by<'s>(
    state: &'s State,
    cmd: &Command,
    subscription: SubscriptionId,
    partner: PartnerId,
) -> Result<&'s state::Subscription, Refusal> {
    require_tenant(cmd, partner.tenant(), PARTNER_AGENTS, 27)?;
    let Some(s) = state.subscriptions.get(&subscription) else {
        return refuse(
            Code::UnknownSubscription,
            27,
            format!("subscription {subscription} does not exist"),
        );
    };
    if s.billing_partner != partner {
        return refuse(
            Code::NotPartnerOfRecord,
            27,
            format!(
                "subscription {subscription} is billed by partner {}; partner {partner} cannot change it",
                s.billing_partner
            ),
        );
    }
    if s.status == SubscriptionStatus::Cancelled {
        return refuse(
            Code::SubscriptionCancelled,
            27,
            format!("subscription {subscription} is cancelled, which is final"),
        );
    }
    Ok(s)
}

pub(super) fn suspend(
    state: &State,
    cmd: &Command,
    b: &body::SuspendSubscription,
) -> Result<Vec<Event>, Refusal> {
    let s = billed_by(state, cmd, b.subscription, b.partner)?;
    if s.status != SubscriptionStatus::Active {
        return refuse(
            Code::InvalidState,
            27,
            format!("subscription {} is {}, not active", s.id, s.status.as_str()),
        );
    }
    Ok(vec![Event::SubscriptionSuspended {
        subscription: s.id,
        customer: s.customer,
        billing_partner: s.billing_partner,
    }])
}

pub(super) fn reactivate(
    state: &State,
    cmd: &Command,
    b: &body::ReactivateSubscription,
) -> Result<Vec<Event>, Refusal> {
    let s = billed_by(state, cmd, b.subscription, b.partner)?;
    if s.status != SubscriptionStatus::Suspended {
        return refuse(
            Code::InvalidState,
            27,
            format!(
                "subscription {} is {}, not suspended",
                s.id,
                s.status.as_str()
            ),
        );
    }
    let plan_suspended = s.kind == SubscriptionKind::Azure
        && state
            .plans
            .get(&(s.billing_partner, s.customer))
            .is_some_and(|p| p.status == PlanStatus::Suspended);
    if plan_suspended {
        return refuse(
            Code::AzurePlanSuspended,
            28,
            format!(
                "the Azure plan holding subscription {} is suspended; reactivate the plan first",
                s.id
            ),
        );
    }
    Ok(vec![Event::SubscriptionReactivated {
        subscription: s.id,
        customer: s.customer,
        billing_partner: s.billing_partner,
    }])
}

pub(super) fn cancel(
    state: &State,
    cmd: &Command,
    b: &body::CancelSubscription,
) -> Result<Vec<Event>, Refusal> {
    let s = billed_by(state, cmd, b.subscription, b.partner)?;
    Ok(vec![Event::SubscriptionCancelled {
        subscription: s.id,
        customer: s.customer,
        billing_partner: s.billing_partner,
    }])
}

fn find_plan<'s>(
    state: &'s State,
    cmd: &Command,
    partner: PartnerId,
    customer: CustomerId,
) -> Result<&'s state::AzurePlan, Refusal> {
    require_tenant(cmd, partner.tenant(), PARTNER_AGENTS, 28)?;
    find_partner(state, partner)?;
    find_customer(state, customer)?;
    match state.plans.get(&(partner, customer)) {
        Some(p) => Ok(p),
        None => refuse(
            Code::InvalidState,
            28,
            format!("partner {partner} has no Azure plan for customer {customer}"),
        ),
    }
}

pub(super) fn suspend_plan(
    state: &State,
    cmd: &Command,
    b: &body::SuspendAzurePlan,
) -> Result<Vec<Event>, Refusal> {
    let plan = find_plan(state, cmd, b.partner, b.customer)?;
    if plan.status == PlanStatus::Suspended {
        return refuse(
            Code::InvalidState,
            28,
            format!(
                "the Azure plan of partner {} for customer {} is already suspended",
                b.partner, b.customer
            ),
        );
    }
    let active: Vec<String> = plan
        .subscriptions
        .iter()
        .filter(|id| {
            state
                .subscriptions
                .get(id)
                .is_some_and(|s| s.status == SubscriptionStatus::Active)
        })
        .map(ToString::to_string)
        .collect();
    if !active.is_empty() {
        return refuse(
            Code::AzurePlanHasActiveSubscriptions,
            28,
            format!(
                "the Azure plan of partner {} for customer {} still has active subscriptions: {}",
                b.partner,
                b.customer,
                active.join(", ")
            ),
        );
    }
    Ok(vec![Event::AzurePlanSuspended {
        billing_partner: b.partner,
        customer: b.customer,
    }])
}

pub(super) fn reactivate_plan(
    state: &State,
    cmd: &Command,
    b: &body::ReactivateAzurePlan,
) -> Result<Vec<Event>, Refusal> {
    let plan = find_plan(state, cmd, b.partner, b.customer)?;
    if plan.status == PlanStatus::Active {
        return refuse(
            Code::InvalidState,
            28,
            format!(
                "the Azure plan of partner {} for customer {} is not suspended",
                b.partner, b.customer
            ),
        );
    }
    Ok(vec![Event::AzurePlanReactivated {
        billing_partner: b.partner,
        customer: b.customer,
    }])
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::*;
    use serde_json::json;

    const AZ_B2: &str = "5b000000-0000-4000-8000-000000000003";

    #[test]
    fn r3_the_seed_story_b_adds_azure_and_nothing_of_as_changes() {
        let story = seed_with_b();
        let before = story.state.subscriptions[&id(SUB_A)].clone();
        let then = story.when(azure(AZ_B, B, CONTOSO));
        let events = then.then_types(&["AzurePlanCreated", "AzureSubscriptionAdded"]);
        // R3: no event of B's mentions A or A's subscription.
        for e in &events {
            let entities = e.entities();
            assert!(!entities.contains(&EntityRef::Subscription(id(SUB_A))));
            assert!(!entities.contains(&EntityRef::Partner(id(A))));
        }
        let state = story.when(azure(AZ_B, B, CONTOSO)).then_state();
        assert_eq!(state.subscriptions[&id(SUB_A)], before);
        assert_eq!(state.subscriptions[&id(AZ_B)].partner_of_record, id(B));
    }

    #[test]
    fn r2_azure_through_one_partner_does_not_stop_azure_through_another() {
        let story = seed_with_b().with(azure("5a000000-0000-4000-8000-0000000000a2", A, CONTOSO));
        let state = story.when(azure(AZ_B, B, CONTOSO)).then_state();
        assert_eq!(
            state.plans.len(),
            2,
            "one plan per billing partner and customer"
        );
    }

    #[test]
    fn r24_buying_needs_an_active_reseller_relationship_but_no_delegated_admin() {
        let story = seed();
        let r = story
            .when(azure(AZ_B, B, CONTOSO))
            .then_refused_under(Code::NoResellerRelationship, 24);
        assert_eq!(r.code.vendor_code(), Some(20002));
        story
            .when(licence(AZ_B, B, CONTOSO, 5))
            .then_refused_under(Code::NoResellerRelationship, 24);
        // A has no DAP nor GDAP and still buys.
        story
            .when(licence(
                "5a000000-0000-4000-8000-0000000000a2",
                A,
                CONTOSO,
                5,
            ))
            .then_types(&["SubscriptionAdded"]);
    }

    #[test]
    fn r25_azure_needs_the_customer_agreement() {
        let story = given()
            .with(enroll(B, "direct_bill", "public", "NL"))
            .with(register(CONTOSO, "public", "NL"))
            .with(request(REQ_B, B, CONTOSO, false))
            .with(accept(REQ_B, CONTOSO));
        let r = story
            .when(azure(AZ_B, B, CONTOSO))
            .then_refused_under(Code::CustomerAgreementMissing, 25);
        assert_eq!(r.code.vendor_code(), Some(13605));
        // Licences do not need it.
        story
            .when(licence(SUB_A, B, CONTOSO, 1))
            .then_types(&["SubscriptionAdded"]);
        story
            .with(agreement(CONTOSO))
            .when(azure(AZ_B, B, CONTOSO))
            .then_types(&["AzurePlanCreated", "AzureSubscriptionAdded"]);
    }

    #[test]
    fn r26_one_plan_per_partner_and_customer_and_ids_are_unique_everywhere() {
        let story = seed_with_b().with(azure(AZ_B, B, CONTOSO));
        story
            .when(azure(AZ_B2, B, CONTOSO))
            .then_types(&["AzureSubscriptionAdded"]);
        story
            .when(azure(AZ_B, B, CONTOSO))
            .then_refused_under(Code::DuplicateSubscription, 26);
        story
            .when(azure(SUB_A, B, CONTOSO))
            .then_refused_under(Code::DuplicateSubscription, 26);
        story
            .when(licence(AZ_B, B, CONTOSO, 1))
            .then_refused_under(Code::DuplicateSubscription, 26);
    }

    #[test]
    fn r26_a_licence_needs_a_quantity_of_at_least_one() {
        let story = seed();
        let other = "5a000000-0000-4000-8000-0000000000a2";
        story
            .when(licence(other, A, CONTOSO, 0))
            .then_refused_under(Code::InvalidQuantity, 26);
        story
            .when(licence(other, A, CONTOSO, -3))
            .then_refused_under(Code::InvalidQuantity, 26);
        story
            .when(licence(other, A, CONTOSO, 1))
            .then_types(&["SubscriptionAdded"]);
    }

    #[test]
    fn r38_offers_and_friendly_names_are_bounded() {
        let story = seed_with_b();
        let mut c = licence("5a000000-0000-4000-8000-0000000000a2", A, CONTOSO, 1);
        c["offer"] = json!("o".repeat(101));
        story
            .when(c.clone())
            .then_refused_under(Code::InvalidText, 38);
        c["offer"] = json!("o".repeat(100));
        story.when(c).then_types(&["SubscriptionAdded"]);
        let mut c = azure(AZ_B, B, CONTOSO);
        c["friendly_name"] = json!("f".repeat(65));
        story.when(c).then_refused_under(Code::InvalidText, 38);
    }

    #[test]
    fn r27_only_the_billing_partner_suspends_reactivates_or_cancels() {
        let story = seed_with_b().with(azure(AZ_B, B, CONTOSO));
        // The seed scenario: B cancels A's subscription.
        story
            .when(sub_cmd("CancelSubscription", SUB_A, B))
            .then_refused_under(Code::NotPartnerOfRecord, 27);
        story
            .when(sub_cmd("SuspendSubscription", SUB_A, B))
            .then_refused_under(Code::NotPartnerOfRecord, 27);
        // Acting for another partner than one's own tenant is not authorised.
        story
            .when(with_actor(
                sub_cmd("CancelSubscription", SUB_A, A),
                admin(B),
            ))
            .then_refused_under(Code::NotAuthorized, 27);
        story
            .when(sub_cmd(
                "CancelSubscription",
                "5c000000-0000-4000-8000-000000000009",
                A,
            ))
            .then_refused(Code::UnknownSubscription);
        story
            .when(sub_cmd("CancelSubscription", SUB_A, A))
            .then_types(&["SubscriptionCancelled"]);
    }

    #[test]
    fn r27_the_subscription_lifecycle_and_cancelled_is_final() {
        let story = seed();
        story
            .when(sub_cmd("ReactivateSubscription", SUB_A, A))
            .then_refused_under(Code::InvalidState, 27);
        let suspended = story.with(sub_cmd("SuspendSubscription", SUB_A, A));
        suspended
            .when(sub_cmd("SuspendSubscription", SUB_A, A))
            .then_refused_under(Code::InvalidState, 27);
        suspended
            .when(sub_cmd("ReactivateSubscription", SUB_A, A))
            .then_types(&["SubscriptionReactivated"]);
        suspended
            .when(sub_cmd("CancelSubscription", SUB_A, A))
            .then_types(&["SubscriptionCancelled"]);
        let cancelled = suspended.with(sub_cmd("CancelSubscription", SUB_A, A));
        for kind in [
            "SuspendSubscription",
            "ReactivateSubscription",
            "CancelSubscription",
        ] {
            cancelled
                .when(sub_cmd(kind, SUB_A, A))
                .then_refused_under(Code::SubscriptionCancelled, 27);
        }
    }

    fn plan_cmd(kind: &str) -> serde_json::Value {
        cmd(kind, admin(B), json!({"partner": B, "customer": CONTOSO}))
    }

    #[test]
    fn r28_a_plan_is_suspended_only_without_active_subscriptions_and_then_takes_none() {
        let story = seed_with_b().with(azure(AZ_B, B, CONTOSO));
        let r = story
            .when(plan_cmd("SuspendAzurePlan"))
            .then_refused_under(Code::AzurePlanHasActiveSubscriptions, 28);
        assert_eq!(r.code.vendor_code(), Some(900115));
        let quiet = story.with(sub_cmd("SuspendSubscription", AZ_B, B));
        let suspended = quiet.with(plan_cmd("SuspendAzurePlan"));
        suspended
            .when(azure(AZ_B2, B, CONTOSO))
            .then_refused_under(Code::AzurePlanSuspended, 28);
        suspended
            .when(sub_cmd("ReactivateSubscription", AZ_B, B))
            .then_refused_under(Code::AzurePlanSuspended, 28);
        suspended
            .when(plan_cmd("SuspendAzurePlan"))
            .then_refused_under(Code::InvalidState, 28);
        let reactivated = suspended.with(plan_cmd("ReactivateAzurePlan"));
        reactivated
            .when(azure(AZ_B2, B, CONTOSO))
            .then_types(&["AzureSubscriptionAdded"]);
        reactivated
            .when(plan_cmd("ReactivateAzurePlan"))
            .then_refused_under(Code::InvalidState, 28);
        seed_with_b()
            .when(plan_cmd("SuspendAzurePlan"))
            .then_refused_under(Code::InvalidState, 28);
    }

    fn two_tier() -> Story {
        seed()
            .with(enroll(PROVIDER, "indirect_provider", "public", "NL"))
            .with(enroll(RESELLER, "indirect_reseller", "public", "NL"))
            .with(cmd(
                "LinkIndirectReseller",
                op(),
                json!({"provider": PROVIDER, "reseller": RESELLER}),
            ))
            .with(request(REQ_B, PROVIDER, CONTOSO, false))
            .with(accept(REQ_B, CONTOSO))
    }

    fn two_tier_azure(partner: &str, reseller: Option<&str>) -> serde_json::Value {
        let mut c = azure(AZ_B, partner, CONTOSO);
        if let Some(r) = reseller {
            c["reseller_of_record"] = json!(r);
        }
        c
    }

    #[test]
    fn r29_a_provider_buys_for_its_linked_reseller_which_needs_no_relationship() {
        let story = two_tier();
        let state = story
            .when(two_tier_azure(PROVIDER, Some(RESELLER)))
            .then_state();
        let s = &state.subscriptions[&id(AZ_B)];
        assert_eq!(
            (s.billing_partner, s.partner_of_record),
            (id(PROVIDER), id(RESELLER))
        );
        assert!(
            state.plans.contains_key(&(id(PROVIDER), id(CONTOSO))),
            "the subscription sits in the provider's plan"
        );
        story
            .when(two_tier_azure(PROVIDER, None))
            .then_refused_under(Code::ResellerRequired, 29);
        story
            .when(two_tier_azure(PROVIDER, Some(B)))
            .then_refused_under(Code::ResellerNotLinked, 29);
        seed_with_b()
            .when(two_tier_azure(B, Some(RESELLER)))
            .then_refused_under(Code::ResellerNotLinked, 29);
        story
            .when(two_tier_azure(RESELLER, None))
            .then_refused_under(Code::NotAuthorized, 29);
        // After unlinking, new buys naming the reseller are refused (R39).
        story
            .with(cmd(
                "UnlinkIndirectReseller",
                op(),
                json!({"provider": PROVIDER, "reseller": RESELLER}),
            ))
            .when(two_tier_azure(PROVIDER, Some(RESELLER)))
            .then_refused_under(Code::ResellerNotLinked, 29);
    }

    #[test]
    fn r29_the_provider_not_the_reseller_suspends_and_cancels() {
        let story = two_tier().with(two_tier_azure(PROVIDER, Some(RESELLER)));
        story
            .when(sub_cmd("SuspendSubscription", AZ_B, RESELLER))
            .then_refused_under(Code::NotPartnerOfRecord, 27);
        story
            .when(sub_cmd("SuspendSubscription", AZ_B, PROVIDER))
            .then_types(&["SubscriptionSuspended"]);
    }

    #[test]
    fn r30_a_provider_needs_its_own_relationship() {
        seed()
            .with(enroll(PROVIDER, "indirect_provider", "public", "NL"))
            .with(enroll(RESELLER, "indirect_reseller", "public", "NL"))
            .with(cmd(
                "LinkIndirectReseller",
                op(),
                json!({"provider": PROVIDER, "reseller": RESELLER}),
            ))
            .when(two_tier_azure(PROVIDER, Some(RESELLER)))
            .then_refused_under(Code::NoResellerRelationship, 24);
    }

    #[test]
    fn r4_the_partner_of_record_never_changes_through_any_lifecycle() {
        let story = two_tier().with(two_tier_azure(PROVIDER, Some(RESELLER)));
        let mut state = story.state.clone();
        for kind in [
            "SuspendSubscription",
            "ReactivateSubscription",
            "CancelSubscription",
        ] {
            state = Story {
                state,
                ..story.clone()
            }
            .when(sub_cmd(kind, AZ_B, PROVIDER))
            .then_state();
            let s = &state.subscriptions[&id(AZ_B)];
            assert_eq!(
                (s.billing_partner, s.partner_of_record),
                (id(PROVIDER), id(RESELLER)),
                "after {kind}"
            );
        }
        // No command type can even ask for a change: none of them carries a new partner of record for an existing id.
        story
            .when(two_tier_azure(PROVIDER, Some(RESELLER)))
            .then_refused_under(Code::DuplicateSubscription, 26);
    }

    #[test]
    fn r39_unlinking_keeps_existing_subscriptions_partner_of_record() {
        let story = two_tier().with(two_tier_azure(PROVIDER, Some(RESELLER)));
        let state = story
            .when(cmd(
                "UnlinkIndirectReseller",
                op(),
                json!({"provider": PROVIDER, "reseller": RESELLER}),
            ))
            .then_state();
        assert_eq!(
            state.subscriptions[&id(AZ_B)].partner_of_record,
            id(RESELLER)
        );
    }
}
