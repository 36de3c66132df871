//! `monconn::forward`, the forwarder's copy engine, over real loopback
//! sockets: half-close both ways, errors and closes from outside
//! ending the pair, exact byte counts on the buffered and the splice path,
//! no buffer held by an idle pair, big transfers byte for byte.

use crate::support;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use monconn::forward::{buffers_lent, copy_bidirectional, eof_pending, spliced_bytes, Mode};
use monconn::{Registry, ServiceConfig, ServiceMonitor};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use support::{eventually, pattern, pattern_byte, quiet_config, within};

/// The pool counters are process-wide: tests that read them run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A front listener whose connections are wrapped in `service` and piped to
/// `backend`, each pair's result sent on `results`.
struct Rig {
    service: ServiceMonitor,
    front: SocketAddr,
    backend: TcpListener,
    results: mpsc::UnboundedReceiver<io::Result<(u64, u64)>>,
}

impl Rig {
    /// Pairs as the forwarder runs them by default: copies through
    /// buffers, half-close passed on.
    async fn new(config: ServiceConfig) -> Rig {
        Rig::with_splice(config, false).await
    }

    /// Pairs that move bulk transfers with `splice(2)` when `splice` is set
    /// (the forwarder's `--splice`).
    async fn with_splice(config: ServiceConfig, splice: bool) -> Rig {
        let mode = Mode::default().with_splice(splice);
        Rig::with_mode(config, mode).await
    }

    async fn with_mode(config: ServiceConfig, mode: Mode) -> Rig {
        let service = Registry::new().create("copy", config).unwrap();
        let front = support::listen().await;
        let backend = support::listen().await;
        let (tx, results) = mpsc::unbounded_channel();
        let (addr, to) = (front.local_addr().unwrap(), backend.local_addr().unwrap());
        let svc = service.clone();
        tokio::spawn(async move {
            loop {
                let client = support::accept_wrapped(&front, &svc).await;
                let tx = tx.clone();
                tokio::spawn(async move {
                    let backend = TcpStream::connect(to).await.expect("connect backend");
                    let _ = tx.send(copy_bidirectional(client, backend, mode).await);
                });
            }
        });
        Rig {
            service,
            front: addr,
            backend,
            results,
        }
    }

    /// A client connected through the pipe, and the backend's end of it.
    async fn pair(&self) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(self.front).await.expect("connect front");
        let (server, _) = within("backend accept", self.backend.accept())
            .await
            .expect("accept");
        (client, server)
    }

    /// A pair through which `request` already went, client to backend.
    async fn running_pair(&self, request: &[u8]) -> (TcpStream, TcpStream) {
        let (mut client, mut server) = self.pair().await;
        client.write_all(request).await.unwrap();
        let mut got = vec![0; request.len()];
        within("pipe running", server.read_exact(&mut got))
            .await
            .unwrap();
        assert_eq!(got, request);
        (client, server)
    }

    async fn result(&mut self) -> io::Result<(u64, u64)> {
        within("pipe result", self.results.recv())
            .await
            .expect("pipe task sent its result")
    }
}

/// Closes `s` with a reset (`SO_LINGER` 0) instead of a FIN.
fn reset(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(std::time::Duration::ZERO))
        .unwrap();
}

/// Writes `len` pattern bytes, then shuts down the write side.
async fn send(mut w: impl AsyncWriteExt + Unpin, len: usize) -> io::Result<()> {
    let mut at = 0;
    while at < len {
        let n = (len - at).min(256 * 1024);
        w.write_all(&pattern(at as u64, n)).await?;
        at += n;
    }
    w.shutdown().await
}

/// Reads to EOF, checking every byte against the pattern; returns the count.
async fn receive(mut r: impl AsyncReadExt + Unpin) -> io::Result<u64> {
    let mut buf = vec![0; 128 * 1024];
    let mut at = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(at);
        }
        for (i, &b) in buf[..n].iter().enumerate() {
            assert_eq!(
                b,
                pattern_byte(at + i as u64),
                "byte {} differs",
                at + i as u64
            );
        }
        at += n as u64;
    }
}

