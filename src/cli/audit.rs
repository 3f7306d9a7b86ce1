//! Audit commands: history, diff, checkpoint, export and import.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::domain::{EntityRef, Event, Position, RefusalRecord};
use crate::query::{self, AsOfSpec, HistoryLine};
use crate::store::Store;

use super::render;

/// One line of a timeline: an event, or a refused command.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Line {
    Event(HistoryLine),
    Refused { refused: RefusalRecord },
}

/// `history customer|partner|subscription ID`.
pub fn history(
    store: &dyn Store,
    entity: EntityRef,
    json: bool,
    include_refusals: bool,
) -> anyhow::Result<ExitCode> {
    let mut lines: Vec<Line> = query::history(store, entity, Position(0), None)?
        .into_iter()
        .map(Line::Event)
        .collect();
    if include_refusals {
        lines.extend(
            store
                .refusals()
                .of(&entity)?
                .into_iter()
                .map(|r| Line::Refused { refused: r }),
        );
        // Events are already in log order; refusals slot in by business time, after events of the same instant.
        lines.sort_by_key(|l| match l {
            Line::Event(e) => (e.at, 0, e.position.0),
            Line::Refused { refused } => (refused.at, 1, 0),
        });
    }
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    if lines.is_empty() {
        eprintln!("no history for that id in this ledger");
        return Ok(ExitCode::from(3));
    }
    for line in &lines {
        let text = if json {
            serde_json::to_string(line)?
        } else {
            match line {
                Line::Event(e) => render::history_line(e),
                Line::Refused { refused } => render::refusal_line(refused),
            }
        };
        if !super::out(&mut w, text.as_bytes())? {
            break;
        }
    }
    w.flush().ok();
    Ok(ExitCode::SUCCESS)
}

/// `customer ID --diff FROM TO`: what changed for the customer after FROM up to and including TO.
pub fn diff(
    store: &dyn Store,
    id: crate::domain::CustomerId,
    from: AsOfSpec,
    to: AsOfSpec,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let from_pos = query::resolve(store, Some(from))?.position;
    let to_pos = query::resolve(store, Some(to))?.position;
    if to_pos < from_pos {
        anyhow::bail!("--diff FROM TO: TO ({to_pos}) is before FROM ({from_pos})");
    }
    let names = query::customer(store, id, Some(AsOfSpec::Position(to_pos)))?
        .map(|a| {
            a.view
                .partners
                .into_iter()
                .map(|p| (p.partner, p.name))
                .collect()
        })
        .unwrap_or_default();
    let lines = query::history(store, EntityRef::Customer(id), from_pos, Some(to_pos))?;
    println!(
        "{} change(s) to customer {id} after position {from_pos} up to {to_pos}",
        lines.len()
    );
    for l in &lines {
        if json {
            println!("{}", serde_json::to_string(l)?);
        } else {
            let event = Event::from_parts(&l.event_type, l.data.clone())?;
            println!(
                "{}  #{:<7} {:<24} {}",
                l.at,
                l.position,
                format!("{} {}", render::role(&l.actor), l.actor.user),
                render::describe(&event, &names)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `export`: a complete backup as NDJSON (`crate::backup`), or the events as CSV.
pub fn export(
    store: &dyn Store,
    from: Position,
    to: Option<Position>,
    csv: bool,
) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    if !csv {
        return match crate::backup::write(store, from, to, &mut w, |_| {}) {
            Ok(_) => Ok(ExitCode::SUCCESS),
            Err(crate::backup::BackupError::Io(e))
                if e.kind() == std::io::ErrorKind::BrokenPipe =>
            {
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Err(e.into()),
        };
    }
    super::out(
        &mut w,
        b"position,at,recorded_at,type,schema_version,command_id,correlation_id,actor_tenant,actor_user,actor_role,event_id,data,prev_hash,hash",
    )?;
    for item in store.read(from, to) {
        let stored = item?;
        let e = stored.envelope()?;
        let row = [
            e.position.to_string(),
            e.at.to_string(),
            e.recorded_at.to_string(),
            e.event_type.clone(),
            e.schema_version.to_string(),
            e.command_id.to_string(),
            e.correlation_id.map(|c| c.to_string()).unwrap_or_default(),
            e.actor.tenant.to_string(),
            e.actor.user.clone(),
            crate::domain::role_name(e.actor.role).to_string(),
            e.event_id.to_string(),
            serde_json::to_string(&e.data)?,
            e.prev_hash.clone(),
            e.hash.clone(),
        ];
        let line: Vec<String> = row.iter().map(|f| csv_field(f)).collect();
        if !super::out(&mut w, line.join(",").as_bytes())? {
            return Ok(ExitCode::SUCCESS);
        }
    }
    w.flush().ok();
    Ok(ExitCode::SUCCESS)
}

/// RFC 4180 quoting.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `import FILE`: restores a backup (or bare envelopes) into an empty ledger, identical chain, or writes nothing.
pub fn import(data: &Path, file: &str) -> anyhow::Result<ExitCode> {
    use crate::backup::BackupError;
    let path = Path::new(file);
    // Checked whole before anything is written (and before the data folder is created).
    let total = match crate::backup::check_file(path) {
        Ok(c) => c,
        Err(BackupError::Invalid {
            line,
            position,
            message,
        }) => {
            match position {
                Some(p) => println!(
                    "import refused at position {p} (line {line} of {file}): {message}; nothing was written"
                ),
                None => println!(
                    "import refused at line {line} of {file}: {message}; nothing was written"
                ),
            }
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot read {file}"))),
    };
    let bar = super::progress_bar(total.events, "importing");
    let restored = crate::backup::restore(data, path, |n| bar.set_position(n))
        .with_context(|| format!("restoring {file} into {}", crate::store::describe(data)))?;
    bar.finish_and_clear();
    // Build the read models for the restored log.
    crate::ledger::Ledger::open(crate::ledger::LedgerConfig::new(data))?.close();
    let c = restored.counts;
    if restored.was_backup {
        println!(
            "imported {} events, {} commands, {} refusals, {} consumers; head {}:{}",
            c.events,
            c.commands,
            c.refusals,
            c.consumers,
            restored.head.position,
            restored.head.hash
        );
    } else {
        println!(
            "imported {} events (bare envelopes: no journal fingerprints, refusals or consumers); head {}:{}",
            c.events, restored.head.position, restored.head.hash
        );
    }
    Ok(ExitCode::SUCCESS)
}
