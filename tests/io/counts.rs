//! Exact byte counts of `MonitoredIo` and of its service's totals, over
//! loopback TCP and over awkward in-memory transports.

use crate::support;

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use monconn::{MonitoredIo, Registry, ServiceMonitor};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use support::{quiet_config, tcp_pair, within};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Writes `pieces` with `write_vectored` until all of it is written, however
/// little each call takes.
async fn write_all_vectored<W: AsyncWrite + Unpin>(w: &mut W, pieces: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = pieces
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| IoSlice::new(p))
        .collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        let n = w.write_vectored(slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

/// Splits `data` into up to four pieces at random points.
fn split<'a>(rng: &mut SmallRng, data: &'a [u8]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = (0..rng.random_range(0..4))
        .map(|_| rng.random_range(0..=data.len()))
        .collect();
    cuts.sort_unstable();
    let mut pieces = Vec::new();
    let mut at = 0;
    for cut in cuts.into_iter().chain([data.len()]) {
        pieces.push(&data[at..cut]);
        at = cut;
    }
    pieces
}

fn random_bytes(rng: &mut SmallRng, max: usize) -> Vec<u8> {
    // Mostly small messages, sometimes large ones.
    let len = if rng.random_bool(0.8) {
        rng.random_range(0..=512)
    } else {
        rng.random_range(0..=max)
    };
    let mut data = vec![0; len];
    rng.fill_bytes(&mut data);
    data
}

/// Runs `rounds` random exchanges over one monitored connection, checking
/// every byte on the receiving side; returns what the server read and wrote
/// in these rounds.
async fn exchange(
    rng: &mut SmallRng,
    server: &mut MonitoredIo<TcpStream>,
    client: &mut TcpStream,
    rounds: usize,
) -> (u64, u64) {
    let start = (
        server.record().bytes_read(),
        server.record().bytes_written(),
    );
    let (mut read, mut written) = start;
    let mut buf = Vec::new();
    for _ in 0..rounds {
        let data = random_bytes(rng, 96 * 1024);
        buf.resize(data.len(), 0);
        match rng.random_range(0..3) {
            0 => {
                let (w, r) = tokio::join!(client.write_all(&data), server.read_exact(&mut buf));
                w.unwrap();
                r.unwrap();
                read += data.len() as u64;
            }
            1 => {
                let (w, r) = tokio::join!(server.write_all(&data), client.read_exact(&mut buf));
                w.unwrap();
                r.unwrap();
                written += data.len() as u64;
            }
            _ => {
                let pieces = split(rng, &data);
                let (w, r) = tokio::join!(
                    write_all_vectored(server, &pieces),
                    client.read_exact(&mut buf)
                );
                w.unwrap();
                r.unwrap();
                written += data.len() as u64;
            }
        }
        assert_eq!(buf, data, "the peer received exactly what was sent");
        assert_eq!(server.record().bytes_read(), read);
        assert_eq!(server.record().bytes_written(), written);
    }
    (read - start.0, written - start.1)
}

