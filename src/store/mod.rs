//! The event log: bytes on disk, positions, the hash chain, indexes and durability. It knows nothing of the rules.

mod envelope;
pub mod journal;
pub mod postgres;
mod sealed;
mod seam;
mod sled;
pub mod upcast;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use envelope::{
    canonical, chain_hash, check, check_hash, entity_prefix, seal, ChainBreak, Envelope, NewEvent,
    GENESIS_HASH,
};
pub use sealed::{SealedBatch, StagedBatch};
pub use seam::{
    ConsumerStore, DocumentWrite, EventStore, KeyValue, ReadModel, ReadModelStore, RefusalStore,
    Store,
};
#[cfg(feature = "bench")]
pub use sled::baseline::{raw_sled_baseline, RawBaseline};
pub use sled::{segment, SNAPSHOT_FILE};
#[cfg(test)]
pub use sled::{Fault, FaultPlan};

/// Opens the ledger: in PostgreSQL when `options.postgres` names a database (`--store postgres://…`), otherwise
/// (or creates, as `options` say) the one kept in the data folder `dir`, on the embedded sled backend. Either way it
/// checks the store's lock and format, checks the head and re-verifies the newest events.
pub fn open(dir: &Path, options: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    match &options.postgres {
        Some(target) => Ok(Arc::new(postgres::PgStore::open(target, options)?)),
        None => Ok(Arc::new(sled::SledStore::open(dir, options)?)),
    }
}

use crate::domain::{CommandId, Position};

/// The last event of the log, as recorded by the head marker.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub struct Head {
    pub position: Position,
    pub hash: String,
}

impl Head {
    /// The head of an empty log.
    pub fn genesis() -> Head {
        Head {
            position: Position(0),
            hash: GENESIS_HASH.to_string(),
        }
    }
}

/// The key a command's idempotency is recorded under: the `command_id` itself for operators and `system`, and for a
/// partner's or a customer's command a key derived from its actor's tenant and its `command_id`, so that every tenant
/// has ids of its own: no tenant can learn whether another used an id, or take one before it (docs/api.md). The
/// envelope keeps the `command_id` as sent; the command journal keeps the key.
pub fn idempotency_key(actor: &crate::domain::Actor, command_id: CommandId) -> CommandId {
    use crate::domain::Role;
    use sha2::{Digest, Sha256};
    if !matches!(
        actor.role,
        Role::PartnerAdminAgent
            | Role::PartnerSalesAgent
            | Role::CustomerGlobalAdmin
            | Role::CustomerUser
    ) {
        return command_id;
    }
    let digest = Sha256::new()
        .chain_update(b"partner-ledger idempotency key\0")
        .chain_update(actor.tenant.to_string().as_bytes())
        .chain_update(command_id.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // A version-8 (custom) UUID: never nil, and never equal to a client's v4 id by construction of its version bits.
    CommandId::new(uuid::Builder::from_custom_bytes(bytes).into_uuid()).unwrap_or(command_id)
}

/// What identifies a command's body for idempotency: the first 16 bytes of SHA-256 over it without its `command_id`.
pub type Fingerprint = [u8; 16];

/// What the store remembers of a committed command: its fingerprint (none for an imported command) and the positions
/// it appended (possibly none).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CommandRecord {
    pub fingerprint: Option<Fingerprint>,
    pub positions: Vec<Position>,
}

/// One committed command of a batch: its events are appended contiguously, atomically with its journal entry.
#[derive(Clone, PartialEq, Debug)]
pub struct CommitEntry {
    pub command_id: CommandId,
    pub fingerprint: Fingerprint,
    pub events: Vec<NewEvent>,
}

/// One stored event: its position and the exact stored bytes (the canonical envelope).
#[derive(Clone, PartialEq, Debug)]
pub struct StoredEvent {
    pub position: Position,
    pub raw: Vec<u8>,
}

impl StoredEvent {
    /// The business time and the event, without building the whole envelope: the fast path for replay, reads and
    /// streams. Older schema versions go through the upcasters.
    pub fn decode(&self) -> Result<(crate::domain::Timestamp, crate::domain::Event), StoreError> {
        #[derive(serde::Deserialize)]
        struct Fast<'a> {
            at: crate::domain::Timestamp,
            schema_version: u32,
            #[serde(rename = "type", borrow)]
            event_type: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            data: &'a serde_json::value::RawValue,
        }
        let codec = |message: String| StoreError::Codec {
            position: self.position,
            message,
        };
        let f: Fast = serde_json::from_slice(&self.raw).map_err(|e| codec(e.to_string()))?;
        let event = event_of(&f.event_type, f.schema_version, f.data).map_err(codec)?;
        Ok((f.at, event))
    }

    /// Decodes the envelope.
    pub fn envelope(&self) -> Result<Envelope, StoreError> {
        serde_json::from_slice(&self.raw).map_err(|e| StoreError::Codec {
            position: self.position,
            message: e.to_string(),
        })
    }
}

