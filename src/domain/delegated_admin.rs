//! Delegated admin: DAP removal (R15), the GDAP lifecycle (R16–R21), effective access (R23) and clock advances (R36).

use super::command::body;
use super::event::{RemovedBy, TerminatedBy};
use super::refusal::{refuse, refuse_plain};
use super::state::{AdminStatus, GDAP_APPROVAL_DAYS, GDAP_EXTENSION_DAYS};
use super::*;

/// The directory roles the ledger knows (WIRE.md), as (template id, display name).
pub const KNOWN_ROLES: [(&str, &str); 16] = [
    (
        "62e90394-69f5-4237-9190-012177145e10",
        "Global Administrator",
    ),
    (
        "729827e3-9c14-49f7-bb1b-9608f156bbb8",
        "Helpdesk Administrator",
    ),
    ("fe930be7-5e62-47db-91af-98c3a49a38b1", "User Administrator"),
    (
        "29232cdf-9323-42fd-ade2-1d097af3e4de",
        "Exchange Administrator",
    ),
    (
        "f28a1f50-f6e7-4571-818b-6a12f2af6b6c",
        "SharePoint Administrator",
    ),
    (
        "194ae4cb-b126-40b2-bd5b-6091b380977d",
        "Security Administrator",
    ),
    (
        "b0f54661-2d74-4c50-afa3-1ec803f12efe",
        "Billing Administrator",
    ),
    ("f2ef992c-3afb-46b9-b7cf-a126ee74c451", "Global Reader"),
    ("88d8e3e3-8f55-4a1e-953a-9b9898b8876b", "Directory Readers"),
    (
        "158c047a-c907-4556-b7ef-446551a6b5f7",
        "Cloud Application Administrator",
    ),
    (
        "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3",
        "Application Administrator",
    ),
    (
        "4d6ac14f-3453-41d0-bef9-a3e0c569773a",
        "License Administrator",
    ),
    (
        "fdd7a751-b60b-444a-984c-02652fe8fa1c",
        "Groups Administrator",
    ),
    ("5d6b6bb7-de71-4623-b4af-96380a352509", "Security Reader"),
    (
        "3a2c62db-5318-420d-8d74-23affee5d9d5",
        "Intune Administrator",
    ),
    (
        "e8611ab8-c189-46e8-94e1-60213ab1f814",
        "Privileged Role Administrator",
    ),
];

const GLOBAL_ADMINISTRATOR: &str = KNOWN_ROLES[0].0;

fn is_known_role(role: RoleId) -> bool {
    let s = role.to_string();
    KNOWN_ROLES.iter().any(|(id, _)| *id == s)
}

pub(super) fn remove_dap(
    state: &State,
    cmd: &Command,
    b: &body::RemoveDelegatedAdmin,
) -> Result<Vec<Event>, Refusal> {
    let actor = &cmd.actor;
    let removed_by = match actor.role {
        Role::PartnerAdminAgent if actor.tenant == b.partner.tenant() => RemovedBy::Partner,
        Role::CustomerGlobalAdmin if actor.tenant == b.customer.tenant() => RemovedBy::Customer,
        Role::System => RemovedBy::System,
        _ => {
            return refuse(
                Code::NotAuthorized,
                15,
                format!(
                    "DAP of partner {} on customer {} is removed by that partner's admin agent, the customer's Global admin or the system, not by {} ({}) of {}",
                    b.partner,
                    b.customer,
                    actor.user,
                    role_name(actor.role),
                    actor.tenant
                ),
            )
        }
    };
    find_partner(state, b.partner)?;
    find_customer(state, b.customer)?;
    let has_dap = state.is_active(b.partner, b.customer)
        && state
            .relationships
            .get(&(b.partner, b.customer))
            .is_some_and(|r| r.dap);
    if !has_dap {
        return refuse(
            Code::InvalidState,
            15,
            format!(
                "partner {} holds no DAP on customer {}",
                b.partner, b.customer
            ),
        );
    }
    Ok(vec![Event::DelegatedAdminRemoved {
        partner: b.partner,
        customer: b.customer,
        removed_by,
    }])
}

