//! The PROXY-protocol layer's cost (`MONCONN_PROXY_ROUNDS=n`, feature
//! `proxy-protocol`): connections accepted per second by a `Listener` with
//! the default stack, off, and with the PROXY layer first, on (a trusted
//! source sending a v2 header), in turns. Every client writes the same 28
//! bytes (the v2 header: payload when off, header when on), then waits for
//! the server's close and resets: with the layer on, the server reads the
//! header before the connection is admitted and dropped.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monconn::layers::proxy::{ProxyConfig, ProxyHeader};
use monconn::{AcceptStack, Listener, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Done, CLIENTS};

fn spawn_server<S>(listener: Listener<S>, done: Arc<Done>) -> SocketAddr
where
    S: AcceptStack<Io = TcpStream> + Send + 'static,
    S::Future: Send,
{
    let addr = listener.local_addr();
    tokio::spawn(async move {
        loop {
            let (conn, _) = listener.accept().await.unwrap();
            drop(black_box(conn));
            done.add();
        }
    });
    addr
}

/// Opens `iters` connections that each write `bytes`, wait for the
/// server's close and reset; returns when the server has handled them all.
async fn connect_writing(
    addr: SocketAddr,
    done: &Arc<Done>,
    iters: u64,
    bytes: &'static [u8],
) -> Duration {
    let target = done.count.load(SeqCst) + iters;
    let start = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let n = iters / CLIENTS + u64::from(c < iters % CLIENTS);
            let done = done.clone();
            tokio::spawn(async move {
                for _ in 0..n {
                    done.window.acquire().await.unwrap().forget();
                    let mut s = TcpStream::connect(addr).await.unwrap();
                    s.write_all(bytes).await.unwrap();
                    let _ = s.read(&mut [0u8; 1]).await;
                    socket2::SockRef::from(&s)
                        .set_linger(Some(Duration::ZERO))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    done.reach(target).await;
    start.elapsed()
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
        let off = Arc::new(Done::default());
        let service = Registry::new().service("off");
        let listener = Listener::builder(service)
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let off_addr = spawn_server(listener, off.clone());
        let on = Arc::new(Done::default());
        let trusted = ProxyConfig::new().trust(["127.0.0.1/32".parse().unwrap()]);
        let service = Registry::new().service("on");
        let listener = Listener::builder(service)
            .proxy_protocol(trusted)
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let on_addr = spawn_server(listener, on.clone());
        vec![("proxy_off", off_addr, off), ("proxy_v2_on", on_addr, on)]
    });
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); 2];
    for round in 0..rounds {
        for k in 0..2 {
            let i = (k + round) % 2;
            let (_, addr, done) = &servers[i];
            let took = rt.block_on(connect_writing(*addr, done, CONNS, header));
            rates[i].push(CONNS as f64 / took.as_secs_f64());
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "{rounds} rounds of {CONNS} connections, each writing a {}-byte v2 header; medians:",
        header.len()
    );
    for (i, (name, _, _)) in servers.iter().enumerate() {
        println!("{name:<12} {:>9.0} conn/s", median(rates[i].clone()));
    }
    let ratio = median((0..rounds).map(|r| rates[1][r] / rates[0][r]).collect());
    println!("on / off, median of per-round ratios: {ratio:.3}");
}
