//! The ledger's schema in PostgreSQL, its versioned migrations and the two roles that use it.
//!
//! A ledger lives in one PostgreSQL schema (`--pg-schema`, default `partner_ledger`), so several ledgers can share a
//! database without meeting. The **owner** (the role `migrate-schema` connects as) creates and migrates the schema;
//! the **runtime role** the ledger runs as (`migrate-schema --runtime-role NAME`) may read everything, but may only
//! INSERT into the log, the history index, the command journal and the refusal audit trail: never UPDATE, DELETE or
//! TRUNCATE them. Triggers refuse those statements on the log for every role, the owner included, unless the owner
//! (or a superuser) first disables or drops them; `verify` then finds what was changed. The ledger never migrates as its runtime role:
//! opening a schema of an older version asks for `migrate-schema`, and a newer one is refused.

use postgres::Client;

use super::{pg_error, PgTarget};
use crate::store::StoreError;

/// The schema version this build reads and writes.
pub const VERSION: i64 = 3;

/// What each migration runs, in order: migration N brings the schema from version N−1 to N. `{runtime}` is the
/// runtime role (checked by [`valid_role`]), granted what it may do.
const MIGRATIONS: &[&str] = &[
    // 1: the log and everything beside it.
    r#"
CREATE TABLE meta (
    key text PRIMARY KEY,
    value text NOT NULL
);
-- The head row: the last event's position and hash, the number of committed commands, and the writer's epoch. Every
-- append moves it in the same transaction as its events, so positions are gapless and in commit order.
CREATE TABLE head (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    position bigint NOT NULL CHECK (position >= 0),
    hash text NOT NULL,
    commands bigint NOT NULL CHECK (commands >= 0),
    epoch bigint NOT NULL DEFAULT 0
);
INSERT INTO head (position, hash, commands)
    VALUES (0, '0000000000000000000000000000000000000000000000000000000000000000', 0);
-- The log: each event's canonical envelope, byte for byte as it was hashed (`envelope::jsonb` reads it as JSON).
CREATE TABLE events (
    position bigint PRIMARY KEY CHECK (position > 0),
    envelope text NOT NULL
);
-- The history index: which events name which entity (kind c customer, p partner, s subscription, n partner profile,
-- k customer profile).
CREATE TABLE history (
    kind "char" NOT NULL,
    id uuid NOT NULL,
    position bigint NOT NULL,
    PRIMARY KEY (kind, id, position)
);
-- The command journal: every committed command by its idempotency key, in commit order (seq).
CREATE TABLE commands (
    key uuid PRIMARY KEY,
    seq bigint NOT NULL UNIQUE,
    fingerprint bytea,
    first_position bigint NOT NULL,
    event_count integer NOT NULL
);
CREATE TABLE refusals (
    seq bigint PRIMARY KEY,
    record text NOT NULL
);
CREATE TABLE refusal_entities (
    kind "char" NOT NULL,
    id uuid NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (kind, id, seq)
);
CREATE TABLE consumers (
    name text PRIMARY KEY,
    document bytea NOT NULL
);
CREATE TABLE snapshot (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    bytes bytea NOT NULL
);
-- The read models (derived: they can be emptied and rebuilt at any time).
CREATE TABLE read_model_checkpoints (
    model text PRIMARY KEY,
    position bigint NOT NULL
);
CREATE TABLE customer_documents (
    customer uuid PRIMARY KEY,
    document jsonb NOT NULL
);
CREATE TABLE partner_documents (
    partner uuid PRIMARY KEY,
    document jsonb NOT NULL
);
CREATE TABLE partner_customers (
    partner uuid NOT NULL,
    block bigint NOT NULL,
    customers uuid[] NOT NULL,
    PRIMARY KEY (partner, block)
);
CREATE TABLE expiring_days (
    day bigint PRIMARY KEY,
    entries jsonb NOT NULL
);
CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'partner-ledger: % on %.% is refused: the log is append-only', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME;
END $$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER commands_append_only BEFORE UPDATE OR DELETE ON commands
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER commands_no_truncate BEFORE TRUNCATE ON commands
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER refusals_append_only BEFORE UPDATE OR DELETE ON refusals
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER refusals_no_truncate BEFORE TRUNCATE ON refusals
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
"#,
    // 2: views over the read models' documents, for operators' SQL (docs/postgres.md). They read what the documents
    // hold: the state as of the read models' checkpoint (`read_model_checkpoints`), a second or so behind the head.
    r#"
CREATE VIEW customers AS
SELECT d.customer,
       c->>'company_name' AS company_name,
       c->>'domain' AS domain,
       c->>'country' AS country,
       c->>'cloud' AS cloud,
       (c->>'agreement_accepted')::boolean AS agreement_accepted
FROM customer_documents d, jsonb_array_elements(d.document->'customers') c
WHERE (c->>'id')::uuid = d.customer;

CREATE VIEW partners AS
SELECT d.partner,
       p->>'name' AS name,
       p->>'kind' AS kind,
       p->>'program_id' AS program_id,
       p->>'country' AS country,
       p->>'cloud' AS cloud
FROM partner_documents d, jsonb_array_elements(d.document->'partners') p
WHERE (p->>'id')::uuid = d.partner;

CREATE VIEW customer_partners AS
SELECT d.customer,
       (r->>0)::uuid AS partner,
       r->2->>'status' AS status,
       (r->2->>'since')::timestamptz AS since,
       (r->2->>'dap')::boolean AS dap
FROM customer_documents d, jsonb_array_elements(d.document->'relationships') r
WHERE (r->>1)::uuid = d.customer;

CREATE VIEW admin_relationships AS
SELECT (a->>'id')::uuid AS admin_relationship,
       d.customer,
       (a->>'partner')::uuid AS partner,
       a->>'name' AS name,
       a->>'status' AS status,
       (a->>'ends_at')::timestamptz AS ends_at,
       (a->>'auto_extend')::boolean AS auto_extend,
       (a->>'duration_days')::integer AS duration_days,
       ARRAY(SELECT jsonb_array_elements_text(a->'roles'))::uuid[] AS roles
FROM customer_documents d, jsonb_array_elements(d.document->'admin') a
WHERE (a->>'customer')::uuid = d.customer;

CREATE VIEW subscriptions AS
SELECT (s->>'id')::uuid AS subscription,
       d.customer,
       s->>'kind' AS kind,
       s->>'offer' AS offer,
       s->>'friendly_name' AS friendly_name,
       (s->>'quantity')::integer AS quantity,
       s->>'status' AS status,
       (s->>'partner_of_record')::uuid AS partner_of_record,
       (s->>'billing_partner')::uuid AS billing_partner
FROM customer_documents d, jsonb_array_elements(d.document->'subscriptions') s
WHERE (s->>'customer')::uuid = d.customer;
"#,
    // 3: the writer's lease (several processes share one ledger; `lease.rs`).
    r#"
-- Who may append: the holder's name, where it takes forwarded commands, its database session, and when its right
-- ends unless renewed (by the database's clock). Taking it increments the epoch, which the head row copies in the
-- same transaction; an append moves the head row only under the epoch its writer took.
CREATE TABLE lease (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    epoch bigint NOT NULL,
    holder text NOT NULL,
    address text NOT NULL,
    backend_pid integer,
    backend_start timestamptz,
    expires_at timestamptz NOT NULL
);
INSERT INTO lease (epoch, holder, address, expires_at) SELECT epoch, '', '', 'epoch' FROM head;
"#,
];

/// What the runtime role may do, granted by every migration run (idempotent).
const GRANTS: &str = r#"
REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM PUBLIC;
GRANT USAGE ON SCHEMA {schema} TO {runtime};
GRANT SELECT ON meta TO {runtime};
GRANT SELECT, UPDATE ON head, lease TO {runtime};
GRANT SELECT, INSERT ON events, history, commands, refusals, refusal_entities TO {runtime};
GRANT SELECT, INSERT, UPDATE, DELETE ON consumers, snapshot, read_model_checkpoints, customer_documents,
    partner_documents, partner_customers, expiring_days TO {runtime};
GRANT SELECT ON customers, partners, customer_partners, admin_relationships, subscriptions TO {runtime};
"#;

/// Whether `name` is an identifier we accept for a schema or a role: lowercase letters, digits and `_`, not starting
/// with a digit, at most 63 bytes (PostgreSQL's limit). Nothing else is ever put into SQL text.
pub fn valid_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Whether `name` may be granted the runtime role's rights: an identifier as above, and none of the names PostgreSQL
/// reads as something else in a GRANT (`public` is every role; `pg_` roles are the system's).
pub fn valid_role(name: &str) -> bool {
    valid_identifier(name)
        && !matches!(
            name,
            "public" | "none" | "current_user" | "session_user" | "current_role"
        )
        && !name.starts_with("pg_")
}

/// The version of the ledger schema `schema`, or `None` when there is no such schema; an error when it exists but
/// is not a ledger.
pub fn version_of(client: &mut Client, target: &PgTarget) -> Result<Option<i64>, StoreError> {
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_namespace WHERE nspname = $1",
            &[&target.schema()],
        )
        .map_err(|e| pg_error(target, "cannot read the catalog", &e))?
        .is_some();
    if !exists {
        return Ok(None);
    }
    let has_meta = client
        .query_opt(
            "SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'meta'",
            &[&target.schema()],
        )
        .map_err(|e| pg_error(target, "cannot read the catalog", &e))?
        .is_some();
    let not_a_ledger = || StoreError::NotALedgerAt {
        place: target.to_string(),
        why: "the schema exists but is not a partner-ledger schema (no ledger marker)".into(),
    };
    if !has_meta {
        return Err(not_a_ledger());
    }
    let rows = client
        .query(
            "SELECT key, value FROM meta WHERE key IN ('kind', 'schema_version')",
            &[],
        )
        .map_err(|e| pg_error(target, "cannot read the ledger's meta table", &e))?;
    let get = |k: &str| {
        rows.iter()
            .find(|r| r.get::<_, String>(0) == k)
            .map(|r| r.get::<_, String>(1))
    };
    if get("kind").as_deref() != Some("partner-ledger") {
        return Err(not_a_ledger());
    }
    get("schema_version")
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or_else(not_a_ledger)
}

