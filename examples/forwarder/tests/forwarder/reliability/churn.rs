//! Churn soak: thousands of connections through the real forwarder process,
//! with random lifetimes and sizes, a share of them ended by RST from the
//! client or from the backend, while the admin API is polled. Afterwards
//! nothing is left: no connection, no IP, no live record, no descriptor,
//! and the byte totals match what the test moved.
//!
//! Two services share the process:
//! - `clean`: every connection ends with FIN both ways, so its totals must
//!   equal, to the byte, what the clients sent and received;
//! - `rst`: half of its connections are reset by the client, half by the
//!   backend, at random points. Bytes in flight when a RST lands are lost
//!   in a kernel buffer, so exact totals are impossible there; what holds is
//!   `backend received <= bytes_read <= client sent` and
//!   `client received <= bytes_written <= backend sent`.
//!
//! `MONCONN_SOAK_CONNS` sets the number of connections (default 20,000),
//! `MONCONN_SOAK_SEED` the random seed (printed by each run).

use crate::support;
use crate::support::reliability;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use reliability::{count, settled_fds, start, total, wait_drained, wait_fds_back, Svc};
use support::{connect_from, reset, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Connections in flight at once.
const CONCURRENCY: usize = 128;
/// Client source addresses: 127.0.0.1 to 127.0.0.SOURCES.
const SOURCES: u8 = 8;
const HEADER: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Clean = 0,
    ClientRst = 1,
    BackendRst = 2,
}

/// What one connection does, told to the backend in a 16-byte header.
#[derive(Clone, Copy, Debug)]
struct Plan {
    mode: Mode,
    /// Payload bytes the client sends after the header.
    up: u32,
    /// Bytes the backend sends back.
    down: u32,
    /// ClientRst: bytes of `up` sent before the reset; BackendRst: bytes
    /// of `down` sent before the reset.
    cut: u32,
    /// A pause (ms) in the middle of the connection's life.
    pause: u16,
}

impl Plan {
    fn random(rng: &mut SmallRng) -> Plan {
        let size = |rng: &mut SmallRng| -> u32 {
            match rng.random_range(0..100) {
                0 => rng.random_range(0..1 << 20),
                1..=9 => rng.random_range(0..64 << 10),
                _ => rng.random_range(0..2048),
            }
        };
        let mode = match rng.random_range(0..10) {
            0 => Mode::ClientRst,
            1 => Mode::BackendRst,
            _ => Mode::Clean,
        };
        let (up, down) = (size(rng), size(rng));
        let cut = match mode {
            Mode::Clean => 0,
            Mode::ClientRst => rng.random_range(0..=up),
            Mode::BackendRst => rng.random_range(0..=down),
        };
        let pause = if rng.random_bool(0.3) {
            rng.random_range(0..30)
        } else {
            0
        };
        Plan {
            mode,
            up,
            down,
            cut,
            pause,
        }
    }

    fn encode(&self) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[0] = self.mode as u8;
        h[1..5].copy_from_slice(&self.up.to_le_bytes());
        h[5..9].copy_from_slice(&self.down.to_le_bytes());
        h[9..13].copy_from_slice(&self.cut.to_le_bytes());
        h[13..15].copy_from_slice(&self.pause.to_le_bytes());
        h
    }

    fn decode(h: &[u8; HEADER]) -> Plan {
        let u32_at = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().unwrap());
        Plan {
            mode: match h[0] {
                0 => Mode::Clean,
                1 => Mode::ClientRst,
                _ => Mode::BackendRst,
            },
            up: u32_at(1),
            down: u32_at(5),
            cut: u32_at(9),
            pause: u16::from_le_bytes([h[13], h[14]]),
        }
    }
}

/// Bytes moved, as each end saw them, for one service.
#[derive(Debug, Default)]
struct Tally {
    client_sent: AtomicU64,
    client_received: AtomicU64,
    backend_received: AtomicU64,
    backend_sent: AtomicU64,
    /// Clean connections whose byte counts were not the planned ones.
    wrong: AtomicU64,
    /// Connections the backend saw.
    backend_conns: AtomicU64,
}

impl Tally {
    fn get(&self) -> [u64; 4] {
        [
            self.client_sent.load(Relaxed),
            self.client_received.load(Relaxed),
            self.backend_received.load(Relaxed),
            self.backend_sent.load(Relaxed),
        ]
    }
}

const CHUNK: [u8; 16 << 10] = [0x5a; 16 << 10];

/// Writes `len` bytes, counting what the socket took; stops at an error.
async fn send(w: &mut (impl AsyncWriteExt + Unpin), len: u64, sent: &AtomicU64) -> bool {
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK.len() as u64) as usize;
        match w.write(&CHUNK[..n]).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => {
                sent.fetch_add(n as u64, Relaxed);
                left -= n as u64;
            }
        }
    }
    true
}

