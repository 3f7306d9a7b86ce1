//! A deterministic generator of realistic multi-partner ledgers, as NDJSON commands.
//!
//! Partners of all three kinds in both clouds, customers with one to four partners each, relationship requests and
//! acceptances, customer agreements, licence and Azure subscriptions (two-tier through linked providers), GDAP
//! lifecycles, subscription changes and clock advances; about 5% of commands are refused by a rule. The same seed
//! always yields the same lines. Used by `partner-ledger generate`, tests and measurements.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use crate::domain::Timestamp;

/// What to generate.
#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    /// Stop after this many commands.
    pub commands: usize,
    pub seed: u64,
    /// Business time of the first command; each command is a few seconds after the previous one.
    pub start: Timestamp,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        Self {
            commands: 10_000,
            seed: 1,
            start: Timestamp::ymd_hms(2024, 1, 1, 0, 0, 0),
        }
    }
}

const COUNTRIES: [&str; 6] = ["NL", "BE", "DE", "FR", "GB", "US"];
const ROLES: [&str; 5] = [
    "729827e3-9c14-49f7-bb1b-9608f156bbb8",
    "fe930be7-5e62-47db-91af-98c3a49a38b1",
    "29232cdf-9323-42fd-ade2-1d097af3e4de",
    "f2ef992c-3afb-46b9-b7cf-a126ee74c451",
    "194ae4cb-b126-40b2-bd5b-6091b380977d",
];
const OFFERS: [&str; 4] = ["O365_E3", "M365_BUSINESS_PREMIUM", "O365_E5", "EMS_E3"];

#[derive(Clone)]
struct Partner {
    id: String,
    kind: &'static str,
    gov: bool,
    /// For a provider: its linked resellers.
    resellers: Vec<String>,
}

/// The command lines, lazily.
pub struct Workload {
    rng: ChaCha8Rng,
    spec: WorkloadSpec,
    emitted: usize,
    t: Timestamp,
    queue: std::collections::VecDeque<Value>,
    partners: Vec<Partner>,
    /// The partners a customer may be served by (indexes into `partners`), for commercial ([0]) and government ([1])
    /// customers; computed once after setup, not per customer (which made generating quadratic in its size).
    candidates: [Vec<usize>; 2],
    setup_done: bool,
    customers: u64,
}

/// Generates `spec.commands` command lines.
pub fn generate(spec: WorkloadSpec) -> Workload {
    Workload {
        rng: ChaCha8Rng::seed_from_u64(spec.seed),
        t: spec.start,
        spec,
        emitted: 0,
        queue: Default::default(),
        partners: Vec::new(),
        candidates: [Vec::new(), Vec::new()],
        setup_done: false,
        customers: 0,
    }
}

fn actor(tenant: &str, role: &str) -> Value {
    let user = match role {
        "operator" => "ops@ledger.example".to_string(),
        "system" => "scheduler".to_string(),
        "customer_global_admin" => format!("admin@{}.onmicrosoft.com", &tenant[..8]),
        _ => format!("agent@{}.partner.example", &tenant[..8]),
    };
    json!({"tenant": tenant, "user": user, "role": role})
}

const OPERATOR: &str = "00000000-0000-4000-8000-0000000000ff";