/// An event from an envelope's `type`, `schema_version` and raw `data`: today's version decoded in one pass, older ones
/// brought up through the upcasters.
pub(crate) fn event_of(
    event_type: &str,
    schema_version: u32,
    data: &serde_json::value::RawValue,
) -> Result<crate::domain::Event, String> {
    if schema_version == crate::domain::SCHEMA_VERSION {
        let text = format!("{{\"type\":\"{event_type}\",\"data\":{}}}", data.get());
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        let data: serde_json::Value =
            serde_json::from_str(data.get()).map_err(|e| e.to_string())?;
        let (t, d) = upcast::upcast(event_type, schema_version, data)?;
        crate::domain::Event::from_parts(&t, d).map_err(|e| e.to_string())
    }
}

/// The position and the event of envelope bytes (`None` when they do not decode): for readers that hold the bytes
/// alone, such as access control judging what a stream may carry. Reads `position`, `type`, `data` and
/// `schema_version` (the current one when absent).
pub fn decode_envelope(raw: &[u8]) -> Option<(Position, crate::domain::Event)> {
    #[derive(serde::Deserialize)]
    struct Parts<'a> {
        position: Position,
        #[serde(rename = "type", borrow)]
        event_type: std::borrow::Cow<'a, str>,
        #[serde(default)]
        schema_version: Option<u32>,
        #[serde(borrow)]
        data: &'a serde_json::value::RawValue,
    }
    let p: Parts = serde_json::from_slice(raw).ok()?;
    let version = p.schema_version.unwrap_or(crate::domain::SCHEMA_VERSION);
    let event = event_of(&p.event_type, version, p.data).ok()?;
    Some((p.position, event))
}

/// Storage failures. None of them is a business answer; each says how a caller should react.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk or the OS failed. The outcome of the batch in flight is unknown: report it as such (the client retries
    /// with the same `command_id`) and stop writing until the ledger is reopened.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// sled failed; react as for `Io`.
    #[error("sled: {0}")]
    Sled(#[from] ::sled::Error),
    /// A stored event does not decode: the data is damaged; refuse writes and run `verify`.
    #[error("event {position} does not decode: {message}")]
    Codec { position: Position, message: String },
    /// The log is damaged or was tampered with; refuse writes, name the first bad position, restore from a backup.
    #[error("the ledger is damaged{}: {message}", .position.map(|p| format!(" at position {p}")).unwrap_or_default())]
    Corrupt {
        position: Option<Position>,
        message: String,
    },
    /// Another process holds the ledger; wait for it or stop it, or (a running server) ask it over HTTP.
    #[error("the ledger at {} is locked by {}; if that is a running server, take backups, checkpoints and verifications from it without stopping it (GET /v1/backup, /v1/checkpoint, /v1/verify; docs/audit.md), or stop it first", .path.display(), .pid.map(|p| format!("process {p}")).unwrap_or_else(|| "another process".into()))]
    Locked { path: PathBuf, pid: Option<u32> },
    /// Another process writes to that PostgreSQL ledger (it holds the writer's lock): stop it, or ask it over HTTP.
    #[error("the ledger at {place} is held by {holder}; if that is a running server, ask it over HTTP (docs/audit.md), or stop it first")]
    LockedAt { place: String, holder: String },
    /// The folder holds something else than a ledger; choose another folder.
    #[error("{} is not a partner-ledger data folder (it is not empty and has no ledger.json)", .0.display())]
    NotALedger(PathBuf),
    /// No ledger exists at that folder; create one with `exec` or choose the right `--data`.
    #[error("no ledger at {}", .0.display())]
    NoLedger(PathBuf),
    /// A write transaction failed and left nothing behind: the batch is not in the log, and writes go on.
    #[error("the write failed and left nothing behind ({message})")]
    WriteFailed { message: String },
    /// PostgreSQL refused or failed a statement; react as for `Io`.
    #[error("PostgreSQL at {place}: {context}: {message}")]
    Postgres {
        place: String,
        context: String,
        message: String,
    },
    /// The database cannot be reached (down, wrong host or port, refused credentials); fix that and retry.
    #[error("cannot reach PostgreSQL at {place}: {message}")]
    Unreachable { place: String, message: String },
    /// No ledger exists in that database schema; create it as the schema's owner (`migrate-schema`).
    #[error("no ledger at {place}: {hint}")]
    NoLedgerAt { place: String, hint: String },
    /// What is there is not a ledger this build can open (another schema, or a newer one); the reason says which.
    #[error("{place} cannot be opened as a ledger: {why}")]
    NotALedgerAt { place: String, why: String },
    /// Another process appended to the log under this writer: it stops writing (reopen to go on).
    #[error("another process appended to this ledger ({message}); this process stops writing until it is reopened")]
    Conflict { message: String },
    /// This process no longer holds the PostgreSQL ledger's writer lease: another process writes now.
    #[error("this process is no longer the ledger's writer: {message}")]
    Deposed { message: String },
    /// An earlier write or sync failed, so the store refuses writes until it is reopened and re-verified (fail-stop).
    #[error("writes are stopped after an earlier storage failure; reopen the ledger to recover")]
    FailStopped,
    /// The store is on a hot standby, where nothing can be written.
    #[error("{place} is a hot standby (a streaming replica): it can only be read. Point commands that write at the primary, or send them to a `serve` process of the primary (a `serve` process on a replica forwards them to its writer)")]
    ReadOnlyReplica { place: String },
}

