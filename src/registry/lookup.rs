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
    /// The first call turns on an index of the service's connections by
    /// address pair; from then on a lookup is a hash lookup under one of 32
    /// small locks, never the connection table's, and each accept and close
    /// updates the index. Connections already open when the index came on
    /// are found by a scan of the table, once each.
    ///
    /// # Examples
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let service = monconn::Registry::new().service("demo");
    /// let (peer, local) = ("10.0.0.1:5000".parse().unwrap(), "127.0.0.1:80".parse().unwrap());
    /// let (_client, server) = tokio::io::duplex(64);
    /// let conn = service.wrap(server, peer, local)?;
    /// let found = service.find_conn(peer, local).unwrap();
    /// assert_eq!(found.id(), conn.record().id());
    /// drop(conn);
    /// assert!(service.find_conn(peer, local).is_none());
    /// # Ok(()) }
    /// ```
    pub fn find_conn(&self, peer: SocketAddr, local: SocketAddr) -> Option<Arc<ConnRecord>> {
        let index = &self.inner.by_addr;
        index.enable();
        if let Some(record) = index.get(peer, local) {
            return Some(record);
        }
        // Opened before the index was on: scan, and index what is found,
        // under the table's lock so that a close cannot slip in between.
        let table = self.inner.table();
        let record = table
            .conns
            .values()
            .find(|r| r.peer() == peer && r.local() == local)
            .cloned()?;
        index.insert(&record);
        Some(record)
    }
}