impl Workload {
    fn id(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.rng.random())
            .into_uuid()
            .to_string()
    }

    fn push(&mut self, kind: &str, actor: Value, mut fields: Value) {
        fields["type"] = json!(kind);
        fields["actor"] = actor;
        let command_id = self.id();
        fields["command_id"] = json!(command_id);
        self.queue.push_back(fields);
    }

    fn setup(&mut self) {
        // Enough partners that customers spread across them: one per 25 customers the run can hold, at least 12.
        let n = (self.spec.commands / 250).clamp(12, 20_000);
        for i in 0..n {
            let (kind, gov) = match i % 20 {
                0 | 1 => ("indirect_provider", false),
                2..=4 => ("indirect_reseller", false),
                5 | 6 => ("direct_bill", true),
                _ => ("direct_bill", false),
            };
            let id = self.id();
            let country = if gov { "US" } else { COUNTRIES[i % 5] };
            let markets: Vec<&str> = if gov { vec!["US"] } else { COUNTRIES.to_vec() };
            self.push(
                "EnrollPartner",
                actor(OPERATOR, "operator"),
                json!({"partner": id, "partner_id": format!("{}", 4_400_000 + i), "name": format!("Partner {i:05}"),
                       "kind": kind, "cloud": if gov { "us_government" } else { "public" }, "country": country, "markets": markets}),
            );
            self.partners.push(Partner {
                id,
                kind,
                gov,
                resellers: Vec::new(),
            });
        }
        let providers: Vec<usize> = (0..n)
            .filter(|i| self.partners[*i].kind == "indirect_provider")
            .collect();
        let resellers: Vec<usize> = (0..n)
            .filter(|i| self.partners[*i].kind == "indirect_reseller")
            .collect();
        for (k, r) in resellers.iter().enumerate() {
            let p = providers[k % providers.len()];
            let (pid, rid) = (self.partners[p].id.clone(), self.partners[*r].id.clone());
            self.push(
                "LinkIndirectReseller",
                actor(OPERATOR, "operator"),
                json!({"provider": pid, "reseller": rid}),
            );
            self.partners[p].resellers.push(rid);
        }
    }

    /// One customer's story: registration, one to four partners, purchases, GDAP, changes, and a few refusals.
    fn customer(&mut self) {
        self.customers += 1;
        let gov = self.rng.random_bool(0.1);
        let c = self.id();
        let country = if gov {
            "US"
        } else {
            COUNTRIES[self.rng.random_range(0..5)]
        };
        self.push(
            "RegisterCustomer",
            actor(OPERATOR, "operator"),
            json!({"customer": c, "company_name": format!("Customer {:07}", self.customers), "domain": format!("c{:07}.onmicrosoft.com", self.customers),
                   "country": country, "cloud": if gov { "us_government" } else { "public" }}),
        );
        let pool = usize::from(gov);
        let n = self.candidates[pool].len();
        let count = self.rng.random_range(1..=4).min(n);
        let start = self.rng.random_range(0..n);
        let chosen: Vec<Partner> = (0..count)
            .map(|k| self.partners[self.candidates[pool][(start + k * 7) % n]].clone())
            .collect();
        let mut agreed = false;
        for p in chosen {
            let req = self.id();
            self.push(
                "RequestRelationship",
                actor(&p.id, "partner_sales_agent"),
                json!({"request": req, "partner": p.id, "customer": c, "include_delegated_admin": gov}),
            );
            self.push(
                "AcceptRelationship",
                actor(&c, "customer_global_admin"),
                json!({"request": req, "customer": c}),
            );
            if !agreed {
                self.push(
                    "AcceptCustomerAgreement",
                    actor(&c, "customer_global_admin"),
                    json!({"customer": c}),
                );
                agreed = true;
            }
            let reseller = (p.kind == "indirect_provider")
                .then(|| p.resellers[self.rng.random_range(0..p.resellers.len())].clone());
            let sub = self.id();
            let mut buy = if self.rng.random_bool(0.6) {
                json!({"subscription": sub, "partner": p.id, "customer": c, "offer": OFFERS[self.rng.random_range(0..4)],
                       "quantity": self.rng.random_range(1..500)})
            } else {
                json!({"subscription": sub, "partner": p.id, "customer": c, "friendly_name": "Production"})
            };
            if let Some(r) = &reseller {
                buy["reseller_of_record"] = json!(r);
            }
            let kind = if buy.get("offer").is_some() {
                "AddSubscription"
            } else {
                "AddAzureSubscription"
            };
            self.push(kind, actor(&p.id, "partner_sales_agent"), buy);
            if self.rng.random_bool(0.15) {
                self.push(
                    "SuspendSubscription",
                    actor(&p.id, "partner_admin_agent"),
                    json!({"subscription": sub, "partner": p.id}),
                );
                if self.rng.random_bool(0.5) {
                    self.push(
                        "ReactivateSubscription",
                        actor(&p.id, "partner_admin_agent"),
                        json!({"subscription": sub, "partner": p.id}),
                    );
                }
            }
            if !gov && self.rng.random_bool(0.5) {
                let gd = self.id();
                let roles: Vec<&str> = (0..self.rng.random_range(1..=3))
                    .map(|k| ROLES[k])
                    .collect();
                let days = [30, 90, 180, 365, 730][self.rng.random_range(0..5)];
                let name = format!("GDAP {} {}", &c[..8], &p.id[..8]);
                let auto_extend = self.rng.random_bool(0.5);
                self.push(
                    "RequestDelegatedAdmin",
                    actor(&p.id, "partner_admin_agent"),
                    json!({"admin_relationship": gd, "partner": p.id, "customer": c, "name": name, "roles": roles,
                           "duration_days": days, "auto_extend": auto_extend}),
                );
                if self.rng.random_bool(0.8) {
                    self.push(
                        "GrantDelegatedAdmin",
                        actor(&c, "customer_global_admin"),
                        json!({"admin_relationship": gd, "customer": c}),
                    );
                }
            }
            // About 5% of commands are refused by a rule.
            if self.rng.random_bool(0.3) {
                match self.rng.random_range(0..3) {
                    0 => {
                        let mut again = json!({"subscription": sub, "partner": p.id, "customer": c, "offer": "O365_E3", "quantity": 1});
                        if let Some(r) = &reseller {
                            again["reseller_of_record"] = json!(r);
                        }
                        self.push(
                            "AddSubscription",
                            actor(&p.id, "partner_sales_agent"),
                            again,
                        )
                    }
                    1 if !gov => {
                        let gd = self.id();
                        self.push(
                        "RequestDelegatedAdmin",
                        actor(&p.id, "partner_admin_agent"),
                        json!({"admin_relationship": gd, "partner": p.id, "customer": c, "name": "Three years",
                               "roles": [ROLES[0]], "duration_days": 1095, "auto_extend": false}),
                    )
                    }
                    _ => self.push(
                        "AcceptRelationship",
                        actor(&c, "customer_user"),
                        json!({"request": req, "customer": c}),
                    ),
                }
            }
        }
        if self.customers.is_multiple_of(200) {
            self.push("AdvanceClock", actor(OPERATOR, "system"), json!({}));
        }
    }
}

