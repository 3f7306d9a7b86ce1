//! A given/when/then harness for the rules: `given().with(cmd)….when(cmd).then_refused(code)`.
//!
//! Commands are written as WIRE.md JSON and go through the real parser, so these tests also pin the wire names.

use serde_json::{json, Value};

use super::*;

pub const NOW: &str = "2026-11-24T12:00:00Z";
pub const T0: &str = "2024-01-10T09:00:00Z";

pub const A: &str = "a0000000-0000-4000-8000-00000000000a";
pub const B: &str = "b0000000-0000-4000-8000-00000000000b";
pub const PROVIDER: &str = "d0000000-0000-4000-8000-00000000000d";
pub const RESELLER: &str = "e0000000-0000-4000-8000-00000000000e";
pub const GOV_PARTNER: &str = "f0000000-0000-4000-8000-00000000000f";
pub const CONTOSO: &str = "c0000000-0000-4000-8000-00000000000c";
pub const FABRIKAM: &str = "c1000000-0000-4000-8000-0000000000c1";
pub const GOV_CUSTOMER: &str = "c2000000-0000-4000-8000-0000000000c2";
pub const OPERATOR_TENANT: &str = "00000000-0000-4000-8000-0000000000ff";

pub const REQ_A: &str = "1a000000-0000-4000-8000-000000000001";
pub const REQ_B: &str = "1b000000-0000-4000-8000-000000000002";
pub const SUB_A: &str = "5a000000-0000-4000-8000-000000000001";
pub const AZ_B: &str = "5b000000-0000-4000-8000-000000000002";
pub const GDAP_1: &str = "9d000000-0000-4000-8000-000000000001";

pub const GLOBAL_ADMIN: &str = "62e90394-69f5-4237-9190-012177145e10";
pub const HELPDESK_ADMIN: &str = "729827e3-9c14-49f7-bb1b-9608f156bbb8";
pub const USER_ADMIN: &str = "fe930be7-5e62-47db-91af-98c3a49a38b1";

pub fn op() -> Value {
    json!({"tenant": OPERATOR_TENANT, "user": "ops@ledger.example", "role": "operator"})
}
pub fn system() -> Value {
    json!({"tenant": OPERATOR_TENANT, "user": "scheduler", "role": "system"})
}
pub fn admin(tenant: &str) -> Value {
    json!({"tenant": tenant, "user": "admin.agent@partner.example", "role": "partner_admin_agent"})
}
pub fn sales(tenant: &str) -> Value {
    json!({"tenant": tenant, "user": "sales.agent@partner.example", "role": "partner_sales_agent"})
}
pub fn ga(tenant: &str) -> Value {
    json!({"tenant": tenant, "user": "admin@contoso.onmicrosoft.com", "role": "customer_global_admin"})
}
pub fn user(tenant: &str) -> Value {
    json!({"tenant": tenant, "user": "alex@contoso.onmicrosoft.com", "role": "customer_user"})
}

/// Builds a command JSON object from its type, actor and own fields.
pub fn cmd(kind: &str, actor: Value, fields: Value) -> Value {
    let mut m = fields.as_object().cloned().unwrap_or_default();
    m.insert("type".into(), json!(kind));
    m.insert("actor".into(), actor);
    Value::Object(m)
}

pub fn enroll(partner: &str, kind: &str, cloud: &str, country: &str) -> Value {
    cmd(
        "EnrollPartner",
        op(),
        json!({"partner": partner, "partner_id": "4410001", "name": format!("Partner {}", &partner[..2]),
               "kind": kind, "cloud": cloud, "country": country}),
    )
}
pub fn register(customer: &str, cloud: &str, country: &str) -> Value {
    cmd(
        "RegisterCustomer",
        op(),
        json!({"customer": customer, "company_name": "Contoso Ltd", "domain": "contoso.onmicrosoft.com",
               "country": country, "cloud": cloud}),
    )
}
pub fn request(req: &str, partner: &str, customer: &str, dap: bool) -> Value {
    cmd(
        "RequestRelationship",
        admin(partner),
        json!({"request": req, "partner": partner, "customer": customer, "include_delegated_admin": dap}),
    )
}
pub fn accept(req: &str, customer: &str) -> Value {
    cmd(
        "AcceptRelationship",
        ga(customer),
        json!({"request": req, "customer": customer}),
    )
}
pub fn agreement(customer: &str) -> Value {
    cmd(
        "AcceptCustomerAgreement",
        ga(customer),
        json!({"customer": customer}),
    )
}
pub fn licence(sub: &str, partner: &str, customer: &str, quantity: i64) -> Value {
    cmd(
        "AddSubscription",
        sales(partner),
        json!({"subscription": sub, "partner": partner, "customer": customer, "offer": "O365_E3", "quantity": quantity}),
    )
}
pub fn azure(sub: &str, partner: &str, customer: &str) -> Value {
    cmd(
        "AddAzureSubscription",
        sales(partner),
        json!({"subscription": sub, "partner": partner, "customer": customer, "friendly_name": "Production"}),
    )
}
pub fn sub_cmd(kind: &str, sub: &str, partner: &str) -> Value {
    cmd(
        kind,
        admin(partner),
        json!({"subscription": sub, "partner": partner}),
    )
}
pub fn gdap(
    id: &str,
    partner: &str,
    customer: &str,
    name: &str,
    roles: &[&str],
    days: i64,
    auto: bool,
) -> Value {
    cmd(
        "RequestDelegatedAdmin",
        admin(partner),
        json!({"admin_relationship": id, "partner": partner, "customer": customer, "name": name,
               "roles": roles, "duration_days": days, "auto_extend": auto}),
    )
}
pub fn grant(id: &str, customer: &str) -> Value {
    cmd(
        "GrantDelegatedAdmin",
        ga(customer),
        json!({"admin_relationship": id, "customer": customer}),
    )
}
pub fn advance(to: &str) -> Value {
    cmd("AdvanceClock", system(), json!({"to": to}))
}
pub fn at(mut command: Value, t: &str) -> Value {
    command["at"] = json!(t);
    command
}
pub fn with_actor(mut command: Value, actor: Value) -> Value {
    command["actor"] = actor;
    command
}

