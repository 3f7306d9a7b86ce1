//! Format upgrades of older data folders, run at open before anything else reads them. Each is idempotent: the folder's
//! `ledger.json` records the new version only after the upgraded data is durable, so an interrupted upgrade runs again.

use super::{segment, SledStore};
use crate::domain::{CommandId, Position};
use crate::store::journal::{self, Committed};
use crate::store::sealed::Row;
use crate::store::StoreError;

impl SledStore {
    /// Upgrades a format-2 folder, one key per event in tree `events`, by packing its events into segments in tree
    /// `log` (cleared first, so an interrupted upgrade simply runs again), then making them durable. The caller marks
    /// the folder as format 3 and only then drops the old tree.
    pub(super) fn upgrade_from_v2(&self) -> Result<(), StoreError> {
        let old = self.db.open_tree("events")?;
        self.log.tree.clear()?;
        let mut rows: Vec<Row> = Vec::with_capacity(1024);
        let mut moved = 0u64;
        let write = |rows: &mut Vec<Row>| -> Result<(), StoreError> {
            let mut batch = sled::Batch::default();
            for (k, v) in segment::pack(rows) {
                batch.insert(&k[..], v);
            }
            self.log.tree.apply_batch(batch)?;
            rows.clear();
            Ok(())
        };
        for item in old.iter() {
            let (k, v) = item?;
            let position = Position::from_key(&k).ok_or_else(|| StoreError::Corrupt {
                position: None,
                message: "a key of the format-2 log is not a position".into(),
            })?;
            if rows.last().is_some_and(|(p, _)| p.next() != position) {
                write(&mut rows)?;
            }
            rows.push((position, v.to_vec()));
            moved += 1;
            if rows.len() >= 4096 {
                write(&mut rows)?;
            }
        }
        write(&mut rows)?;
        tracing::info!(
            events = moved,
            "upgraded the data folder from format 2 to 3"
        );
        self.sync()
    }

    /// Upgrades a format-1 folder: its per-command records (`c` keys) become journal records, and its per-event index
    /// keys (`x`) are dropped (the background index is rebuilt from the log right after). One sled batch, made
    /// durable before `ledger.json` says 2, so an interrupted upgrade simply runs again.
    pub(super) fn upgrade_from_v1(&self) -> Result<(), StoreError> {
        #[derive(serde::Deserialize)]
        struct V1Record {
            fingerprint: String,
            positions: Vec<Position>,
        }
        let mut batch = sled::Batch::default();
        let mut committed = Vec::new();
        for item in self.aux.scan_prefix(b"c") {
            let (k, v) = item?;
            let id: [u8; 16] = k
                .get(1..17)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| StoreError::Corrupt {
                    position: None,
                    message: "a format-1 command key is malformed".into(),
                })?;
            let record: V1Record = serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                position: None,
                message: format!("a format-1 command record does not decode: {e}"),
            })?;
            let command_id =
                CommandId::new(uuid::Uuid::from_bytes(id)).map_err(|_| StoreError::Corrupt {
                    position: None,
                    message: "a format-1 command record has a nil id".into(),
                })?;
            let fingerprint = hex::decode(&record.fingerprint)
                .ok()
                .and_then(|b| b.get(..16).and_then(|f| f.try_into().ok()));
            let first = record.positions.first().copied().unwrap_or_default();
            committed.push(Committed {
                command_id,
                fingerprint,
                first,
                count: u32::try_from(record.positions.len()).unwrap_or(u32::MAX),
            });
            batch.remove(k);
        }
        for item in self.aux.scan_prefix(b"x") {
            batch.remove(item?.0);
        }
        for (seq, chunk) in (1..).zip(committed.chunks(journal::MAX_PER_RECORD)) {
            batch.insert(&journal::key(seq)[..], journal::encode(chunk));
        }
        tracing::info!(
            commands = committed.len(),
            "upgrading the data folder from format 1 to 2"
        );
        self.aux.apply_batch(batch)?;
        self.sync()
    }
}
