//! What PostgreSQL keeps beside the log: the read models' documents (as `jsonb`, so operators can query them with
//! SQL), the refusal audit trail, the durable consumers and the write-model snapshot. Each write is its own committed
//! transaction; a read model's documents and its checkpoint are written in one.

use std::sync::atomic::{AtomicU64, Ordering};

use super::pool::Pool;
use super::{entity_key, pos};
use crate::domain::slice::{ExpiringEntry, Slice};
use crate::domain::{CustomerId, EntityRef, PartnerId, Position, RefusalRecord};
use crate::store::{
    ConsumerStore, DocumentWrite, KeyValue, ReadModel, ReadModelStore, RefusalStore, StoreError,
};

pub(super) struct Documents {
    pool: Pool,
    /// The sequence number of the last refusal filed.
    filed: AtomicU64,
}

fn err(pool: &Pool, context: &str) -> impl FnOnce(postgres::Error) -> StoreError {
    let target = pool.target().clone();
    let context = context.to_string();
    move |e| super::pg_error(&target, &context, &e)
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        position: None,
        message: format!("{what} does not decode: {e}"),
    }
}

impl Documents {
    pub(super) fn new(pool: Pool) -> Documents {
        Documents {
            pool,
            filed: AtomicU64::new(0),
        }
    }

    pub(super) fn load_refusal_count(&self) -> Result<(), StoreError> {
        let n = self.recorded_refusal_count()?;
        self.filed.store(n, Ordering::SeqCst);
        Ok(())
    }

    /// The sequence number of the last refusal the database records (not yet taken as filed).
    pub(super) fn recorded_refusal_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .pool
            .get()?
            .query_one("SELECT coalesce(max(seq), 0) FROM refusals", &[])
            .map_err(err(&self.pool, "cannot read the refusal audit trail"))?
            .get(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Takes the refusals up to `n` as filed (a follower, once a barrier confirmed them).
    pub(super) fn set_refusal_count(&self, n: u64) {
        self.filed.fetch_max(n, Ordering::SeqCst);
    }

    /// The sequence number of the last refusal taken as filed.
    pub(super) fn refusal_count(&self) -> u64 {
        self.filed.load(Ordering::SeqCst)
    }

    pub(super) fn read_snapshot(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .pool
            .get()?
            .query_opt("SELECT bytes FROM snapshot", &[])
            .map_err(err(&self.pool, "cannot read the snapshot"))?
            .map(|r| r.get(0)))
    }

    pub(super) fn snapshot_header(&self, len: usize) -> Result<Option<Vec<u8>>, StoreError> {
        let len = i32::try_from(len).unwrap_or(i32::MAX);
        Ok(self
            .pool
            .get()?
            .query_opt(
                "SELECT substring(bytes FROM 1 FOR $1) FROM snapshot",
                &[&len],
            )
            .map_err(err(&self.pool, "cannot read the snapshot"))?
            .map(|r| r.get(0)))
    }

    pub(super) fn write_snapshot(&self, bytes: &[u8]) -> Result<(), StoreError> {
        self.pool
            .get()?
            .execute(
                "INSERT INTO snapshot (only_row, bytes) VALUES (true, $1)
                 ON CONFLICT (only_row) DO UPDATE SET bytes = excluded.bytes",
                &[&bytes],
            )
            .map_err(err(&self.pool, "cannot write the snapshot"))?;
        Ok(())
    }

    pub(super) fn snapshot_size(&self) -> u64 {
        self.pool
            .get()
            .ok()
            .and_then(|mut c| {
                c.query_opt("SELECT octet_length(bytes)::bigint FROM snapshot", &[])
                    .ok()
                    .flatten()
            })
            .map_or(0, |r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0))
    }

    fn slice_of(value: Option<serde_json::Value>, what: &str) -> Result<Option<Slice>, StoreError> {
        value
            .map(|v| serde_json::from_value(v).map_err(|e| corrupt(what, e)))
            .transpose()
    }
}

