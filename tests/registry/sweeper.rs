//! The sweeper (idle, read and write timeouts) and kicks, over loopback TCP.
//!
//! Timeouts are short and the sweeper ticks often; every assertion waits for
//! a condition with a generous deadline, none depends on speed.

use crate::support;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use monconn::{CloseCause, ConnRecord, MonitoredIo, Registry, ServiceConfig, ServiceMonitor};
use support::{eventually, listen, quiet_config, tcp_pair, tcp_pair_from, within, LOCALHOST};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

const TICK: Duration = Duration::from_millis(20);

fn config() -> ServiceConfig {
    quiet_config().idle_interval(TICK)
}

/// A handler that reads until EOF or error, returning the error.
fn read_forever(mut conn: MonitoredIo<TcpStream>) -> JoinHandle<io::Result<u64>> {
    tokio::spawn(async move {
        let mut buf = [0; 1024];
        let mut total = 0;
        loop {
            match conn.read(&mut buf).await? {
                0 => return Ok(total),
                n => total += n as u64,
            }
        }
    })
}

/// Waits for a handler that must fail, and returns its error kind.
async fn error_of(handle: JoinHandle<io::Result<u64>>) -> io::ErrorKind {
    match within("handler to fail", handle)
        .await
        .expect("handler did not panic")
    {
        Ok(n) => panic!("handler ended cleanly after {n} bytes, expected an error"),
        Err(e) => e.kind(),
    }
}

fn open(record: &ConnRecord) -> bool {
    record.closed().is_none()
}

async fn closed_count(service: &ServiceMonitor, cause: &str, n: u64) {
    eventually(&format!("closed[{cause}] == {n}"), || {
        service.snapshot().closed[cause] == n
    })
    .await;
}

