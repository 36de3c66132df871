//! The release of a monitored connection: the one thing io asks of whoever
//! owns connections (the registry's service), through [`Release`], so that
//! io imports nothing above it.

use std::fmt;

use super::record::{ConnRecord, Record};

/// Takes a connection back when its [`MonitoredIo`](super::MonitoredIo) is
/// dropped: unlists its record, folds its counts into totals, gives back
/// its slot. Implemented by the registry's service; called once per record.
pub(crate) trait Release: Send + Sync {
    /// Takes back the connection of `record`.
    fn release(&self, record: &ConnRecord);

    /// Who is told of its watched connections' bytes and closes (the
    /// registry's tap hub): reached through the owner, so that a record
    /// holds no pointer of its own for it.
    fn watcher(&self) -> Option<&dyn super::watch::Watcher> {
        None
    }
}

/// Owned by a [`MonitoredIo`](super::MonitoredIo): releases its record into
/// the record's owner on drop.
///
/// Not `Clone`: there is one per connection, so the release runs once.
pub(crate) struct ConnGuard(Record);

impl ConnGuard {
    pub(crate) fn new(record: Record) -> Self {
        ConnGuard(record)
    }

    pub(crate) fn record(&self) -> &Record {
        &self.0
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl fmt::Debug for ConnGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnGuard")
            .field("sid", &self.0.sid())
            .field("record", &self.0)
            .finish()
    }
}
