//! Finding a live connection's record in a service's table.

use std::net::SocketAddr;
use std::sync::Arc;

use super::service::{lock, ServiceMonitor};
use crate::io::ConnRecord;

impl ServiceMonitor {
    /// The live record of connection `id`, if it is open.
    pub fn conn(&self, id: u64) -> Option<Arc<ConnRecord>> {
        lock(&self.inner.table).conns.get(&id).cloned()
    }

    /// The live record of the open connection from `peer` to `local`, if
    /// there is one: for servers that hand their handlers only the addresses
    /// (tonic's `Request::remote_addr`, say).
    ///
    /// Scans the service's connection table under its lock: cheap for
    /// hundreds of connections, not meant for every request of a server with
    /// tens of thousands.
    pub fn find_conn(&self, peer: SocketAddr, local: SocketAddr) -> Option<Arc<ConnRecord>> {
        let table = self.inner.table();
        table
            .conns
            .values()
            .find(|r| r.peer() == peer && r.local() == local)
            .cloned()
    }
}
