//! Model-based property tests: random command sequences over small id pools (so most commands meet existing
//! entities) must keep the invariants of DOMAIN.md, and folding the emitted events from scratch must give the same
//! state as deciding and applying them one command at a time.

use std::collections::HashMap;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::testkit::*;
use super::*;

/// The last partner and customer are never enrolled or registered by the prelude, so commands naming them meet
/// `unknown_partner` / `unknown_customer` until a random enrolment or registration creates them.
const PARTNERS: [&str; 6] = [
    A,
    B,
    PROVIDER,
    RESELLER,
    GOV_PARTNER,
    "b9000000-0000-4000-8000-0000000000b9",
];
const CUSTOMERS: [&str; 4] = [
    CONTOSO,
    FABRIKAM,
    GOV_CUSTOMER,
    "c9000000-0000-4000-8000-0000000000c9",
];
const ROLES: [&str; 4] = [
    GLOBAL_ADMIN,
    HELPDESK_ADMIN,
    USER_ADMIN,
    "aaaaaaaa-0000-4000-8000-000000000001",
];

pub(crate) fn pick<'a>(pool: &[&'a str], n: u8) -> &'a str {
    pool[usize::from(n) % pool.len()]
}
fn pool_id(prefix: &str, n: u8) -> String {
    format!("{prefix}000000-0000-4000-8000-{:012x}", (n % 3) + 1)
}

/// Command kinds for `make`, weighted toward the ones that create what the others act on.
pub(crate) const WEIGHTED: [u8; 49] = [
    0, 1, 2, 3, 3, 3, 4, 4, 4, 5, 6, 6, 6, 7, 7, 7, 8, 8, 9, 10, 11, 11, 12, 13, 13, 13, 13, 14,
    14, 14, 15, 15, 16, 17, 18, 19, 20, 21, 21, 21, 22, 23, 8, 9, 9, 16, 16, 17, 17,
];

