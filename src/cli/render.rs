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

/// An id in a table: whole, so it can be copied into the next command.
fn id(id: &impl ToString) -> String {
    id.to_string()
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
            id(&p.partner),
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
                id(&a.admin_relationship),
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
            .unwrap_or_else(|| self::id(id))
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
            id(&sub.subscription),
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

/// The role of an actor, as its wire name.
pub fn role(actor: &crate::domain::Actor) -> &'static str {
    crate::domain::role_name(actor.role)
}

/// One line of a readable timeline.
pub fn history_line(e: &crate::query::HistoryLine) -> String {
    let mut data = e.data.clone();
    if let Some(m) = data.as_object_mut() {
        m.retain(|_, v| !v.is_null());
    }
    format!(
        "{}  #{:<7} {:<32} by {} {} (recorded {})  {}",
        e.at,
        e.position,
        e.event_type,
        role(&e.actor),
        e.actor.user,
        e.recorded_at,
        data
    )
}

/// One refused command in a readable timeline.
pub fn refusal_line(r: &crate::domain::RefusalRecord) -> String {
    format!(
        "{}  refused  {:<32} by {} {} (recorded {})  {}{}: {}",
        r.at,
        r.command_type,
        role(&r.actor),
        r.actor.user,
        r.recorded_at,
        r.code,
        r.rule
            .as_deref()
            .map(|x| format!(" ({x})"))
            .unwrap_or_default(),
        r.message
    )
}

/// What an event means for a customer, in words.
pub fn describe(
    event: &crate::domain::Event,
    names: &std::collections::HashMap<crate::domain::PartnerId, String>,
) -> String {
    use crate::domain::Event::*;
    let name =
        |p: &crate::domain::PartnerId| names.get(p).cloned().unwrap_or_else(|| p.to_string());
    match event {
        CustomerRegistered { company_name, .. } => format!("registered as {company_name}"),
        CustomerCreated {
            partner,
            company_name,
            ..
        } => format!("created by {} as {company_name}", name(partner)),
        CustomerUpdated {
            company_name,
            domain,
            ..
        } => format!(
            "reference data corrected{}{}",
            company_name
                .as_ref()
                .map(|n| format!(": company name {n}"))
                .unwrap_or_default(),
            domain
                .as_ref()
                .map(|d| format!(": domain {d}"))
                .unwrap_or_default()
        ),
        CustomerAgreementAccepted { .. } => "customer agreement accepted".into(),
        RelationshipRequested { partner, .. } => {
            format!("{} requested a relationship", name(partner))
        }
        RelationshipRequestWithdrawn { partner, .. } => {
            format!("{} withdrew its request", name(partner))
        }
        ResellerRelationshipEstablished {
            partner,
            delegated_admin,
            ..
        } => format!(
            "partner {} joined{}",
            name(partner),
            if *delegated_admin { " with DAP" } else { "" }
        ),
        ResellerRelationshipRemoved { partner, .. } => format!("partner {} removed", name(partner)),
        DelegatedAdminRemoved {
            partner,
            removed_by,
            ..
        } => format!("DAP of {} removed ({removed_by:?})", name(partner)),
        DelegatedAdminRequested {
            partner, name: n, ..
        } => format!("{} requested GDAP \"{n}\"", name(partner)),
        DelegatedAdminGranted {
            partner, ends_at, ..
        } => format!("GDAP of {} granted until {ends_at}", name(partner)),
        DelegatedAdminExtended {
            partner, ends_at, ..
        } => format!("GDAP of {} extended to {ends_at}", name(partner)),
        DelegatedAdminExpired {
            partner,
            expired_at,
            ..
        } => format!("GDAP of {} expired at {expired_at}", name(partner)),
        DelegatedAdminTerminated {
            partner,
            terminated_by,
            ..
        } => {
            format!("GDAP of {} terminated ({terminated_by:?})", name(partner))
        }
        DelegatedAdminRequestExpired { partner, .. } => {
            format!("GDAP request of {} expired unapproved", name(partner))
        }
        SubscriptionAdded {
            subscription,
            partner_of_record,
            offer,
            quantity,
            ..
        } => {
            format!(
                "subscription {subscription} added: {offer} × {quantity} through {}",
                name(partner_of_record)
            )
        }
        AzurePlanCreated {
            billing_partner, ..
        } => format!("Azure plan of {} created", name(billing_partner)),
        AzureSubscriptionAdded {
            subscription,
            partner_of_record,
            ..
        } => {
            format!(
                "Azure subscription {subscription} added through {}",
                name(partner_of_record)
            )
        }
        SubscriptionSuspended { subscription, .. } => {
            format!("subscription {subscription} suspended")
        }
        SubscriptionReactivated { subscription, .. } => {
            format!("subscription {subscription} reactivated")
        }
        SubscriptionCancelled { subscription, .. } => {
            format!("subscription {subscription} cancelled")
        }
        AzurePlanSuspended {
            billing_partner, ..
        } => format!("Azure plan of {} suspended", name(billing_partner)),
        AzurePlanReactivated {
            billing_partner, ..
        } => format!("Azure plan of {} reactivated", name(billing_partner)),
        other => other.type_name().to_string(),
    }
}

/// The partner view as a readable table.
pub fn partner_table(v: &crate::domain::view::PartnerView) -> String {
    let mut s = String::new();
    let markets: Vec<&str> = v.markets.iter().map(|c| c.as_str()).collect();
    let _ = writeln!(
        s,
        "{} ({})  program id {}  {:?}  {} cloud  {}  markets {}",
        v.name,
        v.partner,
        v.partner_id.as_str(),
        v.kind,
        v.cloud,
        v.country,
        markets.join(",")
    );
    let _ = writeln!(
        s,
        "as of position {} ({})\n\nCUSTOMERS",
        v.as_of.position, v.as_of.at
    );
    if v.customers.is_empty() {
        let _ = writeln!(s, "  (none)");
    }
    for c in &v.customers {
        let admin: Vec<String> = c
            .delegated_admin
            .admin_relationships
            .iter()
            .map(|a| format!("GDAP \"{}\" {}", a.name, a.status))
            .collect();
        let _ = writeln!(
            s,
            "  {:<28} {}  relationship {}  DAP {}  subscriptions {} active, {} suspended, {} cancelled  {}",
            c.company_name,
            id(&c.customer),
            c.relationship,
            if c.delegated_admin.dap { "yes" } else { "no" },
            c.subscriptions.active,
            c.subscriptions.suspended,
            c.subscriptions.cancelled,
            admin.join("; ")
        );
    }
    s
}