pub(super) fn request(
    state: &State,
    cmd: &Command,
    b: &body::RequestDelegatedAdmin,
) -> Result<Vec<Event>, Refusal> {
    require_tenant(cmd, b.partner.tenant(), &[Role::PartnerAdminAgent], 16)?;
    let partner = find_partner(state, b.partner)?;
    if state
        .partners
        .contains_key(&b.customer.tenant().as_partner())
    {
        return refuse(
            Code::TenantIsPartner,
            5,
            format!("tenant {} is a CSP partner, not a customer", b.customer),
        );
    }
    let customer = find_customer(state, b.customer)?;
    if state.admin.contains_key(&b.admin_relationship) {
        return refuse_plain(
            Code::InvalidState,
            format!("admin relationship {} already exists", b.admin_relationship),
        );
    }
    if customer.cloud == Cloud::UsGovernment || partner.cloud == Cloud::UsGovernment {
        return refuse(
            Code::GdapUnavailableInCloud,
            13,
            "GDAP does not exist in the us_government cloud",
        );
    }
    let name_len = b.name.chars().count();
    if !(1..=50).contains(&name_len) {
        return refuse(
            Code::InvalidName,
            16,
            format!("an admin relationship name must be 1 to 50 characters, not {name_len}"),
        );
    }
    text("name", &b.name, 50)?;
    if b.roles.is_empty() {
        return refuse(
            Code::UnknownRole,
            16,
            "an admin relationship needs at least one directory role",
        );
    }
    if let Some(unknown) = b.roles.iter().find(|r| !is_known_role(**r)) {
        return refuse(
            Code::UnknownRole,
            16,
            format!("{unknown} is not a directory role template id known to the ledger"),
        );
    }
    if !(1..=730).contains(&b.duration_days) {
        return refuse(
            Code::InvalidDuration,
            16,
            format!(
                "an admin relationship lasts 1 to 730 days, not {}",
                b.duration_days
            ),
        );
    }
    if b.auto_extend
        && b.roles
            .iter()
            .any(|r| r.to_string() == GLOBAL_ADMINISTRATOR)
    {
        return refuse(
            Code::AutoExtendWithGlobalAdmin,
            17,
            "auto-extend is not allowed for an admin relationship that includes Global Administrator",
        );
    }
    let wanted = b.name.to_lowercase();
    let clash = state
        .admin_open_by_partner
        .get(&b.partner)
        .into_iter()
        .flatten()
        .filter_map(|id| state.admin.get(id))
        .find(|a| {
            a.partner == b.partner
                && a.name.to_lowercase() == wanted
                && matches!(
                    a.at(cmd.at).status,
                    AdminStatus::ApprovalPending | AdminStatus::Active
                )
        });
    if let Some(other) = clash {
        return refuse(
            Code::DuplicateName,
            16,
            format!(
                "partner {} already has admin relationship {} named \"{}\" that is {}",
                b.partner,
                other.id,
                other.name,
                other.at(cmd.at).status.as_str()
            ),
        );
    }
    let mut roles: Vec<RoleId> = Vec::with_capacity(b.roles.len());
    for r in &b.roles {
        if !roles.contains(r) {
            roles.push(*r);
        }
    }
    Ok(vec![Event::DelegatedAdminRequested {
        admin_relationship: b.admin_relationship,
        partner: b.partner,
        customer: b.customer,
        name: b.name.clone(),
        roles,
        duration_days: b.duration_days,
        auto_extend: b.auto_extend,
        request_expires_at: cmd.at.plus_days(GDAP_APPROVAL_DAYS),
    }])
}

fn find_admin(
    state: &State,
    id: AdminRelationshipId,
) -> Result<&state::AdminRelationship, Refusal> {
    match state.admin.get(&id) {
        Some(a) => Ok(a),
        None => refuse_plain(
            Code::UnknownAdminRelationship,
            format!("admin relationship {id} does not exist"),
        ),
    }
}

fn refuse_final(a: &state::AdminRelationship, status: AdminStatus) -> Result<(), Refusal> {
    if status.is_final() {
        return refuse(
            Code::RelationshipFinal,
            20,
            format!(
                "admin relationship {} is {} and can no longer change",
                a.id,
                status.as_str()
            ),
        );
    }
    Ok(())
}