impl ReadModelStore for Documents {
    fn checkpoint(&self, model: ReadModel) -> Result<Position, StoreError> {
        let row = self
            .pool
            .get()?
            .query_opt(
                "SELECT position FROM read_model_checkpoints WHERE model = $1",
                &[&model.name()],
            )
            .map_err(err(&self.pool, "cannot read a read model's checkpoint"))?;
        Ok(Position(row.map_or(0, |r| {
            u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)
        })))
    }

    fn write(
        &self,
        model: ReadModel,
        writes: Vec<DocumentWrite>,
        checkpoint: Position,
    ) -> Result<(), StoreError> {
        let mut client = self.pool.get()?;
        let e = |c: &str| err(&self.pool, c);
        let mut tx = client
            .transaction()
            .map_err(e("cannot begin a read-model write"))?;
        // Another process that wrote this read model further (a writer that took over from this one) wins: documents
        // as of an earlier position are not written over later ones. The row lock orders two such writers.
        let stored = tx
            .query_opt(
                "SELECT position FROM read_model_checkpoints WHERE model = $1 FOR UPDATE",
                &[&model.name()],
            )
            .map_err(e("cannot read a read model's checkpoint"))?
            .map(|r| r.get::<_, i64>(0));
        if stored.is_some_and(|p| p > pos(checkpoint)) {
            return Ok(());
        }
        for w in writes {
            match w {
                DocumentWrite::Customer(id, Some(doc)) => tx.execute(
                    "INSERT INTO customer_documents (customer, document) VALUES ($1, $2)
                     ON CONFLICT (customer) DO UPDATE SET document = excluded.document",
                    &[&id.uuid(), &json(&doc)],
                ),
                DocumentWrite::Customer(id, None) => tx.execute(
                    "DELETE FROM customer_documents WHERE customer = $1",
                    &[&id.uuid()],
                ),
                DocumentWrite::PartnerProfile(id, Some(doc)) => tx.execute(
                    "INSERT INTO partner_documents (partner, document) VALUES ($1, $2)
                     ON CONFLICT (partner) DO UPDATE SET document = excluded.document",
                    &[&id.uuid(), &json(&doc)],
                ),
                DocumentWrite::PartnerProfile(id, None) => tx.execute(
                    "DELETE FROM partner_documents WHERE partner = $1",
                    &[&id.uuid()],
                ),
                DocumentWrite::PartnerCustomers {
                    partner,
                    block,
                    customers,
                } => {
                    let ids: Vec<uuid::Uuid> = customers.iter().map(|c| c.uuid()).collect();
                    tx.execute(
                        "INSERT INTO partner_customers (partner, block, customers) VALUES ($1, $2, $3)
                         ON CONFLICT (partner, block) DO UPDATE SET customers = excluded.customers",
                        &[&partner.uuid(), &i64::try_from(block).unwrap_or(i64::MAX), &ids],
                    )
                }
                DocumentWrite::ExpiringDay { day, entries } => {
                    let day = i64::try_from(day).unwrap_or(i64::MAX);
                    if entries.is_empty() {
                        tx.execute("DELETE FROM expiring_days WHERE day = $1", &[&day])
                    } else {
                        tx.execute(
                            "INSERT INTO expiring_days (day, entries) VALUES ($1, $2)
                             ON CONFLICT (day) DO UPDATE SET entries = excluded.entries",
                            &[&day, &json(&entries)],
                        )
                    }
                }
            }
            .map_err(e("cannot write a read model's document"))?;
        }
        tx.execute(
            "INSERT INTO read_model_checkpoints (model, position) VALUES ($1, $2)
             ON CONFLICT (model) DO UPDATE SET position = excluded.position",
            &[&model.name(), &pos(checkpoint)],
        )
        .map_err(e("cannot write a read model's checkpoint"))?;
        tx.commit().map_err(e("cannot commit a read-model write"))
    }

    fn clear(&self, model: ReadModel) -> Result<(), StoreError> {
        let tables = match model {
            ReadModel::Customers => "customer_documents",
            ReadModel::Partners => "partner_documents, partner_customers",
            ReadModel::Expiring => "expiring_days",
        };
        let mut client = self.pool.get()?;
        let mut tx = client
            .transaction()
            .map_err(err(&self.pool, "cannot clear a read model"))?;
        tx.batch_execute(&format!(
            "DELETE FROM {}",
            tables.replace(", ", "; DELETE FROM ")
        ))
        .map_err(err(&self.pool, "cannot clear a read model"))?;
        tx.execute(
            "DELETE FROM read_model_checkpoints WHERE model = $1",
            &[&model.name()],
        )
        .map_err(err(&self.pool, "cannot clear a read model"))?;
        tx.commit()
            .map_err(err(&self.pool, "cannot clear a read model"))
    }

    fn customer(&self, id: CustomerId) -> Result<Option<Slice>, StoreError> {
        let row = self
            .pool
            .get()?
            .query_opt(
                "SELECT document FROM customer_documents WHERE customer = $1",
                &[&id.uuid()],
            )
            .map_err(err(&self.pool, "cannot read a customer document"))?;
        Documents::slice_of(row.map(|r| r.get(0)), "a customer document")
    }

    fn partner_profile(&self, id: PartnerId) -> Result<Option<Slice>, StoreError> {
        let row = self
            .pool
            .get()?
            .query_opt(
                "SELECT document FROM partner_documents WHERE partner = $1",
                &[&id.uuid()],
            )
            .map_err(err(&self.pool, "cannot read a partner document"))?;
        Documents::slice_of(row.map(|r| r.get(0)), "a partner document")
    }

    fn partner_customers(&self, id: PartnerId) -> Result<Vec<CustomerId>, StoreError> {
        let rows = self
            .pool
            .get()?
            .query(
                "SELECT customers FROM partner_customers WHERE partner = $1 ORDER BY block",
                &[&id.uuid()],
            )
            .map_err(err(&self.pool, "cannot read a partner's customers"))?;
        let mut out = Vec::new();
        for r in rows {
            for id in r.get::<_, Vec<uuid::Uuid>>(0) {
                out.push(CustomerId::new(id).map_err(|e| corrupt("a partner's customer list", e))?);
            }
        }
        Ok(out)
    }

    fn expiring_days(&self, first: u64, last: u64) -> Result<Vec<ExpiringEntry>, StoreError> {
        let rows = self
            .pool
            .get()?
            .query(
                "SELECT entries FROM expiring_days WHERE day >= $1 AND day <= $2 ORDER BY day",
                &[
                    &i64::try_from(first).unwrap_or(i64::MAX),
                    &i64::try_from(last).unwrap_or(i64::MAX),
                ],
            )
            .map_err(err(&self.pool, "cannot read the expiring read model"))?;
        let mut out = Vec::new();
        for r in rows {
            let entries: Vec<ExpiringEntry> =
                serde_json::from_value(r.get(0)).map_err(|e| corrupt("an expiring day", e))?;
            out.extend(entries);
        }
        Ok(out)
    }

    fn dump(&self, model: ReadModel) -> Result<Vec<KeyValue>, StoreError> {
        let sql = match model {
            ReadModel::Customers => {
                "SELECT 'c' || customer::text, document::text FROM customer_documents
                 UNION ALL SELECT 'checkpoint', position::text FROM read_model_checkpoints WHERE model = 'customers'"
            }
            ReadModel::Partners => {
                "SELECT 'p' || partner::text, document::text FROM partner_documents
                 UNION ALL SELECT 'l' || partner::text || lpad(block::text, 20, '0'), customers::text FROM partner_customers
                 UNION ALL SELECT 'checkpoint', position::text FROM read_model_checkpoints WHERE model = 'partners'"
            }
            ReadModel::Expiring => {
                "SELECT 'd' || lpad(day::text, 20, '0'), entries::text FROM expiring_days
                 UNION ALL SELECT 'checkpoint', position::text FROM read_model_checkpoints WHERE model = 'expiring'"
            }
        };
        let rows = self
            .pool
            .get()?
            .query(&format!("SELECT * FROM ({sql}) d ORDER BY 1"), &[])
            .map_err(err(&self.pool, "cannot read a read model"))?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.get::<_, String>(0).into_bytes(),
                    r.get::<_, String>(1).into_bytes(),
                )
            })
            .collect())
    }
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

