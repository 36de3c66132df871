//! The sync task: subscribe, read the whole list, follow the channel and
//! write this instance's changes; on an outage, keep those pending and
//! reconnect with a backoff.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use ipnet::IpNet;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, oneshot};

use super::config::ClusterConfig;
use super::stats::Counters;
use super::wire::{self, Delta};
use crate::registry::{unix_ms, BanChange, BanSource, NEVER};
use crate::Registry;

/// Changes kept while Redis is away, at most (one per service and net:
/// the latest wins); past it, new ones are dropped and counted as errors.
const MAX_PENDING: usize = 100_000;
/// Changes written per round trip.
const BATCH: usize = 1_000;
/// The first reconnect backoff; it doubles up to `max_backoff`.
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// A change of this instance: the service's sid and what changed.
pub(super) type Change = (Arc<str>, BanChange);

/// Why a session ended.
enum End {
    Stopped,
    Lost(String),
}

pub(super) struct Sync {
    registry: Registry,
    config: ClusterConfig,
    counters: Arc<Counters>,
    /// This instance's id on the channel: its own messages are skipped.
    id: u64,
    conn: Option<ConnectionManager>,
    pending: HashMap<(Arc<str>, IpNet), BanChange>,
    /// The Redis process (`run_id`) of the last resync: while it is the
    /// same, a learnt ban missing from the shared set was lifted; after a
    /// restart, it may have been lost with the data, so it stays (until it
    /// expires or the next resync with the same process).
    run_id: Option<String>,
}

impl Sync {
    pub(super) fn new(registry: Registry, config: ClusterConfig, counters: Arc<Counters>) -> Self {
        let id = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Sync {
            registry,
            config,
            counters,
            id,
            conn: None,
            pending: HashMap::new(),
            run_id: None,
        }
    }