impl Iterator for Workload {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if self.emitted >= self.spec.commands {
            return None;
        }
        if !self.setup_done {
            self.setup();
            for gov in [false, true] {
                self.candidates[usize::from(gov)] = (0..self.partners.len())
                    .filter(|i| {
                        let p = &self.partners[*i];
                        p.gov == gov && p.kind != "indirect_reseller"
                    })
                    .collect();
            }
            self.setup_done = true;
        }
        while self.queue.is_empty() {
            self.customer();
        }
        let mut v = self.queue.pop_front()?;
        self.t = self.t.plus_seconds(self.rng.random_range(1..20));
        if v["type"] == "AdvanceClock" {
            v["to"] = json!(self.t.to_string());
        } else {
            v["at"] = json!(self.t.to_string());
        }
        self.emitted += 1;
        Some(v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_lines_and_every_line_parses() {
        let spec = WorkloadSpec {
            commands: 2_000,
            ..WorkloadSpec::default()
        };
        let a: Vec<String> = generate(spec.clone()).collect();
        let b: Vec<String> = generate(spec).collect();
        assert_eq!(a, b);
        assert_eq!(a.len(), 2_000);
        for line in &a {
            crate::domain::parse_line(line).unwrap();
        }
        let other: Vec<String> = generate(WorkloadSpec {
            commands: 2_000,
            seed: 2,
            ..WorkloadSpec::default()
        })
        .collect();
        assert_ne!(a, other);
    }
}