/// Builds one command from a kind and a few random picks.
pub(crate) fn make(kind: u8, p: [u8; 4]) -> Value {
    let partner = pick(&PARTNERS, p[0]);
    let customer = pick(&CUSTOMERS, p[1]);
    // Mostly the actor the command calls for, sometimes anyone, so both answers are exercised.
    let natural = match kind % 24 {
        0..=2 | 20 | 22 | 23 => op(),
        4 | 5 | 14 => ga(customer),
        21 => system(),
        6..=10 | 16 | 17 if p[2].is_multiple_of(2) => sales(partner),
        _ => admin(partner),
    };
    let actor = match p[2] % 10 {
        0 => admin(partner),
        1 => ga(customer),
        2 => user(customer),
        _ => natural,
    };
    let sub = pool_id("5e", p[3]);
    let req = pool_id("1e", p[3]);
    let gd = pool_id("9e", p[3]);
    let with = |c: Value| with_actor(c, actor.clone());
    match kind % 24 {
        0 => {
            let kinds = [
                "direct_bill",
                "direct_bill",
                "indirect_provider",
                "indirect_reseller",
                "direct_bill",
            ];
            let clouds = ["public", "public", "public", "public", "us_government"];
            let i = usize::from(p[0]) % 5;
            let tenant = if p[3].is_multiple_of(7) {
                customer
            } else {
                partner
            };
            let mut c = enroll(
                tenant,
                kinds[i],
                clouds[i],
                if i == 4 { "US" } else { "NL" },
            );
            if i == 4 {
                c["markets"] = json!(["US"]);
            }
            c
        }
        1 => {
            let clouds = ["public", "public", "us_government"];
            let tenant = if p[3].is_multiple_of(7) {
                partner
            } else {
                customer
            };
            register(
                tenant,
                clouds[usize::from(p[1]) % 3],
                if p[1] % 3 == 2 { "US" } else { "NL" },
            )
        }
        2 => cmd(
            "LinkIndirectReseller",
            op(),
            json!({"provider": PROVIDER, "reseller": pick(&PARTNERS, p[3])}),
        ),
        3 => with(request(&req, partner, customer, p[3].is_multiple_of(2))),
        4 => with(accept(&req, customer)),
        5 => with(agreement(customer)),
        6 => with(licence(&sub, partner, customer, i64::from(p[3] % 4))),
        7 => {
            let mut c = with(azure(&sub, partner, customer));
            if p[2].is_multiple_of(3) {
                c["reseller_of_record"] = json!(pick(&PARTNERS, p[3]));
            }
            c
        }
        8 => with(sub_cmd("SuspendSubscription", &sub, partner)),
        9 => with(sub_cmd("ReactivateSubscription", &sub, partner)),
        10 => with(sub_cmd("CancelSubscription", &sub, partner)),
        11 => with(cmd(
            "RemoveRelationship",
            actor.clone(),
            json!({"partner": partner, "customer": customer}),
        )),
        12 => with(cmd(
            "RemoveDelegatedAdmin",
            actor.clone(),
            json!({"partner": partner, "customer": customer}),
        )),
        13 => {
            let second = if p[0].is_multiple_of(8) {
                ROLES[3]
            } else {
                HELPDESK_ADMIN
            };
            let roles = [pick(&ROLES[..3], p[3]), second];
            let days = [30, 730, 1095, 0, 90, 30, 45, 365][usize::from(p[2]) % 8];
            with(gdap(
                &gd,
                partner,
                customer,
                ["Helpdesk", "Ops", "helpdesk", "", "Helpdesk"][usize::from(p[1]) % 5],
                &roles,
                days,
                p[3].is_multiple_of(2),
            ))
        }
        14 => with(grant(&gd, customer)),
        15 => with(cmd(
            "TerminateDelegatedAdmin",
            actor.clone(),
            json!({"admin_relationship": gd}),
        )),
        16 => with(cmd(
            "SuspendAzurePlan",
            actor.clone(),
            json!({"partner": partner, "customer": customer}),
        )),
        17 => with(cmd(
            "ReactivateAzurePlan",
            actor.clone(),
            json!({"partner": partner, "customer": customer}),
        )),
        18 => with(cmd(
            "WithdrawRelationshipRequest",
            actor.clone(),
            json!({"request": req}),
        )),
        19 => with(cmd(
            "CreateCustomer",
            actor.clone(),
            json!({"partner": partner, "customer": customer, "company_name": "New", "domain": "new.example", "country": "NL"}),
        )),
        20 => cmd(
            "UnlinkIndirectReseller",
            op(),
            json!({"provider": PROVIDER, "reseller": pick(&PARTNERS, p[3])}),
        ),
        21 => cmd("AdvanceClock", system(), json!({})),
        22 => {
            let markets = [json!(["NL"]), json!(["DE"]), json!(["NL", "US"]), json!([])]
                [usize::from(p[3]) % 4]
                .clone();
            with(cmd(
                "UpdatePartner",
                op(),
                json!({"partner": partner, "name": format!("Partner {}", p[1] % 4), "markets": markets}),
            ))
        }
        _ => {
            let name =
                ["Contoso Group", "", "Contoso\u{7}", "Fabrikam Holding"][usize::from(p[3]) % 4];
            with(cmd(
                "UpdateCustomer",
                op(),
                json!({"customer": customer, "company_name": name}),
            ))
        }
    }
}

