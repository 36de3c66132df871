//! One task per admin that reads the registry's counters every second and
//! turns them into rates: per service (kept five minutes in a ring) and,
//! while someone watches, per connection and per client IP.
//!
//! Everything here reads what the registry already counts: nothing is added
//! to the connections' read and write path.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::watch;

use super::routes::Shared;
use crate::{canonical_ip as canonical, Registry, ServiceSnapshot};

/// How often the sampler reads the counters.
pub(super) const INTERVAL: Duration = Duration::from_secs(1);

/// Samples kept per service: five minutes.
pub(super) const HISTORY: usize = 300;

/// Entries of a service's blacklist sent to the page (the count is exact).
const BLACKLIST_SHOWN: usize = 50;

/// Client IPs in each top-talkers list.
const TALKERS: usize = 10;

/// One service at one tick, as the sparklines draw it.
#[derive(Clone, Copy, Debug, Serialize)]
pub(super) struct Point {
    /// Unix milliseconds.
    t: u64,
    /// Live connections.
    c: usize,
    /// Distinct client IPs.
    ips: usize,
    /// Accepted per second.
    acc: f64,
    /// Rejected per second, every reason.
    rej: f64,
    /// Bytes per second read from clients.
    rin: f64,
    /// Bytes per second written to clients.
    rout: f64,
}

/// One service's figures at a tick.
#[derive(Debug, Serialize)]
pub(super) struct ServiceTick {
    pub(super) sid: String,
    running: bool,
    pub(super) connections: usize,
    ip_count: usize,
    accepted: u64,
    rejected: BTreeMap<String, u64>,
    bytes_read: u64,
    bytes_written: u64,
    /// Rejected per second, by reason (the reasons seen since boot).
    rejected_rate: BTreeMap<String, f64>,
    blacklist: Vec<String>,
    blacklist_len: usize,
    /// Bans with a lifetime (or learnt from other instances), the first
    /// [`BLACKLIST_SHOWN`].
    timed_bans: Vec<crate::TimedBan>,
    /// The last refusals, newest first.
    rejections: Vec<crate::Rejection>,
    point: Point,
}

/// One live connection with its current rate.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Row {
    #[serde(serialize_with = "as_str")]
    pub(super) sid: Arc<str>,
    pub(super) id: u64,
    pub(super) peer: SocketAddr,
    /// Seconds since accepted.
    pub(super) age: u64,
    /// Seconds since the last byte either way.
    pub(super) idle: u64,
    /// Bytes read from the client.
    #[serde(rename = "in")]
    pub(super) bytes_in: u64,
    /// Bytes written to the client.
    #[serde(rename = "out")]
    pub(super) bytes_out: u64,
    /// Bytes per second, both ways, over the last tick.
    pub(super) rate: f64,
}

/// A client IP and what it weighs across services.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Talker {
    ip: IpAddr,
    rate: f64,
    connections: usize,
}

/// The top client IPs by bytes per second and by connections.
#[derive(Debug, Default, Serialize)]
pub(super) struct Talkers {
    by_rate: Vec<Talker>,
    by_connections: Vec<Talker>,
}

/// What one tick publishes.
#[derive(Debug, Default)]
pub(super) struct Tick {
    pub(super) t: u64,
    pub(super) services: Vec<ServiceTick>,
    /// Every live connection, when someone watched at this tick.
    pub(super) rows: Option<Vec<Row>>,
    pub(super) talkers: Talkers,
}

/// The sampler's shared half: the ring and the latest tick.
#[derive(Debug)]
pub(super) struct Sampler {
    started: AtomicBool,
    /// Open event streams.
    watchers: AtomicUsize,
    /// Rows are also computed until then (unix ms): `/connections` was asked.
    demand_until: AtomicU64,
    history: Mutex<BTreeMap<String, VecDeque<Point>>>,
    pub(super) latest: watch::Sender<Arc<Tick>>,
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler {
            started: AtomicBool::new(false),
            watchers: AtomicUsize::new(0),
            demand_until: AtomicU64::new(0),
            history: Mutex::default(),
            latest: watch::Sender::new(Arc::new(Tick::default())),
        }
    }
}

/// Counts an event stream while it lives.
pub(super) struct Watching(Arc<Shared>);

impl Watching {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        shared.sampler.watchers.fetch_add(1, Relaxed);
        Watching(shared)
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.sampler.watchers.fetch_sub(1, Relaxed);
    }
}

// === impl Sampler ===

