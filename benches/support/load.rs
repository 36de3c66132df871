//! The accept benches' load: clients that open connections at most
//! `WINDOW` ahead of the server, and the count the server keeps. Shared by
//! `benches/accept.rs` (and its `accept/proxy.rs`) and `benches/cluster.rs`.

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