/// Every partner enrolled, the three customers registered, P linked to R, and most pairs related.
pub(crate) fn prelude() -> Vec<Value> {
    let mut out = vec![
        enroll(A, "direct_bill", "public", "NL"),
        enroll(B, "direct_bill", "public", "NL"),
        enroll(PROVIDER, "indirect_provider", "public", "NL"),
        enroll(RESELLER, "indirect_reseller", "public", "NL"),
        {
            let mut g = enroll(GOV_PARTNER, "direct_bill", "us_government", "US");
            g["markets"] = json!(["US"]);
            g
        },
        register(CONTOSO, "public", "NL"),
        register(FABRIKAM, "public", "NL"),
        register(GOV_CUSTOMER, "us_government", "US"),
        cmd(
            "LinkIndirectReseller",
            op(),
            json!({"provider": PROVIDER, "reseller": RESELLER}),
        ),
        agreement(CONTOSO),
        agreement(FABRIKAM),
    ];
    let pairs = [
        (A, CONTOSO),
        (B, CONTOSO),
        (PROVIDER, CONTOSO),
        (RESELLER, CONTOSO),
        (A, FABRIKAM),
        (GOV_PARTNER, GOV_CUSTOMER),
    ];
    for (i, (partner, customer)) in pairs.iter().enumerate() {
        let req = format!("1f000000-0000-4000-8000-{:012x}", i + 1);
        out.push(request(&req, partner, customer, *partner == GOV_PARTNER));
        out.push(accept(&req, customer));
    }
    // Something for the subscription and plan lifecycles to act on.
    out.push(azure(&pool_id("5e", 0), B, CONTOSO));
    out.push(sub_cmd("SuspendSubscription", &pool_id("5e", 0), B));
    out.push(licence(&pool_id("5e", 1), A, CONTOSO, 10));
    out
}

fn rebuild(log: &[(Timestamp, Event)]) -> State {
    let mut s = State::new();
    for (at, e) in log {
        s.apply(*at, e);
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn random_command_sequences_keep_every_invariant(
        steps in prop::collection::vec((any::<u8>(), any::<[u8; 4]>(), 0i64..40), 60..160)
    ) {
        let mut state = State::new();
        let mut log: Vec<(Timestamp, Event)> = Vec::new();
        let mut t: Timestamp = "2023-06-01T00:00:00Z".parse().unwrap();
        let now: Timestamp = NOW.parse().unwrap();
        let mut owners: HashMap<SubscriptionId, (PartnerId, PartnerId)> = HashMap::new();
        let prelude: Vec<(Value, i64)> = prelude().into_iter().map(|v| (v, 0)).collect();
        let random = steps
            .into_iter()
            .map(|(kind, picks, step)| (make(WEIGHTED[usize::from(kind) % WEIGHTED.len()], picks), step));
        for (mut value, step) in prelude.into_iter().chain(random) {
            t = t.plus_minutes(step * 60 * 6 - 60).max(t);
            if value["type"] == "AdvanceClock" {
                value["to"] = json!(t.to_string());
            }
            value["at"] = json!(t.to_string());
            let sub = parse_line(&value.to_string()).unwrap();
            let c = sub.into_command(CommandId::new(uuid::Uuid::new_v4()).unwrap(), t, now);
            let Ok(events) = decide(&state, &c) else { continue };
            for e in &events {
                // R3: a partner's command only touches subscriptions that partner bills.
                if matches!(c.actor.role, Role::PartnerAdminAgent | Role::PartnerSalesAgent) {
                    if let Event::SubscriptionSuspended { billing_partner, .. }
                    | Event::SubscriptionReactivated { billing_partner, .. }
                    | Event::SubscriptionCancelled { billing_partner, .. }
                    | Event::SubscriptionAdded { billing_partner, .. }
                    | Event::AzureSubscriptionAdded { billing_partner, .. } = e
                    {
                        prop_assert_eq!(billing_partner.tenant(), c.actor.tenant);
                    }
                }
                state.apply(c.at, e);
                log.push((c.at, e.clone()));
            }
            // R4: partner of record and billing partner never change.
            for (id, s) in &state.subscriptions {
                let first = owners.entry(*id).or_insert((s.billing_partner, s.partner_of_record));
                prop_assert_eq!(*first, (s.billing_partner, s.partner_of_record));
            }
            // R5: no tenant is both a partner and a customer.
            for p in state.partners.keys() {
                prop_assert!(!state.customers.contains_key(&p.tenant().as_customer()));
            }
        }
        // R35: business time never goes backwards in the log.
        prop_assert!(log.windows(2).all(|w| w[0].0 <= w[1].0));
        // The write model is exactly the fold of its log.
        prop_assert_eq!(rebuild(&log), state);
    }
}
