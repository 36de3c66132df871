//! What a tap reports: [`TapEvent`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::hexdump::xxd;
use crate::io::{CloseCause, ConnRecord, Direction};

/// One thing that happened to a tapped connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TapEvent {
    /// The connection's service.
    pub sid: Arc<str>,
    /// The connection's id, unique within its service.
    pub conn: u64,
    /// Its client (after a PROXY header, the real one).
    pub peer: SocketAddr,
    /// When it happened.
    pub at: SystemTime,
    /// What happened.
    pub kind: TapKind,
}

/// What happened to a tapped connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TapKind {
    /// The connection opened; or, with `live`, it was already open when the
    /// tap started.
    Open {
        /// The local address it connected to.
        local: SocketAddr,
        /// Whether it was open before the tap started.
        live: bool,
    },
    /// Bytes were read from the client.
    Read(TapBytes),
    /// Bytes were written to the client.
    Write(TapBytes),
    /// The connection ended (its totals are final).
    Close {
        /// Why.
        cause: CloseCause,
        /// Bytes read from the client, in all.
        bytes_read: u64,
        /// Bytes written to the client, in all.
        bytes_written: u64,
        /// How long it was open.
        duration: Duration,
    },
}

/// The bytes of one read or write: where they start, how many moved, and
/// the first few of them ([`TapLimits::bytes_per_event`](super::TapLimits::bytes_per_event)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapBytes {
    /// Where they start in the connection's stream of that direction.
    pub offset: u64,
    /// How many bytes moved.
    pub len: usize,
    /// The first of them (all of them when `head.len() == len`).
    pub head: Vec<u8>,
}

impl TapEvent {
    /// The event's name: `open`, `read`, `write` or `close`.
    pub fn name(&self) -> &'static str {
        match self.kind {
            TapKind::Open { .. } => "open",
            TapKind::Read(_) => "read",
            TapKind::Write(_) => "write",
            TapKind::Close { .. } => "close",
        }
    }

    /// The bytes of a read or write, as `xxd` shows them (offsets of the
    /// connection's stream, 16 bytes a line); `None` for other events.
    ///
    /// # Examples
    /// ```
    /// # use monconn::tap::{TapBytes, TapEvent};
    /// # fn show(event: &TapEvent) {
    /// if let Some(hex) = event.hex() {
    ///     println!("{} {} bytes:\n{hex}", event.name(), event.bytes().unwrap().len);
    /// }
    /// # }
    /// ```
    pub fn hex(&self) -> Option<String> {
        self.bytes().map(|b| xxd(&b.head, b.offset))
    }

    /// The bytes of a read or write; `None` for other events.
    pub fn bytes(&self) -> Option<&TapBytes> {
        match &self.kind {
            TapKind::Read(b) | TapKind::Write(b) => Some(b),
            _ => None,
        }
    }

    fn of(record: &ConnRecord, kind: TapKind) -> Self {
        TapEvent {
            sid: record.sid_arc().clone(),
            conn: record.id(),
            peer: record.peer(),
            at: SystemTime::now(),
            kind,
        }
    }

    pub(crate) fn open(record: &ConnRecord, live: bool) -> Self {
        let local = record.local();
        Self::of(record, TapKind::Open { local, live })
    }

    pub(crate) fn bytes_of(
        record: &ConnRecord,
        dir: Direction,
        offset: u64,
        len: usize,
        head: Vec<u8>,
    ) -> Self {
        let bytes = TapBytes { offset, len, head };
        let kind = match dir {
            Direction::Read => TapKind::Read(bytes),
            Direction::Write => TapKind::Write(bytes),
        };
        Self::of(record, kind)
    }

    pub(crate) fn close(record: &ConnRecord) -> Self {
        let kind = TapKind::Close {
            cause: record.end_cause(),
            bytes_read: record.bytes_read(),
            bytes_written: record.bytes_written(),
            duration: record.age(),
        };
        Self::of(record, kind)
    }
}
