//! Partners: enrolment (R5), reference-data corrections (R39) and two-tier links (R29, R39).

use super::command::body;
use super::refusal::{refuse, refuse_plain};
use super::*;

pub(super) fn enroll(
    state: &State,
    cmd: &Command,
    b: &body::EnrollPartner,
) -> Result<Vec<Event>, Refusal> {
    require_role(cmd, &[Role::Operator], 39)?;
    text("name", &b.name, 256)?;
    if state
        .customers
        .contains_key(&b.partner.tenant().as_customer())
    {
        return refuse(
            Code::TenantIsCustomer,
            5,
            format!(
                "tenant {} is registered as a customer and can never be enrolled as a partner",
                b.partner
            ),
        );
    }
    if state.partners.contains_key(&b.partner) {
        return refuse_plain(
            Code::InvalidState,
            format!("partner {} is already enrolled", b.partner),
        );
    }
    let markets = markets_or_default(b.markets.as_deref(), b.country)?;
    Ok(vec![Event::PartnerEnrolled {
        partner: b.partner,
        partner_id: b.partner_id.clone(),
        name: b.name.clone(),
        kind: b.kind,
        cloud: b.cloud,
        country: b.country,
        markets,
    }])
}

/// R10: markets default to the partner's own country; a given list must not be empty. Duplicates are dropped.
fn markets_or_default(
    markets: Option<&[Country]>,
    country: Country,
) -> Result<Vec<Country>, Refusal> {
    match markets {
        None => Ok(vec![country]),
        Some([]) => refuse(
            Code::InvalidState,
            10,
            "markets must list at least one country",
        ),
        Some(list) => {
            let mut out: Vec<Country> = Vec::with_capacity(list.len());
            for c in list {
                if !out.contains(c) {
                    out.push(*c);
                }
            }
            Ok(out)
        }
    }
}

pub(super) fn update(
    state: &State,
    cmd: &Command,
    b: &body::UpdatePartner,
) -> Result<Vec<Event>, Refusal> {
    require_role(cmd, &[Role::Operator], 39)?;
    let p = find_partner(state, b.partner)?;
    if let Some(n) = &b.name {
        text("name", n, 256)?;
    }
    let markets = match &b.markets {
        Some(m) => Some(markets_or_default(Some(m), p.country)?),
        None => None,
    };
    if b.name.is_none() && markets.is_none() {
        return refuse(
            Code::InvalidState,
            39,
            format!(
                "UpdatePartner for {} changes nothing: give name or markets",
                b.partner
            ),
        );
    }
    Ok(vec![Event::PartnerUpdated {
        partner: b.partner,
        name: b.name.clone(),
        markets,
    }])
}

pub(super) fn link(
    state: &State,
    cmd: &Command,
    b: &body::LinkIndirectReseller,
) -> Result<Vec<Event>, Refusal> {
    require_role(cmd, &[Role::Operator], 29)?;
    let provider = find_partner(state, b.provider)?;
    let reseller = find_partner(state, b.reseller)?;
    if provider.kind != PartnerKind::IndirectProvider
        || reseller.kind != PartnerKind::IndirectReseller
    {
        return refuse(
            Code::InvalidState,
            29,
            format!(
                "a link joins an indirect provider to an indirect reseller; {} is {:?} and {} is {:?}",
                b.provider, provider.kind, b.reseller, reseller.kind
            ),
        );
    }
    if provider.cloud != reseller.cloud {
        return refuse(
            Code::CloudMismatch,
            9,
            format!(
                "provider {} and reseller {} are in different clouds",
                b.provider, b.reseller
            ),
        );
    }
    if state.links.contains(&(b.provider, b.reseller)) {
        return refuse_plain(
            Code::InvalidState,
            format!(
                "reseller {} is already linked to provider {}",
                b.reseller, b.provider
            ),
        );
    }
    Ok(vec![Event::IndirectResellerLinked {
        provider: b.provider,
        reseller: b.reseller,
    }])
}

