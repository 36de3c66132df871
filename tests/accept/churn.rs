//! 1,000 connections ended in mixed ways leave nothing behind.

use crate::support;

use std::io;
use std::time::Duration;

use monconn::{MonitoredIo, Registry, ServiceMonitor};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use support::{accept_wrapped, eventually, listen, quiet_config, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const TOTAL: usize = 1000;
const BATCH: usize = 100;
const PANIC_MESSAGE: &str = "handler panics on purpose (churn test)";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The client sends data and shuts down; the server reads to EOF, replies
    /// with the count, and drops the connection.
    Clean,
    /// The client resets the connection (SO_LINGER 0); the server's read fails.
    Reset,
    /// The server's handler task is aborted while parked in a read.
    Abort,
    /// The server's handler panics.
    Panic,
}

impl End {
    fn byte(self) -> u8 {
        match self {
            End::Clean => b'c',
            End::Reset => b'r',
            End::Abort => b'a',
            End::Panic => b'p',
        }
    }
}

/// The server side: reads the mode byte, acknowledges it, then ends as told.
async fn handler(mut conn: MonitoredIo<TcpStream>) -> io::Result<u64> {
    let mut mode = [0; 1];
    conn.read_exact(&mut mode).await?;
    conn.write_all(b"k").await?;
    match mode[0] {
        b'c' => {
            let mut total = 0u64;
            let mut buf = [0; 4096];
            loop {
                match conn.read(&mut buf).await? {
                    0 => break,
                    n => total += n as u64,
                }
            }
            conn.write_all(&total.to_be_bytes()).await?;
            Ok(total)
        }
        b'p' => {
            conn.read_exact(&mut mode).await?;
            panic!("{PANIC_MESSAGE}");
        }
        _ => {
            // Reset and abort: read until something ends it.
            let mut buf = [0; 64];
            while conn.read(&mut buf).await? != 0 {}
            Ok(0)
        }
    }
}

/// The client side of one connection, with the server's handler task.
async fn end(mut client: TcpStream, handle: JoinHandle<io::Result<u64>>, how: End, payload: usize) {
    client.write_all(&[how.byte()]).await.unwrap();
    let mut ack = [0; 1];
    client.read_exact(&mut ack).await.unwrap();
    assert_eq!(&ack, b"k");
    match how {
        End::Clean => {
            client.write_all(&vec![b'x'; payload]).await.unwrap();
            client.shutdown().await.unwrap();
            let mut reply = Vec::new();
            client.read_to_end(&mut reply).await.unwrap();
            assert_eq!(reply, (payload as u64).to_be_bytes());
            assert_eq!(handle.await.unwrap().unwrap(), payload as u64);
        }
        End::Reset => {
            socket2::SockRef::from(&client)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(client);
            let err = handle.await.unwrap().unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        }
        End::Abort => {
            handle.abort();
            assert!(handle.await.unwrap_err().is_cancelled());
            // The server's socket was dropped with its task: the client sees EOF.
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
        }
        End::Panic => {
            client.write_all(b"!").await.unwrap();
            assert!(handle.await.unwrap_err().is_panic());
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
        }
    }
}

/// Bytes (read, written) the server side moves for one connection.
fn server_bytes(how: End, payload: usize) -> (u64, u64) {
    match how {
        End::Clean => (1 + payload as u64, 1 + 8),
        End::Panic => (2, 1),
        End::Reset | End::Abort => (1, 1),
    }
}

async fn batch(listener: &TcpListener, service: &ServiceMonitor, ends: &[(End, usize)]) {
    let addr = listener.local_addr().unwrap();
    let mut pairs = Vec::new();
    for &(how, payload) in ends {
        let client = TcpStream::connect(addr).await.unwrap();
        let conn = accept_wrapped(listener, service).await;
        pairs.push((client, tokio::spawn(handler(conn)), how, payload));
    }
    assert_eq!(service.connections(), ends.len());
    let mut set = tokio::task::JoinSet::new();
    for (client, handle, how, payload) in pairs {
        set.spawn(end(client, handle, how, payload));
    }
    while let Some(done) = set.join_next().await {
        done.expect("client side of a connection failed");
    }
}

/// Silences the panics this test causes on purpose; others still print.
fn quiet_planned_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let planned = info
            .payload()
            .downcast_ref::<String>()
            .is_some_and(|m| m == PANIC_MESSAGE);
        if !planned {
            default(info);
        }
    }));
}

#[tokio::test]
async fn thousand_connections_ended_in_mixed_ways_leave_nothing() {
    quiet_planned_panics();
    let service = Registry::new().create("churn", quiet_config()).unwrap();
    let listener = listen().await;
    let mut rng = SmallRng::seed_from_u64(1000);
    let ends: Vec<(End, usize)> = (0..TOTAL)
        .map(|_| {
            let how = [End::Clean, End::Reset, End::Abort, End::Panic][rng.random_range(0..4)];
            (how, rng.random_range(0..20_000))
        })
        .collect();

    for chunk in ends.chunks(BATCH) {
        within("a batch of connections", batch(&listener, &service, chunk)).await;
        eventually("the batch's connections are gone", || {
            service.connections() == 0
        })
        .await;
    }

    let count = |how| ends.iter().filter(|(h, _)| *h == how).count() as u64;
    let (mut read, mut written) = (0, 0);
    for &(how, payload) in &ends {
        let (r, w) = server_bytes(how, payload);
        read += r;
        written += w;
    }
    assert!(
        ends.iter().all(|(h, _)| count(*h) > 100),
        "every way is exercised"
    );

    assert_eq!(service.connections(), 0);
    assert_eq!(service.ip_count(), 0);
    assert!(service.ips().is_empty());
    let snap = service.snapshot_with_conns();
    assert_eq!(snap.conns, Some(Vec::new()));
    assert_eq!((snap.connections, snap.ip_count), (0, 0));
    assert!(snap.ips.is_empty());
    assert_eq!(snap.accepted, TOTAL as u64);
    assert_eq!(snap.closed["error"], count(End::Reset));
    assert_eq!(
        snap.closed["normal"],
        count(End::Clean) + count(End::Abort) + count(End::Panic)
    );
    assert_eq!(snap.closed.values().sum::<u64>(), TOTAL as u64);
    assert_eq!((snap.bytes_read, snap.bytes_written), (read, written));
}