pub(super) fn grant(
    state: &State,
    cmd: &Command,
    b: &body::GrantDelegatedAdmin,
) -> Result<Vec<Event>, Refusal> {
    require_role(cmd, &[Role::CustomerGlobalAdmin], 18)?;
    let a = find_admin(state, b.admin_relationship)?;
    require_tenant(cmd, a.customer.tenant(), &[Role::CustomerGlobalAdmin], 18)?;
    if a.customer != b.customer {
        return refuse_plain(
            Code::UnknownAdminRelationship,
            format!(
                "admin relationship {} is not addressed to customer {}",
                a.id, b.customer
            ),
        );
    }
    let now = a.at(cmd.at);
    match now.status {
        AdminStatus::RequestExpired => refuse(
            Code::RequestExpired,
            19,
            format!(
                "admin relationship {} was not approved within 90 days; it expired at {}",
                a.id, a.request_expires_at
            ),
        ),
        AdminStatus::Active => refuse(
            Code::InvalidState,
            18,
            format!("admin relationship {} is already active", a.id),
        ),
        AdminStatus::ApprovalPending => Ok(vec![Event::DelegatedAdminGranted {
            admin_relationship: a.id,
            partner: a.partner,
            customer: a.customer,
            activated_at: cmd.at,
            ends_at: cmd.at.plus_days(a.duration_days),
        }]),
        status => refuse_final(a, status).map(|_| vec![]),
    }
}

pub(super) fn terminate(
    state: &State,
    cmd: &Command,
    b: &body::TerminateDelegatedAdmin,
) -> Result<Vec<Event>, Refusal> {
    let a = find_admin(state, b.admin_relationship)?;
    let actor = &cmd.actor;
    let by = match actor.role {
        Role::PartnerAdminAgent if actor.tenant == a.partner.tenant() => TerminatedBy::Partner,
        Role::CustomerGlobalAdmin if actor.tenant == a.customer.tenant() => TerminatedBy::Customer,
        _ => {
            return refuse(
                Code::NotAuthorized,
                21,
                format!(
                    "admin relationship {} is terminated by partner {}'s admin agent or customer {}'s Global admin, not by {} ({}) of {}",
                    a.id,
                    a.partner,
                    a.customer,
                    actor.user,
                    role_name(actor.role),
                    actor.tenant
                ),
            )
        }
    };
    let status = a.at(cmd.at).status;
    refuse_final(a, status)?;
    if status != AdminStatus::Active {
        return refuse(
            Code::InvalidState,
            21,
            format!(
                "admin relationship {} is {}, not active",
                a.id,
                status.as_str()
            ),
        );
    }
    Ok(vec![Event::DelegatedAdminTerminated {
        admin_relationship: a.id,
        partner: a.partner,
        customer: a.customer,
        terminated_by: by,
    }])
}

/// The most events one `AdvanceClock` appends (R36). When more transitions are due, the command records the first
/// ones in deadline order, and the ledger continues at once with further `AdvanceClock` commands to the same instant
/// (`src/ledger/writer.rs`), so no command, transaction or answer grows with the length of a downtime.
pub const CLOCK_STEP_EVENTS: usize = 10_000;

/// R36: records the time-driven transitions due by `to`, each at its exact deadline, in deadline order: all of them,
/// or the first [`CLOCK_STEP_EVENTS`] when more are due.
pub(super) fn advance_clock(
    state: &State,
    cmd: &Command,
    b: &body::AdvanceClock,
) -> Result<Vec<Event>, Refusal> {
    advance_clock_upto(state, cmd, b, CLOCK_STEP_EVENTS)
}

/// [`advance_clock`] with at most `max` events.
fn advance_clock_upto(
    state: &State,
    cmd: &Command,
    b: &body::AdvanceClock,
    max: usize,
) -> Result<Vec<Event>, Refusal> {
    require_role(cmd, &[Role::System, Role::Operator], 36)?;
    if cmd.at != b.to {
        return refuse(
            Code::InvalidState,
            36,
            format!(
                "the business time of AdvanceClock is its `to` ({}); `at` {} differs",
                b.to, cmd.at
            ),
        );
    }
    let to = b.to;
    let mut due: Vec<(Timestamp, AdminRelationshipId, Event)> = Vec::new();
    for a in state.admin_open.iter().filter_map(|id| state.admin.get(id)) {
        match a.status {
            AdminStatus::ApprovalPending if to > a.request_expires_at => due.push((
                a.request_expires_at,
                a.id,
                Event::DelegatedAdminRequestExpired {
                    admin_relationship: a.id,
                    partner: a.partner,
                    customer: a.customer,
                    expired_at: a.request_expires_at,
                },
            )),
            AdminStatus::Active => {
                let Some(mut ends) = a.ends_at else { continue };
                if a.auto_extend {
                    while ends <= to {
                        let next = ends.plus_days(GDAP_EXTENSION_DAYS);
                        due.push((
                            ends,
                            a.id,
                            Event::DelegatedAdminExtended {
                                admin_relationship: a.id,
                                partner: a.partner,
                                customer: a.customer,
                                previous_ends_at: ends,
                                ends_at: next,
                            },
                        ));
                        ends = next;
                    }
                } else if ends <= to {
                    due.push((
                        ends,
                        a.id,
                        Event::DelegatedAdminExpired {
                            admin_relationship: a.id,
                            partner: a.partner,
                            customer: a.customer,
                            expired_at: ends,
                        },
                    ));
                }
            }
            _ => {}
        }
    }
    due.sort_by_key(|(deadline, id, _)| (*deadline, *id));
    Ok(due.into_iter().take(max).map(|(_, _, e)| e).collect())
}

