//! A user's own layers in the accept stack: an async handshake that changes
//! the transport, under `tower::timeout`, running concurrently with other
//! accepts; the builder; bind retries.

use crate::accept_common;
use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use accept_common::{assert_closed, attempt, counts, lo, refused, Fate};
use monconn::layers::{BoxError, FilterLayer, LimitLayer};
use monconn::{Accepted, Listener, Registry, RejectReason, Rejected, ServiceMonitor};
use support::{connect_from, eventually, quiet_config, within};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceBuilder;

/// A handshake: the client sends a line `HELLO <name>\n`; the connection
/// goes on buffered, with its greeting read.
async fn hello(conn: Accepted<TcpStream>) -> Result<Accepted<BufReader<TcpStream>>, BoxError> {
    let peer = conn.peer;
    let mut conn = conn.map_io(BufReader::new);
    let mut line = String::new();
    if conn.io.read_line(&mut line).await? == 0 {
        return Err("closed before its greeting".into());
    }
    if !line.starts_with("HELLO ") {
        return Err(Rejected::new(RejectReason::Other("handshake".into()), peer).into());
    }
    conn.io.get_mut().write_all(b"+").await?;
    Ok(conn)
}

/// Waits until a handshake's failure is counted: once, for `reason`, with
/// nothing accepted and its slot freed.
async fn refused_once_for(service: &ServiceMonitor, reason: &str) {
    eventually("counted", || !refused(service).is_empty()).await;
    assert_eq!(refused(service), counts(&[(reason, 1)]));
    assert_eq!(service.accepted(), 0);
    eventually("slot freed", || service.connections() == 0).await;
}

/// A listener with the filter, the limits and the handshake under `timeout`;
/// it echoes, on each admitted connection, what follows the greeting.
async fn handshake_server(service: &ServiceMonitor, timeout: Duration) -> SocketAddr {
    let stack = ServiceBuilder::new()
        .layer(FilterLayer::new(service))
        .layer(LimitLayer::new(service))
        .timeout(timeout)
        .service(tower::service_fn(hello));
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = Listener::with_stack(tcp, service.clone(), stack).unwrap();
    let addr = listener.local_addr();
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.expect("accept");
            tokio::spawn(async move {
                let mut buf = [0; 64];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

async fn greet(src: std::net::IpAddr, addr: SocketAddr) -> TcpStream {
    let mut c = connect_from(src, addr).await;
    c.write_all(b"HELLO test\n").await.unwrap();
    let mut plus = [0u8; 1];
    within("handshake reply", c.read_exact(&mut plus))
        .await
        .unwrap();
    assert_eq!(&plus, b"+");
    c
}

#[tokio::test]
async fn user_handshake_layer_transforms_the_io_and_is_monitored() {
    let service = Registry::new().create("hs", quiet_config()).unwrap();
    let addr = handshake_server(&service, Duration::from_secs(60)).await;

    let mut client = greet(lo(2), addr).await;
    client.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    within("echo", client.read_exact(&mut echo)).await.unwrap();
    assert_eq!(&echo, b"ping");
    // The MonitoredIo counts what passes after the handshake.
    let stats = service.snapshot();
    assert_eq!((stats.bytes_read, stats.bytes_written), (4, 4));
    assert_eq!(stats.accepted, 1);
}

#[tokio::test]
async fn a_slow_handshake_does_not_hold_up_other_accepts() {
    let service = Registry::new().create("hs", quiet_config()).unwrap();
    let addr = handshake_server(&service, Duration::from_secs(60)).await;

    // Connected, says nothing: its handshake waits (for up to 60 s).
    let mut silent = connect_from(lo(2), addr).await;
    eventually("silent one admitted by the limit layer", || {
        service.connections() == 1
    })
    .await;
    // Others get through meanwhile.
    let _a = greet(lo(3), addr).await;
    let _b = greet(lo(4), addr).await;
    assert_eq!(service.accepted(), 2);
    assert_eq!(service.connections(), 3);

    // The silent one gives up: its handshake fails, its slot is freed.
    silent.shutdown().await.unwrap();
    eventually("handshake error counted", || {
        refused(&service) == counts(&[("error", 1)])
    })
    .await;
    assert_eq!(service.connections(), 2);
}

#[tokio::test]
async fn handshake_timeout_is_counted_as_timeout() {
    let service = Registry::new().create("hs", quiet_config()).unwrap();
    let addr = handshake_server(&service, Duration::from_millis(200)).await;

    // Silent past the timeout: closed.
    let mut silent = connect_from(lo(2), addr).await;
    assert_closed("timed-out close", &mut silent).await;

    refused_once_for(&service, "timeout").await;
}

#[tokio::test]
async fn handshake_refusal_is_counted_by_the_layers_reason() {
    let service = Registry::new().create("hs", quiet_config()).unwrap();
    let addr = handshake_server(&service, Duration::from_secs(60)).await;

    // A wrong greeting: refused with the layer's own reason.
    let mut rude = connect_from(lo(3), addr).await;
    rude.write_all(b"HI\n").await.unwrap();
    assert_closed("refused close", &mut rude).await;

    refused_once_for(&service, "handshake").await;
}

#[tokio::test]
async fn builder_puts_user_layers_inside_filter_and_limits() {
    let service = Registry::new()
        .create(
            "built",
            quiet_config().blacklist(["127.0.0.2/32".parse().unwrap()]),
        )
        .unwrap();
    let listener = Listener::builder(service.clone())
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(5)))
        .layer(tower::util::MapRequestLayer::new(
            |conn: Accepted<TcpStream>| {
                conn.io.set_nodelay(true).unwrap();
                conn
            },
        ))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = listener.local_addr();
    let server = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        assert!(conn.get_ref().nodelay().unwrap());
        conn.write_all(b"+").await.unwrap();
        conn
    });
    assert_eq!(attempt(lo(2), addr).await.0, Fate::Refused);
    assert_eq!(attempt(lo(3), addr).await.0, Fate::Admitted);
    server.await.unwrap();
    assert_eq!(refused(&service), counts(&[("blacklisted", 1)]));
}

