//! Format 3 of the write-model snapshot: the state as a stream of frames of a few thousand entries of one table each,
//! so that neither writing nor reading a snapshot holds its encoded bytes whole (at ten million events they are close
//! to a gigabyte), and so that frames decode on several threads while the file is read.
//!
//! After the header (`mod.rs`) come frames: a kind byte, a length (4 bytes, big-endian) and that many bytes, the
//! postcard encoding of a list of `(key, value)` entries of one table (kind 1: the clock and the folded count). The
//! frame of kind 0 and length 0 ends the stream; the 32 bytes after it are the SHA-256 of every frame before it
//! (kinds, lengths and bytes), checked before anything decoded is used.

use std::io::{Read, Write};
use std::sync::{mpsc, Arc, Mutex};

use imbl::{OrdMap, OrdSet};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::domain::table::{packed, packed_keys, Table};
use crate::domain::{State, Timestamp};

/// Entries per frame: small enough that a frame in flight costs little memory, large enough that framing costs none.
const PER_FRAME: usize = 4096;
/// No frame is this large (a damaged length is refused rather than allocated).
const MAX_FRAME: usize = 64 << 20;
const END: u8 = 0;
const SCALARS: u8 = 1;

/// One table of the state, as frames carry it.
trait Column: Sized + Send {
    type Key: Serialize + DeserializeOwned + Ord + Clone + Send;
    type Value: Serialize + DeserializeOwned;
    /// What a decoded entry holds until the table is built.
    type Item: Send;
    fn item(value: Self::Value) -> Self::Item;
    fn build(entries: Vec<(Self::Key, Self::Item)>) -> Self;
    fn each(&self) -> impl Iterator<Item = (&Self::Key, &Self::Value)>;
}

impl<K, V> Column for Table<K, V>
where
    K: Serialize + DeserializeOwned + Ord + Clone + Send + Sync,
    V: Serialize + DeserializeOwned + Send + Sync,
{
    type Key = K;
    type Value = V;
    type Item = Arc<V>;
    fn item(value: V) -> Arc<V> {
        Arc::new(value)
    }
    fn build(entries: Vec<(K, Arc<V>)>) -> Self {
        Table::from_packed(packed(entries))
    }
    fn each(&self) -> impl Iterator<Item = (&K, &V)> {
        self.iter()
    }
}

impl<K, V> Column for OrdMap<K, V>
where
    K: Serialize + DeserializeOwned + Ord + Clone + Send + Sync,
    V: Serialize + DeserializeOwned + Clone + Send + Sync,
{
    type Key = K;
    type Value = V;
    type Item = V;
    fn item(value: V) -> V {
        value
    }
    fn build(entries: Vec<(K, V)>) -> Self {
        packed(entries)
    }
    fn each(&self) -> impl Iterator<Item = (&K, &V)> {
        self.iter()
    }
}

impl<K> Column for OrdSet<K>
where
    K: Serialize + DeserializeOwned + Ord + Clone + Send + Sync,
{
    type Key = K;
    type Value = ();
    type Item = ();
    fn item(_: ()) {}
    fn build(entries: Vec<(K, ())>) -> Self {
        packed_keys(entries.into_iter().map(|(k, ())| k).collect())
    }
    fn each(&self) -> impl Iterator<Item = (&K, &())> {
        self.iter().map(|k| (k, &()))
    }
}

/// Writes frames, hashing them as they go.
struct Framer<'a> {
    out: &'a mut dyn Write,
    hasher: Sha256,
    scratch: Vec<u8>,
}

impl Framer<'_> {
    fn frame(&mut self, kind: u8, value: &impl Serialize) -> std::io::Result<()> {
        self.scratch.clear();
        let bytes = postcard::to_extend(value, std::mem::take(&mut self.scratch))
            .map_err(std::io::Error::other)?;
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|n| (*n as usize) <= MAX_FRAME)
            .ok_or_else(|| std::io::Error::other("a snapshot frame is too large"))?;
        let mut head = [kind, 0, 0, 0, 0];
        head[1..].copy_from_slice(&len.to_be_bytes());
        self.hasher.update(head);
        self.hasher.update(&bytes);
        self.out.write_all(&head)?;
        self.out.write_all(&bytes)?;
        self.scratch = bytes;
        Ok(())
    }

    fn column<C: Column>(&mut self, kind: u8, column: &C) -> std::io::Result<()> {
        let mut chunk = Vec::with_capacity(PER_FRAME);
        for entry in column.each() {
            chunk.push(entry);
            if chunk.len() == PER_FRAME {
                self.frame(kind, &chunk)?;
                chunk.clear();
            }
        }
        if chunk.is_empty() {
            Ok(())
        } else {
            self.frame(kind, &chunk)
        }
    }
}

