//! What the timeouts watch: `read_timeout` and `write_timeout` never cut a
//! connection whose bytes are moving, a completed flush clears the write
//! wait, an abandoned read is not a pending read, the library's defaults are
//! off (tests/registry.rs), and a cut ends with a reset, never a clean end.
//!
//! Timeouts are short and the sweeper ticks often; every assertion waits for
//! a condition with a generous deadline, or checks that a connection is still
//! open after several timeouts have passed: none depends on speed.

use crate::support;

use std::io;
use std::time::Duration;

use monconn::{CloseCause, Registry, ServiceConfig};
use support::{eventually, quiet_config, tcp_pair, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};

const TICK: Duration = Duration::from_millis(20);
const TIMEOUT: Duration = Duration::from_millis(300);

fn config() -> ServiceConfig {
    quiet_config().idle_interval(TICK)
}

/// A download: the server has a read pending on the client (as a proxy
/// does) while it streams to the client, which never sends a byte. The
/// stream lasts 6 read timeouts; the connection must live through it.
#[tokio::test]
async fn read_timeout_spares_a_one_way_stream() {
    let service = Registry::new()
        .create("download", config().read_timeout(TIMEOUT))
        .unwrap();
    let (conn, mut client) = tcp_pair(&service).await;
    let record = conn.record().clone();
    let (mut rd, mut wr) = tokio::io::split(conn);
    // The pending read, as a proxy keeps one on its client.
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        rd.read(&mut buf).await
    });
    let writer = tokio::spawn(async move {
        let chunk = [b'x'; 1024];
        for _ in 0..60 {
            wr.write_all(&chunk).await?;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        wr.shutdown().await?;
        io::Result::Ok(wr)
    });
    let mut got = Vec::new();
    let read = within("client reads the download", client.read_to_end(&mut got)).await;
    assert_eq!(record.closed(), None, "a moving stream was cut");
    assert_eq!(read.expect("download ends cleanly"), 60 * 1024);
    within("writer", writer)
        .await
        .unwrap()
        .expect("every write");
    assert!(!reader.is_finished(), "the read stays pending, unharmed");
    reader.abort();
}

/// The other way round with `write_timeout`: the server's write is pending
/// (the client reads nothing) while the client uploads for 6 timeouts: the
/// connection moves bytes, so it is not cut.
#[tokio::test]
async fn write_timeout_spares_a_connection_moving_the_other_way() {
    let service = Registry::new()
        .create(
            "upload",
            config().write_timeout(TIMEOUT).read_timeout(TIMEOUT),
        )
        .unwrap();
    let (conn, mut client) = tcp_pair(&service).await;
    let record = conn.record().clone();
    let (mut rd, mut wr) = tokio::io::split(conn);
    // Pending as soon as the client's buffers are full.
    let writer = tokio::spawn(async move {
        let chunk = vec![b'd'; 64 * 1024];
        loop {
            wr.write_all(&chunk).await?;
        }
        #[allow(unreachable_code)]
        io::Result::Ok(())
    });
    let uploader = tokio::spawn(async move {
        for _ in 0..60 {
            client.write_all(&[b'u'; 512]).await?;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        client.shutdown().await?;
        io::Result::Ok(client)
    });
    let mut got = Vec::new();
    let read = within("the server reads the upload", rd.read_to_end(&mut got)).await;
    assert_eq!(record.closed(), None, "a moving connection was cut");
    assert_eq!(read.expect("the upload ends cleanly"), 60 * 512);
    assert!(!writer.is_finished(), "the server's write is still pending");
    writer.abort();
    within("uploader", uploader).await.unwrap().expect("upload");
}

/// `MonitoredIo<BufWriter<_>>` over a peer that reads slowly: the flush is
/// pending for a while, then completes; afterwards nothing is pending, and
/// the connection sits idle for several write timeouts without being cut.
#[tokio::test]
async fn a_completed_flush_clears_the_write_wait() {
    let timeout = Duration::from_secs(1);
    let service = Registry::new()
        .create("flush", config().write_timeout(timeout))
        .unwrap();
    let listener = support::listen().await;
    let addr = listener.local_addr().unwrap();
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (socket, peer) = listener.accept().await.unwrap();
    let mut conn = service
        .wrap(BufWriter::with_capacity(16 << 20, socket), peer, addr)
        .unwrap();
    let record = conn.record().clone();
    // 8 MiB into the buffer (no socket write yet), then a flush that the
    // client's slow reads keep pending now and then.
    conn.write_all(&vec![b'f'; 8 << 20]).await.unwrap();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        while total < 8 << 20 {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0);
            total += n;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        client
    });
    within("flush", conn.flush())
        .await
        .expect("flush completes");
    let _client = within("reader", reader).await.unwrap();
    // Nothing pending now: idle for three write timeouts.
    tokio::time::sleep(timeout * 3).await;
    assert_eq!(record.closed(), None, "cut after its flush completed");
    conn.write_all(b"still open").await.unwrap();
    conn.flush().await.unwrap();
}