/// Both ways at once, `up` bytes client -> backend and `down` back, every
/// byte checked, counts exact in the pipe's result and the service totals.
/// `splice`: as the forwarder's `--splice`. Returns the bytes that went
/// through `splice(2)` meanwhile.
async fn both_ways(config: ServiceConfig, up: usize, down: usize, splice: bool) -> u64 {
    let _serial = SERIAL.lock().await;
    let spliced = spliced_bytes();
    let mut rig = Rig::with_splice(config, splice).await;
    let (client, server) = rig.pair().await;
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let (a, b, c, d) = within("transfer", async {
        tokio::join!(send(cw, up), receive(sr), send(sw, down), receive(cr))
    })
    .await;
    a.unwrap();
    c.unwrap();
    assert_eq!((b.unwrap(), d.unwrap()), (up as u64, down as u64));
    assert_eq!(rig.result().await.unwrap(), (up as u64, down as u64));
    eventually("connection gone", || rig.service.connections() == 0).await;
    assert_eq!(
        rig.service.bytes(),
        monconn::ByteCounts {
            read: up as u64,
            written: down as u64
        }
    );
    assert_eq!(buffers_lent(), (0, 0));
    spliced_bytes() - spliced
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_transfer_both_ways_buffered_path() {
    // The default: every byte copied through the pool's buffers.
    let spliced = both_ways(quiet_config(), 48 << 20, 40 << 20, false).await;
    assert_eq!(spliced, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_transfer_both_ways_splice_path() {
    // With --splice, full buffers switch the pair to splice(2) on Linux;
    // counts stay exact.
    let spliced = both_ways(quiet_config(), 48 << 20, 40 << 20, true).await;
    if cfg!(target_os = "linux") {
        // Most of it, not all: each burst starts with one buffered read.
        assert!(spliced > (88 << 20) / 2, "only {spliced} bytes spliced");
    } else {
        assert_eq!(spliced, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_transfer_both_ways_with_print_bytes() {
    // print_bytes keeps every byte on the counted, dumping path, even when
    // splice is allowed.
    let spliced = both_ways(quiet_config().print_bytes(true), 12 << 20, 9 << 20, true).await;
    assert_eq!(spliced, 0);
}

#[tokio::test]
async fn small_and_empty_transfers() {
    for splice in [false, true] {
        assert_eq!(both_ways(quiet_config(), 1, 0, splice).await, 0);
        assert_eq!(both_ways(quiet_config(), 0, 0, splice).await, 0);
        both_ways(quiet_config(), 70_000, 3, splice).await;
    }
}

#[tokio::test]
async fn client_half_close_still_gets_the_full_reply() {
    let _serial = SERIAL.lock().await;
    let mut rig = Rig::new(quiet_config()).await;
    let (mut client, mut server) = rig.pair().await;
    client.write_all(b"request").await.unwrap();
    client.shutdown().await.unwrap();
    // The backend sees the client's EOF...
    let mut req = Vec::new();
    within("backend read to EOF", server.read_to_end(&mut req))
        .await
        .unwrap();
    assert_eq!(req, b"request");
    // ...and its reply still flows the other way, in full.
    let reply_len = 3 << 20;
    let (sr, sw) = server.into_split();
    let (sent, got) = within("reply", async {
        tokio::join!(send(sw, reply_len), receive(&mut client))
    })
    .await;
    sent.unwrap();
    assert_eq!(got.unwrap(), reply_len as u64);
    drop(sr);
    assert_eq!(rig.result().await.unwrap(), (7, reply_len as u64));
}

#[tokio::test]
async fn backend_half_close_still_takes_the_client_bytes() {
    let _serial = SERIAL.lock().await;
    let mut rig = Rig::new(quiet_config()).await;
    let (mut client, mut server) = rig.pair().await;
    server.write_all(b"banner\n").await.unwrap();
    server.shutdown().await.unwrap();
    let mut banner = Vec::new();
    within("client read to EOF", client.read_to_end(&mut banner))
        .await
        .unwrap();
    assert_eq!(banner, b"banner\n");
    let up = 2 << 20;
    let (got, sent) = within("upload", async {
        tokio::join!(receive(&mut server), send(&mut client, up))
    })
    .await;
    sent.unwrap();
    assert_eq!(got.unwrap(), up as u64);
    assert_eq!(rig.result().await.unwrap(), (up as u64, 7));
    eventually("connection gone", || rig.service.connections() == 0).await;
    assert_eq!(
        rig.service.bytes(),
        monconn::ByteCounts {
            read: up as u64,
            written: 7
        }
    );
}

/// Everything `stream` reads until its peer's EOF (or `within`'s limit).
async fn to_eof(what: &str, stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    within(what, stream.read_to_end(&mut got)).await.unwrap();
    got
}

#[tokio::test]
async fn without_half_close_the_first_eof_closes_both_sides() {
    // half_close: false (nginx stream's default): the backend's EOF ends the
    // pair at once, with the reply delivered; the client's side is closed
    // without waiting for its EOF, and the backend sees the close too.
    let _serial = SERIAL.lock().await;
    let mode = Mode::default().with_splice(false).with_half_close(false);
    let mut rig = Rig::with_mode(quiet_config(), mode).await;
    let (mut client, mut server) = rig.running_pair(b"request").await;
    server.write_all(b"reply").await.unwrap();
    server.shutdown().await.unwrap();
    // The pair ends while the client still has its write side open.
    assert_eq!(rig.result().await.unwrap(), (7, 5));
    assert_eq!(to_eof("client read to EOF", &mut client).await, b"reply");
    assert!(to_eof("backend read to EOF", &mut server).await.is_empty());
    eventually("connection gone", || rig.service.connections() == 0).await;
    assert_eq!(
        rig.service.bytes(),
        monconn::ByteCounts {
            read: 7,
            written: 5
        }
    );

    // The same when the client ends first: the backend's side closes too,
    // and what the backend had not sent yet is not waited for.
    let (mut client, mut server) = rig.running_pair(b"ask").await;
    client.shutdown().await.unwrap();
    assert_eq!(rig.result().await.unwrap(), (3, 0));
    assert!(to_eof("backend read to EOF", &mut server).await.is_empty());
    assert!(to_eof("client read to EOF", &mut client).await.is_empty());
}

#[tokio::test]
async fn a_reply_with_its_fin_right_behind_arrives_whole() {
    // The backend answers and closes at once, as `echod once` or an HTTP/1.0
    // server does: the FIN is often there before the pipe reads the reply,
    // and the pipe then ends that direction without reading EOF
    // (`eof_pending`). Not a byte may be lost to that.
    let _serial = SERIAL.lock().await;
    let mut rig = Rig::new(quiet_config()).await;
    for round in 0..100usize {
        let (mut client, mut server) = rig.running_pair(b"?").await;
        let len = 1 + round * 997 % 70_000;
        server.write_all(&pattern(0, len)).await.unwrap();
        drop(server);
        let got = within("reply", receive(&mut client)).await.unwrap();
        assert_eq!(got, len as u64, "round {round}");
        drop(client);
        assert_eq!(
            rig.result().await.unwrap(),
            (1, len as u64),
            "round {round}"
        );
    }
}

/// Waits until the reactor has seen `s`'s peer end its side (FIN or reset).
async fn peer_end_seen(s: &TcpStream) {
    within("the peer's end reaches the reactor", async {
        while !s.ready(Interest::READABLE).await.unwrap().is_read_closed() {
            tokio::task::yield_now().await;
        }
    })
    .await
}

#[tokio::test]
async fn eof_behind_drained_data_is_known_without_a_read() {
    let (mut peer, mut ours) = support::plain_pair().await;
    peer.write_all(b"abc").await.unwrap();
    peer.shutdown().await.unwrap();
    peer_end_seen(&ours).await;
    assert!(!eof_pending(&ours), "three bytes are still unread");
    // A short read drains the socket; the FIN was known before it.
    assert_eq!(ours.read(&mut [0; 64]).await.unwrap(), 3);
    assert!(eof_pending(&ours));
    assert_eq!(ours.read(&mut [0; 64]).await.unwrap(), 0, "it is EOF");
}

#[tokio::test]
async fn a_fin_after_the_last_read_still_takes_a_read() {
    let (mut peer, mut ours) = support::plain_pair().await;
    peer.write_all(b"abc").await.unwrap();
    assert_eq!(ours.read(&mut [0; 64]).await.unwrap(), 3);
    assert!(!eof_pending(&ours), "no FIN yet");
    // The FIN comes after the read that drained the socket: readable
    // again, and only a read can tell what came (data, or the end).
    peer.shutdown().await.unwrap();
    peer_end_seen(&ours).await;
    assert!(!eof_pending(&ours));
    assert_eq!(ours.read(&mut [0; 64]).await.unwrap(), 0);
}

#[tokio::test]
async fn a_reset_behind_data_is_not_taken_for_eof() {
    let (mut peer, mut ours) = support::plain_pair().await;
    peer.write_all(b"abc").await.unwrap();
    reset(peer);
    peer_end_seen(&ours).await;
    assert_eq!(ours.read(&mut [0; 64]).await.unwrap(), 3);
    // The reset must reach the pipe as an error, so a read it takes.
    assert!(!eof_pending(&ours));
    let err = ours.read(&mut [0; 64]).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
}

#[tokio::test]
async fn backend_reset_ends_the_pair() {
    let _serial = SERIAL.lock().await;
    let mut rig = Rig::new(quiet_config()).await;
    let (mut client, server) = rig.running_pair(b"hi").await;
    // Close with a reset while the client is idle.
    reset(server);
    let err = rig.result().await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
    // The client's socket is closed too: it reads the end, not a hang.
    let mut rest = Vec::new();
    let _ = within("client sees the close", client.read_to_end(&mut rest)).await;
    assert!(rest.is_empty());
    eventually("connection gone", || rig.service.connections() == 0).await;
    assert_eq!(buffers_lent(), (0, 0));
    // The backend's reset counts as the connection's end by error.
    let closed = rig.service.snapshot().closed;
    assert_eq!(closed.get("error"), Some(&1), "{closed:?}");
}

#[tokio::test]
async fn client_reset_ends_the_pair() {
    let _serial = SERIAL.lock().await;
    let mut rig = Rig::new(quiet_config()).await;
    let (client, mut server) = rig.running_pair(b"hi").await;
    reset(client);
    assert_eq!(
        rig.result().await.unwrap_err().kind(),
        io::ErrorKind::ConnectionReset
    );
    let mut rest = Vec::new();
    let _ = within("backend sees the close", server.read_to_end(&mut rest)).await;
    eventually("connection gone", || rig.service.connections() == 0).await;
    let closed = rig.service.snapshot().closed;
    assert_eq!(closed.get("error"), Some(&1), "{closed:?}");
}

#[tokio::test]
async fn kick_ends_an_idle_pair() {
    let _serial = SERIAL.lock().await;
    let mut rig = Rig::new(quiet_config()).await;
    let (_client, mut server) = rig.pair().await;
    eventually("admitted", || rig.service.connections() == 1).await;
    let id = rig.service.snapshot_with_conns().conns.unwrap()[0].id;
    assert!(rig.service.kick(id));
    let err = rig.result().await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted, "{err}");
    let mut rest = Vec::new();
    let end = within("backend sees the close", server.read_to_end(&mut rest)).await;
    assert_eq!(
        end.map_err(|e| e.kind()),
        Err(io::ErrorKind::ConnectionReset),
        "a kick resets the backend too"
    );
}

#[tokio::test]
async fn kick_ends_a_pair_that_waits_on_its_backend_only() {
    // The client sent its EOF: the pair now waits on the backend alone, and
    // must still hear of a close from outside.
    let _serial = SERIAL.lock().await;
    let mut rig = Rig::new(quiet_config()).await;
    let (mut client, mut server) = rig.pair().await;
    client.shutdown().await.unwrap();
    let mut req = Vec::new();
    within("backend read to EOF", server.read_to_end(&mut req))
        .await
        .unwrap();
    let id = rig.service.snapshot_with_conns().conns.unwrap()[0].id;
    assert!(rig.service.kick(id));
    let err = rig.result().await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted, "{err}");
    let mut rest = Vec::new();
    let _ = within("client sees the close", client.read_to_end(&mut rest)).await;
}

#[tokio::test]
async fn idle_pairs_hold_no_buffer() {
    idle_pairs_hold_nothing(false).await;
}

#[tokio::test]
async fn idle_pairs_hold_no_pipe() {
    idle_pairs_hold_nothing(true).await;
}

/// 50 pairs, each after a burst both ways, then idle: every buffer (and,
/// with `splice`, every pipe) is back in the pool.
async fn idle_pairs_hold_nothing(splice: bool) {
    let _serial = SERIAL.lock().await;
    let spliced = spliced_bytes();
    let rig = Rig::with_splice(quiet_config(), splice).await;
    let mut pairs = Vec::new();
    for i in 0..50u8 {
        let (mut client, mut server) = rig.pair().await;
        // A burst each way, large enough to take the splice path on Linux.
        let big = pattern(0, 200_000);
        let (w, r) = tokio::join!(client.write_all(&big), async {
            let mut got = vec![0; big.len()];
            server.read_exact(&mut got).await.map(|_| got)
        });
        w.unwrap();
        assert_eq!(r.unwrap(), big);
        server.write_all(&[i]).await.unwrap();
        let mut one = [0];
        client.read_exact(&mut one).await.unwrap();
        assert_eq!(one, [i]);
        pairs.push((client, server));
    }
    assert_eq!(rig.service.connections(), 50);
    eventually("every buffer and pipe given back", || {
        buffers_lent() == (0, 0)
    })
    .await;
    // Pipes were lent (and given back) only where splice was asked for.
    let used_pipes = spliced_bytes() > spliced;
    assert_eq!(used_pipes, splice && cfg!(target_os = "linux"));
}

#[tokio::test]
async fn a_stalled_backend_holds_one_lease_until_it_reads() {
    let _serial = SERIAL.lock().await;
    let mut rig = Rig::new(quiet_config()).await;
    let (client, mut server) = rig.pair().await;
    let (mut cr, mut cw) = client.into_split();
    // The backend does not read: the client writes until every buffer on the
    // way is full, and the pair holds the bytes it could not pass on.
    let written = Arc::new(Mutex::new(0u64));
    let counter = written.clone();
    let writer = tokio::spawn(async move {
        let chunk = vec![7u8; 64 * 1024];
        loop {
            match cw.write(&chunk).await {
                Ok(n) => *counter.lock().unwrap() += n as u64,
                Err(_) => return cw,
            }
        }
    });
    eventually("the pair holds one buffer or pipe", || {
        let (bufs, pipes) = buffers_lent();
        bufs + pipes == 1
    })
    .await;
    writer.abort();
    let _ = writer.await;
    let total = *written.lock().unwrap();
    assert!(total > 0);
    // Now the backend reads everything the client wrote, exactly.
    let mut got = 0u64;
    let mut buf = vec![0; 256 * 1024];
    while got < total {
        let n = within("backend drains", server.read(&mut buf))
            .await
            .unwrap();
        assert_ne!(n, 0, "EOF after {got} of {total}");
        assert!(buf[..n].iter().all(|&b| b == 7));
        got += n as u64;
    }
    assert_eq!(got, total);
    eventually("lease given back", || buffers_lent() == (0, 0)).await;
    drop(server);
    let mut rest = Vec::new();
    let _ = cr.read_to_end(&mut rest).await;
    let _ = rig.result().await;
    eventually("connection gone", || rig.service.connections() == 0).await;
    assert_eq!(rig.service.bytes().read, total);
}

/// A `tracing` writer that keeps what it is given.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn print_bytes_dumps_both_directions() {
    let _serial = SERIAL.lock().await;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The current-thread runtime runs the pipe on this thread, under this subscriber.
    let _default = tracing::subscriber::set_default(subscriber);
    let mut rig = Rig::new(quiet_config().print_bytes(true)).await;
    let (mut client, mut server) = rig.pair().await;
    client.write_all(b"GET /ping").await.unwrap();
    client.shutdown().await.unwrap();
    let mut req = Vec::new();
    server.read_to_end(&mut req).await.unwrap();
    server.write_all(b"pong!").await.unwrap();
    drop(server);
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).await.unwrap();
    assert_eq!(
        (req.as_slice(), reply.as_slice()),
        (&b"GET /ping"[..], &b"pong!"[..])
    );
    assert_eq!(rig.result().await.unwrap(), (9, 5));
    // The dump thread writes them, off the connection's path.
    let text = || String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    support::eventually("both dumps", || text().contains("706f 6e67 21")).await;
    let text = text();
    let read = text
        .lines()
        .position(|l| l.contains("direction=\"read\"") && l.contains("len=9"));
    let write = text
        .lines()
        .position(|l| l.contains("direction=\"write\"") && l.contains("len=5"));
    assert!(read.is_some() && write.is_some(), "{text}");
    assert!(text.contains("00000000: 4745 5420 2f70 696e 67"), "{text}");
    assert!(text.contains("00000000: 706f 6e67 21"), "{text}");
}

#[tokio::test]
async fn an_idle_pair_is_small() {
    // The pipe future is all a pair holds while idle, besides its sockets'
    // kernel state and the runtime's per-socket registration: the two
    // sockets (the client's with its record and its reset-on-cut hook) and
    // two small direction states.
    let service = Registry::new().create("size", quiet_config()).unwrap();
    let (client, _peer) = support::tcp_pair(&service).await;
    let backend_listener = support::listen().await;
    let backend = TcpStream::connect(backend_listener.local_addr().unwrap())
        .await
        .unwrap();
    let mode = Mode::default().with_splice(true).with_half_close(true);
    let pair = copy_bidirectional(client, backend, mode);
    let size = std::mem::size_of_val(&pair);
    assert!(size <= 200, "pipe future is {size} bytes");
}