#[tokio::test]
async fn random_messages_both_directions_counted_exactly() {
    let service = Registry::new().create("counts", quiet_config()).unwrap();
    let (mut server, mut client) = tcp_pair(&service).await;
    assert!(server.is_write_vectored(), "is_write_vectored is forwarded");

    let mut rng = SmallRng::seed_from_u64(0x6d6f_6e63);
    let (read, written) = within(
        "exchange",
        exchange(&mut rng, &mut server, &mut client, 300),
    )
    .await;
    assert!(read > 0 && written > 0);

    // Live totals include the open connection's bytes.
    assert_eq!(service.bytes(), monconn::ByteCounts { read, written });
    let snap = service.snapshot_with_conns();
    assert_eq!((snap.bytes_read, snap.bytes_written), (read, written));
    let conns = snap.conns.unwrap();
    assert_eq!(conns.len(), 1);
    assert_eq!(
        (conns[0].bytes_read, conns[0].bytes_written),
        (read, written)
    );

    // After close, the closed connection's bytes are folded into the totals.
    let record = server.record().clone();
    drop(server);
    let mut rest = Vec::new();
    within("client EOF", client.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(
        rest.is_empty(),
        "nothing beyond what was counted reached the peer"
    );
    assert_eq!(service.connections(), 0);
    assert_eq!(service.bytes(), monconn::ByteCounts { read, written });
    assert_eq!(
        (record.bytes_read(), record.bytes_written()),
        (read, written)
    );
    let snap = service.snapshot();
    assert_eq!((snap.bytes_read, snap.bytes_written), (read, written));
    assert_eq!(snap.closed["normal"], 1);
    assert_eq!(snap.accepted, 1);
}

#[tokio::test]
async fn totals_add_up_across_connections_open_and_closed() {
    let service = Registry::new().create("many", quiet_config()).unwrap();
    let mut rng = SmallRng::seed_from_u64(7);
    let mut conns = Vec::new();
    let (mut read, mut written) = (0, 0);
    for _ in 0..6 {
        let (mut server, mut client) = tcp_pair(&service).await;
        let (r, w) = within("exchange", exchange(&mut rng, &mut server, &mut client, 40)).await;
        read += r;
        written += w;
        conns.push((server, client));
        assert_eq!(service.bytes(), monconn::ByteCounts { read, written });
    }
    assert_eq!(service.connections(), 6);
    // Close every other one; the totals do not move, then traffic on the
    // survivors adds to them.
    let mut survivors = Vec::new();
    for (i, pair) in conns.into_iter().enumerate() {
        if i % 2 == 0 {
            drop(pair);
            assert_eq!(service.bytes(), monconn::ByteCounts { read, written });
        } else {
            survivors.push(pair);
        }
    }
    assert_eq!(service.connections(), 3);
    for (server, client) in &mut survivors {
        let (r, w) = within("exchange", exchange(&mut rng, server, client, 20)).await;
        read += r;
        written += w;
        assert_eq!(service.bytes(), monconn::ByteCounts { read, written });
    }
    drop(survivors);
    assert_eq!(service.connections(), 0);
    assert_eq!(service.bytes(), monconn::ByteCounts { read, written });
    assert_eq!(service.snapshot().closed["normal"], 6);
}

async fn send(server: &mut MonitoredIo<TcpStream>, client: &mut TcpStream, up: usize, down: usize) {
    let mut buf = vec![0; up.max(down)];
    let data = vec![b'x'; up.max(down)];
    let (w, r) = tokio::join!(
        client.write_all(&data[..up]),
        server.read_exact(&mut buf[..up])
    );
    w.unwrap();
    r.unwrap();
    let (w, r) = tokio::join!(
        server.write_all(&data[..down]),
        client.read_exact(&mut buf[..down])
    );
    w.unwrap();
    r.unwrap();
}

#[tokio::test]
async fn take_bytes_hands_out_each_byte_once() {
    let service = Registry::new().create("take", quiet_config()).unwrap();
    let (mut a, mut a_client) = tcp_pair(&service).await;
    let (mut b, mut b_client) = tcp_pair(&service).await;
    send(&mut a, &mut a_client, 100, 10).await;
    send(&mut b, &mut b_client, 1, 2000).await;
    assert_eq!(
        service.take_bytes(),
        monconn::ByteCounts {
            read: 101,
            written: 2010
        }
    );
    assert_eq!(
        service.bytes(),
        monconn::ByteCounts {
            read: 0,
            written: 0
        }
    );
    assert_eq!(
        service.take_bytes(),
        monconn::ByteCounts {
            read: 0,
            written: 0
        }
    );

    send(&mut a, &mut a_client, 7, 3).await;
    assert_eq!(
        service.bytes(),
        monconn::ByteCounts {
            read: 7,
            written: 3
        }
    );
    // Closing a connection whose earlier bytes were taken adds nothing new.
    drop(a);
    assert_eq!(
        service.bytes(),
        monconn::ByteCounts {
            read: 7,
            written: 3
        }
    );
    send(&mut b, &mut b_client, 5, 0).await;
    assert_eq!(
        service.take_bytes(),
        monconn::ByteCounts {
            read: 12,
            written: 3
        }
    );
    drop(b);
    assert_eq!(
        service.bytes(),
        monconn::ByteCounts {
            read: 0,
            written: 0
        }
    );
    // The records themselves still hold everything.
    assert_eq!(service.snapshot().closed["normal"], 2);
}

fn assert_counters_zero(service: &ServiceMonitor) {
    let snap = service.snapshot();
    assert_eq!(snap.accepted, 0);
    assert!(
        snap.rejected.values().all(|&n| n == 0),
        "{:?}",
        snap.rejected
    );
    assert!(snap.closed.values().all(|&n| n == 0), "{:?}", snap.closed);
    assert_eq!((snap.bytes_read, snap.bytes_written), (0, 0));
}

#[tokio::test]
async fn reset_stats_zeroes_counters_but_not_live_connections() {
    let service = Registry::new().create("reset", quiet_config()).unwrap();
    let (mut a, mut a_client) = tcp_pair(&service).await;
    let (b, _b_client) = tcp_pair(&service).await;
    send(&mut a, &mut a_client, 30, 40).await;
    drop(b);
    service.count_rejected(
        &monconn::RejectReason::ConnLimit,
        "127.0.0.1:9".parse().unwrap(),
    );
    service.count_rejected(
        &monconn::RejectReason::Other("handshake".into()),
        "127.0.0.1:9".parse().unwrap(),
    );
    let snap = service.snapshot();
    assert_eq!((snap.accepted, snap.closed["normal"]), (2, 1));
    assert_eq!(
        (snap.rejected["conn_limit"], snap.rejected["handshake"]),
        (1, 1)
    );

    service.reset_stats();
    assert_counters_zero(&service);
    let snap = service.snapshot();
    assert!(!snap.rejected.contains_key("handshake"));
    // The live connection stays, with its own counters.
    assert_eq!(service.connections(), 1);
    assert_eq!(
        (a.record().bytes_read(), a.record().bytes_written()),
        (30, 40)
    );

    // Counting resumes from zero.
    send(&mut a, &mut a_client, 3, 4).await;
    assert_eq!(
        service.bytes(),
        monconn::ByteCounts {
            read: 3,
            written: 4
        }
    );
    drop(a);
    assert_eq!(
        service.bytes(),
        monconn::ByteCounts {
            read: 3,
            written: 4
        }
    );
    let snap = service.snapshot();
    assert_eq!((snap.accepted, snap.closed["normal"]), (0, 1));
}

// === awkward in-memory transports ===

/// Reads one byte at a time from `source`; accepts at most `max` bytes per
/// write, and returns `Pending` on every other write call (waking itself).
struct Trickle {
    source: Vec<u8>,
    at: usize,
    sink: Vec<u8>,
    max: usize,
    calls: usize,
}

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(&b) = self.source.get(self.at) {
            buf.put_slice(&[b]);
            self.at += 1;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Trickle {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.calls += 1;
        if self.calls.is_multiple_of(2) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let mut left = self.max;
        let mut n = 0;
        for b in bufs {
            let take = left.min(b.len());
            self.sink.extend_from_slice(&b[..take]);
            left -= take;
            n += take;
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn partial_vectored_writes_and_one_byte_reads_counted_exactly() {
    let service = Registry::new().create("trickle", quiet_config()).unwrap();
    let mut rng = SmallRng::seed_from_u64(99);
    let mut source = vec![0; 5000];
    rng.fill_bytes(&mut source);
    let addr = "127.0.0.1:9".parse().unwrap();
    let mock = Trickle {
        source: source.clone(),
        at: 0,
        sink: Vec::new(),
        max: 7,
        calls: 0,
    };
    let mut io = service.wrap(mock, addr, addr).unwrap();
    assert!(io.is_write_vectored());

    let mut got = Vec::new();
    io.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, source);
    assert_eq!(io.record().bytes_read(), 5000);

    let mut sent = Vec::new();
    for _ in 0..50 {
        let data = random_bytes(&mut rng, 300);
        write_all_vectored(&mut io, &split(&mut rng, &data))
            .await
            .unwrap();
        io.write_all(&data).await.unwrap();
        sent.extend_from_slice(&data);
        sent.extend_from_slice(&data);
    }
    io.flush().await.unwrap();
    io.shutdown().await.unwrap();
    assert_eq!(io.get_ref().sink, sent);
    assert_eq!(io.record().bytes_written(), sent.len() as u64);
    assert_eq!(
        service.bytes(),
        monconn::ByteCounts {
            read: 5000,
            written: sent.len() as u64
        }
    );
    drop(io);
    assert_eq!(
        service.bytes(),
        monconn::ByteCounts {
            read: 5000,
            written: sent.len() as u64
        }
    );
}

#[tokio::test]
async fn ipv6_loopback_counted_and_listed() {
    let listener = match tokio::net::TcpListener::bind("[::1]:0").await {
        Ok(l) => l,
        Err(e) => {
            // Some containers have no IPv6 loopback; the IPv4 tests cover the rest.
            eprintln!("skipped: cannot bind [::1]: {e}");
            return;
        }
    };
    let service = Registry::new().create("v6", quiet_config()).unwrap();
    let v6 = "::1".parse().unwrap();
    let (mut server, mut client) = support::tcp_pair_from(&listener, &service, v6).await;
    assert!(server.record().peer().is_ipv6());
    let mut rng = SmallRng::seed_from_u64(6);
    let (read, written) =
        within("exchange", exchange(&mut rng, &mut server, &mut client, 50)).await;
    assert_eq!(service.bytes(), monconn::ByteCounts { read, written });
    // Keyed by its /64 (the default `ipv6_prefix`).
    assert_eq!(service.ips(), vec![("::/64".parse().unwrap(), 1)]);
    drop(server);
    assert_eq!(service.bytes(), monconn::ByteCounts { read, written });
    assert_eq!(service.ip_count(), 0);
}

#[tokio::test]
async fn into_inner_hands_back_an_open_socket() {
    let service = Registry::new()
        .create("into-inner", quiet_config())
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (server, peer) = listener.accept().await.unwrap();
    let mut server = service.wrap(server, peer, addr).unwrap();

    client.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    server.read_exact(&mut buf).await.unwrap();
    server.write_all(b"hi").await.unwrap();
    // Cut first: the bare socket must still not be reset.
    assert!(service.kick(server.record().id()));
    let mut bare = server.into_inner();
    assert_eq!(service.connections(), 0, "the connection left the table");
    assert_eq!(
        service.bytes(),
        monconn::ByteCounts {
            read: 5,
            written: 2
        }
    );
    assert_eq!(service.snapshot().closed["kicked"], 1);

    // The socket goes on, uncounted, and ends with a clean FIN.
    bare.write_all(b" there").await.unwrap();
    client.write_all(b"more").await.unwrap();
    let mut more = [0u8; 4];
    bare.read_exact(&mut more).await.unwrap();
    drop(bare);
    let mut got = Vec::new();
    client.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"hi there");
    assert_eq!(
        service.bytes(),
        monconn::ByteCounts {
            read: 5,
            written: 2
        }
    );
}