impl RefusalStore for Documents {
    /// All of them in one transaction: a record and its index rows are never apart.
    fn append(&self, records: &[(RefusalRecord, Vec<EntityRef>)]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut client = self.pool.get()?;
        let e = |c: &str| err(&self.pool, c);
        let mut tx = client.transaction().map_err(e("cannot file refusals"))?;
        let first: i64 = tx
            .query_one("SELECT coalesce(max(seq), 0) + 1 FROM refusals", &[])
            .map_err(e("cannot file refusals"))?
            .get(0);
        let (mut seqs, mut texts) = (Vec::new(), Vec::new());
        let (mut kinds, mut ids, mut at) = (Vec::new(), Vec::new(), Vec::new());
        for ((record, entities), seq) in records.iter().zip(first..) {
            seqs.push(seq);
            texts.push(serde_json::to_string(record).unwrap_or_default());
            for en in entities {
                let (k, id) = entity_key(en);
                kinds.push(k);
                ids.push(id);
                at.push(seq);
            }
        }
        tx.execute(
            "INSERT INTO refusals (seq, record) SELECT * FROM unnest($1::bigint[], $2::text[])",
            &[&seqs, &texts],
        )
        .map_err(e("cannot file refusals"))?;
        tx.execute(
            "INSERT INTO refusal_entities (kind, id, seq)
             SELECT * FROM unnest($1::\"char\"[], $2::uuid[], $3::bigint[]) ON CONFLICT DO NOTHING",
            &[&kinds, &ids, &at],
        )
        .map_err(e("cannot file refusals"))?;
        tx.commit().map_err(e("cannot file refusals"))?;
        let last = seqs.last().copied().unwrap_or(first - 1);
        self.filed
            .store(u64::try_from(last).unwrap_or(0), Ordering::SeqCst);
        Ok(())
    }

    fn filed(&self) -> u64 {
        self.filed.load(Ordering::SeqCst)
    }

    fn upto(&self, last: u64) -> Box<dyn Iterator<Item = Result<RefusalRecord, StoreError>> + '_> {
        let last = i64::try_from(last).unwrap_or(i64::MAX);
        super::pool::paged(1024, move |after| {
            let rows = self
                .pool
                .get()?
                .query(
                    "SELECT seq, record FROM refusals WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT 1024",
                    &[&after, &last],
                )
                .map_err(err(&self.pool, "cannot read the refusal audit trail"))?;
            Ok(rows
                .into_iter()
                .map(|r| (r.get(0), decode(&r.get::<_, String>(1))))
                .collect())
        })
    }

