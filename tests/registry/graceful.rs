//! Graceful close of a service, `Registry::remove` and `Registry::shutdown`,
//! over loopback TCP.

use crate::support;

use std::io;
use std::time::{Duration, Instant};

use monconn::{
    CloseCause, CloseReport, MonitoredIo, Registry, RejectReason, ServiceConfig, ServiceMonitor,
};
use support::{eventually, pattern, pattern_byte, quiet_config, tcp_pair, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

fn config(wait: Duration) -> ServiceConfig {
    quiet_config()
        .wait_timeout(wait)
        .idle_interval(Duration::from_millis(20))
}

/// Reads everything until EOF or a reset and checks every byte against the
/// pattern: the bytes read, and how the stream ended (`None`: a clean end).
fn check_all(mut client: TcpStream) -> JoinHandle<(u64, Option<io::ErrorKind>)> {
    tokio::spawn(async move {
        let mut buf = vec![0; 64 * 1024];
        let mut at = 0u64;
        loop {
            let n = match client.read(&mut buf).await {
                Ok(0) => return (at, None),
                Ok(n) => n,
                Err(e) => return (at, Some(e.kind())),
            };
            for &b in &buf[..n] {
                assert_eq!(b, pattern_byte(at), "byte {at} differs");
                at += 1;
            }
        }
    })
}

/// Writes `before` bytes of the pattern, waits for `go`, writes `after` more,
/// shuts down and drops the connection.
fn finisher(
    mut conn: MonitoredIo<TcpStream>,
    before: usize,
    go: oneshot::Receiver<()>,
    after: usize,
) -> JoinHandle<io::Result<()>> {
    tokio::spawn(async move {
        conn.write_all(&pattern(0, before)).await?;
        go.await.expect("go signal");
        conn.write_all(&pattern(before as u64, after)).await?;
        conn.shutdown().await
    })
}

/// Writes a little of the pattern every 20 ms, forever; returns how much it
/// wrote and the error that stopped it.
fn lingerer(mut conn: MonitoredIo<TcpStream>) -> JoinHandle<(u64, io::ErrorKind)> {
    tokio::spawn(async move {
        let mut at = 0u64;
        loop {
            if let Err(e) = conn.write_all(&pattern(at, 1000)).await {
                return (at, e.kind());
            }
            at += 1000;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

fn spawn_close(service: &ServiceMonitor) -> JoinHandle<CloseReport> {
    let service = service.clone();
    tokio::spawn(async move { service.close().await })
}

#[tokio::test]
async fn close_drains_what_finishes_and_cuts_the_rest_at_wait_timeout() {
    let wait = Duration::from_secs(1);
    let service = Registry::new().create("graceful", config(wait)).unwrap();
    let (fin_conn, fin_client) = tcp_pair(&service).await;
    let fin_rec = fin_conn.record().clone();
    let (go, go_rx) = oneshot::channel();
    let fin = finisher(fin_conn, 300_000, go_rx, 200_000);
    let fin_check = check_all(fin_client);

    let (ling_conn, ling_client) = tcp_pair(&service).await;
    let ling_rec = ling_conn.record().clone();
    let ling = lingerer(ling_conn);
    let ling_check = check_all(ling_client);
    eventually("the finisher wrote its first part", || {
        fin_rec.bytes_written() == 300_000
    })
    .await;

    let started = Instant::now();
    let close = spawn_close(&service);
    eventually("close has begun", || !service.is_running()).await;
    // New connections are refused from now on.
    let peer = "127.0.0.1:5555".parse().unwrap();
    assert_eq!(
        service.admit(peer).unwrap_err().reason(),
        &RejectReason::Stopped
    );
    go.send(()).unwrap();

    let report = within("close", close).await.unwrap();
    assert_eq!(report, CloseReport { drained: 1, cut: 1 });
    assert!(
        started.elapsed() >= wait,
        "the lingerer was cut at wait_timeout, not before"
    );

    // The finisher delivered every byte.
    within("finisher", fin).await.unwrap().unwrap();
    assert_eq!(
        within("finisher's client", fin_check).await.unwrap(),
        (500_000, None)
    );
    assert_eq!(fin_rec.closed(), None);

    // The lingerer's next write failed; its peer got no more than was
    // counted, and a reset, not a clean end.
    let (wrote, kind) = within("lingerer", ling).await.unwrap();
    assert_eq!(kind, io::ErrorKind::ConnectionAborted);
    assert_eq!(ling_rec.closed(), Some(CloseCause::Shutdown));
    assert_eq!(ling_rec.bytes_written(), wrote);
    let (got, end) = within("lingerer's client", ling_check).await.unwrap();
    assert!(got <= wrote, "{got} bytes read, {wrote} written");
    assert_eq!(end, Some(io::ErrorKind::ConnectionReset));

    eventually("all connections gone", || service.connections() == 0).await;
    let snap = service.snapshot();
    assert_eq!((snap.closed["normal"], snap.closed["shutdown"]), (1, 1));
    assert_eq!(snap.bytes_written, 500_000 + wrote);

    // Admission after close is refused with `Stopped`, and `wrap` counts it.
    let (_client, stream) = support::plain_pair().await;
    let refused = service.wrap(stream, peer, peer).unwrap_err();
    assert_eq!(refused.reason(), &RejectReason::Stopped);
    assert_eq!(service.snapshot().rejected["stopped"], 1);
    assert_eq!(service.connections(), 0);
    // Closing again reports nothing left.
    assert_eq!(service.close().await, CloseReport { drained: 0, cut: 0 });
}

#[tokio::test]
async fn close_with_no_connections_returns_at_once() {
    let service = Registry::new()
        .create("empty", config(Duration::from_secs(3600)))
        .unwrap();
    let report = within("close", service.close()).await;
    assert_eq!(report, CloseReport::default());
    assert!(!service.is_running());
}

/// A connection whose client closes when told; the server reads to EOF.
async fn drains_on_signal(
    service: &ServiceMonitor,
) -> (oneshot::Sender<()>, JoinHandle<io::Result<()>>) {
    let (mut conn, mut client) = tcp_pair(service).await;
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = rx.await;
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest).await;
    });
    let handler = tokio::spawn(async move {
        let mut buf = [0; 64];
        while conn.read(&mut buf).await? != 0 {}
        Ok(())
    });
    (tx, handler)
}

/// A connection whose server side reads forever (its client never closes).
async fn stays_open(service: &ServiceMonitor) -> (JoinHandle<io::ErrorKind>, TcpStream) {
    let (mut conn, client) = tcp_pair(service).await;
    let handler = tokio::spawn(async move {
        let mut buf = [0; 64];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) => panic!("unexpected EOF"),
                Ok(_) => {}
                Err(e) => return e.kind(),
            }
        }
    });
    (handler, client)
}