impl Sampler {
    /// Every service's ring, for a page that just opened.
    pub(super) fn history(&self) -> BTreeMap<String, VecDeque<Point>> {
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Keeps rows computed for a while: `/connections` was asked.
    pub(super) fn want_rows(&self) {
        self.demand_until.store(unix_ms() + 10_000, Relaxed);
    }
}

impl Shared {
    /// Starts the sampler task, once; it ends when the admin is dropped.
    pub(super) fn start_sampler(self: &Arc<Self>) {
        if self.sampler.started.swap(true, Relaxed) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(run(weak));
    }
}

async fn run(shared: Weak<Shared>) {
    let mut every = tokio::time::interval(INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut state = State::default();
    loop {
        every.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let s = &shared.sampler;
        let rows = s.watchers.load(Relaxed) > 0 || s.demand_until.load(Relaxed) > unix_ms();
        let tick = state.sample(&shared.registry, rows);
        {
            let mut history = s.history.lock().unwrap_or_else(PoisonError::into_inner);
            history.retain(|sid, _| tick.services.iter().any(|t| &t.sid == sid));
            for t in &tick.services {
                let ring = history.entry(t.sid.clone()).or_default();
                if ring.len() == HISTORY {
                    ring.pop_front();
                }
                ring.push_back(t.point);
            }
        }
        s.latest.send_replace(Arc::new(tick));
    }
}

/// The counters at the previous tick.
#[derive(Default)]
struct State {
    at: Option<Instant>,
    services: HashMap<String, ServiceSnapshot>,
    /// Each live connection's bytes (both ways) at the previous tick, when
    /// rows were computed then.
    conns: Option<HashMap<(Arc<str>, u64), u64>>,
}

// === impl State ===

impl State {
    fn sample(&mut self, registry: &Registry, with_rows: bool) -> Tick {
        let now = Instant::now();
        let dt = self
            .at
            .map_or(0.0, |at| now.duration_since(at).as_secs_f64());
        let per_sec = |now: u64, before: u64| {
            if dt > 0.0 {
                now.saturating_sub(before) as f64 / dt
            } else {
                0.0
            }
        };
        let t = unix_ms();
        let mut services = Vec::new();
        let mut rows = with_rows.then(Vec::new);
        let mut conns = HashMap::new();
        let mut seen = HashMap::new();
        for service in registry.list() {
            let mut snap = if with_rows {
                service.snapshot_with_conns()
            } else {
                service.snapshot()
            };
            let prev = self.services.get(&snap.sid);
            let was = |f: fn(&ServiceSnapshot) -> u64| prev.map_or(f(&snap), f);
            let rejected_rate: BTreeMap<String, f64> = snap
                .rejected
                .iter()
                .map(|(reason, n)| {
                    let before = prev.and_then(|p| p.rejected.get(reason)).copied();
                    (reason.clone(), per_sec(*n, before.unwrap_or(*n)))
                })
                .collect();
            let point = Point {
                t,
                c: snap.connections,
                ips: snap.ip_count,
                acc: per_sec(snap.accepted, was(|s| s.accepted)),
                rej: rejected_rate.values().sum(),
                rin: per_sec(snap.bytes_read, was(|s| s.bytes_read)),
                rout: per_sec(snap.bytes_written, was(|s| s.bytes_written)),
            };
            if let (Some(rows), Some(list)) = (rows.as_mut(), snap.conns.take()) {
                let sid: Arc<str> = snap.sid.as_str().into();
                for c in list {
                    let bytes = c.bytes_read + c.bytes_written;
                    let before = self.conns.as_ref().map(|m| {
                        // A connection new since the last tick moved all its bytes within it.
                        m.get(&(sid.clone(), c.id)).copied().unwrap_or(0)
                    });
                    conns.insert((sid.clone(), c.id), bytes);
                    rows.push(Row {
                        sid: sid.clone(),
                        id: c.id,
                        peer: c.peer,
                        age: c.age_secs,
                        idle: c.idle_secs,
                        bytes_in: c.bytes_read,
                        bytes_out: c.bytes_written,
                        rate: before.map_or(0.0, |b| per_sec(bytes, b)),
                    });
                }
            }
            let config = service.config();
            services.push(ServiceTick {
                sid: snap.sid.clone(),
                running: service.is_running(),
                connections: snap.connections,
                ip_count: snap.ip_count,
                accepted: snap.accepted,
                rejected: snap.rejected.clone(),
                bytes_read: snap.bytes_read,
                bytes_written: snap.bytes_written,
                rejected_rate,
                blacklist: config
                    .blacklist
                    .iter()
                    .take(BLACKLIST_SHOWN)
                    .map(ToString::to_string)
                    .collect(),
                blacklist_len: config.blacklist.len(),
                timed_bans: {
                    let mut bans = service.timed_bans();
                    bans.truncate(BLACKLIST_SHOWN);
                    bans
                },
                rejections: service.recent_rejections(),
                point,
            });
            seen.insert(snap.sid.clone(), snap);
        }
        self.at = Some(now);
        self.services = seen;
        self.conns = with_rows.then_some(conns);
        let talkers = rows.as_deref().map(talkers).unwrap_or_default();
        Tick {
            t,
            services,
            rows,
            talkers,
        }
    }
}

/// The top client IPs, across services.
fn talkers(rows: &[Row]) -> Talkers {
    let mut by_ip: HashMap<IpAddr, Talker> = HashMap::new();
    for row in rows {
        let ip = canonical(row.peer.ip());
        let t = by_ip.entry(ip).or_insert(Talker {
            ip,
            rate: 0.0,
            connections: 0,
        });
        t.rate += row.rate;
        t.connections += 1;
    }
    let all: Vec<Talker> = by_ip.into_values().collect();
    let top = |key: fn(&Talker) -> f64| {
        let mut list: Vec<Talker> = all.clone();
        list.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.ip.cmp(&b.ip)));
        list.truncate(TALKERS);
        list
    };
    Talkers {
        by_rate: top(|t| t.rate),
        by_connections: top(|t| t.connections as f64),
    }
}

fn as_str<S: serde::Serializer>(s: &Arc<str>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(s)
}

pub(super) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