/// R23: the roles a partner can use on a customer at instant `t`: its active GDAP roles if any, otherwise DAP's.
pub fn effective_roles(
    state: &State,
    partner: PartnerId,
    customer: CustomerId,
    t: Timestamp,
) -> Vec<RoleId> {
    let mut roles: Vec<RoleId> = Vec::new();
    if let Some(c) = state.customers.get(&customer) {
        for a in c
            .admin_relationships
            .iter()
            .filter_map(|id| state.admin.get(id))
        {
            if a.partner == partner && a.at(t).status == AdminStatus::Active {
                for r in &a.roles {
                    if !roles.contains(r) {
                        roles.push(*r);
                    }
                }
            }
        }
    }
    let has_dap = state.is_active(partner, customer)
        && state
            .relationships
            .get(&(partner, customer))
            .is_some_and(|r| r.dap);
    if roles.is_empty() && has_dap {
        roles = state::DAP_ROLES
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
    }
    roles
}

#[cfg(test)]
mod tests {
    use super::super::event::RemovedBy;
    use super::super::state::AdminStatus;
    use super::super::testkit::*;
    use super::super::*;
    use super::effective_roles;
    use serde_json::json;

    const GDAP_2: &str = "9d000000-0000-4000-8000-000000000002";

    fn terminate(id: &str, actor: serde_json::Value) -> serde_json::Value {
        cmd(
            "TerminateDelegatedAdmin",
            actor,
            json!({"admin_relationship": id}),
        )
    }

    fn with_dap() -> Story {
        given()
            .at("2023-05-01T00:00:00Z")
            .with(enroll(A, "direct_bill", "public", "NL"))
            .with(enroll(B, "direct_bill", "public", "NL"))
            .with(register(CONTOSO, "public", "NL"))
            .with(request(REQ_A, A, CONTOSO, true))
            .with(accept(REQ_A, CONTOSO))
            .at(T0)
    }

    fn remove_dap(actor: serde_json::Value) -> serde_json::Value {
        cmd(
            "RemoveDelegatedAdmin",
            actor,
            json!({"partner": A, "customer": CONTOSO}),
        )
    }

    #[test]
    fn r15_dap_is_removed_by_partner_customer_or_system_and_the_relationship_stays() {
        let story = with_dap();
        for (actor, by) in [
            (admin(A), RemovedBy::Partner),
            (ga(CONTOSO), RemovedBy::Customer),
            (system(), RemovedBy::System),
        ] {
            let then = story.when(remove_dap(actor));
            let events = then.then_events();
            assert_eq!(
                events,
                vec![Event::DelegatedAdminRemoved {
                    partner: id(A),
                    customer: id(CONTOSO),
                    removed_by: by
                }]
            );
        }
        story
            .when(remove_dap(admin(B)))
            .then_refused_under(Code::NotAuthorized, 15);
        story
            .when(remove_dap(user(CONTOSO)))
            .then_refused_under(Code::NotAuthorized, 15);
        story
            .when(remove_dap(sales(A)))
            .then_refused_under(Code::NotAuthorized, 15);
        let state = story.when(remove_dap(ga(CONTOSO))).then_state();
        assert!(
            state.is_active(id(A), id(CONTOSO)),
            "R15: the reseller relationship survives"
        );
        story
            .with(remove_dap(ga(CONTOSO)))
            .when(remove_dap(ga(CONTOSO)))
            .then_refused_under(Code::InvalidState, 15);
    }

