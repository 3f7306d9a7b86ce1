//! Reseller relationships: requests and acceptance (R7–R13), removal (R31–R34), and the multi-partner core (R1, R3).

use super::command::body;
use super::event::{RemovedBy, TerminatedBy};
use super::refusal::{refuse, refuse_plain};
use super::state::{dap_retirement, AdminStatus, RequestStatus, SubscriptionStatus};
use super::*;

pub(super) fn request(
    state: &State,
    cmd: &Command,
    b: &body::RequestRelationship,
) -> Result<Vec<Event>, Refusal> {
    require_tenant(cmd, b.partner.tenant(), PARTNER_AGENTS, 7)?;
    let partner = find_partner(state, b.partner)?;
    if state
        .partners
        .contains_key(&b.customer.tenant().as_partner())
    {
        return refuse(
            Code::TenantIsPartner,
            5,
            format!(
                "tenant {} is a CSP partner; a partner cannot resell to another partner",
                b.customer
            ),
        );
    }
    let customer = find_customer(state, b.customer)?;
    if state.requests.contains_key(&b.request) {
        return refuse_plain(
            Code::InvalidState,
            format!("request {} already exists", b.request),
        );
    }
    if partner.cloud != customer.cloud {
        return refuse(
            Code::CloudMismatch,
            9,
            format!(
                "partner {} is in the {} cloud and customer {} in the {} cloud",
                b.partner,
                partner.cloud.as_str(),
                b.customer,
                customer.cloud.as_str()
            ),
        );
    }
    if !partner.markets.contains(&customer.country) {
        return refuse(
            Code::MarketNotAuthorized,
            10,
            format!(
                "partner {} is not authorised to sell in {}, the country of customer {}",
                b.partner, customer.country, b.customer
            ),
        );
    }
    match customer.cloud {
        Cloud::UsGovernment if !b.include_delegated_admin => {
            return refuse(
                Code::DapRequiredInCloud,
                13,
                format!(
                    "a request to {} in the us_government cloud must include delegated admin",
                    b.customer
                ),
            )
        }
        Cloud::Public if b.include_delegated_admin && cmd.at >= dap_retirement() => {
            return refuse(
                Code::DapRetired,
                13,
                format!(
                "DAP was retired on 2023-10-09 for the public cloud; request {} asks for it at {}",
                b.request, cmd.at
            ),
            )
        }
        _ => {}
    }
    Ok(vec![Event::RelationshipRequested {
        request: b.request,
        partner: b.partner,
        customer: b.customer,
        include_delegated_admin: b.include_delegated_admin,
    }])
}

fn find_request(state: &State, id: RequestId) -> Result<&state::Request, Refusal> {
    match state.requests.get(&id) {
        Some(r) => Ok(r),
        None => refuse_plain(Code::UnknownRequest, format!("request {id} does not exist")),
    }
}

pub(super) fn withdraw(
    state: &State,
    cmd: &Command,
    b: &body::WithdrawRelationshipRequest,
) -> Result<Vec<Event>, Refusal> {
    let req = find_request(state, b.request)?;
    require_tenant(cmd, req.partner.tenant(), PARTNER_AGENTS, 12)?;
    if req.status != RequestStatus::Pending {
        return refuse(
            Code::InvalidState,
            12,
            format!("request {} is no longer pending", b.request),
        );
    }
    Ok(vec![Event::RelationshipRequestWithdrawn {
        request: b.request,
        partner: req.partner,
        customer: req.customer,
    }])
}

