//! Helpers for the reliability tests: what a process holds (`/proc`), its
//! CPU time, its descriptor limit, and forwarders with several services
//! from a config file. Used beside `support/forwarder.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{free_port, Forwarder, Setup};

/// Descriptors a process has open, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fds {
    /// Sockets (TCP and the rest).
    pub sockets: usize,
    /// Pipes (the forwarder's splice pool keeps some for reuse).
    pub pipes: usize,
    /// Everything else: epoll, eventfd, files, the terminal.
    pub other: usize,
}

impl Fds {
    pub fn total(&self) -> usize {
        self.sockets + self.pipes + self.other
    }
}

/// Counts the open descriptors of `pid` from `/proc/<pid>/fd`.
pub fn fds(pid: i32) -> Fds {
    let mut fds = Fds::default();
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("read /proc/<pid>/fd");
    for entry in dir.flatten() {
        // A descriptor may close between the listing and the readlink.
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if target.starts_with("socket:") {
            fds.sockets += 1;
        } else if target.starts_with("pipe:") {
            fds.pipes += 1;
        } else {
            fds.other += 1;
        }
    }
    fds
}

/// The descriptors of `pid` at rest: sampled until two samples 100 ms apart
/// agree (an admin request that was just answered closes its socket).
pub async fn settled_fds(pid: i32) -> Fds {
    let mut last = fds(pid);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = fds(pid);
        if now == last {
            return now;
        }
        last = now;
    }
}

/// Threads of `pid`.
pub fn threads(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// User plus system CPU time `pid` has used, from `/proc/<pid>/stat`.
pub fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // The command name may hold spaces: fields are counted after its `)`.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after `)`.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// Sets the soft and hard `RLIMIT_NOFILE` of the running process `pid`.
pub fn set_nofile(pid: i32, limit: u64) {
    let new = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: prlimit(2) on our own child, with a struct we own.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit({pid}, NOFILE, {limit})");
}

/// One service of a forwarder's config file: `name` on 127.0.0.1 (a free
/// port) to `backend`, with more `keys` (YAML lines, two spaces in).
#[derive(Clone, Debug)]
pub struct Svc {
    pub name: &'static str,
    pub backend: SocketAddr,
    pub keys: String,
}

impl Svc {
    pub fn new(name: &'static str, backend: SocketAddr, keys: &str) -> Svc {
        Svc {
            name,
            backend,
            keys: keys.to_owned(),
        }
    }
}

/// Starts a forwarder running `services` (each on a free 127.0.0.1 port);
/// returns it and each service's listen address, in order.
pub fn start(services: &[Svc]) -> (Forwarder, Vec<SocketAddr>) {
    let ports = std::cell::RefCell::new(Vec::new());
    let fwd = Forwarder::start(|| {
        let mut text = String::new();
        let mut chosen = Vec::new();
        for svc in services {
            let port = free_port();
            chosen.push(([127, 0, 0, 1], port).into());
            text.push_str(&format!(
                "{}:\n  listen_ip: 127.0.0.1\n  listen_port: {port}\n  backend_ip: {}\n  backend_port: {}\n{}",
                svc.name,
                svc.backend.ip(),
                svc.backend.port(),
                svc.keys
            ));
            if !text.ends_with('\n') {
                text.push('\n');
            }
        }
        *ports.borrow_mut() = chosen;
        Setup::config(text)
    });
    let addrs = ports.into_inner();
    (fwd, addrs)
}

/// Waits until the forwarder's sockets are back to `start.sockets` and its
/// pipes at most `start.pipes` plus what its splice pool may keep (16 pipes
/// of 2 descriptors per thread); returns the last count.
pub async fn wait_fds_back(fwd: &Forwarder, start: Fds) -> Fds {
    let pid = fwd.pid();
    let deadline = std::time::Instant::now() + crate::support::WAIT;
    loop {
        let now = fds(pid);
        let pool = 2 * 16 * threads(pid);
        if now.sockets == start.sockets
            && now.other == start.other
            && now.pipes <= start.pipes + pool
        {
            return now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "descriptors not back: at start {start:?}, now {now:?} (pipe pool may keep {pool})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until a service shows no connection and no IP, and its live list
/// is empty; returns its stats.
pub async fn wait_drained(fwd: &Forwarder, sid: &str) -> serde_json::Value {
    let stats = fwd
        .wait_stats(sid, "connections = 0 and ip_count = 0", |s| {
            s["connections"] == 0 && s["ip_count"] == 0
        })
        .await;
    let path = format!("/stats/{}/connections", crate::support::encode(sid));
    let (status, body) = fwd.http("GET", &path).await;
    assert_eq!(status, 200, "{body}");
    let live: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(live["connections"], serde_json::json!([]), "{body}");
    assert_eq!(stats["ips"], serde_json::json!([]), "{stats}");
    stats
}

/// A counter's value in a stats snapshot (`stats["closed"]["idle"]`, say),
/// 0 when absent.
pub fn count(stats: &serde_json::Value, group: &str, key: &str) -> u64 {
    stats[group][key].as_u64().unwrap_or(0)
}

/// The sum of a group of counters in a stats snapshot (`stats["rejected"]`,
/// say).
pub fn total(group: &serde_json::Value) -> u64 {
    group
        .as_object()
        .expect("a group of counters")
        .values()
        .map(|v| v.as_u64().expect("a count"))
        .sum()
}