    #[test]
    fn r16_an_admin_relationship_has_a_bounded_name_known_roles_and_a_duration_of_1_to_730_days() {
        let story = seed();
        story
            .when(gdap(
                GDAP_1,
                A,
                CONTOSO,
                "Helpdesk",
                &[HELPDESK_ADMIN],
                730,
                false,
            ))
            .then_types(&["DelegatedAdminRequested"]);
        story
            .when(gdap(
                GDAP_1,
                A,
                CONTOSO,
                "Helpdesk",
                &[HELPDESK_ADMIN],
                1,
                false,
            ))
            .then_types(&["DelegatedAdminRequested"]);
        story
            .when(gdap(
                GDAP_1,
                A,
                CONTOSO,
                "Helpdesk",
                &[HELPDESK_ADMIN],
                1095,
                false,
            ))
            .then_refused_under(Code::InvalidDuration, 16);
        story
            .when(gdap(
                GDAP_1,
                A,
                CONTOSO,
                "Helpdesk",
                &[HELPDESK_ADMIN],
                0,
                false,
            ))
            .then_refused_under(Code::InvalidDuration, 16);
        story
            .when(gdap(
                GDAP_1,
                A,
                CONTOSO,
                &"n".repeat(51),
                &[HELPDESK_ADMIN],
                30,
                false,
            ))
            .then_refused_under(Code::InvalidName, 16);
        story
            .when(gdap(
                GDAP_1,
                A,
                CONTOSO,
                &"n".repeat(50),
                &[HELPDESK_ADMIN],
                30,
                false,
            ))
            .then_types(&["DelegatedAdminRequested"]);
        story
            .when(gdap(GDAP_1, A, CONTOSO, "", &[HELPDESK_ADMIN], 30, false))
            .then_refused_under(Code::InvalidName, 16);
        story
            .when(gdap(
                GDAP_1,
                A,
                CONTOSO,
                "Helpdesk",
                &["aaaaaaaa-0000-4000-8000-000000000001"],
                30,
                false,
            ))
            .then_refused_under(Code::UnknownRole, 16);
        story
            .when(gdap(GDAP_1, A, CONTOSO, "Helpdesk", &[], 30, false))
            .then_refused_under(Code::UnknownRole, 16);
        story
            .when(with_actor(
                gdap(GDAP_1, A, CONTOSO, "Helpdesk", &[HELPDESK_ADMIN], 30, false),
                sales(A),
            ))
            .then_refused_under(Code::NotAuthorized, 16);
        story
            .when(gdap(
                GDAP_1,
                A,
                FABRIKAM,
                "Helpdesk",
                &[HELPDESK_ADMIN],
                30,
                false,
            ))
            .then_refused(Code::UnknownCustomer);
    }

    #[test]
    fn r16_names_are_unique_among_a_partners_pending_and_active_relationships() {
        let story = seed_with_b().with(gdap(
            GDAP_1,
            A,
            CONTOSO,
            "Helpdesk",
            &[HELPDESK_ADMIN],
            30,
            false,
        ));
        story
            .when(gdap(
                GDAP_2,
                A,
                CONTOSO,
                "helpdesk",
                &[USER_ADMIN],
                30,
                false,
            ))
            .then_refused_under(Code::DuplicateName, 16);
        // Another partner may use the same name.
        story
            .when(gdap(
                GDAP_2,
                B,
                CONTOSO,
                "Helpdesk",
                &[USER_ADMIN],
                30,
                false,
            ))
            .then_types(&["DelegatedAdminRequested"]);
        // Once the first has ended, the name is free again.
        story
            .with(grant(GDAP_1, CONTOSO))
            .with(terminate(GDAP_1, ga(CONTOSO)))
            .when(gdap(
                GDAP_2,
                A,
                CONTOSO,
                "Helpdesk",
                &[USER_ADMIN],
                30,
                false,
            ))
            .then_types(&["DelegatedAdminRequested"]);
        // A duplicate id is not a new relationship.
        story
            .when(gdap(GDAP_1, A, CONTOSO, "Other", &[USER_ADMIN], 30, false))
            .then_refused(Code::InvalidState);
    }