pub(super) fn accept(
    state: &State,
    cmd: &Command,
    b: &body::AcceptRelationship,
) -> Result<Vec<Event>, Refusal> {
    require_role(cmd, &[Role::CustomerGlobalAdmin], 8)?;
    let req = find_request(state, b.request)?;
    require_tenant(cmd, req.customer.tenant(), &[Role::CustomerGlobalAdmin], 8)?;
    if req.customer != b.customer {
        return refuse_plain(
            Code::UnknownRequest,
            format!(
                "request {} is not addressed to customer {}",
                b.request, b.customer
            ),
        );
    }
    if req.status == RequestStatus::Withdrawn {
        return refuse(
            Code::InvalidState,
            12,
            format!(
                "request {} was withdrawn by partner {}",
                b.request, req.partner
            ),
        );
    }
    if state.is_active(req.partner, req.customer) {
        // R11: the pair is already active; accepting again is an idempotent no-op.
        return Ok(vec![]);
    }
    if req.status == RequestStatus::Accepted {
        return refuse(
            Code::InvalidState,
            34,
            format!(
                "request {} was already used and its relationship has since been removed; a new request is needed",
                b.request
            ),
        );
    }
    let customer = find_customer(state, req.customer)?;
    let dap = req.include_delegated_admin
        && (customer.cloud == Cloud::UsGovernment || cmd.at < dap_retirement());
    Ok(vec![Event::ResellerRelationshipEstablished {
        partner: req.partner,
        customer: req.customer,
        request: Some(b.request),
        delegated_admin: dap,
    }])
}

/// R31: a direct-bill partner or an indirect provider removes its own relationship; a linked provider removes its reseller's.
fn remover(state: &State, cmd: &Command, partner: &state::Partner) -> Result<PartnerId, Refusal> {
    require_role(cmd, &[Role::PartnerAdminAgent], 31)?;
    let actor_partner = cmd.actor.tenant.as_partner();
    let own = actor_partner == partner.id && partner.kind != PartnerKind::IndirectReseller;
    let as_provider = partner.kind == PartnerKind::IndirectReseller
        && state.links.contains(&(actor_partner, partner.id));
    if own || as_provider {
        Ok(actor_partner)
    } else {
        refuse(
            Code::NotAuthorized,
            31,
            format!(
                "{} of tenant {} may not remove the relationship of partner {} ({:?}): only a direct-bill partner or an indirect provider removes its own, and a linked provider removes its reseller's",
                cmd.actor.user, cmd.actor.tenant, partner.id, partner.kind
            ),
        )
    }
}