    /// Runs sessions until stopped, with a backoff between them.
    pub(super) async fn run(
        mut self,
        mut queue: mpsc::Receiver<Change>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let addr = self.config.addr();
        let mut backoff = MIN_BACKOFF;
        let mut down = false;
        loop {
            let (end, connected) = self.session(&mut queue, &mut stop, &mut down).await;
            self.counters.connected.store(false, Relaxed);
            match end {
                End::Stopped => return,
                End::Lost(error) => {
                    self.counters.error();
                    if !down {
                        tracing::warn!(redis = %addr, %error, "shared ban list unreachable; enforcing the local copy");
                        down = true;
                    } else {
                        tracing::debug!(redis = %addr, %error, "shared ban list still unreachable");
                    }
                }
            }
            if connected {
                backoff = MIN_BACKOFF;
            }
            let wake = tokio::time::Instant::now() + backoff;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => break,
                    change = queue.recv() => match change {
                        Some(change) => self.keep(change),
                        None => return,
                    },
                    _ = &mut stop => return,
                }
            }
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }

    /// One connection: subscribe, resync, then follow until it breaks.
    /// Returns why it ended and whether it got connected.
    async fn session(
        &mut self,
        queue: &mut mpsc::Receiver<Change>,
        stop: &mut oneshot::Receiver<()>,
        down: &mut bool,
    ) -> (End, bool) {
        let timeout = self.config.timeout;
        let pubsub = tokio::select! {
            subscribed = tokio::time::timeout(timeout, self.subscribe()) => match subscribed {
                Ok(Ok(pubsub)) => pubsub,
                Ok(Err(e)) => return (End::Lost(e.to_string()), false),
                Err(_) => return (End::Lost(format!("no connection within {timeout:?}")), false),
            },
            _ = &mut *stop => return (End::Stopped, false),
        };
        // This instance's own bans go (again) to the shared sets: a Redis
        // that restarted empty gets them back.
        self.reassert();
        if let Err(e) = self.resync().await {
            return (End::Lost(e), false);
        }
        self.counters.connected.store(true, Relaxed);
        let was_down = std::mem::replace(down, false);
        tracing::info!(redis = %self.config.addr(), reconnected = was_down, "shared ban list synced");
        let mut messages = pubsub.into_on_message();
        let every = self.config.resync_every;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    Some(message) => self.apply(message.get_payload_bytes()),
                    None => return (End::Lost("connection closed".into()), true),
                },
                change = queue.recv() => {
                    let Some(change) = change else { return (End::Stopped, true) };
                    self.keep(change);
                    while let Ok(change) = queue.try_recv() {
                        self.keep(change);
                    }
                    if let Err(e) = self.flush().await {
                        return (End::Lost(e), true);
                    }
                }
                _ = tick.tick() => if let Err(e) = self.resync().await {
                    return (End::Lost(e), true);
                },
                _ = &mut *stop => return (End::Stopped, true),
            }
        }
    }

    async fn subscribe(&mut self) -> redis::RedisResult<redis::aio::PubSub> {
        let mut pubsub = self.config.client.get_async_pubsub().await?;
        pubsub.subscribe(wire::channel(&self.config.key)).await?;
        Ok(pubsub)
    }

    /// The command connection, made once (it reconnects by itself).
    fn conn(&mut self) -> Result<ConnectionManager, String> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        let t = self.config.timeout;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(t))
            .set_response_timeout(Some(t))
            .set_number_of_retries(1)
            .set_max_delay(self.config.max_backoff);
        let conn = ConnectionManager::new_lazy_with_config(self.config.client.clone(), config)
            .map_err(|e| e.to_string())?;
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    async fn exec<T: redis::FromRedisValue>(
        &mut self,
        pipe: &redis::Pipeline,
    ) -> Result<T, String> {
        let mut conn = self.conn()?;
        let t = self.config.timeout;
        match tokio::time::timeout(t, pipe.query_async::<T>(&mut conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {t:?}")),
        }
    }

    /// Keeps a change of this instance until it is written.
    fn keep(&mut self, (sid, change): Change) {
        let net = match change {
            BanChange::Ban { net, .. } | BanChange::Unban { net } => net,
        };
        let key = (sid, net);
        if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(&key) {
            self.counters.error();
            return;
        }
        self.pending.insert(key, change);
        self.counters
            .pending
            .store(self.pending.len() as u64, Relaxed);
    }

    /// Keeps every live ban this instance made (its API, its rules) as a
    /// change to write.
    fn reassert(&mut self) {
        let now = unix_ms();
        for service in self.registry.list() {
            let sid: Arc<str> = Arc::from(service.sid());
            for ban in service.timed_bans() {
                if matches!(ban.source, BanSource::Local | BanSource::Rule) {
                    let until = ban.remaining_ms.map(|ms| now + ms);
                    self.keep((
                        sid.clone(),
                        BanChange::Ban {
                            net: ban.net,
                            until,
                        },
                    ));
                }
            }
        }
    }

    /// The Redis process's `run_id`.
    async fn run_id(&mut self) -> Result<String, String> {
        let mut pipe = redis::pipe();
        pipe.cmd("INFO").arg("server");
        let info: Vec<String> = self.exec(&pipe).await?;
        let info = info.concat();
        let id = info
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .unwrap_or_default();
        Ok(id.trim().to_owned())
    }

    /// Writes the pending changes: each to its service's set and the channel.
    async fn flush(&mut self) -> Result<(), String> {
        let changes: Vec<_> = self.pending.iter().map(|(k, c)| (k.clone(), *c)).collect();
        let channel = wire::channel(&self.config.key);
        for chunk in changes.chunks(BATCH) {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for ((sid, net), change) in chunk {
                let key = wire::set_key(&self.config.key, sid);
                let (until, unban) = match *change {
                    BanChange::Ban { until, .. } => {
                        pipe.cmd("ZADD")
                            .arg(&key)
                            .arg("GT")
                            .arg(wire::score(until))
                            .arg(net.to_string())
                            .ignore();
                        (until, false)
                    }
                    BanChange::Unban { .. } => {
                        pipe.cmd("ZREM").arg(&key).arg(net.to_string()).ignore();
                        (None, true)
                    }
                };
                let delta = Delta {
                    from: self.id,
                    sid: sid.to_string(),
                    net: *net,
                    until,
                    unban,
                };
                let json = serde_json::to_string(&delta).map_err(|e| e.to_string())?;
                pipe.cmd("PUBLISH").arg(&channel).arg(json).ignore();
            }
            self.exec::<()>(&pipe).await?;
            for (key, _) in chunk {
                self.pending.remove(key);
            }
            self.counters
                .bans_out
                .fetch_add(chunk.len() as u64, Relaxed);
            self.counters
                .pending
                .store(self.pending.len() as u64, Relaxed);
        }
        Ok(())
    }

    /// Writes what is pending, drops expired bans from the shared sets and
    /// makes each service's learnt bans those of its set.
    async fn resync(&mut self) -> Result<(), String> {
        self.flush().await?;
        let run_id = self.run_id().await?;
        let same_process = self.run_id.as_deref() == Some(run_id.as_str());
        let now = unix_ms();
        let services = self.registry.list();
        if !services.is_empty() {
            let mut pipe = redis::pipe();
            for service in &services {
                let key = wire::set_key(&self.config.key, service.sid());
                pipe.cmd("ZREMRANGEBYSCORE")
                    .arg(&key)
                    .arg("-inf")
                    .arg(now)
                    .ignore();
                pipe.cmd("ZRANGE")
                    .arg(&key)
                    .arg(format!("({now}"))
                    .arg("+inf")
                    .arg("BYSCORE")
                    .arg("WITHSCORES");
            }
            let lists: Vec<Vec<String>> = self.exec(&pipe).await?;
            let mut learnt = 0;
            for (service, flat) in services.iter().zip(lists) {
                let own = service.config();
                let shared: HashMap<IpNet, u64> = flat
                    .chunks_exact(2)
                    .filter_map(|pair| Some((pair[0].parse().ok()?, wire::until(&pair[1])?)))
                    // This instance's own permanent bans come back: they are in its list already.
                    .filter(|(net, until)| *until != NEVER || !own.blacklist.contains(net))
                    .collect();
                learnt += service.sync_shared(&shared, same_process);
            }
            self.counters.bans_in.fetch_add(learnt as u64, Relaxed);
        }
        self.counters.last_sync_ms.store(now, Relaxed);
        self.run_id = Some(run_id);
        Ok(())
    }

    /// Applies a change published by another instance.
    fn apply(&mut self, payload: &[u8]) {
        let delta: Delta = match serde_json::from_slice(payload) {
            Ok(delta) => delta,
            Err(error) => {
                self.counters.error();
                tracing::debug!(%error, "unreadable message on the shared ban list's channel");
                return;
            }
        };
        if delta.from == self.id {
            return;
        }
        let Some(service) = self.registry.get(&delta.sid) else {
            return;
        };
        let changed = if delta.unban {
            service.unban_here(delta.net).is_some()
        } else {
            let until = delta.until.unwrap_or(NEVER);
            until > unix_ms() && service.ban_timed(delta.net, until, BanSource::Cluster, false)
        };
        if changed {
            self.counters.bans_in.fetch_add(1, Relaxed);
            tracing::debug!(sid = %delta.sid, net = %delta.net, unban = delta.unban, "ban change learnt from the shared list");
        }
    }
}