    #[test]
    fn r17_auto_extend_is_refused_with_global_administrator() {
        let story = seed();
        story
            .when(gdap(
                GDAP_1,
                A,
                CONTOSO,
                "Full",
                &[GLOBAL_ADMIN, HELPDESK_ADMIN],
                180,
                true,
            ))
            .then_refused_under(Code::AutoExtendWithGlobalAdmin, 17);
        story
            .when(gdap(
                GDAP_1,
                A,
                CONTOSO,
                "Full",
                &[GLOBAL_ADMIN],
                180,
                false,
            ))
            .then_types(&["DelegatedAdminRequested"]);
        story
            .when(gdap(
                GDAP_1,
                A,
                CONTOSO,
                "Helpdesk",
                &[HELPDESK_ADMIN],
                180,
                true,
            ))
            .then_types(&["DelegatedAdminRequested"]);
    }

    #[test]
    fn r13_gdap_does_not_exist_in_the_us_government_cloud() {
        given()
            .with(enroll(GOV_PARTNER, "direct_bill", "us_government", "US"))
            .with(register(GOV_CUSTOMER, "us_government", "US"))
            .when(gdap(
                GDAP_1,
                GOV_PARTNER,
                GOV_CUSTOMER,
                "Helpdesk",
                &[HELPDESK_ADMIN],
                30,
                false,
            ))
            .then_refused_under(Code::GdapUnavailableInCloud, 13);
    }

    #[test]
    fn r18_only_the_customers_global_admin_approves_and_the_end_is_activation_plus_duration() {
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
            .at("2024-01-15T00:00:00Z");
        story
            .when(with_actor(grant(GDAP_1, CONTOSO), user(CONTOSO)))
            .then_refused_under(Code::NotAuthorized, 18);
        story
            .when(with_actor(grant(GDAP_1, CONTOSO), admin(A)))
            .then_refused_under(Code::NotAuthorized, 18);
        story
            .when(with_actor(grant(GDAP_1, CONTOSO), ga(FABRIKAM)))
            .then_refused_under(Code::NotAuthorized, 18);
        story
            .when(grant(GDAP_2, CONTOSO))
            .then_refused(Code::UnknownAdminRelationship);
        let events = story.when(grant(GDAP_1, CONTOSO)).then_events();
        assert_eq!(
            events,
            vec![Event::DelegatedAdminGranted {
                admin_relationship: id(GDAP_1),
                partner: id(A),
                customer: id(CONTOSO),
                activated_at: id("2024-01-15T00:00:00Z"),
                ends_at: id("2024-02-14T00:00:00Z"),
            }]
        );
        story
            .with(grant(GDAP_1, CONTOSO))
            .when(grant(GDAP_1, CONTOSO))
            .then_refused_under(Code::InvalidState, 18);
    }

    #[test]
    fn r19_approval_after_90_days_is_refused_whether_or_not_the_expiry_was_recorded() {
        // Requested at T0 = 2024-01-10T09:00Z; the limit is 2024-04-09T09:00Z.
        let story = seed().with(gdap(
            GDAP_1,
            A,
            CONTOSO,
            "Helpdesk",
            &[HELPDESK_ADMIN],
            30,
            false,
        ));
        story
            .when(at(grant(GDAP_1, CONTOSO), "2024-04-09T09:00:00Z"))
            .then_types(&["DelegatedAdminGranted"]);
        story
            .when(at(grant(GDAP_1, CONTOSO), "2024-04-09T09:00:01Z"))
            .then_refused_under(Code::RequestExpired, 19);
        let advanced = story.with(advance("2024-05-01T00:00:00Z"));
        assert_eq!(
            advanced.state.admin[&id(GDAP_1)].status,
            AdminStatus::RequestExpired
        );
        advanced
            .when(grant(GDAP_1, CONTOSO))
            .then_refused_under(Code::RequestExpired, 19);
    }

    #[test]
    fn r19_the_clock_records_a_request_expiry_at_its_exact_deadline() {
        let story = seed().with(gdap(
            GDAP_1,
            A,
            CONTOSO,
            "Helpdesk",
            &[HELPDESK_ADMIN],
            30,
            false,
        ));
        story.when(advance("2024-04-09T09:00:00Z")).then_types(&[]);
        let events = story.when(advance("2024-06-01T00:00:00Z")).then_events();
        assert_eq!(
            events,
            vec![Event::DelegatedAdminRequestExpired {
                admin_relationship: id(GDAP_1),
                partner: id(A),
                customer: id(CONTOSO),
                expired_at: id("2024-04-09T09:00:00Z"),
            }]
        );
    }