#[tokio::test]
async fn registry_remove_closes_the_service_gracefully() {
    let registry = Registry::new();
    let wait = Duration::from_millis(500);
    let a = registry.create("a", config(wait)).unwrap();
    let b = registry.create("b", config(wait)).unwrap();
    let (go, drained) = drains_on_signal(&a).await;
    let (cut, _cut_client) = stays_open(&a).await;
    let (b_handler, _b_client) = stays_open(&b).await;

    let remove = {
        let registry = registry.clone();
        tokio::spawn(async move { registry.remove("a").await })
    };
    eventually("a is stopping", || !a.is_running()).await;
    assert!(registry.get("a").is_none(), "removed at once");
    go.send(()).unwrap();
    let report = within("remove", remove).await.unwrap();
    assert_eq!(report, Some(CloseReport { drained: 1, cut: 1 }));
    within("drained handler", drained).await.unwrap().unwrap();
    assert_eq!(
        within("cut handler", cut).await.unwrap(),
        io::ErrorKind::ConnectionAborted
    );
    eventually("a has no connection", || a.connections() == 0).await;

    assert!(registry.remove("a").await.is_none(), "already removed");
    assert_eq!(
        registry
            .list()
            .iter()
            .map(|s| s.sid().to_owned())
            .collect::<Vec<_>>(),
        ["b"]
    );
    assert!(b.is_running());
    assert_eq!(b.connections(), 1);
    assert!(!b_handler.is_finished());
}

#[tokio::test]
async fn registry_shutdown_closes_every_service() {
    let registry = Registry::new();
    let wait = Duration::from_millis(500);
    let x = registry.create("x", config(wait)).unwrap();
    let y = registry.create("y", config(wait)).unwrap();
    let z = registry.create("z", config(wait)).unwrap();
    let (x_handler, _x_client) = stays_open(&x).await;
    let (go, y_handler) = drains_on_signal(&y).await;

    let shutdown = {
        let registry = registry.clone();
        tokio::spawn(async move { registry.shutdown().await })
    };
    eventually("every service is stopping", || {
        !x.is_running() && !y.is_running() && !z.is_running()
    })
    .await;
    go.send(()).unwrap();
    let reports = within("shutdown", shutdown).await.unwrap();
    let expected = [
        ("x".to_owned(), CloseReport { drained: 0, cut: 1 }),
        ("y".to_owned(), CloseReport { drained: 1, cut: 0 }),
        ("z".to_owned(), CloseReport { drained: 0, cut: 0 }),
    ];
    assert_eq!(reports, expected);
    assert_eq!(
        within("x handler", x_handler).await.unwrap(),
        io::ErrorKind::ConnectionAborted
    );
    within("y handler", y_handler).await.unwrap().unwrap();
    eventually("no connection left", || {
        x.connections() + y.connections() + z.connections() == 0
    })
    .await;
    assert_eq!(registry.list().len(), 3, "shut-down services stay listed");
    let snap = registry.snapshot();
    let closed: Vec<_> = snap
        .services
        .iter()
        .map(|s| (s.sid.as_str(), s.closed["normal"], s.closed["shutdown"]))
        .collect();
    assert_eq!(closed, [("x", 0, 1), ("y", 1, 0), ("z", 0, 0)]);
    let peer = "127.0.0.1:1".parse().unwrap();
    for s in [&x, &y, &z] {
        assert_eq!(s.admit(peer).unwrap_err().reason(), &RejectReason::Stopped);
    }
}