pub(super) fn remove(
    state: &State,
    cmd: &Command,
    b: &body::RemoveRelationship,
) -> Result<Vec<Event>, Refusal> {
    require_role(cmd, &[Role::PartnerAdminAgent], 31)?;
    let partner = find_partner(state, b.partner)?;
    let removed_by = remover(state, cmd, partner)?;
    let customer = find_customer(state, b.customer)?;
    let Some(rel) = state
        .relationships
        .get(&(b.partner, b.customer))
        .filter(|_| state.is_active(b.partner, b.customer))
    else {
        return refuse(
            Code::NoResellerRelationship,
            31,
            format!(
                "partner {} has no active reseller relationship with customer {}",
                b.partner, b.customer
            ),
        );
    };
    let still_billing: Vec<String> = customer
        .subscriptions
        .iter()
        .filter_map(|id| state.subscriptions.get(id))
        .filter(|s| s.billing_partner == b.partner && s.status != SubscriptionStatus::Cancelled)
        .map(|s| format!("{} ({})", s.id, s.status.as_str()))
        .collect();
    if !still_billing.is_empty() {
        return refuse(
            Code::RelationshipHasActiveSubscriptions,
            32,
            format!(
                "partner {} still bills customer {} for subscriptions that are not cancelled: {}",
                b.partner,
                b.customer,
                still_billing.join(", ")
            ),
        );
    }
    let mut events = vec![Event::ResellerRelationshipRemoved {
        partner: b.partner,
        customer: b.customer,
        removed_by,
    }];
    if rel.dap {
        events.push(Event::DelegatedAdminRemoved {
            partner: b.partner,
            customer: b.customer,
            removed_by: RemovedBy::RelationshipRemoved,
        });
    }
    // R33: end every GDAP relationship of this partner with this customer that is still pending or active.
    for id in &customer.admin_relationships {
        let Some(a) = state.admin.get(id) else {
            continue;
        };
        if a.partner == b.partner
            && matches!(
                a.at(cmd.at).status,
                AdminStatus::ApprovalPending | AdminStatus::Active
            )
        {
            events.push(Event::DelegatedAdminTerminated {
                admin_relationship: *id,
                partner: b.partner,
                customer: b.customer,
                terminated_by: TerminatedBy::RelationshipRemoved,
            });
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::super::state::AdminStatus;
    use super::super::state::RelationshipStatus;
    use super::super::testkit::*;
    use super::super::*;
    use serde_json::json;

    #[test]
    fn r1_a_customer_holds_relationships_with_several_partners_at_once() {
        let state = seed()
            .with(request(REQ_B, B, CONTOSO, false))
            .when(accept(REQ_B, CONTOSO))
            .then_state();
        assert!(state.is_active(id(A), id(CONTOSO)));
        assert!(state.is_active(id(B), id(CONTOSO)));
    }

    #[test]
    fn r7_only_that_partners_admin_or_sales_agents_request() {
        let story = seed();
        story
            .when(with_actor(request(REQ_B, B, CONTOSO, false), sales(B)))
            .then_types(&["RelationshipRequested"]);
        story
            .when(with_actor(request(REQ_B, B, CONTOSO, false), admin(A)))
            .then_refused_under(Code::NotAuthorized, 7);
        story
            .when(with_actor(request(REQ_B, B, CONTOSO, false), ga(CONTOSO)))
            .then_refused_under(Code::NotAuthorized, 7);
        story
            .when(with_actor(request(REQ_B, B, CONTOSO, false), op()))
            .then_refused_under(Code::NotAuthorized, 7);
    }

    #[test]
    fn r5_a_partner_cannot_relate_to_another_partner() {
        seed()
            .when(request(REQ_B, B, A, false))
            .then_refused_under(Code::TenantIsPartner, 5);
    }

    #[test]
    fn requests_name_known_partners_customers_and_fresh_ids() {
        let story = seed();
        let unknown_partner = "b9000000-0000-4000-8000-0000000000b9";
        story
            .when(request(REQ_B, unknown_partner, CONTOSO, false))
            .then_refused(Code::UnknownPartner);
        story
            .when(request(REQ_B, B, FABRIKAM, false))
            .then_refused(Code::UnknownCustomer);
        story
            .when(request(REQ_A, B, CONTOSO, false))
            .then_refused(Code::InvalidState);
    }

    #[test]
    fn r8_only_that_customers_global_admin_accepts() {
        let story = seed().with(request(REQ_B, B, CONTOSO, false));
        story
            .when(with_actor(accept(REQ_B, CONTOSO), user(CONTOSO)))
            .then_refused_under(Code::NotAuthorized, 8);
        story
            .when(with_actor(accept(REQ_B, CONTOSO), admin(B)))
            .then_refused_under(Code::NotAuthorized, 8);
        story
            .when(with_actor(accept(REQ_B, CONTOSO), ga(FABRIKAM)))
            .then_refused_under(Code::NotAuthorized, 8);
        story
            .when(accept(REQ_B, CONTOSO))
            .then_types(&["ResellerRelationshipEstablished"]);
    }

    #[test]
    fn accepting_names_an_existing_request_for_that_customer() {
        let story = seed()
            .with(register(FABRIKAM, "public", "NL"))
            .with(request(REQ_B, B, CONTOSO, false));
        story
            .when(accept("1c000000-0000-4000-8000-000000000009", CONTOSO))
            .then_refused(Code::UnknownRequest);
        story
            .when(with_actor(accept(REQ_B, FABRIKAM), ga(CONTOSO)))
            .then_refused(Code::UnknownRequest);
    }

    #[test]
    fn r9_partner_and_customer_share_a_cloud() {
        let story = seed().with(register(GOV_CUSTOMER, "us_government", "US"));
        let mut us = enroll(GOV_PARTNER, "direct_bill", "public", "US");
        us["markets"] = json!(["US", "NL"]);
        let story = story.with(us);
        story
            .when(request(REQ_B, GOV_PARTNER, GOV_CUSTOMER, true))
            .then_refused_under(Code::CloudMismatch, 9);
        story
            .when(request(REQ_B, GOV_PARTNER, CONTOSO, false))
            .then_types(&["RelationshipRequested"]);
    }

    #[test]
    fn r10_the_customer_country_must_be_an_authorised_market() {
        let story = seed().with(enroll(GOV_PARTNER, "direct_bill", "public", "DE"));
        story
            .when(request(REQ_B, GOV_PARTNER, CONTOSO, false))
            .then_refused_under(Code::MarketNotAuthorized, 10);
        story
            .with(cmd(
                "UpdatePartner",
                op(),
                json!({"partner": GOV_PARTNER, "markets": ["DE", "NL"]}),
            ))
            .when(request(REQ_B, GOV_PARTNER, CONTOSO, false))
            .then_types(&["RelationshipRequested"]);
    }

    #[test]
    fn r11_accepting_an_active_pair_again_adds_nothing() {
        let story = seed();
        story.when(accept(REQ_A, CONTOSO)).then_types(&[]);
        let second = "1a000000-0000-4000-8000-0000000000a2";
        story
            .with(request(second, A, CONTOSO, false))
            .when(accept(second, CONTOSO))
            .then_types(&[]);
    }

    #[test]
    fn r12_a_request_stays_pending_until_accepted_or_withdrawn() {
        let story = seed()
            .with(request(REQ_B, B, CONTOSO, false))
            .at("2026-01-01T00:00:00Z");
        // Two years later the request can still be accepted: invitations have no expiry.
        story
            .when(accept(REQ_B, CONTOSO))
            .then_types(&["ResellerRelationshipEstablished"]);
        let withdraw = cmd(
            "WithdrawRelationshipRequest",
            sales(B),
            json!({"request": REQ_B}),
        );
        story
            .when(with_actor(withdraw.clone(), admin(A)))
            .then_refused_under(Code::NotAuthorized, 12);
        let withdrawn = story.with(withdraw.clone());
        withdrawn
            .when(accept(REQ_B, CONTOSO))
            .then_refused_under(Code::InvalidState, 12);
        withdrawn
            .when(withdraw)
            .then_refused_under(Code::InvalidState, 12);
        withdrawn
            .when(cmd(
                "WithdrawRelationshipRequest",
                sales(B),
                json!({"request": REQ_A.replace("1a", "3a")}),
            ))
            .then_refused(Code::UnknownRequest);
    }

    #[test]
    fn r13_dap_before_the_retirement_and_not_after() {
        let story = given()
            .at("2023-01-01T00:00:00Z")
            .with(enroll(B, "direct_bill", "public", "NL"))
            .with(register(CONTOSO, "public", "NL"));
        // Requested with DAP in 2023 and accepted before the retirement: DAP is granted.
        let old = story
            .clone()
            .with(at(request(REQ_B, B, CONTOSO, true), "2023-06-01T00:00:00Z"));
        let events = old
            .when(at(accept(REQ_B, CONTOSO), "2023-06-02T00:00:00Z"))
            .then_events();
        assert!(matches!(
            events[0],
            Event::ResellerRelationshipEstablished {
                delegated_admin: true,
                ..
            }
        ));
        // The same request accepted after 2023-10-09 establishes the relationship without DAP.
        let events = old
            .when(at(accept(REQ_B, CONTOSO), "2023-10-09T00:00:00Z"))
            .then_events();
        assert!(matches!(
            events[0],
            Event::ResellerRelationshipEstablished {
                delegated_admin: false,
                ..
            }
        ));
        // A DAP request dated 2024 is refused; without DAP it is fine.
        story
            .when(at(request(REQ_B, B, CONTOSO, true), "2024-02-01T00:00:00Z"))
            .then_refused_under(Code::DapRetired, 13);
        story
            .when(at(
                request(REQ_B, B, CONTOSO, false),
                "2024-02-01T00:00:00Z",
            ))
            .then_types(&["RelationshipRequested"]);
    }

    #[test]
    fn r13_the_us_government_cloud_requires_dap() {
        let story = given()
            .with(enroll(GOV_PARTNER, "direct_bill", "us_government", "US"))
            .with(register(GOV_CUSTOMER, "us_government", "US"));
        story
            .when(request(REQ_B, GOV_PARTNER, GOV_CUSTOMER, false))
            .then_refused_under(Code::DapRequiredInCloud, 13);
        let events = story
            .with(request(REQ_B, GOV_PARTNER, GOV_CUSTOMER, true))
            .when(accept(REQ_B, GOV_CUSTOMER))
            .then_events();
        assert!(matches!(
            events[0],
            Event::ResellerRelationshipEstablished {
                delegated_admin: true,
                ..
            }
        ));
    }

    #[test]
    fn r6_multi_partner_works_in_the_us_government_cloud_too() {
        let other = "f1000000-0000-4000-8000-0000000000f1";
        let state = given()
            .with(enroll(GOV_PARTNER, "direct_bill", "us_government", "US"))
            .with(enroll(other, "direct_bill", "us_government", "US"))
            .with(register(GOV_CUSTOMER, "us_government", "US"))
            .with(request(REQ_A, GOV_PARTNER, GOV_CUSTOMER, true))
            .with(accept(REQ_A, GOV_CUSTOMER))
            .with(request(REQ_B, other, GOV_CUSTOMER, true))
            .when(accept(REQ_B, GOV_CUSTOMER))
            .then_state();
        assert!(state.is_active(id(GOV_PARTNER), id(GOV_CUSTOMER)));
        assert!(state.is_active(id(other), id(GOV_CUSTOMER)));
    }

    fn remove(partner: &str, actor: serde_json::Value) -> serde_json::Value {
        cmd(
            "RemoveRelationship",
            actor,
            json!({"partner": partner, "customer": CONTOSO}),
        )
    }

    #[test]
    fn r31_only_direct_bill_partners_and_providers_remove_relationships() {
        let story = seed_with_b();
        story
            .when(remove(B, admin(B)))
            .then_types(&["ResellerRelationshipRemoved"]);
        story
            .when(remove(B, sales(B)))
            .then_refused_under(Code::NotAuthorized, 31);
        story
            .when(remove(B, admin(A)))
            .then_refused_under(Code::NotAuthorized, 31);
        story
            .when(remove(B, ga(CONTOSO)))
            .then_refused_under(Code::NotAuthorized, 31);
        story
            .when(cmd(
                "RemoveRelationship",
                admin(B),
                json!({"partner": B, "customer": FABRIKAM}),
            ))
            .then_refused(Code::UnknownCustomer);
    }

    #[test]
    fn r31_a_resellers_relationship_is_removed_by_its_linked_provider() {
        let story = seed()
            .with(enroll(PROVIDER, "indirect_provider", "public", "NL"))
            .with(enroll(RESELLER, "indirect_reseller", "public", "NL"))
            .with(cmd(
                "LinkIndirectReseller",
                op(),
                json!({"provider": PROVIDER, "reseller": RESELLER}),
            ))
            .with(request(REQ_B, RESELLER, CONTOSO, false))
            .with(accept(REQ_B, CONTOSO));
        story
            .when(remove(RESELLER, admin(RESELLER)))
            .then_refused_under(Code::NotAuthorized, 31);
        story
            .when(remove(RESELLER, admin(A)))
            .then_refused_under(Code::NotAuthorized, 31);
        let events = story.when(remove(RESELLER, admin(PROVIDER))).then_events();
        assert_eq!(
            events[0],
            Event::ResellerRelationshipRemoved {
                partner: id(RESELLER),
                customer: id(CONTOSO),
                removed_by: id(PROVIDER)
            }
        );
    }

    #[test]
    fn removing_needs_an_active_relationship() {
        seed()
            .when(remove(B, admin(B)))
            .then_refused(Code::NoResellerRelationship);
    }

    #[test]
    fn r32_removal_is_refused_while_a_subscription_still_bills_even_suspended() {
        let story = seed();
        story
            .when(remove(A, admin(A)))
            .then_refused_under(Code::RelationshipHasActiveSubscriptions, 32);
        let suspended = story.with(sub_cmd("SuspendSubscription", SUB_A, A));
        suspended
            .when(remove(A, admin(A)))
            .then_refused_under(Code::RelationshipHasActiveSubscriptions, 32);
        suspended
            .with(sub_cmd("CancelSubscription", SUB_A, A))
            .when(remove(A, admin(A)))
            .then_types(&["ResellerRelationshipRemoved"]);
    }

    #[test]
    fn r33_removal_ends_the_partners_dap_and_gdap_and_nothing_of_others() {
        let story = given()
            .at("2023-05-01T00:00:00Z")
            .with(enroll(A, "direct_bill", "public", "NL"))
            .with(enroll(B, "direct_bill", "public", "NL"))
            .with(register(CONTOSO, "public", "NL"))
            .with(request(REQ_A, A, CONTOSO, true))
            .with(accept(REQ_A, CONTOSO))
            .with(request(REQ_B, B, CONTOSO, true))
            .with(accept(REQ_B, CONTOSO))
            .at("2024-01-10T00:00:00Z")
            .with(gdap(
                GDAP_1,
                A,
                CONTOSO,
                "A helpdesk",
                &[HELPDESK_ADMIN],
                365,
                false,
            ))
            .with(grant(GDAP_1, CONTOSO))
            .with(gdap(
                "9d000000-0000-4000-8000-000000000002",
                B,
                CONTOSO,
                "B helpdesk",
                &[HELPDESK_ADMIN],
                365,
                false,
            ))
            .with(grant("9d000000-0000-4000-8000-000000000002", CONTOSO));
        let then = story.when(remove(A, admin(A)));
        let state = then.then_state();
        let ra = &state.relationships[&(id(A), id(CONTOSO))];
        assert_eq!((ra.status, ra.dap), (RelationshipStatus::Removed, false));
        assert_eq!(state.admin[&id(GDAP_1)].status, AdminStatus::Terminated);
        // B keeps everything (R3).
        let rb = &state.relationships[&(id(B), id(CONTOSO))];
        assert_eq!((rb.status, rb.dap), (RelationshipStatus::Active, true));
        assert_eq!(
            state.admin[&id("9d000000-0000-4000-8000-000000000002")].status,
            AdminStatus::Active
        );
        let events = story.when(remove(A, admin(A))).then_types(&[
            "ResellerRelationshipRemoved",
            "DelegatedAdminRemoved",
            "DelegatedAdminTerminated",
        ]);
        for e in events {
            assert!(!e.entities().contains(&EntityRef::Partner(id(B))));
        }
    }

    #[test]
    fn r34_a_removed_relationship_is_established_again_by_a_new_request() {
        let story = given()
            .with(enroll(B, "direct_bill", "public", "NL"))
            .with(register(CONTOSO, "public", "NL"))
            .with(request(REQ_B, B, CONTOSO, false))
            .with(accept(REQ_B, CONTOSO))
            .with(remove(B, admin(B)));
        // The old request cannot be replayed.
        story
            .when(accept(REQ_B, CONTOSO))
            .then_refused_under(Code::InvalidState, 34);
        let again = "1b000000-0000-4000-8000-0000000000b2";
        let state = story
            .with(request(again, B, CONTOSO, false))
            .when(accept(again, CONTOSO))
            .then_state();
        assert!(state.is_active(id(B), id(CONTOSO)));
    }
}
