//! The PostgreSQL backend as operators meet it: the schema created and migrated by its owner, a runtime role that
//! cannot change the log, damage found by `verify`, clear refusals (unreachable, not a ledger, newer, held by another
//! writer), ledgers kept apart by schema, and a ledger moved between sled and PostgreSQL with an identical chain.
//! The fixtures, the store conformance suite and the kill -9 test run on both backends in their own files.

use crate::common::{fixtures, run, stdout_lines, BIN};
use crate::pg;

use std::process::{Command, Output};

/// Runs the binary on a PostgreSQL ledger (`url`, `schema`) without a data folder of its own.
fn on(url: &str, schema: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .env("PARTNER_LEDGER_STORE", url)
        .env("PARTNER_LEDGER_PG_SCHEMA", schema)
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn seed(data: &std::path::Path) {
    let seed = fixtures().join("seed-story/commands.ndjson");
    let out = run(data, &["exec", seed.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn migrate_schema_creates_a_ledger_the_runtime_role_can_append_to_but_never_change() {
    let server = pg::server();
    let schema = "migrated_by_cli";
    // The owner as docs/postgres.md sets it up: no superuser, allowed to create schemas in the database.
    server
        .sql(
            "CREATE ROLE ledger_owner LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB; \
             GRANT CREATE ON DATABASE postgres TO ledger_owner",
        )
        .unwrap();
    let owner = server.url("ledger_owner");
    let runtime = server.url(pg::RUNTIME_ROLE);

    // Before the owner created it, the runtime role finds no ledger and is told how to create one; nothing is written.
    let none = on(&runtime, schema, &["verify"]);
    assert_eq!(none.status.code(), Some(3), "{}", text(&none));
    assert!(text(&none).contains("migrate-schema"), "{}", text(&none));

    let created = on(
        &owner,
        schema,
        &["migrate-schema", "--runtime-role", pg::RUNTIME_ROLE],
    );
    assert!(created.status.success(), "{}", text(&created));
    assert!(text(&created).contains("created the ledger schema"));
    let again = on(
        &owner,
        schema,
        &["migrate-schema", "--runtime-role", pg::RUNTIME_ROLE],
    );
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("at version 3 already"),
        "{}",
        text(&again)
    );

    let seed_file = fixtures().join("seed-story/commands.ndjson");
    let exec = on(&runtime, schema, &["exec", seed_file.to_str().unwrap()]);
    assert!(exec.status.success(), "{}", text(&exec));
    let verify = on(&runtime, schema, &["verify"]);
    assert!(verify.status.success(), "{}", text(&verify));

    // The runtime role may not change or remove what it appended; triggers refuse even the owner.
    let mut as_runtime = postgres::Client::connect(&runtime, postgres::NoTls).unwrap();
    for sql in [
        "UPDATE migrated_by_cli.events SET envelope = envelope WHERE position = 1",
        "DELETE FROM migrated_by_cli.events WHERE position = 1",
        "TRUNCATE migrated_by_cli.events",
        "DELETE FROM migrated_by_cli.commands",
        "UPDATE migrated_by_cli.refusals SET record = record",
    ] {
        let e = as_runtime.batch_execute(sql).unwrap_err();
        assert!(
            e.to_string().contains("permission denied")
                || e.as_db_error()
                    .is_some_and(|d| d.message().contains("permission denied")),
            "{sql}: {e:?}"
        );
    }
    let mut as_owner = postgres::Client::connect(&owner, postgres::NoTls).unwrap();
    for sql in [
        "DELETE FROM migrated_by_cli.events WHERE position = 1",
        "UPDATE migrated_by_cli.events SET envelope = envelope",
        "TRUNCATE migrated_by_cli.events",
    ] {
        for e in [
            as_owner.batch_execute(sql).unwrap_err(),
            server.sql(sql).unwrap_err(),
        ] {
            let message = e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_default();
            assert!(message.contains("append-only"), "{sql}: {e:?}");
        }
    }
    let verify = on(&runtime, schema, &["verify"]);
    assert!(verify.status.success(), "{}", text(&verify));
}

#[test]
fn an_event_altered_by_a_superuser_is_found_by_verify() {
    let data = tempfile::tempdir().unwrap();
    let schema = pg::schema_for(data.path());
    seed(data.path());
    // A superuser can get around the triggers (replication role): the chain still tells.
    server_sql(&format!(
        "SET session_replication_role = replica; \
         UPDATE {schema}.events SET envelope = replace(envelope, 'Contoso Ltd', 'Contoso Inc') WHERE position = 3"
    ));
    let verify = run(data.path(), &["verify"], None);
    assert_eq!(verify.status.code(), Some(1), "{}", text(&verify));
    assert!(text(&verify).contains("position 3"), "{}", text(&verify));
    // So does a removed event (the head row records more than the log holds).
    server_sql(&format!(
        "SET session_replication_role = replica; \
         UPDATE {schema}.events SET envelope = replace(envelope, 'Contoso Inc', 'Contoso Ltd') WHERE position = 3; \
         DELETE FROM {schema}.events WHERE position = (SELECT max(position) FROM {schema}.events)"
    ));
    let verify = run(data.path(), &["verify"], None);
    assert_eq!(verify.status.code(), Some(1), "{}", text(&verify));
    assert!(
        text(&verify).contains("removed or lost"),
        "{}",
        text(&verify)
    );
}

fn server_sql(sql: &str) {
    pg::server()
        .sql(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
}

#[test]
fn an_unreachable_database_exits_6_naming_host_and_port_and_never_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://ledger:hunter2secret@127.0.0.1:{port}/postgres");
    let out = on(&url, "partner_ledger", &["verify"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains(&format!("127.0.0.1:{port}")), "{t}");
    assert!(
        !t.contains("hunter2secret"),
        "the password is never printed: {t}"
    );
    // Nor in --help, whatever the environment holds.
    let help = Command::new(BIN)
        .env("PARTNER_LEDGER_STORE", &url)
        .arg("--help")
        .output()
        .unwrap();
    assert!(!text(&help).contains("hunter2secret"), "{}", text(&help));
}

#[test]
fn a_schema_that_is_not_a_ledger_or_is_newer_is_refused_with_nothing_written() {
    let server = pg::server();
    let runtime = server.url(pg::RUNTIME_ROLE);
    server_sql(
        "CREATE SCHEMA not_a_ledger; CREATE TABLE not_a_ledger.orders (id int); \
         GRANT USAGE ON SCHEMA not_a_ledger TO ledger_runtime",
    );
    let out = on(&runtime, "not_a_ledger", &["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("not a partner-ledger schema"),
        "{}",
        text(&out)
    );
    let migrate = on(&server.url("postgres"), "not_a_ledger", &["migrate-schema"]);
    assert_eq!(migrate.status.code(), Some(1), "{}", text(&migrate));

    let data = tempfile::tempdir().unwrap();
    let schema = pg::schema_for(data.path());
    seed(data.path());
    let events_before = stdout_lines(&run(data.path(), &["events"], None)).len();
    assert!(events_before > 0);
    server_sql(&format!(
        "UPDATE {schema}.meta SET value = '99' WHERE key = 'schema_version'"
    ));
    let out = run(data.path(), &["exec", "-"], Some(b""));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("version 99"), "{}", text(&out));
    let migrate = on(&server.url("postgres"), &schema, &["migrate-schema"]);
    assert_eq!(
        migrate.status.code(),
        Some(1),
        "a newer schema is not touched: {}",
        text(&migrate)
    );
    server_sql(&format!(
        "UPDATE {schema}.meta SET value = '3' WHERE key = 'schema_version'"
    ));
    assert_eq!(
        stdout_lines(&run(data.path(), &["events"], None)).len(),
        events_before,
        "nothing was written"
    );
}

#[test]
fn two_ledgers_in_one_database_are_kept_apart_and_one_writer_at_a_time_is_named() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    pg::schema_for(a.path());
    pg::schema_for(b.path());
    seed(a.path());
    assert!(stdout_lines(&run(b.path(), &["events"], None)).is_empty());
    assert!(!stdout_lines(&run(a.path(), &["events"], None)).is_empty());

    // A server holds ledger a: a second writer is refused with exit 4, naming the holder's process.
    let mut server = crate::common::Server::launch(a.path(), &[], None).unwrap();
    let out = run(a.path(), &["exec", "-"], Some(b""));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("pid {}", server.pid())),
        "{}",
        text(&out)
    );
    // Ledger b is not held.
    let other = run(b.path(), &["verify"], None);
    assert!(other.status.success(), "{}", text(&other));
    server.kill().unwrap();
}

#[test]
fn a_ledger_moves_from_sled_to_postgres_and_back_with_an_identical_chain() {
    let sled = tempfile::tempdir().unwrap();
    for fixture in ["seed-story", "gdap-lifecycle"] {
        let file = fixtures().join(fixture).join("commands.ndjson");
        assert!(run(sled.path(), &["exec", file.to_str().unwrap()], None)
            .status
            .success());
    }
    let checkpoint = String::from_utf8(run(sled.path(), &["checkpoint"], None).stdout).unwrap();
    let checkpoint = checkpoint.trim().to_string();
    let backup = tempfile::NamedTempFile::new().unwrap();
    let export = run(sled.path(), &["export"], None);
    assert!(export.status.success());
    std::fs::write(backup.path(), &export.stdout).unwrap();

    let pg_ledger = tempfile::tempdir().unwrap();
    pg::schema_for(pg_ledger.path());
    let import = run(
        pg_ledger.path(),
        &["import", backup.path().to_str().unwrap()],
        None,
    );
    assert!(import.status.success(), "{}", text(&import));
    let against = run(
        pg_ledger.path(),
        &["verify", "--against", &checkpoint],
        None,
    );
    assert!(against.status.success(), "{}", text(&against));
    assert_eq!(
        run(pg_ledger.path(), &["export"], None).stdout,
        export.stdout,
        "the same backup, byte for byte"
    );

    // And back into a new folder.
    let back = tempfile::tempdir().unwrap();
    let again = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        again.path(),
        run(pg_ledger.path(), &["export"], None).stdout,
    )
    .unwrap();
    let import = run(
        back.path(),
        &["import", again.path().to_str().unwrap()],
        None,
    );
    assert!(import.status.success(), "{}", text(&import));
    let against = run(back.path(), &["verify", "--against", &checkpoint], None);
    assert!(against.status.success(), "{}", text(&against));

    // A re-submitted command is a duplicate with its original positions on the copy, as on the original.
    let seed_file = fixtures().join("seed-story/commands.ndjson");
    let original = stdout_lines(&run(
        sled.path(),
        &["exec", seed_file.to_str().unwrap()],
        None,
    ));
    let copy = stdout_lines(&run(
        pg_ledger.path(),
        &["exec", seed_file.to_str().unwrap()],
        None,
    ));
    assert_eq!(original, copy);
    assert!(
        copy.iter()
            .all(|o| o["duplicate"] == true || o["outcome"] != "committed"),
        "{copy:?}"
    );
}

