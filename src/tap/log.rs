//! The `print_bytes` dump, off the connections' path: a connection hands a
//! copy of its bytes to a bounded queue (never waiting on it), and one
//! process-wide thread writes them to the log, through the `tracing`
//! dispatcher that was current where the bytes moved. A full queue drops
//! the dump and counts it; the next dump written says how many were lost.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};

use tracing::Dispatch;

use super::hexdump;
use crate::io::{ConnRecord, Direction};

/// Dumps waiting at most.
const QUEUE: usize = 1024;

/// Bytes waiting in dumps at most (a dump of a large read holds all of it).
const MAX_PENDING: usize = 8 << 20;

/// Bytes in dumps waiting for the thread.
static PENDING: AtomicUsize = AtomicUsize::new(0);

/// Dumps dropped since the thread last said so.
static LOST: AtomicU64 = AtomicU64::new(0);

/// Dumps dropped in all, for tests and curious callers.
static LOST_TOTAL: AtomicU64 = AtomicU64::new(0);

struct Dump {
    dispatch: Dispatch,
    sid: Arc<str>,
    id: u64,
    peer: SocketAddr,
    dir: Direction,
    offset: u64,
    bytes: Vec<u8>,
}

/// The queue to the dump thread, started at the first dump; `None` when
/// the thread could not start (every dump is then lost).
fn queue() -> Option<&'static SyncSender<Dump>> {
    static QUEUE_TX: OnceLock<Option<SyncSender<Dump>>> = OnceLock::new();
    QUEUE_TX
        .get_or_init(|| {
            let (tx, rx) = mpsc::sync_channel::<Dump>(QUEUE);
            std::thread::Builder::new()
                .name("monconn-hexdump".into())
                .spawn(move || {
                    for dump in rx {
                        PENDING.fetch_sub(dump.bytes.len(), Relaxed);
                        write(&dump);
                    }
                })
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

fn write(dump: &Dump) {
    tracing::dispatcher::with_default(&dump.dispatch, || {
        let lost = LOST.swap(0, Relaxed);
        if lost > 0 {
            tracing::warn!(
                target: "monconn::hexdump",
                lost,
                "hex dumps dropped: the log did not keep up"
            );
        }
        hexdump::trace(
            &dump.sid,
            dump.id,
            dump.peer,
            dump.dir,
            dump.offset,
            &dump.bytes,
        );
    });
}

/// Queues a dump of the first `n` bytes of `bufs`, one per slice, if the
/// current dispatcher wants `monconn::hexdump` at TRACE. Never blocks.
pub(crate) fn dump(
    record: &ConnRecord,
    dir: Direction,
    mut offset: u64,
    n: usize,
    bufs: &[IoSlice<'_>],
) {
    if !tracing::enabled!(target: "monconn::hexdump", tracing::Level::TRACE) {
        return;
    }
    let dispatch = tracing::dispatcher::get_default(Dispatch::clone);
    let mut left = n;
    for buf in bufs {
        if left == 0 {
            break;
        }
        let take = left.min(buf.len());
        left -= take;
        if take == 0 {
            continue;
        }
        let dump = Dump {
            dispatch: dispatch.clone(),
            sid: record.sid_arc().clone(),
            id: record.id(),
            peer: record.peer(),
            dir,
            offset,
            bytes: buf[..take].to_vec(),
        };
        offset += take as u64;
        send(dump);
    }
}

fn send(dump: Dump) {
    let len = dump.bytes.len();
    let Some(tx) = queue() else {
        return lose();
    };
    if PENDING.fetch_add(len, Relaxed) + len > MAX_PENDING {
        PENDING.fetch_sub(len, Relaxed);
        return lose();
    }
    if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(dump) {
        PENDING.fetch_sub(len, Relaxed);
        lose();
    }
}

fn lose() {
    LOST.fetch_add(1, Relaxed);
    LOST_TOTAL.fetch_add(1, Relaxed);
}

/// Hex dumps (`print_bytes`) dropped so far in this process because the
/// log did not keep up.
pub(crate) fn lost() -> u64 {
    LOST_TOTAL.load(Relaxed)
}
