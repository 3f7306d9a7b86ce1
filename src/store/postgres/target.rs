//! Where a ledger lives in PostgreSQL (`PgTarget`: the connection settings and the schema, shown without the
//! password), opening connections, and what a failed statement means (`pg_error`).

use postgres::Client;

use super::schema;
use crate::store::StoreError;

/// Where a ledger lives in PostgreSQL: a connection URL (or key=value string) and a schema. Displayed as host, port,
/// database and schema: never with the password.
#[derive(Clone)]
pub struct PgTarget {
    config: postgres::Config,
    /// The URL as given, for a child process of this one (through its environment, never its command line).
    url: String,
    /// Checked by [`PgTarget::parse`] (it is put into SQL text).
    schema: String,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgTarget({self})")
    }
}

impl std::fmt::Display for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .zip(
                self.config
                    .get_ports()
                    .iter()
                    .chain(std::iter::repeat(&5432)),
            )
            .map(|(h, p)| match h {
                postgres::config::Host::Tcp(h) => format!("{h}:{p}"),
                postgres::config::Host::Unix(path) => format!("{}:{p}", path.display()),
            })
            .collect();
        write!(
            f,
            "{} database {} schema {}",
            if hosts.is_empty() {
                "localhost:5432".to_string()
            } else {
                hosts.join(",")
            },
            self.config.get_dbname().unwrap_or("(default)"),
            self.schema
        )
    }
}

impl PgTarget {
    /// Parses a connection URL (`postgres://user@host:port/db`, or libpq's `key=value` form) and a schema name. The
    /// password may be in the URL, in `PGPASSWORD`, or in `PGPASSFILE` (or `~/.pgpass`), so that it need not appear on
    /// a command line.
    pub fn parse(url: &str, schema: &str) -> Result<PgTarget, String> {
        if !schema::valid_identifier(schema) {
            return Err(format!(
                "the schema name {schema:?} is not accepted: use lowercase letters, digits and _ (at most 63, not starting with a digit)"
            ));
        }
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| format!("the PostgreSQL URL does not parse: {e}"))?;
        if config.get_user().is_none() {
            if let Ok(user) = std::env::var("PGUSER") {
                config.user(&user);
            }
        }
        if config.get_password().is_none() {
            if let Some(p) = std::env::var("PGPASSWORD")
                .ok()
                .or_else(|| password_from_file(&config))
            {
                config.password(p);
            }
        }
        if config.get_hosts().is_empty() {
            config.host(&std::env::var("PGHOST").unwrap_or_else(|_| "localhost".into()));
        }
        config.application_name(&format!(
            "partner-ledger pid {} on {}",
            std::process::id(),
            hostname()
        ));
        // Keepalives on both sides: a session whose peer vanished (a network cut, a crashed host) ends within about
        // 25 s instead of the kernel's two hours, and with it the writer's lock.
        config.options(&format!(
            "-c search_path={schema} -c synchronous_commit=on -c tcp_keepalives_idle=10 \
             -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3"
        ));
        if config.get_connect_timeout().is_none() {
            // Per host: a URL naming several (a Patroni cluster) may set a shorter one, as the docs do.
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        config.keepalives(true);
        config.keepalives_idle(std::time::Duration::from_secs(10));
        config.keepalives_interval(std::time::Duration::from_secs(5));
        config.keepalives_retries(3);
        Ok(PgTarget {
            config,
            url: url.to_string(),
            schema: schema.to_string(),
        })
    }

    /// The schema the ledger lives in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The same database, another schema.
    pub fn with_schema(&self, schema: &str) -> Result<PgTarget, String> {
        PgTarget::parse(&self.url, schema)
    }

