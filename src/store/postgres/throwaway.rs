//! A throwaway PostgreSQL, for tests and benchmarks: started from the installed programs (`PG_BIN`, or the newest
//! `/usr/lib/postgresql/*/bin`) on a free loopback port in a temporary folder, as the `postgres` user when this process
//! is root (PostgreSQL refuses to run as root), and stopped, its folder removed, once this process has ended. Every
//! ledger on it gets a schema of its own, created by `migrate_schema` as the owner (`postgres`) and used as the runtime
//! role [`RUNTIME_ROLE`], which may not UPDATE, DELETE or TRUNCATE the log.
//!
//! It panics, naming what is wrong (PostgreSQL not installed: the Debian package `postgresql`), rather than letting a
//! test skip: it is for tests and benchmarks, never for a ledger anyone keeps.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::{migrate_schema, PgTarget};

/// The runtime role the tests' ledgers run as.
pub const RUNTIME_ROLE: &str = "ledger_runtime";

pub struct Pg {
    pub port: u16,
    pub dir: PathBuf,
    pg_ctl: PathBuf,
    /// The shell that runs the server and stops it when this process ends (never waited for: it outlives the tests).
    _supervisor: std::process::Child,
}

/// The folder holding PostgreSQL's programs (`initdb`, `postgres`): `PG_BIN`, or the newest under
/// `/usr/lib/postgresql/*/bin`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("postgres").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres; set PG_BIN or install the Debian \
             package postgresql, as .ci/run does): the PostgreSQL tests cannot run"
        )
    })
}