/// A listener whose accept stack holds every admitted connection in a
/// handshake until `gate` opens; its accept loop writes `served` to each
/// connection it yields, after reading what the client sent, and reports the
/// read's result.
fn gated_listener(
    service: &ServiceMonitor,
    tcp: tokio::net::TcpListener,
    gate: tokio::sync::watch::Receiver<bool>,
) -> tokio::sync::mpsc::UnboundedReceiver<io::Result<usize>> {
    use monconn::layers::{FilterLayer, LimitLayer};
    use monconn::{Accepted, Listener};
    let stack = tower::ServiceBuilder::new()
        .layer(FilterLayer::new(service))
        .layer(LimitLayer::new(service))
        .service(tower::service_fn(move |conn: Accepted<TcpStream>| {
            let mut gate = gate.clone();
            async move {
                // The handshake: done when the test says so.
                let _ = gate.wait_for(|open| *open).await;
                Ok::<_, std::convert::Infallible>(conn)
            }
        }));
    let listener = Listener::with_stack(tcp, service.clone(), stack).unwrap();
    let (tx, yielded) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _peer)) = listener.accept().await else {
                return;
            };
            let mut buf = [0; 64];
            let read = conn.read(&mut buf).await;
            if read.is_ok() {
                let _ = conn.write_all(b"served").await;
            }
            let _ = tx.send(read);
        }
    });
    yielded
}

/// A connection still in the accept layers (a slow handshake) when `close`
/// cuts is counted as cut, and is never served: the listener closes it as
/// it comes out of the stack (its client sees the end without a byte).
#[tokio::test]
async fn close_cuts_a_connection_still_in_the_accept_layers() {
    let service = Registry::new()
        .create("handshaking", config(Duration::from_millis(200)))
        .unwrap();
    let tcp = support::listen().await;
    let addr = tcp.local_addr().unwrap();
    let (open_gate, gate) = tokio::sync::watch::channel(false);
    let mut yielded = gated_listener(&service, tcp, gate);

    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"hello").await.unwrap();
    eventually("the client is admitted, in its handshake", || {
        service.connections() == 1
    })
    .await;

    let report = within("close", service.close()).await;
    assert_eq!(report, CloseReport { drained: 0, cut: 1 });
    // The handshake ends after the cut.
    open_gate.send(true).unwrap();

    let mut got = Vec::new();
    let end = within("the client's end", client.read_to_end(&mut got)).await;
    assert!(
        got.is_empty(),
        "a cut connection was served: {got:?} ({end:?})"
    );
    eventually("the connection is gone", || service.connections() == 0).await;
    // Closed as it came out of the stack, never yielded.
    assert!(yielded.try_recv().is_err(), "the listener yielded it");
    let snap = service.snapshot();
    assert_eq!(snap.closed["shutdown"], 1);
    assert_eq!(snap.closed["normal"], 0);
}

/// An admission taken before `close` and attached after the cut is counted
/// as cut, and the connection it makes is closed from birth: its reads and
/// writes fail with `ConnectionAborted`.
#[tokio::test]
async fn an_admission_attached_after_the_cut_is_born_closed() {
    let service = Registry::new()
        .create("late-attach", config(Duration::from_millis(100)))
        .unwrap();
    let (mut client, stream) = support::plain_pair().await;
    let peer = stream.peer_addr().unwrap();
    let local = stream.local_addr().unwrap();
    let admission = service.admit(peer).unwrap();

    let report = within("close", service.close()).await;
    assert_eq!(report, CloseReport { drained: 0, cut: 1 });

    let mut conn = admission.attach(stream, local);
    assert_eq!(conn.record().closed(), Some(CloseCause::Shutdown));
    let mut buf = [0; 8];
    client.write_all(b"hello").await.unwrap();
    let read = conn.read(&mut buf).await;
    assert_eq!(read.unwrap_err().kind(), io::ErrorKind::ConnectionAborted);
    let write = conn.write_all(b"served").await;
    assert_eq!(write.unwrap_err().kind(), io::ErrorKind::ConnectionAborted);
    drop(conn);
    assert_eq!(service.connections(), 0);
    assert_eq!(service.snapshot().closed["shutdown"], 1);
}
