//! The PROXY-protocol layer's cost (`MONCONN_PROXY_ROUNDS=n`, feature
//! `proxy-protocol`): connections accepted per second by a `Listener` with
//! the default stack, off, and with the PROXY layer first, on (a trusted
//! source sending a v2 header), in turns. Every client writes the same 28
//! bytes (the v2 header: payload when off, header when on), then waits for
//! the server's close and resets. The server hands each connection to a
//! task of its own, which drops it. With the layer on, the header is read
//! before the connection is admitted; off, the task drops it at once
//! (`proxy_off`) or, as a server that serves it would, reads the 28 bytes
//! first (`proxy_off_read`, the like-for-like base). Besides the rates, it
//! prints the process's CPU time per connection (clients included): the
//! cost, apart from the share of the cores the bench got.

use std::hint::black_box;
use std::net::SocketAddr;

use std::sync::Arc;
use std::time::Duration;

use monconn::layers::proxy::{ProxyConfig, ProxyHeader};
use monconn::{AcceptStack, Listener, Registry};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::load::{connect_many, median, paired, Done};

/// Serves `listener` as servers do, each connection in a task of its own:
/// dropped at once, or once `read` bytes are read from it.
fn spawn_server<S>(listener: Listener<S>, done: Arc<Done>, read: usize) -> SocketAddr
where
    S: AcceptStack<Io = TcpStream> + Send + 'static,
    S::Future: Send,
{
    let addr = listener.local_addr();
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let done = done.clone();
            tokio::spawn(async move {
                if read > 0 {
                    let mut buf = [0u8; 64];
                    conn.read_exact(&mut buf[..read]).await.unwrap();
                }
                drop(black_box(conn));
                done.add();
            });
        }
    });
    addr
}

pub(crate) fn interleaved_proxy(rounds: usize) {
    const CONNS: u64 = 2_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let header = ProxyHeader::proxied(
        "192.0.2.7:5000".parse().unwrap(),
        "10.0.0.1:80".parse().unwrap(),
    )
    .to_v2();
    let header: &'static [u8] = Box::leak(header.into_boxed_slice());
    let servers: Vec<(&str, SocketAddr, Arc<Done>)> = rt.block_on(async {
        let trusted = ProxyConfig::new().trust(["127.0.0.1/32".parse().unwrap()]);
        let mut servers = Vec::new();
        for (name, proxy, read) in [
            ("proxy_off", false, 0),
            ("proxy_off_read", false, header.len()),
            ("proxy_v2_on", true, 0),
        ] {
            let done = Arc::new(Done::default());
            let builder = Listener::builder(Registry::new().service(name));
            let addr = if proxy {
                let listener = builder.proxy_protocol(trusted.clone());
                spawn_server(
                    listener.bind("127.0.0.1:0").await.unwrap(),
                    done.clone(),
                    read,
                )
            } else {
                spawn_server(
                    builder.bind("127.0.0.1:0").await.unwrap(),
                    done.clone(),
                    read,
                )
            };
            servers.push((name, addr, done));
        }
        servers
    });
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    for round in 0..rounds {
        for k in 0..servers.len() {
            let i = (k + round) % servers.len();
            let (_, addr, done) = &servers[i];
            let cpu_start = process_cpu();
            let took = rt.block_on(connect_many(*addr, done, CONNS, Some(header)));
            let cpu_took = process_cpu() - cpu_start;
            rates[i].push(CONNS as f64 / took.as_secs_f64());
            cpu[i].push(cpu_took.as_secs_f64() * 1e6 / CONNS as f64);
        }
    }
    println!(
        "{rounds} rounds of {CONNS} connections, each writing a {}-byte v2 header; medians:",
        header.len()
    );
    for (i, (name, _, _)) in servers.iter().enumerate() {
        println!("{name:<15} {:>9.0} conn/s", median(rates[i].clone()));
    }
    let ratio = |a: usize, b: usize| paired(&rates, a, b);
    println!(
        "medians of per-round ratios: on / off_read {:.3}, on / off {:.3}",
        ratio(2, 1),
        ratio(2, 0)
    );
    // CPU time (clients and server, one process) per connection: what a
    // connection costs, whatever share of the cores the bench got.
    for (i, (name, _, _)) in servers.iter().enumerate() {
        println!(
            "{name:<15} {:>9.2} µs CPU per connection",
            median(cpu[i].clone())
        );
    }
    // Inverted: less CPU per connection is better.
    let cpu_ratio = |a: usize, b: usize| paired(&cpu, b, a);
    println!(
        "medians of per-round CPU ratios: off_read / on {:.3}, off / on {:.3}",
        cpu_ratio(2, 1),
        cpu_ratio(2, 0)
    );
}

/// The CPU time this process has used (all threads, user and system).
fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