#[tokio::test]
async fn bind_retries_then_names_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let service = Registry::new().service("busy");
    let start = tokio::time::Instant::now();
    let err = Listener::builder(service)
        .bind_retries(2)
        .bind(addr)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    // One wait of 0.5 s between the two tries.
    assert!(start.elapsed() >= Duration::from_millis(500));
}

#[test]
fn listener_and_its_accept_are_send() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let service = Registry::new().service("send");
        let listener: Listener = Listener::bind("127.0.0.1:0", service).await.unwrap();
        send_sync(&listener);
        send(&listener.accept());
    });
}

#[tokio::test]
async fn keepalive_and_nodelay_follow_the_config_at_runtime() {
    use socket2::SockRef;
    let service = Registry::new()
        .create("sockopt", quiet_config().keepalive(Duration::from_secs(30)))
        .unwrap();
    let listener = Listener::bind("127.0.0.1:0", service.clone())
        .await
        .unwrap();
    let addr = listener.local_addr();
    let opts = |conn: &monconn::MonitoredIo<TcpStream>| {
        let sock = SockRef::from(conn.get_ref());
        let keepalive = sock
            .keepalive()
            .unwrap()
            .then(|| sock.tcp_keepalive_time().unwrap());
        let interval = keepalive.map(|_| sock.tcp_keepalive_interval().unwrap());
        (keepalive, interval, sock.tcp_nodelay().unwrap())
    };

    let _c = connect_from(lo(2), addr).await;
    let (conn, _) = within("accept", listener.accept()).await.unwrap();
    let secs = Duration::from_secs;
    assert_eq!(opts(&conn), (Some(secs(30)), Some(secs(30)), false));

    // Two connections queued before the change, one after: all get the new
    // settings.
    let _c1 = connect_from(lo(2), addr).await;
    let _c2 = connect_from(lo(2), addr).await;
    service.update_config(|c| {
        c.keepalive = Some(secs(45));
        c.nodelay = true;
    });
    let _c3 = connect_from(lo(2), addr).await;
    for _ in 0..3 {
        let (conn, _) = within("accept", listener.accept()).await.unwrap();
        assert_eq!(opts(&conn), (Some(secs(45)), Some(secs(45)), true));
    }
    // And the next one too, without a change in between.
    let _c = connect_from(lo(2), addr).await;
    let (conn, _) = within("accept", listener.accept()).await.unwrap();
    assert_eq!(opts(&conn), (Some(secs(45)), Some(secs(45)), true));

    service.update_config(|c| {
        c.keepalive = None;
        c.nodelay = false;
    });
    let _c = connect_from(lo(2), addr).await;
    let (conn, _) = within("accept", listener.accept()).await.unwrap();
    assert_eq!(opts(&conn), (None, None, false));
}

/// A refused client sees its connection close only once the refusal is
/// counted, even behind a layer that takes its time over errors (logging
/// them, say): the refusal holds the connection until the listener has
/// counted it, so stats read right after the close include it. Both
/// built-in refusals: the filter's and the limit's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_counted_before_the_client_sees_its_close() {
    let config = quiet_config()
        .blacklist(["127.0.0.2/32".parse().unwrap()])
        .conn_limit(1);
    let service = Registry::new().create("slow-refusal", config).unwrap();
    let stack = ServiceBuilder::new()
        .then(|result: Result<Accepted<TcpStream>, BoxError>| async move {
            if result.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            result
        })
        .layer(FilterLayer::new(&service))
        .layer(LimitLayer::new(&service))
        .service(tower::service_fn(|conn: Accepted<TcpStream>| async move {
            Ok::<_, BoxError>(conn)
        }));
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = Listener::with_stack(tcp, service.clone(), stack).unwrap();
    let mut server = accept_common::serve(listener);

    for n in 1..=3 {
        let (fate, _closed) = attempt(lo(2), server.addr).await;
        assert_eq!(fate, Fate::Refused);
        assert_eq!(
            refused(&service),
            counts(&[("blacklisted", n)]),
            "closed before counted"
        );
    }
    let (fate, _held) = attempt(lo(3), server.addr).await;
    assert_eq!(fate, Fate::Admitted);
    server.admitted.recv().await.unwrap();
    let (fate, _closed) = attempt(lo(4), server.addr).await;
    assert_eq!(fate, Fate::Refused);
    assert_eq!(
        refused(&service),
        counts(&[("blacklisted", 3), ("conn_limit", 1)]),
        "closed before counted"
    );
}
