//! The domain core: every business rule of DOMAIN.md, pure and synchronous.
//!
//! `decide(&State, &Command)` answers with the events a command produces or a [`Refusal`]; [`State::apply`] folds events.
//! No I/O, no clock and no randomness live here: ids and business time arrive inside the command, so replaying the
//! log always rebuilds the same state.

pub mod command;
mod country;
mod customer;
mod delegated_admin;
pub mod event;
mod fold;
pub mod ids;
pub mod parties;
mod partner;
pub mod refusal;
mod relationship;
pub mod slice;
pub mod state;
mod subscription;
pub mod table;
pub mod view;

#[cfg(test)]
pub(crate) mod proptests;
#[cfg(test)]
pub(crate) mod testkit;

pub use command::{
    parse_line, parse_line_as, Actor, Body, Cloud, Command, InvalidLine, PartnerKind, Role,
    Submitted,
};
pub use delegated_admin::CLOCK_STEP_EVENTS;
pub use event::{EntityRef, Event, SCHEMA_VERSION};
pub use ids::*;
pub use parties::Parties;
pub use refusal::{Code, Refusal, RefusalRecord, Rule};
pub use state::State;

use refusal::refuse;

/// Decides a command against the state: the events it produces (possibly none), or why it is refused.
pub fn decide(state: &State, cmd: &Command) -> Result<Vec<Event>, Refusal> {
    check_time(state, cmd)?;
    text("actor.user", &cmd.actor.user, 256)?;
    match &cmd.body {
        Body::EnrollPartner(b) => partner::enroll(state, cmd, b),
        Body::LinkIndirectReseller(b) => partner::link(state, cmd, b),
        Body::UnlinkIndirectReseller(b) => partner::unlink(state, cmd, b),
        Body::UpdatePartner(b) => partner::update(state, cmd, b),
        Body::RegisterCustomer(b) => customer::register(state, cmd, b),
        Body::CreateCustomer(b) => customer::create(state, cmd, b),
        Body::AcceptCustomerAgreement(b) => customer::accept_agreement(state, cmd, b),
        Body::UpdateCustomer(b) => customer::update(state, cmd, b),
        Body::RequestRelationship(b) => relationship::request(state, cmd, b),
        Body::WithdrawRelationshipRequest(b) => relationship::withdraw(state, cmd, b),
        Body::AcceptRelationship(b) => relationship::accept(state, cmd, b),
        Body::RemoveRelationship(b) => relationship::remove(state, cmd, b),
        Body::RemoveDelegatedAdmin(b) => delegated_admin::remove_dap(state, cmd, b),
        Body::RequestDelegatedAdmin(b) => delegated_admin::request(state, cmd, b),
        Body::GrantDelegatedAdmin(b) => delegated_admin::grant(state, cmd, b),
        Body::TerminateDelegatedAdmin(b) => delegated_admin::terminate(state, cmd, b),
        Body::AdvanceClock(b) => delegated_admin::advance_clock(state, cmd, b),
        Body::AddSubscription(b) => subscription::add_licence(state, cmd, b),
        Body::AddAzureSubscription(b) => subscription::add_azure(state, cmd, b),
        Body::SuspendSubscription(b) => subscription::suspend(state, cmd, b),
        Body::ReactivateSubscription(b) => subscription::reactivate(state, cmd, b),
        Body::CancelSubscription(b) => subscription::cancel(state, cmd, b),
        Body::SuspendAzurePlan(b) => subscription::suspend_plan(state, cmd, b),
        Body::ReactivateAzurePlan(b) => subscription::reactivate_plan(state, cmd, b),
    }
}

/// The earliest business time accepted (R37).
pub fn earliest_business_time() -> Timestamp {
    Timestamp::ymd_hms(2000, 1, 1, 0, 0, 0)
}

/// How far past the ledger clock business time may lie, in minutes (R37).
pub const MAX_FUTURE_MINUTES: i64 = 5;

/// R37 (a bounded business time) and R35 (never backwards).
fn check_time(state: &State, cmd: &Command) -> Result<(), Refusal> {
    let latest = cmd.now.plus_minutes(MAX_FUTURE_MINUTES);
    if cmd.at < earliest_business_time() || cmd.at > latest {
        return refuse(
            Code::TimeOutOfRange,
            37,
            format!(
                "business time {} must lie between 2000-01-01T00:00:00Z and {latest} (5 minutes after the ledger clock)",
                cmd.at
            ),
        );
    }
    if let Some(clock) = state.clock {
        if cmd.at < clock {
            return refuse(
                Code::TimeWentBackwards,
                35,
                format!(
                    "business time {} is earlier than the last recorded business time {clock}",
                    cmd.at
                ),
            );
        }
    }
    Ok(())
}

