//! Customers: registration (R5), partner-created tenants (R14), the customer agreement (R25) and corrections (R39).

use super::command::body;
use super::refusal::{refuse, refuse_plain};
use super::*;

fn refuse_partner_tenant(state: &State, customer: CustomerId) -> Result<(), Refusal> {
    if state.partners.contains_key(&customer.tenant().as_partner()) {
        return refuse(
            Code::TenantIsPartner,
            5,
            format!("tenant {customer} is enrolled as a CSP partner and can never be a customer"),
        );
    }
    Ok(())
}

fn refuse_existing(state: &State, customer: CustomerId) -> Result<(), Refusal> {
    if state.customers.contains_key(&customer) {
        return refuse_plain(
            Code::InvalidState,
            format!("customer {customer} is already registered"),
        );
    }
    Ok(())
}

fn check_names(company_name: &str, domain: &str) -> Result<(), Refusal> {
    text("company_name", company_name, 256)?;
    text("domain", domain, 253)
}

pub(super) fn register(
    state: &State,
    cmd: &Command,
    b: &body::RegisterCustomer,
) -> Result<Vec<Event>, Refusal> {
    require_role(cmd, &[Role::Operator], 39)?;
    check_names(&b.company_name, &b.domain)?;
    refuse_partner_tenant(state, b.customer)?;
    refuse_existing(state, b.customer)?;
    Ok(vec![Event::CustomerRegistered {
        customer: b.customer,
        company_name: b.company_name.clone(),
        domain: b.domain.clone(),
        country: b.country,
        cloud: b.cloud,
    }])
}

/// R14: the partner creates a brand-new tenant in its own cloud and holds its reseller relationship at once.
pub(super) fn create(
    state: &State,
    cmd: &Command,
    b: &body::CreateCustomer,
) -> Result<Vec<Event>, Refusal> {
    require_tenant(cmd, b.partner.tenant(), PARTNER_AGENTS, 7)?;
    let partner = find_partner(state, b.partner)?;
    check_names(&b.company_name, &b.domain)?;
    refuse_partner_tenant(state, b.customer)?;
    refuse_existing(state, b.customer)?;
    if !partner.markets.contains(&b.country) {
        return refuse(
            Code::MarketNotAuthorized,
            10,
            format!(
                "partner {} is not authorised to sell in {}",
                b.partner, b.country
            ),
        );
    }
    Ok(vec![
        Event::CustomerCreated {
            partner: b.partner,
            customer: b.customer,
            company_name: b.company_name.clone(),
            domain: b.domain.clone(),
            country: b.country,
            cloud: partner.cloud,
        },
        Event::ResellerRelationshipEstablished {
            partner: b.partner,
            customer: b.customer,
            request: None,
            delegated_admin: false,
        },
    ])
}

/// R25: the customer's Global admin accepts, or an admin agent of a partner with an active relationship attests.
/// Accepting again commits without a new event: the fact is already recorded.
pub(super) fn accept_agreement(
    state: &State,
    cmd: &Command,
    b: &body::AcceptCustomerAgreement,
) -> Result<Vec<Event>, Refusal> {
    let actor = &cmd.actor;
    let allowed = match actor.role {
        Role::CustomerGlobalAdmin => actor.tenant == b.customer.tenant(),
        Role::PartnerAdminAgent => state.is_active(actor.tenant.as_partner(), b.customer),
        _ => false,
    };
    if !allowed {
        return refuse(
            Code::NotAuthorized,
            25,
            format!(
                "the customer agreement of {} is accepted by its Global admin or attested by an admin agent of a partner serving it, not by {} ({})",
                b.customer,
                actor.user,
                role_name(actor.role)
            ),
        );
    }
    let customer = find_customer(state, b.customer)?;
    if customer.agreement_accepted {
        return Ok(vec![]);
    }
    Ok(vec![Event::CustomerAgreementAccepted {
        customer: b.customer,
        accepted_by: actor.tenant,
    }])
}