    #[test]
    fn r20_auto_extension_repeats_until_the_end_lies_after_the_clock() {
        let story = seed()
            .with(gdap(
                GDAP_1,
                A,
                CONTOSO,
                "Helpdesk",
                &[HELPDESK_ADMIN],
                30,
                true,
            ))
            .with(at(grant(GDAP_1, CONTOSO), "2024-01-11T00:00:00Z"));
        // Ends 2024-02-10; +180 d = 2024-08-08; +180 d = 2025-02-04.
        let events = story.when(advance("2024-12-01T00:00:00Z")).then_events();
        let ends: Vec<String> = events
            .iter()
            .map(|e| match e {
                Event::DelegatedAdminExtended {
                    previous_ends_at,
                    ends_at,
                    ..
                } => format!("{previous_ends_at}->{ends_at}"),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            ends,
            vec![
                "2024-02-10T00:00:00Z->2024-08-08T00:00:00Z",
                "2024-08-08T00:00:00Z->2025-02-04T00:00:00Z"
            ]
        );
        // Exactly at the end counts as reached.
        story
            .when(advance("2024-02-10T00:00:00Z"))
            .then_types(&["DelegatedAdminExtended"]);
        story.when(advance("2024-02-09T23:59:59Z")).then_types(&[]);
    }

    #[test]
    fn r20_without_auto_extend_it_expires_at_its_end_and_becomes_final() {
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
        let expired = story.clone().with(advance("2024-03-01T00:00:00Z"));
        let a = &expired.state.admin[&id(GDAP_1)];
        assert_eq!(
            (a.status, a.ends_at),
            (AdminStatus::Expired, Some(id("2024-02-10T00:00:00Z")))
        );
        expired
            .when(terminate(GDAP_1, ga(CONTOSO)))
            .then_refused_under(Code::RelationshipFinal, 20);
        expired
            .when(grant(GDAP_1, CONTOSO))
            .then_refused_under(Code::RelationshipFinal, 20);
        // Past its end but before a clock advance records it: still final.
        story
            .when(at(terminate(GDAP_1, ga(CONTOSO)), "2024-02-11T00:00:00Z"))
            .then_refused_under(Code::RelationshipFinal, 20);
        // Terminated is final too.
        story
            .with(terminate(GDAP_1, admin(A)))
            .when(terminate(GDAP_1, admin(A)))
            .then_refused_under(Code::RelationshipFinal, 20);
    }

    #[test]
    fn r21_either_side_terminates_an_active_relationship_and_nobody_else() {
        let story = seed_with_b().with(gdap(
            GDAP_1,
            A,
            CONTOSO,
            "Helpdesk",
            &[HELPDESK_ADMIN],
            30,
            false,
        ));
        story
            .when(terminate(GDAP_1, ga(CONTOSO)))
            .then_refused_under(Code::InvalidState, 21);
        let active = story.with(grant(GDAP_1, CONTOSO));
        active
            .when(terminate(GDAP_1, admin(B)))
            .then_refused_under(Code::NotAuthorized, 21);
        active
            .when(terminate(GDAP_1, sales(A)))
            .then_refused_under(Code::NotAuthorized, 21);
        active
            .when(terminate(GDAP_1, user(CONTOSO)))
            .then_refused_under(Code::NotAuthorized, 21);
        active
            .when(terminate(GDAP_2, admin(A)))
            .then_refused(Code::UnknownAdminRelationship);
        active
            .when(terminate(GDAP_1, admin(A)))
            .then_types(&["DelegatedAdminTerminated"]);
        let state = active.when(terminate(GDAP_1, ga(CONTOSO))).then_state();
        // R22: the reseller relationship and the subscriptions are untouched.
        assert!(state.is_active(id(A), id(CONTOSO)));
        assert_eq!(state.subscriptions, seed_with_b().state.subscriptions);
    }

    #[test]
    fn r22_expiry_never_ends_the_reseller_relationship_nor_touches_subscriptions() {
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
            .with(grant(GDAP_1, CONTOSO));
        let before = story.state.clone();
        let then = story.when(advance("2025-01-01T00:00:00Z"));
        let events = then.then_events();
        assert!(events
            .iter()
            .all(|e| matches!(e, Event::DelegatedAdminExpired { .. })));
        let after = story.when(advance("2025-01-01T00:00:00Z")).then_state();
        assert_eq!(after.relationships, before.relationships);
        assert_eq!(after.subscriptions, before.subscriptions);
    }

    #[test]
    fn r23_effective_access_is_gdap_roles_if_any_otherwise_dap() {
        let story = with_dap();
        let t: Timestamp = id("2024-02-01T00:00:00Z");
        let dap: Vec<RoleId> = vec![id(GLOBAL_ADMIN), id(HELPDESK_ADMIN)];
        assert_eq!(effective_roles(&story.state, id(A), id(CONTOSO), t), dap);
        let gd = story
            .with(gdap(GDAP_1, A, CONTOSO, "Users", &[USER_ADMIN], 30, false))
            .with(at(grant(GDAP_1, CONTOSO), "2024-01-20T00:00:00Z"));
        assert_eq!(
            effective_roles(&gd.state, id(A), id(CONTOSO), t),
            vec![id::<RoleId>(USER_ADMIN)]
        );
        // After the GDAP relationship ends, DAP applies again.
        assert_eq!(
            effective_roles(&gd.state, id(A), id(CONTOSO), id("2024-03-01T00:00:00Z")),
            dap
        );
        // Nobody else has access.
        assert!(effective_roles(&gd.state, id(B), id(CONTOSO), t).is_empty());
    }

    #[test]
    fn r36_advance_clock_is_for_system_and_operators_and_never_goes_backwards() {
        let story = seed();
        story
            .when(cmd(
                "AdvanceClock",
                op(),
                json!({"to": "2024-02-01T00:00:00Z"}),
            ))
            .then_types(&[]);
        story
            .when(cmd(
                "AdvanceClock",
                admin(A),
                json!({"to": "2024-02-01T00:00:00Z"}),
            ))
            .then_refused_under(Code::NotAuthorized, 36);
        story
            .when(advance("2023-01-01T00:00:00Z"))
            .then_refused_under(Code::TimeWentBackwards, 35);
        story
            .when(at(advance("2024-02-01T00:00:00Z"), "2024-02-02T00:00:00Z"))
            .then_refused_under(Code::InvalidState, 36);
    }

    /// R36 with R20: a ledger whose clock is two years behind catches up in steps of a bounded number of events, some
    /// cut between transitions due at the same instant, and ends exactly where one big advance ends, with the same
    /// events in the same order.
    #[test]
    fn r36_a_long_catch_up_in_bounded_steps_equals_one_big_advance() {
        let mut story = seed();
        for i in 0..10 {
            let id = format!("9d000000-0000-4000-8000-0000000001{i:02}");
            // Three durations, so several relationships share each deadline; most extend, some expire.
            let days = 30 + (i % 3) * 30;
            story = story
                .with(gdap(
                    &id,
                    A,
                    CONTOSO,
                    &format!("Helpdesk {i}"),
                    &[HELPDESK_ADMIN],
                    days,
                    i % 4 != 0,
                ))
                .with(at(grant(&id, CONTOSO), "2024-01-11T00:00:00Z"));
        }
        for i in 0..3 {
            // Requests nobody approves: they expire (R18).
            let id = format!("9d000000-0000-4000-8000-0000000002{i:02}");
            story = story.with(gdap(
                &id,
                A,
                CONTOSO,
                &format!("Pending {i}"),
                &[USER_ADMIN],
                90,
                true,
            ));
        }
        let to = "2026-01-15T00:00:00Z";
        let advance_to = |state: &State, max: usize| -> Vec<Event> {
            let c = parse_line(&advance(to).to_string()).unwrap().into_command(
                CommandId::new(uuid::Uuid::new_v4()).unwrap(),
                id(to),
                id(NOW),
            );
            let Body::AdvanceClock(b) = &c.body else {
                unreachable!()
            };
            super::advance_clock_upto(state, &c, b, max).unwrap()
        };
        let big = advance_to(&story.state, usize::MAX);
        let mut one_go = story.state.clone();
        for e in &big {
            one_go.apply(id(to), e);
        }
        assert!(big.len() > 30, "a long catch-up: {} events", big.len());

        let mut stepped = story.state.clone();
        let mut all = Vec::new();
        let mut steps = 0;
        loop {
            let events = advance_to(&stepped, 3);
            assert!(events.len() <= 3);
            for e in &events {
                stepped.apply(id(to), e);
            }
            steps += 1;
            let done = events.len() < 3;
            all.extend(events);
            if done {
                break;
            }
        }
        assert!(steps > 10, "{steps} steps");
        assert_eq!(all, big, "the same events in the same order");
        assert_eq!(stepped, one_go, "the same state");
        // Nothing is left due.
        assert!(advance_to(&stepped, usize::MAX).is_empty());
    }
}