/// R38: a bounded text field without control characters.
pub(crate) fn text(field: &str, value: &str, max: usize) -> Result<(), Refusal> {
    let n = value.chars().count();
    if n == 0 || n > max {
        return refuse(
            Code::InvalidText,
            38,
            format!("{field} must be 1 to {max} characters, not {n}"),
        );
    }
    if value.chars().any(char::is_control) {
        return refuse(
            Code::InvalidText,
            38,
            format!("{field} must not contain control characters"),
        );
    }
    Ok(())
}

/// Refuses unless the actor has one of `roles` (`not_authorized` under `rule`).
pub(crate) fn require_role(cmd: &Command, roles: &[Role], rule: u8) -> Result<(), Refusal> {
    if roles.contains(&cmd.actor.role) {
        Ok(())
    } else {
        refuse(
            Code::NotAuthorized,
            rule,
            format!(
                "{} may not be issued by a {} ({})",
                cmd.body.type_name(),
                role_name(cmd.actor.role),
                cmd.actor.user
            ),
        )
    }
}

/// Refuses unless the actor is one of `roles` of tenant `tenant` ("that partner" / "that customer").
pub(crate) fn require_tenant(
    cmd: &Command,
    tenant: TenantId,
    roles: &[Role],
    rule: u8,
) -> Result<(), Refusal> {
    require_role(cmd, roles, rule)?;
    if cmd.actor.tenant == tenant {
        Ok(())
    } else {
        refuse(
            Code::NotAuthorized,
            rule,
            format!(
                "{} for tenant {tenant} may not be issued by {} of tenant {}",
                cmd.body.type_name(),
                cmd.actor.user,
                cmd.actor.tenant
            ),
        )
    }
}

/// The snake_case name of a role, for messages.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::PartnerAdminAgent => "partner_admin_agent",
        Role::PartnerSalesAgent => "partner_sales_agent",
        Role::CustomerGlobalAdmin => "customer_global_admin",
        Role::CustomerUser => "customer_user",
        Role::Operator => "operator",
        Role::System => "system",
    }
}

/// Partner agents: admin or sales.
pub(crate) const PARTNER_AGENTS: &[Role] = &[Role::PartnerAdminAgent, Role::PartnerSalesAgent];

pub(crate) fn find_partner(state: &State, id: PartnerId) -> Result<&state::Partner, Refusal> {
    match state.partners.get(&id) {
        Some(p) => Ok(p),
        None => refusal::refuse_plain(
            Code::UnknownPartner,
            format!("partner {id} is not enrolled"),
        ),
    }
}

pub(crate) fn find_customer(state: &State, id: CustomerId) -> Result<&state::Customer, Refusal> {
    match state.customers.get(&id) {
        Some(c) => Ok(c),
        None => refusal::refuse_plain(
            Code::UnknownCustomer,
            format!("customer {id} is not registered"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use super::*;

    #[test]
    fn r35_business_time_never_goes_backwards() {
        let story = seed()
            .at("2024-06-01T00:00:00Z")
            .with(request(REQ_B, B, CONTOSO, false));
        story
            .when(at(accept(REQ_B, CONTOSO), "2024-05-31T23:59:59Z"))
            .then_refused_under(Code::TimeWentBackwards, 35);
        story
            .when(at(accept(REQ_B, CONTOSO), "2024-06-01T00:00:00Z"))
            .then_types(&["ResellerRelationshipEstablished"]);
    }

    #[test]
    fn r37_business_time_lies_between_2000_and_five_minutes_after_the_ledger_clock() {
        // The test ledger clock is NOW = 2026-11-24T12:00:00Z.
        let story = given();
        story
            .when(at(
                enroll(A, "direct_bill", "public", "NL"),
                "1999-12-31T23:59:59Z",
            ))
            .then_refused_under(Code::TimeOutOfRange, 37);
        story
            .when(at(
                enroll(A, "direct_bill", "public", "NL"),
                "1969-07-20T20:17:00Z",
            ))
            .then_refused_under(Code::TimeOutOfRange, 37);
        story
            .when(at(
                enroll(A, "direct_bill", "public", "NL"),
                "2026-11-24T12:05:01Z",
            ))
            .then_refused_under(Code::TimeOutOfRange, 37);
        story
            .when(at(
                enroll(A, "direct_bill", "public", "NL"),
                "2026-11-24T12:05:00Z",
            ))
            .then_types(&["PartnerEnrolled"]);
        story
            .when(at(
                enroll(A, "direct_bill", "public", "NL"),
                "2000-01-01T00:00:00Z",
            ))
            .then_types(&["PartnerEnrolled"]);
        story
            .when(advance("2027-01-01T00:00:00Z"))
            .then_refused_under(Code::TimeOutOfRange, 37);
    }

    #[test]
    fn r38_the_actors_user_is_bounded_text() {
        let mut c = enroll(A, "direct_bill", "public", "NL");
        c["actor"]["user"] = serde_json::json!("");
        given()
            .when(c.clone())
            .then_refused_under(Code::InvalidText, 38);
        c["actor"]["user"] = serde_json::json!("u".repeat(257));
        given().when(c).then_refused_under(Code::InvalidText, 38);
    }
}