/// Partners A and B (direct bill, NL) and Contoso (NL, public); A serves Contoso, which accepted the agreement,
/// and A sold it a licence subscription.
pub fn seed() -> Story {
    given()
        .with(enroll(A, "direct_bill", "public", "NL"))
        .with(enroll(B, "direct_bill", "public", "NL"))
        .with(register(CONTOSO, "public", "NL"))
        .with(request(REQ_A, A, CONTOSO, false))
        .with(accept(REQ_A, CONTOSO))
        .with(agreement(CONTOSO))
        .with(licence(SUB_A, A, CONTOSO, 25))
}

/// The seed plus B's active relationship with Contoso.
pub fn seed_with_b() -> Story {
    seed()
        .with(request(REQ_B, B, CONTOSO, false))
        .with(accept(REQ_B, CONTOSO))
}

/// A ledger under test: the state after the commands given so far.
#[derive(Clone)]
pub struct Story {
    pub state: State,
    pub now: Timestamp,
    pub default_at: Timestamp,
    pub positions: usize,
}

pub fn given() -> Story {
    Story {
        state: State::new(),
        now: NOW.parse().unwrap(),
        default_at: T0.parse().unwrap(),
        positions: 0,
    }
}

fn to_command(story: &Story, value: &Value) -> Command {
    let sub = parse_line(&value.to_string()).unwrap_or_else(|e| panic!("{value}: {e}"));
    let default_at = story
        .state
        .clock
        .unwrap_or(story.default_at)
        .max(story.default_at);
    sub.into_command(
        CommandId::new(uuid::Uuid::new_v4()).unwrap(),
        default_at,
        story.now,
    )
}

impl Story {
    /// Applies a command that must commit.
    pub fn with(&self, value: Value) -> Self {
        let mut next = self.clone();
        next.commit(value);
        next
    }

    fn commit(&mut self, value: Value) {
        let c = to_command(self, &value);
        match decide(&self.state, &c) {
            Ok(events) => {
                for e in &events {
                    self.state.apply(c.at, e);
                }
                self.positions += events.len();
            }
            Err(r) => panic!("given command was refused: {r}\n{value}"),
        }
    }

    /// Sets the business time used by commands that carry no `at`.
    pub fn at(&self, t: &str) -> Self {
        let mut next = self.clone();
        next.default_at = t.parse().unwrap();
        next
    }

    pub fn when(&self, value: Value) -> Then {
        let c = to_command(self, &value);
        Then {
            result: decide(&self.state, &c),
            state: self.state.clone(),
            at: c.at,
        }
    }
}

pub struct Then {
    pub result: Result<Vec<Event>, Refusal>,
    pub state: State,
    pub at: Timestamp,
}

impl Then {
    /// Asserts a refusal with this code (and, where given, this rule) and returns it.
    #[track_caller]
    pub fn then_refused(self, code: Code) -> Refusal {
        match self.result {
            Err(r) => {
                assert_eq!(r.code, code, "refused with the wrong code: {r}");
                assert!(!r.message.is_empty());
                r
            }
            Ok(events) => panic!("expected {code}, but committed {events:?}"),
        }
    }

    #[track_caller]
    pub fn then_refused_under(self, code: Code, rule: u8) -> Refusal {
        let r = self.then_refused(code);
        assert_eq!(r.rule, Some(Rule(rule)), "wrong rule for {code}");
        r
    }

    /// Asserts a commit and returns the events.
    #[track_caller]
    pub fn then_events(self) -> Vec<Event> {
        match self.result {
            Ok(events) => events,
            Err(r) => panic!("expected a commit, but refused: {r}"),
        }
    }

    /// Asserts a commit whose events have exactly these types, in order.
    #[track_caller]
    pub fn then_types(self, types: &[&str]) -> Vec<Event> {
        let events = self.then_events();
        let got: Vec<&str> = events.iter().map(Event::type_name).collect();
        assert_eq!(got, types);
        events
    }

    /// The state after applying the committed events.
    #[track_caller]
    pub fn then_state(self) -> State {
        let at = self.at;
        let mut state = self.state.clone();
        for e in self.then_events() {
            state.apply(at, &e);
        }
        state
    }
}

pub fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap()
}