#[tokio::test]
async fn idle_connection_closed_while_active_ones_stay() {
    let service = Registry::new()
        .create("idle", config().max_idle(Duration::from_secs(1)))
        .unwrap();

    // A client that sends a byte every few ms.
    let (sender_conn, mut sender) = tcp_pair(&service).await;
    let sender_rec = sender_conn.record().clone();
    let _sender_handler = read_forever(sender_conn);
    let _sending = tokio::spawn(async move {
        while sender.write_all(b".").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });

    // A client that only receives: the server writes a byte every few ms and
    // never reads. Idle counts writes too, so it is not idle.
    let (mut receiver_conn, mut receiver) = tcp_pair(&service).await;
    let receiver_rec = receiver_conn.record().clone();
    let _writing = tokio::spawn(async move {
        while receiver_conn.write_all(b".").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let _receiving = tokio::spawn(async move {
        let mut buf = [0; 64];
        while matches!(receiver.read(&mut buf).await, Ok(n) if n > 0) {}
    });

    // Opened last, so the others are at least as old: the sweep that finds it
    // idle would also close them if they were idle.
    let (idle_conn, _idle_client) = tcp_pair(&service).await;
    let idle_rec = idle_conn.record().clone();
    let idle_handler = read_forever(idle_conn);

    assert_eq!(error_of(idle_handler).await, io::ErrorKind::TimedOut);
    assert_eq!(idle_rec.closed(), Some(CloseCause::Idle));
    assert!(idle_rec.idle() >= Duration::from_secs(1));
    assert!(
        open(&sender_rec),
        "a client sending every 10 ms is not idle"
    );
    assert!(
        open(&receiver_rec),
        "a client that only receives is not idle"
    );

    closed_count(&service, "idle", 1).await;
    // A few more sweeps change nothing for the active ones.
    tokio::time::sleep(TICK * 5).await;
    assert!(open(&sender_rec) && open(&receiver_rec));
    assert!(sender_rec.bytes_read() > 0 && receiver_rec.bytes_written() > 0);
    assert_eq!(service.connections(), 2);
    assert_eq!(service.snapshot().closed["idle"], 1);
}

#[tokio::test]
async fn read_timeout_closes_a_read_pending_too_long() {
    let service = Registry::new()
        .create(
            "read-timeout",
            config().read_timeout(Duration::from_millis(300)),
        )
        .unwrap();
    // Gets a byte every 30 ms: its reads are never pending for long.
    let (fed_conn, mut feeder) = tcp_pair(&service).await;
    let fed_rec = fed_conn.record().clone();
    let _fed_handler = read_forever(fed_conn);
    let _feeding = tokio::spawn(async move {
        while feeder.write_all(b".").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });
    // Nobody reads from it: no read is pending, so no read timeout applies.
    let (unread_conn, _unread_client) = tcp_pair(&service).await;

    // Sends 5 bytes, then nothing: the next read stays pending.
    let (starved_conn, mut starved) = tcp_pair(&service).await;
    let starved_rec = starved_conn.record().clone();
    starved.write_all(b"hello").await.unwrap();
    let starved_handler = read_forever(starved_conn);

    assert_eq!(error_of(starved_handler).await, io::ErrorKind::TimedOut);
    assert_eq!(starved_rec.closed(), Some(CloseCause::ReadTimeout));
    assert_eq!(starved_rec.bytes_read(), 5);
    assert!(open(&fed_rec), "reads that complete do not time out");
    assert!(
        open(unread_conn.record()),
        "no pending read, no read timeout"
    );
    closed_count(&service, "read_timeout", 1).await;
    tokio::time::sleep(TICK * 5).await;
    assert!(open(&fed_rec) && open(unread_conn.record()));
}

#[tokio::test]
async fn write_timeout_closes_a_write_to_a_peer_that_stopped_reading() {
    let service = Registry::new()
        .create(
            "write-timeout",
            config().write_timeout(Duration::from_millis(300)),
        )
        .unwrap();
    let (mut conn, mut client) = tcp_pair(&service).await;
    let record = conn.record().clone();
    // The server writes until the socket buffers are full and its write stays
    // pending; the client does not read.
    let writer = tokio::spawn(async move {
        let chunk = vec![7u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            match conn.write(&chunk).await {
                Ok(n) => total += n as u64,
                Err(e) => return (total, e.kind()),
            }
        }
    });
    let (total, kind) = within("writer to fail", writer).await.unwrap();
    assert_eq!(kind, io::ErrorKind::TimedOut);
    assert_eq!(record.closed(), Some(CloseCause::WriteTimeout));
    assert_eq!(record.bytes_written(), total);
    assert!(total > 0);
    // The cut is a reset: the client's read fails rather than ending as if
    // the stream were complete, and it got no byte that was not counted.
    let mut received = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    let end = loop {
        match within("client reads", client.read(&mut received)).await {
            Ok(0) => break Ok(()),
            Ok(n) => got += n as u64,
            Err(e) => break Err(e.kind()),
        }
    };
    assert_eq!(end, Err(io::ErrorKind::ConnectionReset));
    assert!(got <= total);
    assert_eq!(service.snapshot().closed["write_timeout"], 1);
    assert_eq!(service.connections(), 0);
}

#[tokio::test]
async fn kick_wakes_parked_reader_and_writer() {
    let service = Registry::new().create("kick", config()).unwrap();
    let (reader_conn, _reader_client) = tcp_pair(&service).await;
    let reader_id = reader_conn.record().id();
    let reader = read_forever(reader_conn);

    let (mut writer_conn, _writer_client) = tcp_pair(&service).await;
    let writer_rec = writer_conn.record().clone();
    let writer = tokio::spawn(async move {
        let chunk = vec![1u8; 64 * 1024];
        loop {
            if let Err(e) = writer_conn.write_all(&chunk).await {
                return e.kind();
            }
        }
    });
    let (bystander, _bystander_client) = tcp_pair(&service).await;

    // Wait until both are parked: the reader has nothing to read; the writer
    // has filled the socket buffers (its write is pending).
    tokio::task::yield_now().await;
    eventually("the writer is blocked", || {
        let before = writer_rec.bytes_written();
        before > 0 && writer_rec.idle() >= Duration::from_millis(100)
    })
    .await;

    assert!(service.kick(reader_id));
    assert_eq!(error_of(reader).await, io::ErrorKind::ConnectionAborted);
    assert!(service.kick(writer_rec.id()));
    assert_eq!(
        within("writer", writer).await.unwrap(),
        io::ErrorKind::ConnectionAborted
    );
    assert_eq!(writer_rec.closed(), Some(CloseCause::Kicked));

    assert!(!service.kick(reader_id), "a closed connection is gone");
    assert!(!service.kick(u64::MAX), "no such connection");
    assert!(open(bystander.record()));
    assert_eq!(service.connections(), 1);
    assert_eq!(service.snapshot().closed["kicked"], 2);
}

#[tokio::test]
async fn kick_ip_closes_every_connection_from_that_ip() {
    let service = Registry::new().create("kick-ip", config()).unwrap();
    let listener = listen().await;
    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut handlers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (conn, client) = tcp_pair_from(&listener, &service, other).await;
        handlers.push(read_forever(conn));
        clients.push(client);
    }
    let (local_conn, _local_client) = tcp_pair_from(&listener, &service, LOCALHOST).await;
    let local_rec: Arc<ConnRecord> = local_conn.record().clone();
    let local_handler = read_forever(local_conn);
    assert_eq!(
        service.ips(),
        vec![(LOCALHOST.into(), 1), (other.into(), 3)]
    );

    assert_eq!(service.kick_ip(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9))), 0);
    assert_eq!(service.kick_ip(other), 3);
    for handler in handlers {
        assert_eq!(error_of(handler).await, io::ErrorKind::ConnectionAborted);
    }
    assert_eq!(service.ips(), vec![(LOCALHOST.into(), 1)]);
    assert!(open(&local_rec));

    // An IPv4-mapped IPv6 address matches its IPv4 address.
    let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
    assert_ne!(mapped, IpAddr::V6(Ipv6Addr::LOCALHOST));
    assert_eq!(service.kick_ip(mapped), 1);
    assert_eq!(
        error_of(local_handler).await,
        io::ErrorKind::ConnectionAborted
    );
    assert_eq!(service.connections(), 0);
    assert_eq!(service.ip_count(), 0);
    assert_eq!(service.snapshot().closed["kicked"], 4);
    drop(clients);
}