/// Creates the schema or brings it to [`VERSION`], as its owner, and grants the runtime role what it may do. Returns
/// the version found before (0: none) and the version now.
pub fn migrate(
    client: &mut Client,
    target: &PgTarget,
    runtime_role: Option<&str>,
) -> Result<(i64, i64), StoreError> {
    let before = version_of(client, target)?.unwrap_or(0);
    if before > VERSION {
        return Err(newer(target, before));
    }
    let schema = target.schema();
    let mut tx = client
        .transaction()
        .map_err(|e| pg_error(target, "cannot begin the migration", &e))?;
    let run = |tx: &mut postgres::Transaction, sql: &str, what: &str| {
        tx.batch_execute(sql)
            .map_err(|e| pg_error(target, &format!("the migration failed ({what})"), &e))
    };
    if before == 0 {
        run(
            &mut tx,
            &format!("CREATE SCHEMA {schema}"),
            "creating the schema",
        )?;
    }
    run(
        &mut tx,
        &format!("SET LOCAL search_path = {schema}"),
        "search path",
    )?;
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(before).unwrap_or(0))
    {
        run(&mut tx, sql, &format!("migration {}", i + 1))?;
    }
    if before == 0 {
        run(
            &mut tx,
            "INSERT INTO meta (key, value) VALUES ('kind', 'partner-ledger')",
            "the ledger marker",
        )?;
    }
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', $1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[&VERSION.to_string()],
    )
    .map_err(|e| pg_error(target, "the migration failed (recording the version)", &e))?;
    if let Some(role) = runtime_role {
        let grants = GRANTS
            .replace("{schema}", schema)
            .replace("{runtime}", role);
        run(&mut tx, &grants, "granting the runtime role")?;
    }
    tx.commit()
        .map_err(|e| pg_error(target, "the migration's COMMIT failed", &e))?;
    Ok((before, VERSION))
}

/// The error for a schema newer than this build.
pub fn newer(target: &PgTarget, found: i64) -> StoreError {
    StoreError::NotALedgerAt {
        place: target.to_string(),
        why: format!(
            "its schema is version {found}; this build knows up to {VERSION}: use a newer partner-ledger"
        ),
    }
}
