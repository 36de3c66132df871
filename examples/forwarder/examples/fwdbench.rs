//! `fwdbench LISTEN=BACKEND`: the forwarder's copy engine behind a bare
//! monitored accept loop, to measure the engine alone (bench/forwarder.sh
//! runs it beside the real forwarder and its peers).
//!
//! The runtime, from the environment:
//! - `FWD_THREADS=N`: 0 for tokio's current-thread runtime, N > 0 for a
//!   multi-thread one with N workers (default: one per core);
//! - `FWD_SHARDS=N`: N threads, each with its own current-thread runtime and
//!   its own listening socket on the same address (`SO_REUSEPORT`, the
//!   kernel spreads the connections), all in one service: no work stealing,
//!   no wakeups across threads, like nginx's worker processes;
//! - `FWD_SPLICE=1`: bulk transfers by `splice(2)`, as the forwarder's
//!   `--splice`.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use monconn::forward::{copy_bidirectional, Mode};
use monconn::{Listener, Registry, ServiceConfig};
use socket2::{Domain, Socket, Type};
use tokio::net::TcpStream;

fn main() -> io::Result<()> {
    let arg = std::env::args().nth(1).unwrap_or_default();
    let Some((listen, backend)) = arg.split_once('=') else {
        eprintln!("usage: fwdbench LISTEN=BACKEND");
        std::process::exit(2);
    };
    let bad = |e: std::net::AddrParseError| io::Error::new(io::ErrorKind::InvalidInput, e);
    let listen: SocketAddr = listen.parse().map_err(bad)?;
    let backend: SocketAddr = backend.parse().map_err(bad)?;
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
    };
    let mode = Mode::default().with_splice(env("FWD_SPLICE") == Some(1));
    let service = Registry::new()
        .create(&listen.to_string(), ServiceConfig::default().nodelay(true))
        .unwrap();
    if let Some(shards) = env("FWD_SHARDS").filter(|&n| n > 0) {
        let threads: Vec<_> = (0..shards)
            .map(|_| {
                let service = service.clone();
                std::thread::spawn(move || -> io::Result<()> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    rt.block_on(async {
                        let tcp = tokio::net::TcpListener::from_std(bind(listen, true)?.into())?;
                        serve(Listener::from_tcp(tcp, service)?, backend, mode).await
                    })
                })
            })
            .collect();
        for t in threads {
            t.join().expect("shard thread")?;
        }
        return Ok(());
    }
    let threads = env("FWD_THREADS")
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
    runtime.block_on(async {
        let tcp = tokio::net::TcpListener::from_std(bind(listen, false)?.into())?;
        serve(Listener::from_tcp(tcp, service)?, backend, mode).await
    })
}

fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(reuse_port)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket)
}

async fn serve(listener: Listener, backend: SocketAddr, mode: Mode) -> io::Result<()> {
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
            let _ = copy_bidirectional(client, backend, mode).await;
        });
    }
}