/// A read abandoned by its caller (`timeout(…, read)`), then writes only,
/// then nothing: no read is pending any more, so no read timeout applies.
#[tokio::test]
async fn an_abandoned_read_is_not_a_pending_read() {
    let service = Registry::new()
        .create("abandon", config().read_timeout(TIMEOUT))
        .unwrap();
    let (mut conn, mut client) = tcp_pair(&service).await;
    let record = conn.record().clone();
    let mut buf = [0u8; 16];
    let abandoned = tokio::time::timeout(Duration::from_millis(50), conn.read(&mut buf)).await;
    assert!(abandoned.is_err(), "the read timed out and was dropped");
    for _ in 0..10 {
        conn.write_all(b"tick").await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    // Quiet for several read timeouts, no read pending.
    tokio::time::sleep(TIMEOUT * 4).await;
    assert_eq!(
        record.closed(),
        None,
        "an abandoned read counted as pending"
    );
    let mut got = [0u8; 40];
    client.read_exact(&mut got).await.unwrap();

    // A read that is really pending still times out.
    let reader = tokio::spawn(async move { conn.read(&mut [0u8; 16]).await });
    let err = within("the real read to time out", reader)
        .await
        .unwrap()
        .expect_err("the read is cut");
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert_eq!(record.closed(), Some(CloseCause::ReadTimeout));
}

/// A connection cut by a timeout or a kick ends with a reset: the peer's
/// read fails, it does not see a clean end of stream.
#[tokio::test]
async fn a_cut_resets_the_connection() {
    let service = Registry::new()
        .create("reset", config().read_timeout(TIMEOUT))
        .unwrap();
    // Read timeout.
    let (mut conn, mut client) = tcp_pair(&service).await;
    let server = tokio::spawn(async move {
        let r = conn.read(&mut [0u8; 16]).await;
        drop(conn);
        r
    });
    let err = within("read timeout", server).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    let read = within("client read", client.read(&mut [0u8; 16])).await;
    assert_eq!(
        read.map_err(|e| e.kind()),
        Err(io::ErrorKind::ConnectionReset),
        "a cut must not look like a clean end"
    );

    // A kick, after which the server tries a clean shutdown: still a reset.
    let (mut conn, mut client) = tcp_pair(&service).await;
    let id = conn.record().id();
    conn.write_all(b"partial").await.unwrap();
    assert!(service.kick(id));
    let err = conn.shutdown().await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    drop(conn);
    let mut got = Vec::new();
    let read = within("client read", client.read_to_end(&mut got)).await;
    assert_eq!(
        read.map_err(|e| e.kind()),
        Err(io::ErrorKind::ConnectionReset)
    );
    eventually("both closed", || service.connections() == 0).await;
}
