//! Human-readable renderings for the terminal.

use std::fmt::Write;

use crate::domain::view::CustomerView;

/// A one-line summary of an outcome's JSON.
pub fn outcome_summary(json: &serde_json::Value) -> String {
    match json["outcome"].as_str() {
        Some("committed") => {
            let positions: Vec<String> = json["positions"]
                .as_array()
                .map(|a| a.iter().map(ToString::to_string).collect())
                .unwrap_or_default();
            if positions.is_empty() {
                "committed (no new event)".to_string()
            } else {
                format!("committed at position {}", positions.join(", "))
            }
        }
        Some("refused") => format!(
            "refused: {} ({})",
            json["code"].as_str().unwrap_or("?"),
            json["message"].as_str().unwrap_or("")
        ),
        _ => json.to_string(),
    }
}

fn short(id: &impl ToString) -> String {
    let s = id.to_string();
    format!("{}…", &s[..8.min(s.len())])
}

/// The customer view as a readable table.
pub fn customer_table(v: &CustomerView) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} ({})  {}  {}  {} cloud  customer agreement: {}",
        v.company_name,
        v.customer,
        v.domain,
        v.country,
        v.cloud,
        if v.agreement_accepted {
            "accepted"
        } else {
            "not accepted"
        }
    );
    let _ = writeln!(s, "as of position {} ({})", v.as_of.position, v.as_of.at);
    let _ = writeln!(s, "\nPARTNERS");
    if v.partners.is_empty() {
        let _ = writeln!(s, "  (none)");
    }
    for p in &v.partners {
        let since = p.since.map(|t| format!(" since {t}")).unwrap_or_default();
        let _ = writeln!(
            s,
            "  {:<24} {}  relationship {}{}  DAP {}",
            p.name,
            short(&p.partner),
            p.relationship,
            since,
            if p.delegated_admin.dap { "yes" } else { "no" }
        );
        for a in &p.delegated_admin.admin_relationships {
            let ends = a.ends_at.map(|t| format!(", ends {t}")).unwrap_or_default();
            let _ = writeln!(
                s,
                "      GDAP \"{}\" {}  {} role(s), {}{}{}",
                a.name,
                short(&a.admin_relationship),
                a.roles.len(),
                a.status,
                ends,
                if a.auto_extend { ", auto-extends" } else { "" }
            );
        }
    }
    let _ = writeln!(s, "\nSUBSCRIPTIONS");
    if v.subscriptions.is_empty() {
        let _ = writeln!(s, "  (none)");
    }
    let name_of = |id: &crate::domain::PartnerId| {
        v.partners
            .iter()
            .find(|p| p.partner == *id)
            .map(|p| p.name.clone())
            .unwrap_or_else(|| short(id))
    };
    for sub in &v.subscriptions {
        let what = match (&sub.offer, sub.quantity, &sub.friendly_name) {
            (Some(o), Some(q), _) => format!("{o} × {q}"),
            (_, _, Some(f)) => format!("Azure \"{f}\""),
            _ => sub.kind.to_string(),
        };
        let _ = writeln!(
            s,
            "  {}  {:<8} {:<28} partner of record {}, billed by {}  {}",
            short(&sub.subscription),
            sub.kind,
            what,
            name_of(&sub.partner_of_record),
            name_of(&sub.billing_partner),
            sub.status
        );
    }
    if !v.azure_plans.is_empty() {
        let _ = writeln!(s, "\nAZURE PLANS");
        for plan in &v.azure_plans {
            let _ = writeln!(
                s,
                "  billed by {:<24} {}",
                name_of(&plan.billing_partner),
                plan.status
            );
        }
    }
    s
}
