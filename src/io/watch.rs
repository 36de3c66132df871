//! The watch hook: what a connection's reads and writes tell an observer
//! (a tap, the `print_bytes` dump) when one asked for them. io defines it;
//! the tap module, above io, implements it ([`Watcher`]), so that io imports
//! nothing above it.
//!
//! The hot path pays one relaxed load of the record's own watch bits
//! ([`ConnRecord::watched`](super::ConnRecord)); only a watched connection
//! calls the watcher, and the watcher never blocks (it hands copies to a
//! bounded queue, or drops them and counts the loss).

use std::io::IoSlice;

use super::record::ConnRecord;

/// The service asked for a hex dump of the connection's bytes (`print_bytes`).
pub(crate) const PRINT: u8 = 1;
/// A tap subscriber matches the connection (a hint: a tap that went away
/// leaves it set until the connection's next read or write finds no match).
pub(crate) const TAP: u8 = 2;

/// Which way the bytes went, from the server's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Read from the client.
    Read,
    /// Written to the client.
    Write,
}

impl Direction {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Direction::Read => "read",
            Direction::Write => "write",
        }
    }
}

/// Observes watched connections. Implemented by the tap module's hub; held
/// by every record (one per registry, shared).
pub(crate) trait Watcher: Send + Sync {
    /// `n` bytes moved `dir`, starting at `offset` of that direction's
    /// stream; they are the first `n` bytes of `bufs`. Must not block.
    fn on_bytes(
        &self,
        record: &ConnRecord,
        dir: Direction,
        offset: u64,
        n: usize,
        bufs: &[IoSlice<'_>],
    );

    /// The connection was released (its counts are final). Must not block.
    fn on_close(&self, record: &ConnRecord);
}
