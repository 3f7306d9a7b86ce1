//! The writer's counters and histograms, beside the store's: what `/metrics` and `Ledger::stats` report.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Upper bounds of the commit-latency histogram buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
];
/// Upper bounds of the batch-size histogram buckets, in commands.
pub const BATCH_BUCKETS: [u64; 9] = [1, 2, 4, 8, 16, 64, 256, 1024, 4096];

/// A latency histogram in [`LATENCY_BUCKETS`]: cumulative counts per bucket plus +Inf, and the sum. The writer's commit
/// latency and the JetStream relay's latency both use it.
#[derive(Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    micros_sum: AtomicU64,
}

impl LatencyHistogram {
    pub fn record(&self, elapsed: std::time::Duration) {
        let secs = elapsed.as_secs_f64();
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.buckets[LATENCY_BUCKETS.len()].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.micros_sum.fetch_add(micros, Ordering::Relaxed);
    }

    /// The cumulative bucket counts (the last one counts all) and the sum in seconds.
    pub fn read(&self) -> (Vec<u64>, f64) {
        (
            self.buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            self.micros_sum.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }
}

/// Writer-side counters, beside the store's.
#[derive(Default)]
pub(super) struct WriterCounters {
    pub(super) committed: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) duplicates: AtomicU64,
    pub(super) unknown: AtomicU64,
    pub(super) largest_batch: AtomicU64,
    /// Commit latency (decide + write + flush + fdatasync) per durable batch, cumulative per bucket, plus +Inf.
    pub(super) latency: LatencyHistogram,
    /// Commands per durable batch, cumulative per bucket, plus +Inf.
    pub(super) batch_sizes: [AtomicU64; 10],
}

impl WriterCounters {
    pub(super) fn record_batch(&self, elapsed: std::time::Duration, commands: usize) {
        self.latency.record(elapsed);
        let n = commands as u64;
        for (i, bound) in BATCH_BUCKETS.iter().enumerate() {
            if n <= *bound {
                self.batch_sizes[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.batch_sizes[BATCH_BUCKETS.len()].fetch_add(1, Ordering::Relaxed);
    }
}

/// Histograms for metrics: cumulative bucket counts (the last is +Inf) and sums.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Histograms {
    pub commit_latency_buckets: Vec<u64>,
    pub commit_latency_seconds_sum: f64,
    pub batch_size_buckets: Vec<u64>,
}

/// A snapshot of the counters that show group commit and durability at work.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
pub struct Stats {
    /// Store batches (each: one transaction, one flush, one fdatasync).
    pub batches: u64,
    pub flushes: u64,
    pub fdatasyncs: u64,
    pub events: u64,
    /// Commands acknowledged as committed (new, not duplicates).
    pub committed: u64,
    pub refused: u64,
    pub duplicates: u64,
    pub unknown: u64,
    /// The most commands committed in one batch.
    pub largest_batch: u64,
}