const OP: &str =
    r#"{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"ops","role":"operator"}"#;

fn register_customer(writer: usize, n: usize) -> (String, String) {
    let id = format!("{writer:08x}-0000-4000-8000-{n:012x}");
    let customer = format!("c{writer:07x}-0000-4000-8000-{n:012x}");
    let line = format!(
        r#"{{"type":"RegisterCustomer","command_id":"{id}","actor":{OP},"customer":"{customer}","company_name":"Customer {writer}-{n}","domain":"c{writer}x{n}.onmicrosoft.com","country":"NL","cloud":"public"}}"#
    );
    (id, line)
}

#[test]
fn the_database_gone_mid_run_answers_unknown_and_writing_resumes_by_itself_exactly_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    const WRITERS: usize = 4;
    const EACH: usize = 250;
    let pg = pg::Pg::own();
    let schema = pg::fresh_schema_on(&pg);
    let data = tempfile::tempdir().unwrap();
    pg::register(data.path(), &pg, &schema);
    let stderr = data.path().with_extension("stderr");
    let server = crate::common::Server::launch(data.path(), &[], Some(&stderr)).unwrap();
    let url = server.url();
    // Where the writers send their commands.
    let current = Arc::new(std::sync::Mutex::new(url.clone()));
    let committed = Arc::new(AtomicUsize::new(0));
    let unknown = Arc::new(AtomicUsize::new(0));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (client, current, committed, unknown) = (
                client.clone(),
                Arc::clone(&current),
                Arc::clone(&committed),
                Arc::clone(&unknown),
            );
            rt.spawn(async move {
                let mut acked = Vec::new();
                for n in 0..EACH {
                    let (id, line) = register_customer(w, n);
                    // Retried with the same command_id until it is answered committed (or a duplicate of it).
                    loop {
                        let url = current.lock().unwrap().clone();
                        let answer = client
                            .post(format!("{url}/v1/commands"))
                            .header("content-type", "application/x-ndjson")
                            .body(format!("{line}\n"))
                            .send()
                            .await;
                        let text = match answer {
                            Ok(r) => r.text().await.unwrap_or_default(),
                            Err(_) => String::new(),
                        };
                        let o: serde_json::Value =
                            serde_json::from_str(text.lines().next().unwrap_or("{}"))
                                .unwrap_or_default();
                        if o["outcome"] == "committed" {
                            committed.fetch_add(1, Ordering::SeqCst);
                            acked.push((id.clone(), o["positions"].clone()));
                            break;
                        }
                        assert!(
                            o["outcome"] == "unknown" || o.get("outcome").is_none(),
                            "only unknown while the database is away: {text}"
                        );
                        unknown.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
                acked
            })
        })
        .collect();
    while committed.load(Ordering::SeqCst) < 200 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    pg.stop_immediately();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let health = rt.block_on(async {
        let r = client.get(format!("{url}/healthz")).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    assert_eq!(health.0, 503, "{}", health.1);
    assert!(health.1.contains("\"unavailable\""), "{}", health.1);
    // A read that needs the database answers 503 in the one error shape, saying to retry.
    let read = rt.block_on(async {
        let r = client
            .get(format!("{url}/v1/consumers"))
            .send()
            .await
            .unwrap();
        let retry = r.headers().get("retry-after").is_some();
        (
            r.status().as_u16(),
            retry,
            r.json::<serde_json::Value>().await.unwrap(),
        )
    });
    assert_eq!((read.0, read.1), (503, true), "{}", read.2);
    assert_eq!(read.2["error"], "storage_unavailable", "{}", read.2);
    let history = rt.block_on(async {
        let customer = "c0000000-0000-4000-8000-000000000000";
        let r = client
            .get(format!("{url}/v1/customers/{customer}/history"))
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap(),
        )
    });
    assert_eq!(
        history.0, 503,
        "a history read needs the database: {}",
        history.1
    );
    assert_eq!(history.1["error"], "storage_unavailable", "{}", history.1);
    let during = committed.load(Ordering::SeqCst);
    // Longer than the writer looks into a lost COMMIT (5 s), so commands are answered unknown meanwhile.
    std::thread::sleep(std::time::Duration::from_millis(5500));
    assert_eq!(
        committed.load(Ordering::SeqCst),
        during,
        "nothing commits while the database is away"
    );
    // A refusal is answered only once the database confirms that no other process wrote since the state it was
    // decided on: while the database is away, it is `unknown`; retried once it is back, it is refused and filed.
    let refused_id = "0ffff000-0000-4000-8000-000000000001";
    let refusal_line = register_customer(0, 0)
        .1
        .replace(&register_customer(0, 0).0, refused_id);
    let send_refusal = || {
        rt.block_on(async {
            let r = client
                .post(format!("{url}/v1/commands"))
                .header("content-type", "application/x-ndjson")
                .body(format!("{refusal_line}\n"))
                .send()
                .await
                .unwrap();
            r.text().await.unwrap()
        })
    };
    let refusal = send_refusal();
    assert!(refusal.contains("\"unknown\""), "{refusal}");
    // The same command alone as JSON: 503, outcome unknown.
    let single = rt.block_on(async {
        let r = client
            .post(format!("{url}/v1/commands"))
            .header("content-type", "application/json")
            .body(refusal_line.clone())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    assert_eq!(single.0, 503, "{}", single.1);
    assert!(single.1.contains("\"unknown\""), "{}", single.1);
    pg.start_again();
    // Writing resumes by itself, even after a COMMIT whose answer was lost when the database stopped and which
    // turned out written once it was back: the server then stops writing, rebuilds its writing state from the log
    // and takes the writer's lease again, without a restart.
    let mut last = (committed.load(Ordering::SeqCst), std::time::Instant::now());
    while !writers.iter().all(|w| w.is_finished()) {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let now = committed.load(Ordering::SeqCst);
        if now != last.0 {
            last = (now, std::time::Instant::now());
        } else {
            assert!(
                last.1.elapsed() < std::time::Duration::from_secs(20),
                "writing did not resume by itself"
            );
        }
    }
    let refusal = send_refusal();
    assert!(refusal.contains("\"refused\""), "{refusal}");
    let acked: Vec<(String, serde_json::Value)> = rt.block_on(async {
        let mut all = Vec::new();
        for w in writers {
            all.extend(w.await.unwrap());
        }
        all
    });
    assert_eq!(acked.len(), WRITERS * EACH);
    assert!(
        unknown.load(Ordering::SeqCst) > 0,
        "some commands were answered unknown"
    );
    let health = rt.block_on(async {
        client
            .get(format!("{url}/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(health, 200, "the server says it is back");
    server.stop().unwrap();

    let events = stdout_lines(&run(data.path(), &["events"], None));
    let positions: Vec<u64> = events
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, (1..=positions.len() as u64).collect::<Vec<_>>());
    let mut per_command = std::collections::HashMap::new();
    for e in &events {
        *per_command
            .entry(e["command_id"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    for (id, answered) in &acked {
        assert_eq!(per_command.get(id), Some(&1), "{id} committed exactly once");
        let at = answered[0].as_u64().unwrap();
        assert_eq!(
            events[usize::try_from(at - 1).unwrap()]["command_id"],
            id.as_str()
        );
    }
    let verify = run(data.path(), &["verify"], None);
    assert!(verify.status.success(), "{}", text(&verify));
    // The read models missed nothing: the documents the projector could not write during the outage were written
    // once the database was back, before their checkpoint moved past them.
    let mut sql = postgres::Client::connect(&pg.url("postgres"), postgres::NoTls).unwrap();
    let documents: i64 = sql
        .query_one(
            &format!("SELECT count(*) FROM {schema}.customer_documents"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(documents, i64::try_from(WRITERS * EACH).unwrap());
    let filed: i64 = sql
        .query_one(
            &format!("SELECT count(*) FROM {schema}.refusals WHERE record LIKE '%{refused_id}%'"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(filed, 1, "the refusal is in the audit trail, once");
}

/// The SQL queries docs/postgres.md documents, by the name on their first line (`-- name: …`).
fn documented_queries() -> std::collections::HashMap<String, String> {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/postgres.md"),
    )
    .unwrap();
    let mut out = std::collections::HashMap::new();
    for block in doc.split("```sql\n").skip(1) {
        let sql = block.split("```").next().unwrap();
        let name = sql
            .strip_prefix("-- ")
            .and_then(|l| l.split(':').next())
            .unwrap_or_else(|| panic!("a documented query starts with `-- name:`: {sql}"));
        out.insert(name.to_string(), sql.to_string());
    }
    out
}

/// Runs a documented query with its parameters (test values: ids and instants) as rows of JSON.
fn sql_rows(
    sql: &mut postgres::Client,
    schema: &str,
    query: &str,
    params: &[&str],
) -> Vec<serde_json::Value> {
    let mut q = query.trim().trim_end_matches(';').to_string();
    for (i, p) in params.iter().enumerate().rev() {
        q = q.replace(&format!("${}", i + 1), &format!("'{p}'"));
    }
    sql.batch_execute(&format!("SET search_path = {schema}; SET TIME ZONE 'UTC'"))
        .unwrap();
    sql.query(&format!("SELECT row_to_json(q)::text FROM ({q}) q"), &[])
        .unwrap_or_else(|e| panic!("{q}: {e:?}"))
        .into_iter()
        .map(|r| serde_json::from_str(&r.get::<_, String>(0)).unwrap())
        .collect()
}

/// An instant as seconds, whichever way it was written (`Z` or `+00:00`).
fn instant(v: &serde_json::Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_default())
        .map(|t| t.timestamp())
        .unwrap_or_else(|e| panic!("{v}: {e}"))
}

#[test]
fn the_documented_sql_queries_answer_what_the_views_answer() {
    let queries = documented_queries();
    assert!(queries.len() >= 5, "{:?}", queries.keys());
    let data = tempfile::tempdir().unwrap();
    let schema = pg::schema_for(data.path());
    let workload = data.path().with_extension("ndjson");
    let generated = Command::new(BIN)
        .args(["generate", "--commands", "4000", "--seed", "11"])
        .output()
        .unwrap();
    std::fs::write(&workload, &generated.stdout).unwrap();
    let exec = run(data.path(), &["exec", workload.to_str().unwrap()], None);
    assert!(exec.status.success(), "{}", text(&exec));
    // Read as a reporting role granted as docs/postgres.md says, neither the owner nor the runtime role.
    pg::server()
        .sql(&format!(
            "CREATE ROLE ledger_reporting LOGIN; \
             GRANT USAGE ON SCHEMA {schema} TO ledger_reporting; \
             GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO ledger_reporting"
        ))
        .unwrap();
    let mut sql =
        postgres::Client::connect(&pg::server().url("ledger_reporting"), postgres::NoTls).unwrap();

    // The expiring view comes from the CLI (the HTTP API has none): every active GDAP relationship ending in the 60
    // days after the ledger's latest business time.
    let latest = stdout_lines(&run(data.path(), &["events"], None))
        .last()
        .unwrap()["at"]
        .clone();
    let from = latest.as_str().unwrap().to_string();
    let until = chrono::DateTime::parse_from_rfc3339(&from).unwrap() + chrono::Duration::days(60);
    let until = until.to_rfc3339();
    let cli = stdout_lines(&run(
        data.path(),
        &["expiring", "--days", "60", "--at", &from, "--json"],
        None,
    ));
    let sql_expiring = sql_rows(
        &mut sql,
        &schema,
        &queries["gdap-ending-soon"],
        &[&from, &until],
    );
    let key = |v: &serde_json::Value| {
        (
            v["admin_relationship"].as_str().unwrap().to_string(),
            instant(&v["ends_at"]),
        )
    };
    assert_eq!(
        sql_expiring.iter().map(key).collect::<Vec<_>>(),
        cli.iter().map(key).collect::<Vec<_>>(),
        "gdap-ending-soon"
    );
    assert!(
        !cli.is_empty(),
        "the workload has GDAP relationships ending in the window"
    );

    // The views as the CLI answers them (`customer --json`, `partner --json`: the same query layer as the HTTP API). A
    // server would first advance the business clock to today's date, expiring every GDAP relationship of the 2024
    // workload before the comparison.
    let get = |args: &[&str]| -> serde_json::Value {
        let out = run(data.path(), args, None);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let customers = sql_rows(
        &mut sql,
        &schema,
        "SELECT customer FROM customers ORDER BY customer LIMIT 40",
        &[],
    );
    assert_eq!(customers.len(), 40);
    let mut compared = [0usize; 2];
    for c in &customers {
        let id = c["customer"].as_str().unwrap();
        let view = get(&["customer", id, "--json"]);
        let from_sql: Vec<_> = sql_rows(&mut sql, &schema, &queries["partners-of-customer"], &[id])
            .iter()
            .map(|r| {
                (
                    r["partner"].clone(),
                    r["name"].clone(),
                    r["status"].clone(),
                    instant(&r["since"]),
                    r["dap"].clone(),
                )
            })
            .collect();
        // The view also names partners without a relationship (`"relationship": "none"`, a request still pending,
        // say); the SQL view holds relationships.
        let mut from_api: Vec<_> = view["partners"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["relationship"] != "none")
            .map(|p| {
                (
                    p["partner"].clone(),
                    p["name"].clone(),
                    p["relationship"].clone(),
                    instant(&p["since"]),
                    p["delegated_admin"]["dap"].clone(),
                )
            })
            .collect();
        from_api.sort_by_key(|t| (t.3, t.0.to_string()));
        assert_eq!(from_sql, from_api, "partners-of-customer {id}");
        compared[0] += from_sql.len();

        let licences = sql_rows(&mut sql, &schema, &queries["licences-of-customer"], &[id]);
        let pick = |s: &serde_json::Value| {
            [
                "subscription",
                "offer",
                "quantity",
                "status",
                "partner_of_record",
                "billing_partner",
            ]
            .map(|k| s[k].clone())
        };
        let mut api_licences: Vec<_> = view["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["kind"] == "licence")
            .map(pick)
            .collect();
        api_licences.sort_by_key(|s| s[0].to_string());
        assert_eq!(
            licences.iter().map(pick).collect::<Vec<_>>(),
            api_licences,
            "licences-of-customer {id}"
        );
        compared[1] += licences.len();
    }
    assert!(
        compared.iter().all(|n| *n > 0),
        "the sample holds relationships and licences: {compared:?}"
    );

    let partners = sql_rows(
        &mut sql,
        &schema,
        "SELECT partner FROM partners ORDER BY partner LIMIT 15",
        &[],
    );
    let mut gdap_customers = 0;
    for p in &partners {
        let id = p["partner"].as_str().unwrap();
        let view = get(&["partner", id, "--json"]);
        let served: Vec<_> = view["customers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["relationship"] == "active")
            .collect();
        let mut api: Vec<_> = served.iter().map(|c| c["customer"].clone()).collect();
        api.sort_by_key(|v| v.to_string());
        let rows = sql_rows(&mut sql, &schema, &queries["customers-of-partner"], &[id]);
        assert_eq!(
            rows.iter()
                .map(|r| r["customer"].clone())
                .collect::<Vec<_>>(),
            api,
            "customers-of-partner {id}"
        );
        let mut api_ending: Vec<_> = served
            .iter()
            .filter(|c| {
                c["delegated_admin"]["admin_relationships"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|a| {
                        a["status"] == "active"
                            && instant(&a["ends_at"]) < instant(&serde_json::json!(until))
                    })
            })
            .map(|c| c["customer"].clone())
            .collect();
        api_ending.sort_by_key(|v| v.to_string());
        let rows = sql_rows(
            &mut sql,
            &schema,
            &queries["partner-gdap-customers-ending"],
            &[id, &until],
        );
        assert_eq!(
            rows.iter()
                .map(|r| r["customer"].clone())
                .collect::<Vec<_>>(),
            api_ending,
            "partner-gdap-customers-ending {id}"
        );
        gdap_customers += rows.len();
    }
    assert!(
        gdap_customers > 0,
        "the sample's partners have GDAP relationships ending in the window"
    );
}

#[test]
fn an_older_schema_asks_for_migrate_schema_and_the_owner_brings_it_up_to_date() {
    let data = tempfile::tempdir().unwrap();
    let schema = pg::schema_for(data.path());
    seed(data.path());
    // What version 1 was: the tables without the views (version 2) and the writer's lease (version 3).
    server_sql(&format!(
        "DROP VIEW {schema}.customers, {schema}.partners, {schema}.customer_partners, \
         {schema}.admin_relationships, {schema}.subscriptions; DROP TABLE {schema}.lease; \
         UPDATE {schema}.meta SET value = '1' WHERE key = 'schema_version'"
    ));
    let refused = run(data.path(), &["verify"], None);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("migrate-schema"),
        "{}",
        text(&refused)
    );
    let owner = pg::server().url("postgres");
    let migrated = on(
        &owner,
        &schema,
        &["migrate-schema", "--runtime-role", pg::RUNTIME_ROLE],
    );
    assert!(migrated.status.success(), "{}", text(&migrated));
    assert!(
        text(&migrated).contains("from version 1 to 3"),
        "{}",
        text(&migrated)
    );
    let verify = run(data.path(), &["verify"], None);
    assert!(verify.status.success(), "{}", text(&verify));
    let mut as_runtime =
        postgres::Client::connect(&pg::server().url(pg::RUNTIME_ROLE), postgres::NoTls).unwrap();
    let n: i64 = as_runtime
        .query_one(
            &format!("SELECT count(*) FROM {schema}.customer_partners"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        n, 2,
        "Contoso's two partners, through the view version 2 added"
    );
}

/// A password kept off the command line: from `PGPASSFILE` (libpq's format, `\:` and `\\` escaped) or `PGPASSWORD`,
/// it opens the ledger; a wrong or missing one is refused naming the server, never the password; and nothing a running
/// server says (its log at debug level, `/healthz`, `/metrics`, `/`, an error) contains it.
#[test]
fn a_password_from_pgpassfile_or_the_environment_opens_the_ledger_and_is_never_shown() {
    use std::os::unix::fs::PermissionsExt;
    const PASSWORD: &str = r"c0rrect:horse\battery";
    let shown = |t: &str| t.contains("c0rrect") || t.contains("battery");
    let pg = pg::Pg::own();
    let schema = pg::fresh_schema_on(&pg);
    pg.require_password(pg::RUNTIME_ROLE, PASSWORD);
    let url = pg.url(pg::RUNTIME_ROLE);
    let dir = tempfile::tempdir().unwrap();
    let pgpass = dir.path().join("pgpass");
    let escaped = PASSWORD.replace('\\', r"\\").replace(':', r"\:");
    std::fs::write(
        &pgpass,
        format!(
            "# the ledger's runtime role\n*:*:otherdb:*:not-this-one\n127.0.0.1:{}:postgres:{}:{escaped}\n",
            pg.port,
            pg::RUNTIME_ROLE
        ),
    )
    .unwrap();
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let missing = dir.path().join("no-such-pgpass");
    let with = |pgpassfile: &std::path::Path, password: Option<&str>| {
        let mut c = Command::new(BIN);
        c.env("PARTNER_LEDGER_STORE", &url)
            .env("PARTNER_LEDGER_PG_SCHEMA", &schema)
            .env("PGPASSFILE", pgpassfile)
            .env_remove("PGPASSWORD");
        if let Some(p) = password {
            c.env("PGPASSWORD", p);
        }
        c
    };
    let at = format!("127.0.0.1:{}", pg.port);

    // None, or a wrong one: refused, naming the server; the wrong one is not shown either.
    let none = with(&missing, None).arg("verify").output().unwrap();
    assert!(!none.status.success(), "{}", text(&none));
    assert!(text(&none).contains(&at), "{}", text(&none));
    let wrong = with(&missing, Some("wr0ng-hunter2"))
        .arg("verify")
        .output()
        .unwrap();
    assert!(!wrong.status.success(), "{}", text(&wrong));
    assert!(!text(&wrong).contains("wr0ng-hunter2"), "{}", text(&wrong));
    // From the file, or from the environment: the ledger opens.
    let from_file = with(&pgpass, None).arg("verify").output().unwrap();
    assert!(from_file.status.success(), "{}", text(&from_file));
    let from_env = with(&missing, Some(PASSWORD))
        .arg("verify")
        .output()
        .unwrap();
    assert!(from_env.status.success(), "{}", text(&from_env));
    assert!(!shown(&text(&from_file)) && !shown(&text(&from_env)));

    // A server on it, logging everything at debug level.
    let log = dir.path().join("serve.log");
    let server = crate::common::Server::spawn(
        with(&pgpass, None),
        &dir.path().join("unused"),
        &["--log-level", "debug"],
        Some(&log),
    )
    .unwrap();
    let base = server.url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answers = rt.block_on(async {
        let c = reqwest::Client::new();
        let story = std::fs::read_to_string(fixtures().join("seed-story/commands.ndjson")).unwrap();
        let committed = c
            .post(format!("{base}/v1/commands"))
            .header("content-type", "application/x-ndjson")
            .body(story)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(committed.contains("\"committed\""), "{committed}");
        let mut all = committed;
        for path in [
            "/healthz",
            "/metrics",
            "/",
            "/v1/customers/NOT-AN-ID",
            "/v1/openapi.json",
        ] {
            let r = c.get(format!("{base}{path}")).send().await.unwrap();
            all.push_str(&r.text().await.unwrap());
        }
        all
    });
    let said = server.said.clone();
    drop(server);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("DEBUG") || logged.contains("debug"),
        "a debug log was written: {logged}"
    );
    assert!(!shown(&answers), "{answers}");
    assert!(!shown(&logged), "{logged}");
    assert!(!shown(&said), "{said}");
}