/// A table's decoded entries.
type Items<C> = Vec<(<C as Column>::Key, <C as Column>::Item)>;

fn decode_column<C: Column>(bytes: &[u8]) -> Result<Items<C>, postcard::Error> {
    let entries: Vec<(C::Key, C::Value)> = postcard::from_bytes(bytes)?;
    Ok(entries.into_iter().map(|(k, v)| (k, C::item(v))).collect())
}

/// A table's decoded frames, until the last one is in.
struct Pending<T> {
    frames: Vec<(u64, T)>,
    /// How many frames the table has, once the reader has seen them all.
    expected: Option<usize>,
    done: bool,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Pending {
            frames: Vec::new(),
            expected: None,
            done: false,
        }
    }
}

impl<T> Pending<T> {
    /// The frames, once, when all are in.
    fn complete(&mut self) -> Option<Vec<(u64, T)>> {
        if self.done || self.expected != Some(self.frames.len()) {
            return None;
        }
        self.done = true;
        Some(std::mem::take(&mut self.frames))
    }
}

/// Joins a table's frames in the order they were written.
fn joined<T>(mut frames: Vec<(u64, Vec<T>)>) -> Vec<T> {
    frames.sort_unstable_by_key(|(seq, _)| *seq);
    let mut all = Vec::with_capacity(frames.iter().map(|(_, f)| f.len()).sum());
    for (_, frame) in frames {
        all.extend(frame);
    }
    all
}

macro_rules! tables {
    ($($kind:literal $field:ident: $ty:ty;)*) => {
        /// One decoded frame.
        #[allow(non_camel_case_types)]
        enum Decoded {
            Scalars(Option<Timestamp>, u64),
            $($field(Items<$ty>),)*
        }

        /// A table once built.
        #[allow(non_camel_case_types)]
        enum Built {
            $($field($ty),)*
        }

        /// The decoded frames of each table until all of them are in, then the table built from them: a table is
        /// built as soon as its last frame is decoded, so that only one table's decoded entries wait at a time.
        #[derive(Default)]
        struct Parts {
            scalars: Option<(Option<Timestamp>, u64)>,
            $($field: Pending<Items<$ty>>,)*
            built: Vec<Built>,
        }

        /// Builds one table from its frames (run outside the lock on `Parts`).
        type Job = Box<dyn FnOnce() -> Built + Send>;

        impl Parts {
            /// Files a decoded frame; returns the build of its table if this was its last frame.
            fn add(&mut self, seq: u64, decoded: Decoded) -> Option<Job> {
                match decoded {
                    Decoded::Scalars(clock, folded) => {
                        self.scalars = Some((clock, folded));
                        None
                    }
                    $(Decoded::$field(entries) => {
                        self.$field.frames.push((seq, entries));
                        self.$field.complete().map(|frames| {
                            Box::new(move || Built::$field(<$ty as Column>::build(joined(frames)))) as Job
                        })
                    })*
                }
            }

            /// Records that table `kind` has `count` frames; returns its build if they are all decoded already.
            fn close(&mut self, kind: u8, count: usize) -> Option<Job> {
                match kind {
                    $($kind => {
                        self.$field.expected = Some(count);
                        self.$field.complete().map(|frames| {
                            Box::new(move || Built::$field(<$ty as Column>::build(joined(frames)))) as Job
                        })
                    })*
                    _ => None,
                }
            }

            /// The state, once every frame was filed and every table built.
            fn state(self) -> Result<State, String> {
                let (clock, folded) = self.scalars.ok_or("it holds no clock frame")?;
                let mut state = State { clock, folded, ..State::default() };
                for built in self.built {
                    match built {
                        $(Built::$field(table) => state.$field = table,)*
                    }
                }
                Ok(state)
            }
        }

        fn decode_frame(kind: u8, bytes: &[u8]) -> Result<Decoded, String> {
            let failed = |e: postcard::Error| format!("a frame of kind {kind} does not decode: {e}");
            match kind {
                SCALARS => {
                    let (clock, folded) = postcard::from_bytes(bytes).map_err(failed)?;
                    Ok(Decoded::Scalars(clock, folded))
                }
                $($kind => Ok(Decoded::$field(decode_column::<$ty>(bytes).map_err(failed)?)),)*
                other => Err(format!("it holds a frame of unknown kind {other}")),
            }
        }

        /// Writes `state` as frames, then the end frame and the digest.
        pub(super) fn write(out: &mut dyn Write, state: &State) -> std::io::Result<()> {
            let mut framer = Framer { out, hasher: Sha256::new(), scratch: Vec::new() };
            // Every field named: one added to the state without a frame does not compile.
            let State { clock, folded, $($field,)* } = state;
            framer.frame(SCALARS, &(clock, folded))?;
            $(framer.column($kind, $field)?;)*
            let digest = std::mem::take(&mut framer.hasher).finalize();
            framer.out.write_all(&[END, 0, 0, 0, 0])?;
            framer.out.write_all(&digest)
        }
    };
}

