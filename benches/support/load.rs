//! The accept benches' load: clients that open connections at most
//! `WINDOW` ahead of the server, the count the server keeps, and servers
//! measured in turns. Shared by `benches/accept.rs` (and its
//! `accept/proxy.rs`) and `benches/cluster.rs`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use monconn::{AcceptStack, Listener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};

/// Client tasks.
pub const CLIENTS: u64 = 4;

/// How far the clients may run ahead of the server.
pub const WINDOW: usize = 16;

/// Accepted-and-dropped counter the clients wait on.
pub struct Done {
    pub count: AtomicU64,
    notify: Notify,
    window: Semaphore,
}

impl Default for Done {
    fn default() -> Self {
        Done {
            count: AtomicU64::new(0),
            notify: Notify::new(),
            window: Semaphore::new(WINDOW),
        }
    }
}

impl Done {
    /// One more connection handled.
    pub fn add(&self) {
        self.count.fetch_add(1, SeqCst);
        self.window.add_permits(1);
        self.notify.notify_waiters();
    }

    /// Waits until `target` connections were handled.
    pub async fn reach(&self, target: u64) {
        loop {
            let notified = self.notify.notified();
            if self.count.load(SeqCst) >= target {
                return;
            }
            notified.await;
        }
    }
}

/// A monconn accept loop that drops each connection at once.
pub fn serve_dropping<S>(listener: Listener<S>, done: Arc<Done>) -> SocketAddr
where
    S: AcceptStack + Send + 'static,
    S::Io: Send,
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

/// Opens `iters` connections from `CLIENTS` tasks, each closed with a reset
/// (after writing `payload` and waiting for the server's close, when there
/// is one), and waits until the server has handled them all.
pub async fn connect_many(
    addr: SocketAddr,
    done: &Arc<Done>,
    iters: u64,
    payload: Option<&'static [u8]>,
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
                    if let Some(bytes) = payload {
                        s.write_all(bytes).await.unwrap();
                        let _ = s.read(&mut [0u8; 1]).await;
                    }
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

/// Connections per second of each server (its address and count), over
/// `rounds` rounds of `conns` connections each: the servers take turns, the
/// order turned every round. `rates[server][round]`.
pub fn interleaved_rates(
    rt: &tokio::runtime::Runtime,
    servers: &[(SocketAddr, Arc<Done>)],
    rounds: usize,
    conns: u64,
) -> Vec<Vec<f64>> {
    let mut rates = vec![Vec::new(); servers.len()];
    for round in 0..rounds {
        for k in 0..servers.len() {
            let i = (k + round) % servers.len();
            let (addr, done) = &servers[i];
            let took = rt.block_on(connect_many(*addr, done, conns, None));
            rates[i].push(conns as f64 / took.as_secs_f64());
        }
    }
    rates
}

/// The median of `v` (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The median over rounds of `rates[a][round] / rates[b][round]`: paired
/// within each round, so slow drifts of the machine's load cancel.
pub fn paired(rates: &[Vec<f64>], a: usize, b: usize) -> f64 {
    median(
        (0..rates[a].len())
            .map(|r| rates[a][r] / rates[b][r])
            .collect(),
    )
}
