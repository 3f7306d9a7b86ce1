//! Only one relay publishes into a stream at a time: a lease kept next to the stream, in a JetStream key-value
//! bucket (`partner_ledger_relays`, one key per stream, naming its holder), renewed by its holder and taken over
//! once it has not been renewed for its whole length. Whichever process or
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

async fn bucket(js: &async_nats::jetstream::Context) -> Result<kv::Store, String> {
    match js.get_key_value(BUCKET).await {
        Ok(store) => Ok(store),
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: BUCKET.to_string(),
                description: "partner-ledger: which relay publishes into each stream".into(),
                history: 1,
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
    /// Takes the lease on `stream` for `holder`, waiting while another relay holds it (`waiting` is told who). A
    /// holder renews it three times per `ttl`; one whose entry has not changed for a whole `ttl`, as this process's
    /// own clock measures it (so clocks need not agree), is taken over, by a compare-and-set on the revision seen.
    pub async fn acquire(
        js: &async_nats::jetstream::Context,
        stream: &str,
        holder: &str,
        ttl: Duration,
        mut waiting: impl FnMut(&str),
    ) -> Result<Lease, String> {
        let store = bucket(js).await?;
        let failed = |e: &dyn std::fmt::Display| {
            format!("cannot take the relay lease on stream {stream}: {e}")
        };
        let value = || bytes::Bytes::from(holder.as_bytes().to_vec());
        let mut seen: Option<(u64, Instant)> = None;
        loop {
            let entry = store.entry(stream).await.map_err(|e| failed(&e))?;
            let taken = match entry {
                Some(e) if e.operation == kv::Operation::Put => {
                    let who = String::from_utf8_lossy(&e.value).into_owned();
                    match seen {
                        Some((revision, since)) if revision == e.revision && since.elapsed() >= ttl => {
                            tracing::info!(stream, previous = %who, "taking over the relay lease: its holder stopped renewing it");
                            match store.update(stream, value(), e.revision).await {
                                Ok(r) => Some(r),
                                // Renewed, or taken over by another relay, in the meantime.
                                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => None,
                                Err(e) => return Err(failed(&e)),
                            }
                        }
                        Some((revision, _)) if revision == e.revision => None,
                        _ => {
                            seen = Some((e.revision, Instant::now()));
                            None
                        }
                    }
                    .or_else(|| {
                        waiting(&who);
                        None
                    })
                }
                // Never held, or given up (purged): whoever creates it first holds it.
                _ => match store.create(stream, value()).await {
                    Ok(r) => Some(r),
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => None,
                    Err(e) => return Err(failed(&e)),
                },
            };
            if let Some(revision) = taken {
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
            tokio::time::sleep(ttl / 4).await;
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
    // Measured from when a renewal was sent, and each renewal bounded by a third of the lease: a relay that cannot
    // renew counts itself out within the lease's length plus one bound, about when a standby takes over.
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(ttl / 3).await;
        let current = revision.load(std::sync::atomic::Ordering::SeqCst);
        let sent = Instant::now();
        let update = store.update(&key, holder.as_bytes().to_vec().into(), current);
        match tokio::time::timeout(ttl / 3, update).await {
            Ok(Ok(r)) => {
                revision.store(r, std::sync::atomic::Ordering::SeqCst);
                renewed = sent;
            }
            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                tracing::warn!(stream = %key, "the relay lease was taken over: this relay stops publishing");
                let _ = lost.send(true);
                return;
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer in time".into(),
                };
                tracing::warn!(stream = %key, error = %why, "the relay lease could not be renewed");
                if renewed.elapsed() >= ttl {
                    let _ = lost.send(true);
                    return;
                }
            }
        }
    }
}