pub(super) fn unlink(
    state: &State,
    cmd: &Command,
    b: &body::UnlinkIndirectReseller,
) -> Result<Vec<Event>, Refusal> {
    require_role(cmd, &[Role::Operator], 39)?;
    find_partner(state, b.provider)?;
    find_partner(state, b.reseller)?;
    if !state.links.contains(&(b.provider, b.reseller)) {
        return refuse(
            Code::ResellerNotLinked,
            39,
            format!(
                "reseller {} is not linked to provider {}",
                b.reseller, b.provider
            ),
        );
    }
    Ok(vec![Event::IndirectResellerUnlinked {
        provider: b.provider,
        reseller: b.reseller,
    }])
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::*;
    use serde_json::json;

    #[test]
    fn an_operator_enrols_a_partner_whose_markets_default_to_its_country() {
        let state = given()
            .when(enroll(A, "direct_bill", "public", "NL"))
            .then_state();
        assert_eq!(
            state.partners[&id::<PartnerId>(A)].markets,
            vec![id::<Country>("NL")]
        );
    }

    #[test]
    fn only_operators_enrol_partners() {
        given()
            .when(with_actor(
                enroll(A, "direct_bill", "public", "NL"),
                admin(A),
            ))
            .then_refused(Code::NotAuthorized);
    }

    #[test]
    fn r5_a_customer_tenant_can_never_be_enrolled_as_a_partner() {
        let story = given().with(register(CONTOSO, "public", "NL"));
        story
            .when(enroll(CONTOSO, "direct_bill", "public", "NL"))
            .then_refused_under(Code::TenantIsCustomer, 5);
        story
            .when(enroll(A, "direct_bill", "public", "NL"))
            .then_types(&["PartnerEnrolled"]);
    }

    #[test]
    fn enrolling_twice_is_refused() {
        given()
            .with(enroll(A, "direct_bill", "public", "NL"))
            .when(enroll(A, "direct_bill", "public", "NL"))
            .then_refused(Code::InvalidState);
    }

    #[test]
    fn r38_partner_names_are_bounded_text() {
        let mut c = enroll(A, "direct_bill", "public", "NL");
        c["name"] = json!("x".repeat(257));
        given()
            .when(c.clone())
            .then_refused_under(Code::InvalidText, 38);
        c["name"] = json!("Fourth\u{0007}Coffee");
        given()
            .when(c.clone())
            .then_refused_under(Code::InvalidText, 38);
        c["name"] = json!("x".repeat(256));
        given().when(c).then_types(&["PartnerEnrolled"]);
    }

    #[test]
    fn r39_update_partner_changes_name_and_markets_but_not_identity() {
        let story = given().with(enroll(A, "direct_bill", "public", "NL"));
        let state = story
            .when(cmd(
                "UpdatePartner",
                op(),
                json!({"partner": A, "name": "A Cloud BV", "markets": ["NL", "BE"]}),
            ))
            .then_state();
        let p = &state.partners[&id::<PartnerId>(A)];
        assert_eq!(p.name, "A Cloud BV");
        assert_eq!(p.markets.len(), 2);
        assert_eq!(p.kind, PartnerKind::DirectBill);
        story
            .when(cmd("UpdatePartner", op(), json!({"partner": A})))
            .then_refused(Code::InvalidState);
        story
            .when(cmd(
                "UpdatePartner",
                op(),
                json!({"partner": B, "name": "B"}),
            ))
            .then_refused(Code::UnknownPartner);
        story
            .when(cmd(
                "UpdatePartner",
                admin(A),
                json!({"partner": A, "name": "B"}),
            ))
            .then_refused(Code::NotAuthorized);
    }

    fn two_tier() -> Story {
        given()
            .with(enroll(PROVIDER, "indirect_provider", "public", "NL"))
            .with(enroll(RESELLER, "indirect_reseller", "public", "NL"))
    }

    #[test]
    fn links_join_a_provider_to_a_reseller_once() {
        let story = two_tier();
        story
            .when(cmd(
                "LinkIndirectReseller",
                op(),
                json!({"provider": PROVIDER, "reseller": RESELLER}),
            ))
            .then_types(&["IndirectResellerLinked"]);
        story
            .when(cmd(
                "LinkIndirectReseller",
                op(),
                json!({"provider": RESELLER, "reseller": PROVIDER}),
            ))
            .then_refused(Code::InvalidState);
        story
            .with(cmd(
                "LinkIndirectReseller",
                op(),
                json!({"provider": PROVIDER, "reseller": RESELLER}),
            ))
            .when(cmd(
                "LinkIndirectReseller",
                op(),
                json!({"provider": PROVIDER, "reseller": RESELLER}),
            ))
            .then_refused(Code::InvalidState);
    }

    #[test]
    fn r39_unlinking_requires_an_existing_link() {
        let story = two_tier();
        story
            .when(cmd(
                "UnlinkIndirectReseller",
                op(),
                json!({"provider": PROVIDER, "reseller": RESELLER}),
            ))
            .then_refused(Code::ResellerNotLinked);
        story
            .with(cmd(
                "LinkIndirectReseller",
                op(),
                json!({"provider": PROVIDER, "reseller": RESELLER}),
            ))
            .when(cmd(
                "UnlinkIndirectReseller",
                op(),
                json!({"provider": PROVIDER, "reseller": RESELLER}),
            ))
            .then_types(&["IndirectResellerUnlinked"]);
    }
}
