//! The benchmark's baseline (`partner-ledger bench`, docs/performance.md): the same envelope bytes written into raw
//! sled the simplest durable way, without a ledger, so the report can say what the ledger costs above sled itself.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::domain::Position;
use crate::store::StoreError;

/// What raw sled did.
pub struct RawBaseline {
    /// Batches of 1,000 envelopes, each one `apply_batch` + `flush()` + `fdatasync`.
    pub batch_events_per_s: f64,
    /// One envelope per insert + `flush()` + `fdatasync`: the latency of each durable write.
    pub single: Vec<Duration>,
}

/// Writes `envelopes` into fresh sled databases under `dir`: in batches of 1,000, then one at a time (up to 2,000).
pub fn raw_sled_baseline(dir: &Path, envelopes: &[Vec<u8>]) -> Result<RawBaseline, StoreError> {
    let open = |name: &str| -> Result<(sled::Db, sled::Tree, std::fs::File), StoreError> {
        let db = sled::Config::new()
            .path(dir.join(name))
            .cache_capacity(128 * 1024 * 1024)
            .open()?;
        let tree = db.open_tree("events")?;
        let path = dir.join(name).join("db");
        let file = std::fs::File::open(&path)
            .map_err(super::io(format!("cannot open {}", path.display())))?;
        Ok((db, tree, file))
    };
    let sync = |file: &std::fs::File| file.sync_data().map_err(super::io("fdatasync failed"));
    let (db, tree, file) = open("batched")?;
    let started = Instant::now();
    for (i, chunk) in envelopes.chunks(1000).enumerate() {
        let mut b = sled::Batch::default();
        for (j, e) in chunk.iter().enumerate() {
            let p = Position((i * 1000 + j + 1) as u64);
            b.insert(&p.to_key()[..], e.as_slice());
        }
        tree.apply_batch(b)?;
        db.flush()?;
        sync(&file)?;
    }
    let batch_events_per_s = envelopes.len() as f64 / started.elapsed().as_secs_f64();
    drop(tree);
    drop(db);
    let (db, tree, file) = open("single")?;
    let mut single = Vec::new();
    for (i, e) in envelopes.iter().take(2000).enumerate() {
        let t = Instant::now();
        tree.insert(Position(i as u64 + 1).to_key(), e.as_slice())?;
        db.flush()?;
        sync(&file)?;
        single.push(t.elapsed());
    }
    Ok(RawBaseline {
        batch_events_per_s,
        single,
    })
}