pub(super) fn update(
    state: &State,
    cmd: &Command,
    b: &body::UpdateCustomer,
) -> Result<Vec<Event>, Refusal> {
    require_role(cmd, &[Role::Operator], 39)?;
    find_customer(state, b.customer)?;
    if let Some(n) = &b.company_name {
        text("company_name", n, 256)?;
    }
    if let Some(d) = &b.domain {
        text("domain", d, 253)?;
    }
    if b.company_name.is_none() && b.domain.is_none() {
        return refuse(
            Code::InvalidState,
            39,
            format!(
                "UpdateCustomer for {} changes nothing: give company_name or domain",
                b.customer
            ),
        );
    }
    Ok(vec![Event::CustomerUpdated {
        customer: b.customer,
        company_name: b.company_name.clone(),
        domain: b.domain.clone(),
    }])
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::*;
    use serde_json::json;

    fn create_cmd(partner: &str, customer: &str, country: &str) -> serde_json::Value {
        cmd(
            "CreateCustomer",
            admin(partner),
            json!({"partner": partner, "customer": customer, "company_name": "Fabrikam", "domain": "fabrikam.onmicrosoft.com", "country": country}),
        )
    }

    #[test]
    fn r5_a_partner_tenant_can_never_be_registered_or_created_as_a_customer() {
        let story = given()
            .with(enroll(A, "direct_bill", "public", "NL"))
            .with(enroll(B, "direct_bill", "public", "NL"));
        story
            .when(register(B, "public", "NL"))
            .then_refused_under(Code::TenantIsPartner, 5);
        story
            .when(create_cmd(A, B, "NL"))
            .then_refused_under(Code::TenantIsPartner, 5);
        story
            .when(register(CONTOSO, "public", "NL"))
            .then_types(&["CustomerRegistered"]);
    }

    #[test]
    fn registering_twice_is_refused() {
        given()
            .with(register(CONTOSO, "public", "NL"))
            .when(register(CONTOSO, "public", "NL"))
            .then_refused(Code::InvalidState);
    }

    #[test]
    fn r14_a_partner_created_customer_has_its_relationship_at_once() {
        let story = given().with(enroll(A, "direct_bill", "public", "NL"));
        let state = story.when(create_cmd(A, FABRIKAM, "NL")).then_state();
        assert!(state.is_active(id(A), id(FABRIKAM)));
        assert_eq!(
            state.customers[&id::<CustomerId>(FABRIKAM)].cloud,
            Cloud::Public
        );
        story
            .when(with_actor(create_cmd(A, FABRIKAM, "NL"), admin(B)))
            .then_refused_under(Code::NotAuthorized, 7);
        story
            .when(create_cmd(A, FABRIKAM, "DE"))
            .then_refused_under(Code::MarketNotAuthorized, 10);
    }

    #[test]
    fn r25_the_agreement_is_accepted_by_the_global_admin_or_attested_by_a_serving_partner() {
        let story = seed_with_b();
        // Contoso accepted already in the seed; a fresh customer shows the allowed actors.
        let story = story.with(register(FABRIKAM, "public", "NL"));
        let by_ga = cmd(
            "AcceptCustomerAgreement",
            ga(FABRIKAM),
            json!({"customer": FABRIKAM}),
        );
        story
            .when(by_ga.clone())
            .then_types(&["CustomerAgreementAccepted"]);
        story
            .when(with_actor(by_ga.clone(), user(FABRIKAM)))
            .then_refused_under(Code::NotAuthorized, 25);
        // A has no relationship with Fabrikam, so it cannot attest.
        story
            .when(with_actor(by_ga.clone(), admin(A)))
            .then_refused_under(Code::NotAuthorized, 25);
        let served = story
            .with(request(
                REQ_A.replace("1a", "2a").as_str(),
                A,
                FABRIKAM,
                false,
            ))
            .with(accept(&REQ_A.replace("1a", "2a"), FABRIKAM));
        served
            .when(with_actor(by_ga.clone(), admin(A)))
            .then_types(&["CustomerAgreementAccepted"]);
        // Accepting again records nothing new.
        served.with(by_ga.clone()).when(by_ga).then_types(&[]);
    }

    #[test]
    fn r39_update_customer_corrects_reference_data() {
        let story = seed();
        let state = story
            .when(cmd(
                "UpdateCustomer",
                op(),
                json!({"customer": CONTOSO, "company_name": "Contoso Group"}),
            ))
            .then_state();
        let c = &state.customers[&id::<CustomerId>(CONTOSO)];
        assert_eq!(c.company_name, "Contoso Group");
        assert_eq!(c.domain, "contoso.onmicrosoft.com");
        story
            .when(cmd(
                "UpdateCustomer",
                op(),
                json!({"customer": CONTOSO, "domain": ""}),
            ))
            .then_refused_under(Code::InvalidText, 38);
        story
            .when(cmd(
                "UpdateCustomer",
                op(),
                json!({"customer": FABRIKAM, "domain": "f.example"}),
            ))
            .then_refused(Code::UnknownCustomer);
        story
            .when(cmd("UpdateCustomer", op(), json!({"customer": CONTOSO})))
            .then_refused(Code::InvalidState);
    }
}
