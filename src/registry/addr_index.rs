//! Live connections by address pair, for lookups per request.
//!
//! Off until the first lookup: a service nobody looks up by address pays one
//! relaxed load per accept and close. Once on, each accept and close also
//! takes one of [`SHARDS`] small locks, never the connection table's, and a
//! lookup takes only its shard's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};

use super::service::lock;
use crate::io::{ConnRecord, Record};

/// Shards of the index, picked by the client's port.
const SHARDS: usize = 32;

type Shard = Mutex<HashMap<(SocketAddr, SocketAddr), Record>>;

#[derive(Default)]
pub(crate) struct AddrIndex {
    on: AtomicBool,
    shards: OnceLock<Box<[Shard]>>,
}

impl AddrIndex {
    fn shard(&self, peer: SocketAddr) -> Option<&Shard> {
        if !self.on.load(Relaxed) {
            return None;
        }
        let shards = self.shards.get()?;
        Some(&shards[usize::from(peer.port()) % SHARDS])
    }

    /// Turns the index on. Connections listed before are not in it: a
    /// lookup that misses falls back on the table, and adds what it finds.
    pub(crate) fn enable(&self) {
        if !self.on.load(Relaxed) {
            self.shards
                .get_or_init(|| (0..SHARDS).map(|_| Mutex::default()).collect());
            self.on.store(true, Relaxed);
        }
    }

    /// Lists `record`; called under the table's lock, as [`remove`](Self::remove) is.
    pub(crate) fn insert(&self, record: &Record) {
        if let Some(shard) = self.shard(record.peer()) {
            lock(shard).insert((record.peer(), record.local()), record.clone());
        }
    }

    /// Unlists `record`, unless a newer connection from the same address
    /// pair took its place.
    pub(crate) fn remove(&self, record: &ConnRecord) {
        if let Some(shard) = self.shard(record.peer()) {
            let mut shard = lock(shard);
            let key = (record.peer(), record.local());
            if shard.get(&key).is_some_and(|r| r.id() == record.id()) {
                shard.remove(&key);
            }
        }
    }

    /// The record of the open connection from `peer` to `local`, if indexed.
    pub(crate) fn get(&self, peer: SocketAddr, local: SocketAddr) -> Option<Record> {
        lock(self.shard(peer)?).get(&(peer, local)).cloned()
    }
}