tables! {
    2 partners: Table<crate::domain::PartnerId, crate::domain::state::Partner>;
    3 customers: Table<crate::domain::CustomerId, crate::domain::state::Customer>;
    4 links: OrdSet<(crate::domain::PartnerId, crate::domain::PartnerId)>;
    5 requests: Table<crate::domain::RequestId, crate::domain::state::Request>;
    6 relationships: OrdMap<(crate::domain::PartnerId, crate::domain::CustomerId), crate::domain::state::Relationship>;
    7 admin: Table<crate::domain::AdminRelationshipId, crate::domain::state::AdminRelationship>;
    8 admin_open: OrdSet<crate::domain::AdminRelationshipId>;
    9 admin_open_by_partner: OrdMap<crate::domain::PartnerId, OrdSet<crate::domain::AdminRelationshipId>>;
    10 subscriptions: Table<crate::domain::SubscriptionId, crate::domain::state::Subscription>;
    11 plans: Table<(crate::domain::PartnerId, crate::domain::CustomerId), crate::domain::state::AzurePlan>;
    12 partner_customers: OrdMap<crate::domain::PartnerId, imbl::Vector<crate::domain::CustomerId>>;
    13 partner_customer_ordinal: OrdMap<(crate::domain::PartnerId, crate::domain::CustomerId), u64>;
    14 involved_at: OrdMap<(crate::domain::PartnerId, crate::domain::CustomerId), u64>;
}

/// Reads the frames after the header from `input`: decoded on `threads` threads while this one reads and hashes, each
/// table built as soon as its last frame is decoded. The state is returned only once the digest matched; the error
/// says why the snapshot cannot be used.
pub(super) fn read(input: &mut dyn Read, threads: usize) -> Result<State, String> {
    let truncated = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => "it is truncated".to_string(),
        _ => format!("cannot read it: {e}"),
    };
    let parts = Mutex::new(Parts::default());
    // Builds a table whose frames are all in, then files it.
    let run = |job: Option<Job>| {
        if let Some(job) = job {
            let built = job();
            parts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .built
                .push(built);
        }
    };
    let failure: Mutex<Option<String>> = Mutex::new(None);
    let (send, receive) = mpsc::sync_channel::<(u64, u8, Vec<u8>)>(threads.max(1) * 4);
    let receive = Mutex::new(receive);
    let mut hasher = Sha256::new();
    let read: Result<[u8; 32], String> = std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let next = receive.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok((seq, kind, bytes)) = next else { break };
                match decode_frame(kind, &bytes) {
                    Ok(decoded) => {
                        drop(bytes);
                        let job = parts
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .add(seq, decoded);
                        run(job);
                    }
                    Err(why) => {
                        failure
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(why);
                    }
                }
            });
        }
        let send = send;
        let mut seq = 0u64;
        // The table being read, and how many frames of it came so far.
        let mut current: Option<(u8, usize)> = None;
        let mut seen = Vec::new();
        loop {
            let mut head = [0u8; 5];
            input.read_exact(&mut head).map_err(truncated)?;
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            if current.is_none_or(|(kind, _)| kind != head[0]) {
                if let Some((kind, count)) = current.take() {
                    let job = parts
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .close(kind, count);
                    run(job);
                }
                if seen.contains(&head[0]) {
                    return Err(format!(
                        "it is damaged: frames of kind {} are apart",
                        head[0]
                    ));
                }
                seen.push(head[0]);
                current = Some((head[0], 0));
            }
            if let Some((_, count)) = &mut current {
                *count += 1;
            }
            if head[0] == END && len == 0 {
                let mut digest = [0u8; 32];
                input.read_exact(&mut digest).map_err(truncated)?;
                let mut rest = [0u8; 1];
                if input.read(&mut rest).map_err(truncated)? != 0 {
                    return Err("it has bytes after its end".to_string());
                }
                return Ok(digest);
            }
            if len > MAX_FRAME {
                return Err(format!("it is damaged: a frame claims {len} bytes"));
            }
            let mut bytes = vec![0u8; len];
            input.read_exact(&mut bytes).map_err(truncated)?;
            hasher.update(head);
            hasher.update(&bytes);
            seq += 1;
            if send.send((seq, head[0], bytes)).is_err() {
                return Err("its decoding stopped".to_string());
            }
        }
    });
    let digest = read?;
    if hasher.finalize().as_slice() != digest {
        return Err("its content does not match its checksum".to_string());
    }
    if let Some(why) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(why);
    }
    parts
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .state()
}