/// Reads until EOF or an error (or `limit` bytes), counting; returns the
/// bytes read and whether it ended with EOF.
async fn receive(r: &mut (impl AsyncReadExt + Unpin), limit: u64, got: &AtomicU64) -> (u64, bool) {
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0;
    while total < limit {
        let want = (limit - total).min(buf.len() as u64) as usize;
        match r.read(&mut buf[..want]).await {
            Ok(0) => return (total, true),
            Ok(n) => {
                got.fetch_add(n as u64, Relaxed);
                total += n as u64;
            }
            Err(_) => return (total, false),
        }
    }
    (total, false)
}

async fn backend(tally: Arc<Tally>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let tally = tally.clone();
            tokio::spawn(async move {
                tally.backend_conns.fetch_add(1, Relaxed);
                serve(stream, &tally).await
            });
        }
    });
    addr
}

async fn serve(mut stream: TcpStream, t: &Tally) {
    let mut h = [0u8; HEADER];
    if stream.read_exact(&mut h).await.is_err() {
        return; // a client reset before its header was through
    }
    t.backend_received.fetch_add(HEADER as u64, Relaxed);
    let plan = Plan::decode(&h);
    let pause = Duration::from_millis(plan.pause.into());
    match plan.mode {
        Mode::Clean | Mode::ClientRst => {
            let (got, eof) = receive(&mut stream, u64::MAX, &t.backend_received).await;
            tokio::time::sleep(pause).await;
            let sent = send(&mut stream, plan.down.into(), &t.backend_sent).await;
            let _ = stream.shutdown().await;
            if plan.mode == Mode::Clean && !(eof && got == u64::from(plan.up) && sent) {
                t.wrong.fetch_add(1, Relaxed);
            }
        }
        Mode::BackendRst => {
            // Sends `cut` bytes, reads nothing more, and resets.
            send(&mut stream, plan.cut.into(), &t.backend_sent).await;
            tokio::time::sleep(pause).await;
            reset(stream);
        }
    }
}

async fn client(to: SocketAddr, from: u8, plan: Plan, t: &Tally) {
    let mut stream = connect_from([127, 0, 0, from], to).await;
    let pause = Duration::from_millis(plan.pause.into());
    let header = plan.encode();
    match plan.mode {
        Mode::Clean => {
            let (mut r, mut w) = stream.split();
            let write = async {
                let ok = w.write_all(&header).await.is_ok();
                t.client_sent.fetch_add(HEADER as u64, Relaxed);
                let ok = ok && send(&mut w, plan.up.into(), &t.client_sent).await;
                let ok = ok && w.shutdown().await.is_ok();
                tokio::time::sleep(pause).await;
                ok
            };
            let (sent, (got, eof)) =
                tokio::join!(write, receive(&mut r, u64::MAX, &t.client_received));
            if !(sent && eof && got == u64::from(plan.down)) {
                t.wrong.fetch_add(1, Relaxed);
            }
        }
        Mode::ClientRst => {
            if stream.write_all(&header).await.is_ok() {
                t.client_sent.fetch_add(HEADER as u64, Relaxed);
                send(&mut stream, plan.cut.into(), &t.client_sent).await;
            }
            tokio::time::sleep(pause).await;
            reset(stream);
        }
        Mode::BackendRst => {
            let (mut r, mut w) = stream.split();
            let write = async {
                if w.write_all(&header).await.is_ok() {
                    t.client_sent.fetch_add(HEADER as u64, Relaxed);
                    send(&mut w, plan.up.into(), &t.client_sent).await;
                }
            };
            tokio::join!(write, receive(&mut r, u64::MAX, &t.client_received));
        }
    }
}