/// Counters that show durability and group commit at work.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, serde::Serialize)]
pub struct StoreCounters {
    /// Batches committed (one sled transaction each).
    pub batches: u64,
    /// `flush()` calls.
    pub flushes: u64,
    /// `fdatasync` calls on the database file.
    pub fdatasyncs: u64,
    /// Events appended.
    pub events: u64,
    /// Commands whose records were committed.
    pub commands: u64,
}

/// How to open a ledger's store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Create the ledger if the folder is missing or empty.
    pub create: bool,
    /// sled's page cache in bytes (sled's own default is 1 GiB; see docs/ARCHITECTURE.md).
    pub cache_bytes: u64,
    /// How many of the newest events are re-verified at open.
    pub tail_check: u64,
    /// Check the head marker and the tail at open. Only `verify` turns this off, to report damage itself.
    pub check_on_open: bool,
    /// Flush the history index once this many positions wait in memory (it is also flushed every
    /// `index_interval` and at close).
    pub index_flush_positions: usize,
    pub index_interval: Duration,
    /// Free space the ledger keeps on its disk: a batch that would leave less is not written (its commands are
    /// answered `unknown`, writing goes on once space is freed). sled cannot recover files it failed to write for
    /// want of space (docs/recovery.md), so it must never see a full disk.
    pub min_free_bytes: u64,
    /// The PostgreSQL database and schema holding the ledger; `None`: the sled data folder.
    pub postgres: Option<postgres::PgTarget>,
}

/// The page cache a store opens with unless told otherwise: 64 MiB, or what `--cache-mb` set for this process.
static DEFAULT_CACHE_BYTES: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(64 * 1024 * 1024);

/// The PostgreSQL ledger every store this process opens with default options is, if any (`--store`).
static DEFAULT_POSTGRES: std::sync::Mutex<Option<postgres::PgTarget>> = std::sync::Mutex::new(None);

/// Makes every store this process opens from now on with default options the ledger in `target` (`--store`), or the
/// data folder again (`None`).
pub fn set_default_postgres(target: Option<postgres::PgTarget>) {
    *DEFAULT_POSTGRES.lock().unwrap_or_else(|e| e.into_inner()) = target;
}

/// The PostgreSQL ledger this process opens by default (`--store`), if any.
pub fn default_postgres() -> Option<postgres::PgTarget> {
    DEFAULT_POSTGRES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Where a ledger opened with default options from `dir` lives, for messages: the PostgreSQL host, database and
/// schema (never the password) when `--store` named one, otherwise the folder.
pub fn describe(dir: &Path) -> String {
    match &*DEFAULT_POSTGRES.lock().unwrap_or_else(|e| e.into_inner()) {
        Some(target) => format!("PostgreSQL {target}"),
        None => dir.display().to_string(),
    }
}

/// Sets the page cache of every store this process opens from now on with default options (`--cache-mb`).
pub fn set_default_cache_bytes(bytes: u64) {
    DEFAULT_CACHE_BYTES.store(bytes.max(256), std::sync::atomic::Ordering::Relaxed);
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            create: true,
            cache_bytes: DEFAULT_CACHE_BYTES.load(std::sync::atomic::Ordering::Relaxed),
            tail_check: 1024,
            check_on_open: true,
            index_flush_positions: 600_000,
            index_interval: Duration::from_secs(10),
            min_free_bytes: 32 * 1024 * 1024,
            postgres: DEFAULT_POSTGRES
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}