/// A new folder for a server, owned by the `postgres` user when this process is root.
pub fn new_folder() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "partner-ledger-pg-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    if is_root() {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown of {} to postgres", dir.display());
    }
    dir
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether this process runs as root (PostgreSQL refuses to, so its programs run as the `postgres` user).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A command running `program` as the `postgres` user when this process is root.
pub fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Pg {
    /// Runs `pg_ctl -D <data> <args>` as the server's user, failing the caller with its output and the server's log.
    fn pg_ctl(&self, args: &[&str]) {
        let out = as_postgres(&self.pg_ctl)
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl {}: {}{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=32MB",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log");
        self.pg_ctl(&["-o", &options, "-l", &log.to_string_lossy(), "-w", "start"]);
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`).
    pub fn stop_immediately(&self) {
        self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
    }

    /// Promotes a standby to a primary (`pg_ctl promote`), waiting until it accepts writes.
    pub fn promote(&self) {
        self.pg_ctl(&["-w", "promote"]);
    }

    /// A server of the caller's own (one it may stop and start), with the runtime role created.
    pub fn own() -> Pg {
        Pg::start()
    }

    fn start() -> Pg {
        let bin = bin_dir();
        let dir = new_folder();
        let data = dir.join("data");
        let out = as_postgres(&bin.join("initdb"))
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = Pg::supervised(dir, &bin);
        pg.start_again();
        pg.wait_until_up();
        pg.sql(&format!("CREATE ROLE {RUNTIME_ROLE} LOGIN"))
            .unwrap();
        pg
    }

    /// A streaming replica of this server (`pg_basebackup -R`: a hot standby that follows it), started.
    pub fn replica(&self) -> Pg {
        let bin = bin_dir();
        let dir = new_folder();
        let out = as_postgres(&bin.join("pg_basebackup"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "-D",
            ])
            .arg(dir.join("data"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = Pg::supervised(dir, &bin);
        pg.start_again();
        pg.wait_until_up();
        // Streaming before it is handed out: the primary lists it in pg_stat_replication.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let mut c = postgres::Client::connect(&self.url("postgres"), postgres::NoTls).unwrap();
            let streaming: i64 = c
                .query_one(
                    "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
                    &[],
                )
                .unwrap()
                .get(0);
            if streaming > 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the replica on port {} did not stream from port {} within 30 s",
                pg.port,
                self.port
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        pg
    }

    /// Makes every COMMIT on this server wait for one standby to have flushed it (`synchronous_standby_names = '*'`),
    /// or no longer (`false`).
    pub fn set_synchronous(&self, on: bool) {
        let names = if on { "*" } else { "" };
        self.sql(&format!(
            "ALTER SYSTEM SET synchronous_standby_names = '{names}'"
        ))
        .unwrap();
        self.sql("SELECT pg_reload_conf()").unwrap();
    }

    /// A server whose folder `dir` holds (`data`, `log`), stopped and removed once this process has ended.
    fn supervised(dir: PathBuf, bin: &Path) -> Pg {
        let port = free_port();
        let pg_ctl = bin.join("pg_ctl");
        let data = dir.join("data");
        // A supervisor shell stops the server (and removes its folder) once this test process is gone.
        let script = format!(
            "trap '' INT TERM HUP; while [ -e /proc/{me} ]; do sleep 0.5; done; \
             {pg_ctl} -D {data} stop -m immediate >/dev/null 2>&1; rm -rf {dir}",
            pg_ctl = pg_ctl.display(),
            data = data.display(),
            dir = dir.display(),
            me = std::process::id(),
        );
        let mut supervisor = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c", &script]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &script]);
            c
        };
        // In a process group of its own, so that a Ctrl-C or a timeout that kills the tests' group leaves it to clean up.
        std::os::unix::process::CommandExt::process_group(&mut supervisor, 0);
        let supervisor = supervisor
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Pg {
            port,
            dir,
            pg_ctl,
            _supervisor: supervisor,
        }
    }

    /// Waits until the server accepts connections.
    fn wait_until_up(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match postgres::Client::connect(&self.url("postgres"), postgres::NoTls) {
                Ok(_) => return,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => panic!(
                    "the throwaway PostgreSQL did not start on port {}: {e}; its log: {}",
                    self.port,
                    std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
                ),
            }
        }
    }

    /// A URL for `user` (no password: the throwaway server trusts loopback).
    pub fn url(&self, user: &str) -> String {
        format!(
            "postgres://{user}@127.0.0.1:{}/postgres?connect_timeout=10",
            self.port
        )
    }

    /// Makes `user` log in over TCP with `password` only (scram-sha-256), as a deployment would; others keep trust.
    pub fn require_password(&self, user: &str, password: &str) {
        let literal = password.replace('\'', "''");
        self.sql(&format!("ALTER ROLE {user} PASSWORD '{literal}'"))
            .unwrap();
        let hba = self.dir.join("data/pg_hba.conf");
        let rest = std::fs::read_to_string(&hba).unwrap();
        std::fs::write(
            &hba,
            format!("host all {user} 127.0.0.1/32 scram-sha-256\n{rest}"),
        )
        .unwrap();
        self.sql("SELECT pg_reload_conf()").unwrap();
        // The reload is signalled, not awaited: wait until a connection without the password is refused.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while postgres::Client::connect(&self.url(user), postgres::NoTls).is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "pg_hba.conf was not reloaded"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Runs SQL as the superuser.
    pub fn sql(&self, sql: &str) -> Result<(), postgres::Error> {
        let mut c = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)?;
        c.batch_execute(sql)
    }
}

/// The throwaway server of this test binary.
pub fn server() -> &'static Pg {
    static SERVER: OnceLock<Pg> = OnceLock::new();
    SERVER.get_or_init(Pg::start)
}

/// A new, empty ledger schema on the shared server, migrated by the owner: its name.
pub fn fresh_schema() -> String {
    fresh_schema_on(server())
}

/// A new, empty ledger schema on `pg`, migrated by the owner: its name.
pub fn fresh_schema_on(pg: &Pg) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let schema = format!(
        "ledger_{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    let owner = PgTarget::parse(&pg.url("postgres"), &schema).unwrap();
    migrate_schema(&owner, Some(RUNTIME_ROLE)).unwrap();
    schema
}