/// The sum of a group of counters (`rejected`, `closed`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_soak_leaves_nothing_behind_and_counts_every_byte() {
    let conns: usize = std::env::var("MONCONN_SOAK_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seed: u64 = std::env::var("MONCONN_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    println!("churn soak: {conns} connections, seed {seed} (MONCONN_SOAK_SEED)");

    let (clean, rst) = (Arc::new(Tally::default()), Arc::new(Tally::default()));
    let clean_backend = backend(clean.clone()).await;
    let rst_backend = backend(rst.clone()).await;
    let (fwd, addrs) = start(&[
        Svc::new("clean", clean_backend, ""),
        Svc::new("rst", rst_backend, ""),
    ]);
    let fwd = Arc::new(fwd);
    let (clean_addr, rst_addr) = (addrs[0], addrs[1]);
    // Settled: the admin API answered, both services listen.
    fwd.stats("clean").await;
    let fds_at_start = settled_fds(fwd.pid()).await;

    // The admin API, polled all along: every answer must be sound.
    let done = Arc::new(AtomicBool::new(false));
    let poller = tokio::spawn({
        let (fwd, done) = (fwd.clone(), done.clone());
        async move {
            let mut polls = 0u64;
            let mut peak = 0u64;
            while !done.load(Relaxed) {
                let (status, body) = fwd.http("GET", "/stats").await;
                assert_eq!(status, 200, "{body}");
                let all: serde_json::Value = serde_json::from_str(&body).expect("JSON");
                for s in all["services"].as_array().expect("services") {
                    let active = s["connections"].as_u64().expect("connections");
                    // Only SOURCES client addresses exist.
                    let ips = s["ip_count"].as_u64().expect("ip_count");
                    assert!(ips <= u64::from(SOURCES), "{s}");
                    assert_eq!(s["ips"].as_array().expect("ips").len() as u64, ips, "{s}");
                    peak = peak.max(active);
                }
                if polls.is_multiple_of(5) {
                    let (status, body) = fwd.http("GET", "/stats/rst/connections").await;
                    assert_eq!(status, 200, "{body}");
                }
                polls += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (polls, peak)
        }
    });

    let started = Instant::now();
    let mut rng = SmallRng::seed_from_u64(seed);
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    let mut planned = [0usize; 3];
    for i in 0..conns {
        let plan = Plan::random(&mut rng);
        planned[plan.mode as usize] += 1;
        let (to, tally) = match plan.mode {
            Mode::Clean => (clean_addr, clean.clone()),
            _ => (rst_addr, rst.clone()),
        };
        let permit = slots.clone().acquire_owned().await.unwrap();
        let from = 1 + (i % SOURCES as usize) as u8;
        tasks.spawn(async move {
            let _permit = permit;
            tokio::time::timeout(WAIT, client(to, from, plan, &tally))
                .await
                .unwrap_or_else(|_| panic!("connection {plan:?} stuck for {WAIT:?}"));
        });
        while let Some(done) = tasks.try_join_next() {
            done.expect("client task");
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("client task");
    }
    let elapsed = started.elapsed();
    done.store(true, Relaxed);
    let (polls, peak) = poller.await.expect("poller");

    // Nothing left, in the stats and in the process.
    let c = wait_drained(&fwd, "clean").await;
    let r = wait_drained(&fwd, "rst").await;
    let fds_at_end = wait_fds_back(&fwd, fds_at_start).await;

    // clean: every connection whole, totals exact.
    let [sent, received, backend_received, backend_sent] = clean.get();
    assert_eq!(clean.wrong.load(Relaxed), 0, "clean connections cut short");
    assert_eq!(c["accepted"], planned[0] as u64);
    assert_eq!(clean.backend_conns.load(Relaxed), planned[0] as u64);
    assert_eq!(c["bytes_read"], sent);
    assert_eq!(c["bytes_read"], backend_received);
    assert_eq!(c["bytes_written"], received);
    assert_eq!(c["bytes_written"], backend_sent);
    assert_eq!(c["backend_errors"], 0);
    assert_eq!(total(&c["rejected"]), 0, "{c}");
    assert_eq!(count(&c, "closed", "normal"), planned[0] as u64, "{c}");

    // rst: every connection accounted for, totals within what each end saw.
    let rst_conns = (planned[1] + planned[2]) as u64;
    let [r_sent, r_received, r_backend_received, r_backend_sent] = rst.get();
    let (read, written) = (
        r["bytes_read"].as_u64().unwrap(),
        r["bytes_written"].as_u64().unwrap(),
    );
    assert_eq!(r["accepted"], rst_conns, "{r}");
    assert_eq!(r["backend_errors"], 0, "{r}");
    assert_eq!(total(&r["rejected"]), 0, "{r}");
    assert_eq!(total(&r["closed"]), rst_conns, "{r}");
    assert!(
        r_backend_received <= read && read <= r_sent,
        "backend got {r_backend_received} <= bytes_read {read} <= clients sent {r_sent}"
    );
    assert!(
        r_received <= written && written <= r_backend_sent,
        "clients got {r_received} <= bytes_written {written} <= backend sent {r_backend_sent}"
    );

    println!(
        "churn soak: {conns} connections ({} clean, {} client RST, {} backend RST) in {:.1} s; \
         {polls} stats polls, peak {peak} active; clean bytes {sent} up / {received} down (exact); \
         rst bytes_read {read} in [{r_backend_received}, {r_sent}], bytes_written {written} in \
         [{r_received}, {r_backend_sent}]; closed {}; fds {} at start, {} at end ({fds_at_start:?} -> {fds_at_end:?})",
        planned[0],
        planned[1],
        planned[2],
        elapsed.as_secs_f64(),
        r["closed"],
        fds_at_start.total(),
        fds_at_end.total(),
    );
}
