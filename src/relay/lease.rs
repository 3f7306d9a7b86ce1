//! Only one relay publishes into a stream at a time: a lease kept next to the stream, in a JetStream key-value
//! bucket (`partner_ledger_relays`, one key per stream) whose entries expire unless renewed. Whichever process or
//! backend the relays read from (a server's sled folder, a PostgreSQL ledger shared by several servers, a separate
//! `partner-ledger relay`), they all reach the broker, so the broker is where they meet.
//!
//! The lease saves work; it is not what keeps the stream exact. Every publish carries `Nats-Expected-Last-Sequence`, so
//! a relay that lost its lease without knowing it (paused past its expiry) has its next publish refused by the stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use tokio::sync::watch;

/// The bucket holding the relays' leases.
pub const BUCKET: &str = "partner_ledger_relays";

/// A held lease: renewed in the background until dropped; `lost` turns true once it may have expired.
pub struct Lease {
    lost: watch::Receiver<bool>,
    renewer: tokio::task::JoinHandle<()>,
    store: kv::Store,
    key: String,
    revision: Arc<std::sync::atomic::AtomicU64>,
}

async fn bucket(js: &async_nats::jetstream::Context, ttl: Duration) -> Result<kv::Store, String> {
    match js.get_key_value(BUCKET).await {
        Ok(store) => Ok(store),
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: BUCKET.to_string(),
                description: "partner-ledger: which relay publishes into each stream".into(),
                history: 1,
                max_age: ttl,
                storage: async_nats::jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                format!("cannot create the key-value bucket {BUCKET} for the relay lease: {e}")
            }),
    }
}

impl Lease {
    /// Takes the lease on `stream` for `holder`, waiting while another relay holds it (`waiting` is told who).
    /// Its length is the bucket's entry lifetime (`ttl` when this call creates the bucket).
    pub async fn acquire(
        js: &async_nats::jetstream::Context,
        stream: &str,
        holder: &str,
        ttl: Duration,
        mut waiting: impl FnMut(&str),
    ) -> Result<Lease, String> {
        let store = bucket(js, ttl).await?;
        let ttl = match store.status().await {
            Ok(s) if s.max_age() > Duration::ZERO => s.max_age(),
            _ => ttl,
        };
        loop {
            match store
                .create(stream, holder.as_bytes().to_vec().into())
                .await
            {
                Ok(revision) => {
                    let revision = Arc::new(std::sync::atomic::AtomicU64::new(revision));
                    let (lost_tx, lost) = watch::channel(false);
                    let renewer = tokio::spawn(renew(
                        store.clone(),
                        stream.to_string(),
                        holder.to_string(),
                        ttl,
                        Arc::clone(&revision),
                        lost_tx,
                    ));
                    return Ok(Lease {
                        lost,
                        renewer,
                        store,
                        key: stream.to_string(),
                        revision,
                    });
                }
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    let who = match store.get(stream).await {
                        Ok(Some(v)) => String::from_utf8_lossy(&v).into_owned(),
                        _ => "another relay".into(),
                    };
                    waiting(&who);
                    tokio::time::sleep(ttl / 4).await;
                }
                Err(e) => {
                    return Err(format!(
                        "cannot take the relay lease on stream {stream}: {e}"
                    ))
                }
            }
        }
    }

    /// Whether the lease may have expired (a renewal failed for as long as it lasts, or another relay took it).
    pub fn lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Gives the lease up, so another relay can take it at once.
    pub async fn release(self) {
        self.renewer.abort();
        let revision = self.revision.load(std::sync::atomic::Ordering::SeqCst);
        let _ = self
            .store
            .purge_expect_revision(&self.key, Some(revision))
            .await;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// Renews the lease three times per lifetime; tells `lost` once a renewal was refused (another relay holds it) or
/// none succeeded for a whole lifetime.
async fn renew(
    store: kv::Store,
    key: String,
    holder: String,
    ttl: Duration,
    revision: Arc<std::sync::atomic::AtomicU64>,
    lost: watch::Sender<bool>,
) {
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(ttl / 3).await;
        let current = revision.load(std::sync::atomic::Ordering::SeqCst);
        match store
            .update(&key, holder.as_bytes().to_vec().into(), current)
            .await
        {
            Ok(r) => {
                revision.store(r, std::sync::atomic::Ordering::SeqCst);
                renewed = Instant::now();
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                tracing::warn!(stream = %key, "the relay lease was taken over: this relay stops publishing");
                let _ = lost.send(true);
                return;
            }
            Err(e) => {
                tracing::warn!(stream = %key, error = %e, "the relay lease could not be renewed");
                if renewed.elapsed() >= ttl {
                    let _ = lost.send(true);
                    return;
                }
            }
        }
    }
}
