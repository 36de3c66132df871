//! Why a connection ended: the cause its record keeps and counts by.

use std::fmt;
use std::io;

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCause {
    /// Dropped by its owner with no error seen: a clean close.
    Normal,
    /// Dropped after the transport returned an I/O error (a reset, say).
    Error,
    /// Closed by the sweeper: nothing read or written for `max_idle`.
    Idle,
    /// Closed by the sweeper: a read pending past `read_timeout`.
    ReadTimeout,
    /// Closed by the sweeper: a write pending past `write_timeout`.
    WriteTimeout,
    /// Closed by [`ServiceMonitor::kick`](crate::ServiceMonitor::kick) or
    /// [`ServiceMonitor::kick_ip`](crate::ServiceMonitor::kick_ip).
    Kicked,
    /// Cut when its service stopped and `wait_timeout` ran out.
    Shutdown,
}

impl CloseCause {
    /// All causes, in the order of their counter slots.
    pub(crate) const ALL: [CloseCause; 7] = [
        CloseCause::Normal,
        CloseCause::Error,
        CloseCause::Idle,
        CloseCause::ReadTimeout,
        CloseCause::WriteTimeout,
        CloseCause::Kicked,
        CloseCause::Shutdown,
    ];

    /// The cause's name as it appears in snapshots and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseCause::Normal => "normal",
            CloseCause::Error => "error",
            CloseCause::Idle => "idle",
            CloseCause::ReadTimeout => "read_timeout",
            CloseCause::WriteTimeout => "write_timeout",
            CloseCause::Kicked => "kicked",
            CloseCause::Shutdown => "shutdown",
        }
    }

    pub(crate) fn slot(self) -> usize {
        self as usize
    }

    pub(crate) fn from_slot(slot: u8) -> Option<CloseCause> {
        Self::ALL.get(usize::from(slot)).copied()
    }

    /// The error kind a closed connection's next poll returns:
    /// [`io::ErrorKind::TimedOut`] for idle and timeouts,
    /// [`io::ErrorKind::ConnectionAborted`] for kicks and shutdown.
    pub fn error_kind(self) -> io::ErrorKind {
        match self {
            CloseCause::Idle | CloseCause::ReadTimeout | CloseCause::WriteTimeout => {
                io::ErrorKind::TimedOut
            }
            _ => io::ErrorKind::ConnectionAborted,
        }
    }
}

impl fmt::Display for CloseCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
