//! The shared state of a service: admission under its limits, the table of
//! live records, and the release of each connection, exactly once.

use super::*;

// === impl ServiceInner ===

impl ServiceInner {
    pub(crate) fn sid(&self) -> &str {
        &self.sid
    }

    pub(crate) fn config(&self) -> arc_swap::Guard<Arc<ServiceConfig>> {
        self.config.load()
    }

    pub(crate) fn table(&self) -> MutexGuard<'_, Table> {
        lock(&self.table)
    }

    pub(crate) fn boot_ms(&self) -> u64 {
        self.boot_ms
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.state.load(Relaxed) == STOPPED
    }

    /// Admits `peer` (see [`ServiceMonitor::admit`]); returns the `ipv6_prefix` it
    /// was keyed with, for the release.
    pub(super) fn admit(self: &Arc<Self>, peer: SocketAddr) -> Result<u8, Rejected> {
        let refuse = |reason| Err(Rejected::new(reason, peer));
        if self.state.load(Relaxed) != RUNNING {
            return refuse(RejectReason::Stopped);
        }
        let config = self.config.load();
        if config.auto_ban.is_some() && self.strike_connection(peer, &config) {
            return refuse(RejectReason::AutoBanned);
        }
        let ip = client_key(peer.ip(), config.ipv6_prefix);
        if let Some(rate) = config.rate_limit {
            if !self.rates.allow(ip, rate) {
                return refuse(RejectReason::RateLimit);
            }
        }
        let mut table = lock(&self.table);
        // Again under the lock: `close` changes the state under it.
        if self.state.load(Relaxed) != RUNNING {
            return refuse(RejectReason::Stopped);
        }
        if config.conn_limit.is_some_and(|l| table.active >= l) {
            return refuse(RejectReason::ConnLimit);
        }
        let known = table.ips.get(&ip).copied().unwrap_or(0) as usize;
        if known == 0 && config.ip_limit.is_some_and(|l| table.ips.len() >= l) {
            return refuse(RejectReason::IpLimit);
        }
        if config.per_ip_limit.is_some_and(|l| known >= l) {
            return refuse(RejectReason::PerIpLimit);
        }
        table.active += 1;
        *table.ips.entry(ip).or_insert(0) += 1;
        drop(table);
        self.ensure_sweeper();
        Ok(config.ipv6_prefix)
    }

    /// Creates and lists the record of an admitted connection, counted under
    /// `prefix`; closed with [`CloseCause::Shutdown`] when the service is
    /// stopped.
    pub(crate) fn register(
        self: Arc<Self>,
        peer: SocketAddr,
        local: SocketAddr,
        prefix: u8,
        proxy: Option<Box<crate::proxied::ProxyInfo>>,
    ) -> Record {
        let id = self.next_id.fetch_add(1, Relaxed);
        let print_bytes = self.config.load().print_bytes;
        let sid = self.sid.clone();
        let record = Arc::new(ConnRecord::new(
            id,
            sid,
            (peer, local),
            print_bytes,
            prefix,
            self.clone(),
            proxy,
        ));
        let mut table = lock(&self.table);
        // Under the lock, as `close` sets the state and cuts: an admission
        // attached after the cut was counted as cut, and is born closed.
        if self.is_stopped() {
            record.close(CloseCause::Shutdown);
        }
        table.conns.insert(id, record.clone());
        self.by_addr.insert(&record);
        drop(table);
        self.counters.accepted.fetch_add(1, Relaxed);
        // After the listing: a tap starting now finds it in the table, or
        // it finds the tap here.
        self.hub.on_open(&record);
        record
    }

    /// Gives back the slot of an admission of client key `ip`; with a
    /// record, also unlists it and folds its bytes and close cause into the
    /// totals.
    pub(crate) fn release(&self, ip: IpNet, record: Option<&ConnRecord>) {
        let mut table = lock(&self.table);
        if let Some(record) = record {
            table.conns.remove(&record.id());
            self.by_addr.remove(record);
            let c = &self.counters;
            c.closed_read.fetch_add(record.bytes_read(), Relaxed);
            c.closed_written.fetch_add(record.bytes_written(), Relaxed);
            c.last_read.fetch_max(record.last_read_ms(), Relaxed);
            let cause = record.closed().unwrap_or(if record.errored() {
                CloseCause::Error
            } else {
                CloseCause::Normal
            });
            c.closed[cause.slot()].fetch_add(1, Relaxed);
        }
        table.active = table.active.saturating_sub(1);
        if let Some(n) = table.ips.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                table.ips.remove(&ip);
            }
        }
        drop(table);
        // Outside the table's lock: a recorder may take locks of its own.
        #[cfg(feature = "metrics")]
        if let Some(record) = record {
            crate::registry::export::record_duration(&self.duration_key, record.age());
        }
        self.released.notify_waiters();
    }

    pub(crate) fn bytes(&self, table: &Table) -> ByteCounts {
        let c = &self.counters;
        let (mut read, mut written) = (c.closed_read.load(Relaxed), c.closed_written.load(Relaxed));
        for r in table.conns.values() {
            read += r.bytes_read();
            written += r.bytes_written();
        }
        ByteCounts {
            read: read.saturating_sub(c.taken_read.load(Relaxed)),
            written: written.saturating_sub(c.taken_written.load(Relaxed)),
        }
    }

    fn ensure_sweeper(self: &Arc<Self>) {
        if self.sweeper.load(Relaxed) || self.sweeper.swap(true, Relaxed) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(crate::registry::sweeper::run(Arc::downgrade(self)));
            }
            Err(_) => self.sweeper.store(false, Relaxed),
        }
    }

    pub(crate) fn sweeper_stopped(&self) {
        self.sweeper.store(false, Relaxed);
    }
}

impl Release for ServiceInner {
    fn release(&self, record: &ConnRecord) {
        ServiceInner::release(self, record.client_key(), Some(record));
    }

    fn watcher(&self) -> Option<&dyn crate::io::Watcher> {
        Some(&*self.hub)
    }
}
