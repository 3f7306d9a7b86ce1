//! PostgreSQL for the tests: the library's throwaway server (`store::postgres::throwaway`: one per test binary, on a
//! free loopback port, stopped when the test process ends; without PostgreSQL installed the tests that need it fail,
//! naming what to install, and never skip), and the folders that stand for ledgers on it, so that the tests written
//! for data folders run on PostgreSQL too.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use partner_ledger::store::postgres::PgTarget;

pub use partner_ledger::store::postgres::throwaway::{
    fresh_schema, fresh_schema_on, server, Pg, RUNTIME_ROLE,
};

/// Where a test's ledger is, as the runtime role sees it.
pub fn runtime_target(schema: &str) -> PgTarget {
    PgTarget::parse(&server().url(RUNTIME_ROLE), schema).unwrap()
}

/// Each folder standing for a PostgreSQL ledger: the runtime role's URL and the schema.
fn folders() -> std::sync::MutexGuard<'static, HashMap<PathBuf, (String, String)>> {
    static MAP: OnceLock<Mutex<HashMap<PathBuf, (String, String)>>> = OnceLock::new();
    MAP.get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The schema standing for a test's data folder: the same folder always maps to the same schema, so a test that
/// reopens its "folder" reopens its ledger. From then on, the binary run on that folder (`common::run`,
/// `common::Server::launch`) runs on that schema.
pub fn schema_for(dir: &Path) -> String {
    if let Some((_, s)) = folders().get(dir) {
        return s.clone();
    }
    let schema = fresh_schema();
    register(dir, server(), &schema);
    schema
}

/// Makes `dir` stand for the ledger in `schema` at `url` (the runtime role's, perhaps naming several hosts).
pub fn register_url(dir: &Path, url: &str, schema: &str) {
    folders().insert(dir.to_path_buf(), (url.to_string(), schema.to_string()));
}

/// Makes `dir` stand for the ledger in `schema` on `pg`.
pub fn register(dir: &Path, pg: &Pg, schema: &str) {
    folders().insert(
        dir.to_path_buf(),
        (pg.url(RUNTIME_ROLE), schema.to_string()),
    );
}

/// Points `command` at the ledger standing for `dir`: its PostgreSQL schema when it has one, otherwise the folder
/// itself, whatever this process's environment says (a developer's `PARTNER_LEDGER_STORE` must not send the sled
/// tests into a real database).
pub fn point(command: &mut Command, dir: &Path) {
    match env_for(dir) {
        Some(env) => {
            command.envs(env);
        }
        None => {
            command
                .env_remove("PARTNER_LEDGER_STORE")
                .env_remove("PARTNER_LEDGER_PG_SCHEMA");
        }
    }
}

/// The environment that points the binary at the PostgreSQL ledger standing for `dir`, if one does.
pub fn env_for(dir: &Path) -> Option<Vec<(String, String)>> {
    let (url, schema) = folders().get(dir)?.clone();
    Some(vec![
        ("PARTNER_LEDGER_STORE".into(), url),
        ("PARTNER_LEDGER_PG_SCHEMA".into(), schema),
    ])
}

/// A folder for each backend: a plain one (sled), and one standing for a fresh PostgreSQL ledger.
pub fn ledger_folders() -> Vec<(&'static str, tempfile::TempDir)> {
    let sled = tempfile::tempdir().unwrap();
    let postgres = tempfile::tempdir().unwrap();
    schema_for(postgres.path());
    vec![("sled", sled), ("postgres", postgres)]
}

thread_local! {
    /// Whether [`folder`] gives PostgreSQL ledgers on this thread (inside [`on_both_backends`]).
    static ON_POSTGRES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A new folder for a ledger: a plain one, or inside [`on_both_backends`]'s PostgreSQL round one standing for a fresh
/// schema.
pub fn folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    if ON_POSTGRES.get() {
        schema_for(dir.path());
    }
    dir
}

/// A new folder standing for a fresh PostgreSQL ledger.
pub fn folder_on_postgres() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    schema_for(dir.path());
    dir
}

/// Whether [`folder`] gives PostgreSQL ledgers now (inside [`on_both_backends`]' second run).
pub fn on_postgres() -> bool {
    ON_POSTGRES.get()
}

/// Runs a test written against [`folder`]s twice: on sled, then on PostgreSQL.
pub fn on_both_backends(test: impl Fn()) {
    for postgres in [false, true] {
        ON_POSTGRES.set(postgres);
        let backend = if postgres { "postgres" } else { "sled" };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&test));
        ON_POSTGRES.set(false);
        if let Err(e) = outcome {
            eprintln!("the test failed on {backend}");
            std::panic::resume_unwind(e);
        }
    }
}

/// A ledger configuration for `dir`: its PostgreSQL schema when it stands for one (for tests that open the ledger in
/// process rather than through the binary).
pub fn config_for(dir: &Path) -> partner_ledger::ledger::LedgerConfig {
    let mut config = partner_ledger::ledger::LedgerConfig::new(dir);
    if let Some((url, schema)) = folders().get(dir).cloned() {
        config.store.postgres = Some(PgTarget::parse(&url, &schema).unwrap());
    }
    config
}