    /// The environment that points a child process (`partner-ledger serve`) at this ledger: the URL travels in the
    /// environment, never on a command line where `ps` shows it.
    pub fn child_env(&self) -> [(&'static str, String); 2] {
        [
            ("PARTNER_LEDGER_STORE", self.url.clone()),
            ("PARTNER_LEDGER_PG_SCHEMA", self.schema.clone()),
        ]
    }

    /// Drops this schema and everything in it: for the benchmark's own throwaway ledgers only.
    pub fn drop_schema(&self) -> Result<(), StoreError> {
        let mut client = self.connect()?;
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .map_err(|e| pg_error(self, "cannot drop a benchmark schema", &e))
    }

    /// Opens a connection.
    pub(crate) fn connect(&self) -> Result<Client, StoreError> {
        self.config
            .connect(postgres::NoTls)
            .map_err(|e| StoreError::Unreachable {
                place: self.to_string(),
                message: message_of(&e),
            })
    }

    /// Opens a connection whose COMMITs can be asked whether they waited for the synchronous standbys: a wait
    /// cancelled (by `pg_cancel_backend`, or a shutdown) still commits locally and answers success, with only a
    /// WARNING to tell.
    pub(crate) fn connect_watched(&self) -> Result<Watched, StoreError> {
        let cancelled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&cancelled);
        let mut config = self.config.clone();
        config.notice_callback(move |notice| {
            if is_cancelled_sync_wait(&notice) {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            tracing::info!(
                severity = notice.severity(),
                message = notice.message(),
                "notice from PostgreSQL"
            );
        });
        let client = config
            .connect(postgres::NoTls)
            .map_err(|e| StoreError::Unreachable {
                place: self.to_string(),
                message: message_of(&e),
            })?;
        Ok(Watched { client, cancelled })
    }
}

/// A connection that tells when a COMMIT's wait for the synchronous standbys was cancelled.
pub(crate) struct Watched {
    pub client: Client,
    cancelled: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Watched {
    /// Whether a wait for the synchronous standbys was cancelled since last asked (what committed meanwhile is
    /// visible on the primary but perhaps on no standby).
    pub fn wait_cancelled(&self) -> bool {
        self.cancelled
            .swap(false, std::sync::atomic::Ordering::SeqCst)
    }
}

/// Whether a notice says that a COMMIT stopped waiting for the synchronous standbys (`SyncRepWaitForLSN`'s
/// warnings, whose detail is "The transaction has already committed locally, but might not have been replicated").
fn is_cancelled_sync_wait(notice: &postgres::error::DbError) -> bool {
    let message = notice.message();
    message.contains("wait for synchronous replication")
        || notice
            .detail()
            .is_some_and(|d| d.contains("committed locally"))
}

/// The password `PGPASSFILE` (or `~/.pgpass`) holds for this host, port, database and user, as libpq reads it.
fn password_from_file(config: &postgres::Config) -> Option<String> {
    let path = std::env::var_os("PGPASSFILE")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".pgpass")))?;
    let text = std::fs::read_to_string(path).ok()?;
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "localhost".into(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let db = config.get_dbname().unwrap_or("").to_string();
    let user = config.get_user().unwrap_or("").to_string();
    text.lines()
        .filter_map(pgpass_fields)
        .find_map(|[h, p, d, u, pw]| {
            let matches = |pattern: &str, value: &str| pattern == "*" || pattern == value;
            (matches(&h, &host) && matches(&p, &port) && matches(&d, &db) && matches(&u, &user))
                .then_some(pw)
        })
}

/// One line of a password file as libpq reads it: `host:port:database:user:password`, a backslash taking the next
/// character as it is (`\:` a colon, `\\` a backslash), everything after the fourth separator the password; `None`
/// for a comment, a blank line or a line with fewer fields.
fn pgpass_fields(line: &str) -> Option<[String; 5]> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut()?.extend(chars.next()),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    fields.try_into().ok()
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "this host".into())
}

/// A PostgreSQL error's message without its "db error:" wrapping (and never a password: none is ever in one).
pub(crate) fn message_of(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut m = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                m = format!("{m}: {s}");
                source = s.source();
            }
            m
        }
    }
}

/// A store error for a failed statement: `Unreachable` when the connection itself is gone.
pub(crate) fn pg_error(target: &PgTarget, context: &str, e: &postgres::Error) -> StoreError {
    if e.code() == Some(&postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION) {
        // A write sent to a hot standby.
        return StoreError::ReadOnlyReplica {
            place: target.to_string(),
        };
    }
    if e.is_closed() || e.as_db_error().is_none() {
        return StoreError::Unreachable {
            place: target.to_string(),
            message: format!("{context}: {}", message_of(e)),
        };
    }
    StoreError::Postgres {
        place: target.to_string(),
        context: context.to_string(),
        message: message_of(e),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_password_file_line_is_read_as_libpq_reads_it() {
        let fields = |l: &str| super::pgpass_fields(l).map(|f| f.to_vec());
        assert_eq!(
            fields(r"127.0.0.1:5432:postgres:ledger:c0rrect\:horse\\battery:staple"),
            Some(vec![
                "127.0.0.1".into(),
                "5432".into(),
                "postgres".into(),
                "ledger".into(),
                r"c0rrect:horse\battery:staple".into()
            ])
        );
        assert_eq!(
            fields(r"db\:host:*:*:*:pw"),
            Some(vec![
                "db:host".into(),
                "*".into(),
                "*".into(),
                "*".into(),
                "pw".into()
            ])
        );
        assert_eq!(fields("# a comment"), None);
        assert_eq!(fields(""), None);
        assert_eq!(fields("host:5432:db:user"), None);
    }
}
