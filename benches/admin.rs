//! The operator's dashboard at 10,000 live connections: the admin's CPU per
//! second with nobody watching and with one page open, and the bytes of one
//! update the page gets (its table is capped at `max_rows`).
//!
//! `cargo bench --bench admin --features admin` (`MONCONN_ADMIN_CONNS`,
//! `MONCONN_ADMIN_SECS` change the load and the window). Whole-process CPU
//! from `/proc/self/stat`: run it on an otherwise idle machine.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use monconn::admin::{self, Admin};
use monconn::{Registry, ServiceConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User + system CPU of this process, from `/proc/self/stat` (clock ticks of 10 ms).
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let after = &stat[stat.rfind(')').expect("a comm field") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// CPU milliseconds per second over `window`.
async fn cpu_per_sec(window: Duration) -> f64 {
    let (c0, t0) = (cpu(), Instant::now());
    tokio::time::sleep(window).await;
    (cpu() - c0).as_secs_f64() * 1000.0 / t0.elapsed().as_secs_f64()
}

/// Opens the dashboard's event stream and records each `tick` event's size.
async fn watch(addr: SocketAddr, sizes: tokio::sync::mpsc::UnboundedSender<usize>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: bench\r\n\r\n")
        .await
        .unwrap();
    let mut lines = BufReader::new(stream).lines();
    let mut tick = false;
    while let Ok(Some(line)) = lines.next_line().await {
        if line == "event: tick" {
            tick = true;
        } else if let Some(data) = line.strip_prefix("data: ") {
            if tick && sizes.send(data.len()).is_err() {
                return;
            }
            tick = false;
        }
    }
}

fn main() {
    let conns = env("MONCONN_ADMIN_CONNS", 10_000) as usize;
    let window = Duration::from_secs(env("MONCONN_ADMIN_SECS", 15));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let registry = Registry::new();
        let service = registry.create("bench", ServiceConfig::default()).unwrap();
        let local: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let mut live = Vec::with_capacity(conns);
        let mut clients = Vec::with_capacity(conns);
        for i in 0..conns {
            let peer = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 40_000));
            let (client, server) = tokio::io::duplex(64);
            live.push(service.wrap(server, peer, local).unwrap());
            clients.push(client);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(admin::serve(listener, Admin::new(registry)));
        tokio::time::sleep(Duration::from_secs(2)).await;

        let idle = cpu_per_sec(window).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(watch(addr, tx));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let watched = cpu_per_sec(window).await;
        let mut sizes = Vec::new();
        while let Ok(n) = rx.try_recv() {
            sizes.push(n);
        }
        sizes.sort_unstable();
        let median = sizes.get(sizes.len() / 2).copied().unwrap_or(0);
        println!("admin at {conns} live connections, {window:?} windows:");
        println!("  CPU, nobody watching: {idle:.1} ms/s");
        println!("  CPU, one page open:   {watched:.1} ms/s");
        println!(
            "  one update: {median} bytes (median of {} ticks; table capped at {} rows)",
            sizes.len(),
            admin::MAX_ROWS
        );
        drop(live);
    });
}
