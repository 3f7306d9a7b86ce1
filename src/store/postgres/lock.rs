//! The writer's lock: one process appends to a ledger schema at a time, holding a session-level advisory lock on a
//! connection of its own.

use postgres::Client;

use super::{pg_error, PgTarget};
use crate::store::StoreError;

/// The advisory-lock key of a ledger schema: one writer per schema.
pub(super) fn lock_key(schema: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("partner-ledger writer {schema}").as_bytes());
    i64::from_be_bytes(d[..8].try_into().unwrap_or_default())
}

/// Whether a lock holder named `partner-ledger pid N on HOST` (its `application_name`) ran on this host under a pid
/// that no longer exists: its session outlived it.
fn holder_is_gone(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("partner-ledger pid ") else {
        return false;
    };
    let mut parts = rest.splitn(2, " on ");
    let (Some(pid), Some(host)) = (parts.next(), parts.next()) else {
        return false;
    };
    pid.parse::<u32>().is_ok()
        && host == super::target::hostname()
        && !std::path::Path::new("/proc").join(pid).exists()
}

/// Takes the ledger's writer lock on `client`'s session, or says who holds it. A holder that is this very process (a
/// store of it that is closing: the server ends a session a moment after its client let go) is waited out, for up to
/// five seconds, then ended; one that was a process of this host that no longer runs is ended at once.
pub(super) fn take_writer_lock(client: &mut Client, target: &PgTarget) -> Result<(), StoreError> {
    let key = lock_key(target.schema());
    let ours = format!("partner-ledger pid {} on ", std::process::id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .map_err(|e| pg_error(target, "cannot take the writer's lock", &e))?
            .get(0);
        if locked {
            return Ok(());
        }
        let holder = client
            .query_opt(
                "SELECT a.application_name, host(a.client_addr) FROM pg_locks l
                 JOIN pg_stat_activity a ON a.pid = l.pid
                 WHERE l.locktype = 'advisory' AND l.granted
                   AND ((l.classid::bigint << 32) | l.objid::bigint) = $1",
                &[&key],
            )
            .ok()
            .flatten()
            .map(|r| (r.get::<_, Option<String>>(0), r.get::<_, Option<String>>(1)));
        let name = holder
            .as_ref()
            .and_then(|h| h.0.clone())
            .unwrap_or_default();
        // A holder that is this very process is waited out for five seconds; one whose process on this host is gone
        // (killed: the server ends its session a moment later, or after the keepalives) is not waited for.
        let dead = holder_is_gone(&name);
        if name.starts_with(&ours) || dead {
            if !dead && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
                continue;
            }
            // A session of this very process whose connection was lost (a network blip), or of a process of this
            // host that no longer runs, which the server has not noticed yet: it is ended, so the lock is free again.
            let ended: bool = client
                .query_one(
                    "SELECT coalesce(bool_or(pg_terminate_backend(l.pid)), false) FROM pg_locks l
                     JOIN pg_stat_activity a ON a.pid = l.pid
                     WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = $2
                       AND ((l.classid::bigint << 32) | l.objid::bigint) = $1",
                    &[&key, &name],
                )
                .map_err(|e| pg_error(target, "cannot end a stale session", &e))?
                .get(0);
            if ended {
                tracing::warn!(holder = %name, "ended a stale session that still held the writer's lock");
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
        }
        let holder = match holder {
            Some((name, addr)) => format!(
                "{}{}",
                name.filter(|n| !n.is_empty())
                    .unwrap_or_else(|| "another session".into()),
                addr.map(|a| format!(" from {a}")).unwrap_or_default()
            ),
            None => "another process".into(),
        };
        return Err(StoreError::LockedAt {
            place: target.to_string(),
            holder,
        });
    }
}