    fn is_empty(&self) -> bool {
        self.filed() == 0
    }

    fn of(&self, entity: &EntityRef) -> Result<Vec<RefusalRecord>, StoreError> {
        let (kind, id) = entity_key(entity);
        let rows = self
            .pool
            .get()?
            .query(
                "SELECT r.record FROM refusal_entities e JOIN refusals r ON r.seq = e.seq
                 WHERE e.kind = $1 AND e.id = $2 ORDER BY e.seq",
                &[&kind, &id],
            )
            .map_err(err(&self.pool, "cannot read the refusal audit trail"))?;
        rows.into_iter()
            .map(|r| decode(&r.get::<_, String>(0)))
            .collect()
    }
}

fn decode(text: &str) -> Result<RefusalRecord, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt("a refusal record", e))
}

/// The consumers' lock across processes: a session advisory lock on a pooled connection, let go when dropped (or when
/// the connection is lost, with it).
struct ConsumersLock(super::pool::Pooled, i64);

impl Drop for ConsumersLock {
    fn drop(&mut self) {
        let _ = self.0.execute("SELECT pg_advisory_unlock($1)", &[&self.1]);
    }
}

impl ConsumerStore for Documents {
    fn exclusive(&self) -> Result<Box<dyn std::any::Any>, StoreError> {
        use sha2::{Digest, Sha256};
        let d = Sha256::digest(
            format!("partner-ledger consumers {}", self.pool.target().schema()).as_bytes(),
        );
        let key = i64::from_be_bytes(d[..8].try_into().unwrap_or_default());
        let mut client = self.pool.get()?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&key])
            .map_err(err(&self.pool, "cannot lock the consumers"))?;
        Ok(Box::new(ConsumersLock(client, key)))
    }

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .pool
            .get()?
            .query_opt("SELECT document FROM consumers WHERE name = $1", &[&name])
            .map_err(err(&self.pool, "cannot read a consumer"))?
            .map(|r| r.get(0)))
    }

    fn put(&self, name: &str, document: &[u8]) -> Result<(), StoreError> {
        self.pool
            .get()?
            .execute(
                "INSERT INTO consumers (name, document) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET document = excluded.document",
                &[&name, &document],
            )
            .map_err(err(&self.pool, "cannot write a consumer"))?;
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<bool, StoreError> {
        let n = self
            .pool
            .get()?
            .execute("DELETE FROM consumers WHERE name = $1", &[&name])
            .map_err(err(&self.pool, "cannot remove a consumer"))?;
        Ok(n > 0)
    }

    fn all(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self
            .pool
            .get()?
            .query("SELECT document FROM consumers ORDER BY name", &[])
            .map_err(err(&self.pool, "cannot read the consumers"))?
            .into_iter()
            .map(|r| r.get(0))
            .collect())
    }
}
