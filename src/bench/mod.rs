//! The benchmark suite (`partner-ledger bench`): every figure of docs/performance.md, each measured beside its own
//! baseline in the same run, on this machine.

pub mod http;
pub mod throughput;
pub mod workload;

use std::time::Duration;

use serde::Serialize;

/// Latencies collected during a run.
#[derive(Default, Clone)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }
    pub fn extend(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Percentiles in milliseconds.
    pub fn summary(&self) -> Summary {
        let mut v = self.0.clone();
        v.sort_unstable();
        let at = |per_100k: usize| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            let i = ((v.len() - 1) * per_100k) / 100_000;
            v[i].as_secs_f64() * 1e3
        };
        Summary {
            count: v.len(),
            p50_ms: at(50_000),
            p99_ms: at(99_000),
            p999_ms: at(99_900),
            max_ms: at(100_000),
        }
    }
}

/// Percentiles of a latency distribution, in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Summary {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}
