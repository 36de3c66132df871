//! `fwdbench LISTEN=BACKEND`: the forwarder's copy engine behind a bare
//! monitored accept loop, to measure the engine alone (bench/forwarder.sh
//! runs it beside the real forwarder and its peers).
//!
//! `FWD_THREADS=N` picks the runtime: 0 for tokio's current-thread runtime,
//! N > 0 for a multi-thread one with N workers (default: one per core).

#[path = "forwarder/copy.rs"]
mod copy;

use std::net::SocketAddr;
use std::time::Duration;

use monconn::{Listener, Registry, ServiceConfig};
use tokio::net::TcpStream;

fn main() -> std::io::Result<()> {
    let arg = std::env::args().nth(1).unwrap_or_default();
    let Some((listen, backend)) = arg.split_once('=') else {
        eprintln!("usage: fwdbench LISTEN=BACKEND");
        std::process::exit(2);
    };
    let (listen, backend) = (listen.to_string(), backend.to_string());
    let threads: usize = std::env::var("FWD_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let runtime = if threads == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(serve(listen, backend))
}

async fn serve(listen: String, backend: String) -> std::io::Result<()> {
    let backend: SocketAddr = backend.parse().map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{backend}: {e}"))
    })?;
    let service = Registry::new().create(&listen, ServiceConfig::default().with_nodelay(true));
    let listener = Listener::bind(&listen, service).await?;
    loop {
        let (client, _peer) = listener.accept().await?;
        tokio::spawn(async move {
            // Boxed: the connect step's state (a timer among it) lives on
            // the heap only while connecting, not in every idle pair's task.
            let connect =
                tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(backend));
            let Ok(Ok(backend)) = Box::pin(connect).await else {
                return;
            };
            let _ = backend.set_nodelay(true);
            let _ = copy::pipe(client, backend).await;
        });
    }
}
