//! Allocations of monitoring, counted by a global allocator: none per read or
//! write (asserted), and the bytes one monitored connection costs (printed;
//! recorded in BENCHMARKS.md).
//!
//! Counting is per thread, so tests running in parallel do not see each
//! other's allocations; every test runs a current-thread runtime (or none).
//!
//! `cargo test --all-features --test alloc -- --nocapture` prints the figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use monconn::{ConnRecord, Registry, ServiceConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

// === a counting allocator ===

struct Counting;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    /// Allocations (a `realloc` counts as one).
    allocs: u64,
    /// Deallocations.
    frees: u64,
    /// Bytes allocated minus bytes freed.
    net_bytes: i64,
}

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static COUNTS: Cell<Counts> = const { Cell::new(Counts { allocs: 0, frees: 0, net_bytes: 0 }) };
}

fn note(allocs: u64, frees: u64, bytes: i64) {
    let _ = ON.try_with(|on| {
        if on.get() {
            COUNTS.with(|c| {
                let mut n = c.get();
                n.allocs += allocs;
                n.frees += frees;
                n.net_bytes += bytes;
                c.set(n);
            });
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(1, 0, layout.size() as i64);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(1, 0, layout.size() as i64);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(0, 1, -(layout.size() as i64));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(1, 0, new_size as i64 - layout.size() as i64);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Counts this thread's allocations while `f` runs (synchronously or as the
/// body of a future polled on this thread).
fn start() {
    COUNTS.with(|c| c.set(Counts::default()));
    ON.with(|on| on.set(true));
}

fn stop() -> Counts {
    ON.with(|on| on.set(false));
    COUNTS.with(|c| c.get())
}

fn quiet() -> ServiceConfig {
    ServiceConfig::default()
        .read_timeout(None)
        .write_timeout(None)
        .max_idle(None)
}

const WARMUP: usize = 1_000;
const ROUNDS: usize = 10_000;
const MSG: usize = 64;

/// `rounds` ping-pongs of `MSG` bytes: `a` writes, `b` reads, `b` writes, `a` reads.
async fn ping_pong<A, B>(a: &mut A, b: &mut B, rounds: usize)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let msg = [7u8; MSG];
    let mut buf = [0u8; MSG];
    for _ in 0..rounds {
        a.write_all(&msg).await.unwrap();
        b.read_exact(&mut buf).await.unwrap();
        b.write_all(&msg).await.unwrap();
        a.read_exact(&mut buf).await.unwrap();
    }
}

/// Allocations of `ROUNDS` ping-pongs after a warm-up.
async fn counted_ping_pong<A, B>(a: &mut A, b: &mut B) -> Counts
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    ping_pong(a, b, WARMUP).await;
    start();
    ping_pong(a, b, ROUNDS).await;
    stop()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn addr(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

/// Ping-pongs over a raw duplex, then over one wrapped in `service`: the
/// monitored one allocates exactly what the raw one does, that is nothing.
async fn duplex_raw_vs_monitored(service: &monconn::ServiceMonitor, what: &str) {
    let (mut raw, mut peer) = tokio::io::duplex(64 * 1024);
    let raw_counts = counted_ping_pong(&mut raw, &mut peer).await;
    let (io, mut peer) = tokio::io::duplex(64 * 1024);
    let a = addr(Ipv4Addr::LOCALHOST.into(), 1);
    let mut monitored = service.wrap(io, a, a).unwrap();
    let monitored_counts = counted_ping_pong(&mut monitored, &mut peer).await;
    println!("{what}, {ROUNDS} x (write {MSG} B + read {MSG} B): raw {raw_counts:?}, monitored {monitored_counts:?}");
    assert_eq!(monitored_counts, raw_counts);
    assert_eq!(monitored_counts.allocs, 0);
}

#[test]
fn no_allocation_per_read_or_write_over_duplex() {
    runtime().block_on(async {
        let service = Registry::new().create("alloc-duplex", quiet()).unwrap();
        duplex_raw_vs_monitored(&service, "duplex").await;
        let bytes = ((WARMUP + ROUNDS) * MSG) as u64;
        assert_eq!(
            service.bytes(),
            monconn::ByteCounts {
                read: bytes,
                written: bytes
            }
        );
    });
}

#[test]
fn no_allocation_per_read_or_write_over_tcp() {
    runtime().block_on(async {
        let service = Registry::new().create("alloc-tcp", quiet()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        let pair = || async {
            let client = tokio::net::TcpStream::connect(local).await.unwrap();
            let (server, peer) = listener.accept().await.unwrap();
            client.set_nodelay(true).unwrap();
            server.set_nodelay(true).unwrap();
            (server, peer, client)
        };
        let (mut raw, _, mut client) = pair().await;
        let raw_counts = counted_ping_pong(&mut raw, &mut client).await;

        let (server, peer, mut client) = pair().await;
        let mut monitored = service.wrap(server, peer, local).unwrap();
        let monitored_counts = counted_ping_pong(&mut monitored, &mut client).await;

        println!("tcp, {ROUNDS} x (write {MSG} B + read {MSG} B): raw {raw_counts:?}, monitored {monitored_counts:?}");
        assert_eq!(monitored_counts.allocs, raw_counts.allocs);
        assert_eq!(monitored_counts.allocs, 0);
        let bytes = ((WARMUP + ROUNDS) * MSG) as u64;
        assert_eq!(service.bytes(), monconn::ByteCounts { read: bytes, written: bytes });
    });
}

/// Taps on for other connections (another service, another network,
/// another id) and one that matches a connection beside it: the counted
/// connection still allocates nothing per read or write, and the tapped
/// one does see its events.
#[test]
fn no_allocation_per_read_or_write_with_a_tap_on_another_connection() {
    use monconn::tap::{TapFilter, TapKind};

    runtime().block_on(async {
        let registry = Registry::new();
        let service = registry.create("alloc-tap", quiet()).unwrap();
        let _other = registry.create("other", quiet()).unwrap();
        let _by_sid = registry.tap(TapFilter::new().with_sid("other"));
        let _by_ip = registry.tap(TapFilter::new().with_ip("10.0.0.0/8".parse().unwrap()));
        let _by_conn = registry.tap(TapFilter::new().with_sid("alloc-tap").with_conn(9_999));
        let mut beside = registry.tap(TapFilter::new().with_ip("192.0.2.1/32".parse().unwrap()));

        let (io, mut tapped_peer) = tokio::io::duplex(64 * 1024);
        let tapped_addr = addr("192.0.2.1".parse().unwrap(), 1);
        let mut tapped = service.wrap(io, tapped_addr, tapped_addr).unwrap();
        ping_pong(&mut tapped, &mut tapped_peer, 1).await;

        duplex_raw_vs_monitored(&service, "duplex with taps on other connections").await;

        let names: Vec<_> = std::iter::from_fn(|| beside.try_next())
            .map(|e| (e.name(), e.conn, e.bytes().map(|b| b.len)))
            .collect();
        let id = tapped.record().id();
        assert_eq!(
            names,
            [
                ("open", id, None),
                ("write", id, Some(MSG)),
                ("read", id, Some(MSG)),
            ]
        );
        drop(tapped);
        let close = beside.try_next().unwrap();
        assert!(matches!(
            close.kind,
            TapKind::Close { bytes_read, bytes_written, .. } if (bytes_read, bytes_written) == (MSG as u64, MSG as u64)
        ));
        assert_eq!(beside.lost(), 0);
    });
}

/// Admits and attaches `n` connections (no runtime, so no sweeper task),
/// then drops them. Returns the counts of the admissions and of the drops.
fn admit_many(n: usize, distinct_ips: bool) -> (Counts, Counts) {
    let service = Registry::new().create("mem", quiet()).unwrap();
    let local = addr(Ipv4Addr::LOCALHOST.into(), 80);
    let peer = |i: usize| {
        let ip = if distinct_ips {
            Ipv4Addr::from(0x0a00_0000 + i as u32)
        } else {
            Ipv4Addr::new(10, 0, 0, 1)
        };
        addr(ip.into(), 1024 + (i % 60_000) as u16)
    };
    let mut conns = Vec::with_capacity(n);
    start();
    for i in 0..n {
        conns.push(service.admit(peer(i)).unwrap().attach((), local));
    }
    let admitted = stop();
    assert_eq!(service.connections(), n);
    start();
    conns.clear();
    let dropped = stop();
    assert_eq!(service.connections(), 0);
    (admitted, dropped)
}

/// Allocations made and not freed over both phases.
fn live(a: Counts, b: Counts) -> i64 {
    (a.allocs + b.allocs) as i64 - (a.frees + b.frees) as i64
}

#[test]
fn memory_per_connection() {
    const N: usize = 10_000;
    let record = std::mem::size_of::<ConnRecord>() + 16; // the Arc's allocation
    println!(
        "size_of: ConnRecord {} B (Arc allocation {record} B), MonitoredIo<()> {} B (held by the connection's owner)",
        std::mem::size_of::<ConnRecord>(),
        std::mem::size_of::<monconn::MonitoredIo<()>>(),
    );
    let mut per_conn = [0; 2];
    for distinct_ips in [false, true] {
        let (admitted, dropped) = admit_many(N, distinct_ips);
        let bytes = admitted.net_bytes / N as i64;
        per_conn[usize::from(distinct_ips)] = bytes;
        println!(
            "{N} connections from {}: {bytes} B per connection ({record} B record + {} B table entries), \
             {:.2} allocations per admission, {:.2} per close; after all closed: {} allocations, {} B kept (table capacity)",
            if distinct_ips { "distinct IPs" } else { "one IP" },
            bytes - record as i64,
            admitted.allocs as f64 / N as f64,
            dropped.allocs as f64 / N as f64,
            live(admitted, dropped),
            admitted.net_bytes + dropped.net_bytes,
        );
        // Closing the connections frees every record: what stays is the
        // tables' capacity, a handful of allocations, not one per connection.
        // Nor does a close allocate, the `metrics` feature's duration
        // histogram included (its key is built once per service).
        assert_eq!(dropped.allocs, 0, "allocations on close");
        let live = live(admitted, dropped);
        assert!(
            (0..10).contains(&live),
            "{live} allocations outlive {N} connections"
        );
    }
    println!(
        "per distinct client IP: {} B more (its per-IP count entry)",
        per_conn[1] - per_conn[0]
    );
}

/// The per-client rate buckets of a service stay under their cap, however
/// many clients come: 65,536 buckets of 24 B in a map with spare slots.
/// Each admission is dropped at once, so what stays is the rate table (and
/// the per-IP table's small capacity).
#[test]
fn the_rate_table_is_bounded_at_65536_clients() {
    let service = Registry::new()
        .create(
            "rates",
            quiet().rate_limit(monconn::RateLimit {
                per_sec: 0.01,
                burst: 1,
            }),
        )
        .unwrap();
    let mut kept = Vec::new();
    let mut admitted = 0;
    start();
    for round in 0..4u32 {
        for n in 0..65_536u32 {
            let peer = addr(Ipv4Addr::from(0x0a00_0000 + round * 65_536 + n).into(), 1);
            admitted += usize::from(service.admit(peer).is_ok());
        }
        kept.push(COUNTS.with(|c| c.get()).net_bytes);
    }
    stop();
    println!("rate table after 65,536, 131,072, 196,608 and 262,144 new clients: {kept:?} B kept");
    // The first 65,536 have a bucket each, the others share the overflow
    // bucket (one token); the table does not grow after the first 65,536.
    assert_eq!(admitted, 65_537);
    assert!(kept[0] < 3_500_000, "{kept:?}");
    assert!(kept.iter().all(|k| k - kept[0] < 1024), "{kept:?}");
}

/// With a real exporter (Prometheus, as the forwarder runs), a close records
/// its duration through the exporter's `register_histogram`, which keeps a
/// copy of the key: the service's key is retained (its labels shared), so
/// that copy is an `Arc` clone. What a close allocates is the exporter's own
/// handle (one `Arc`) and, now and then, a new block of its histogram's
/// samples; not a copy of the key's labels (two more per close before).
#[cfg(feature = "metrics")]
#[test]
fn a_close_under_the_prometheus_exporter_copies_no_key() {
    const N: usize = 1_000;
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let service = Registry::new().create("prom", quiet()).unwrap();
    let local = addr(Ipv4Addr::LOCALHOST.into(), 80);
    let peer = addr(Ipv4Addr::new(10, 0, 0, 1).into(), 1024);
    metrics::with_local_recorder(&recorder, || {
        // The first close registers the histogram in the exporter.
        drop(service.admit(peer).unwrap().attach((), local));
        let conns: Vec<_> = (0..N)
            .map(|_| service.admit(peer).unwrap().attach((), local))
            .collect();
        start();
        drop(conns);
        let closed = stop();
        println!(
            "Prometheus exporter: {:.2} allocations per close",
            closed.allocs as f64 / N as f64
        );
        assert!(
            closed.allocs < 2 * N as u64,
            "{} allocations for {N} closes",
            closed.allocs
        );
    });
    // Every close was recorded.
    let text = handle.render();
    let count = text
        .lines()
        .find(|l| l.starts_with("monconn_connection_duration_seconds_count{service=\"prom\"}"))
        .unwrap_or_else(|| panic!("no duration count in:\n{text}"));
    assert!(count.ends_with(&format!(" {}", N + 1)), "{count}");
}

/// Allocations on the accepting thread per connection accepted through the
/// default stack and closed: the accepted socket's registration with tokio's
/// reactor and the list entry tokio keeps to release it, and monconn's
/// connection record. The stack's future lives in a slot the listener
/// reuses: nothing per connection (a `FuturesUnordered` task each, before).
#[test]
fn an_accept_through_the_default_stack_allocates_the_record_and_tokios_registration() {
    const N: usize = 1_000;
    runtime().block_on(async {
        let service = Registry::new().create("accept", quiet()).unwrap();
        let listener = monconn::Listener::bind("127.0.0.1:0", service.clone())
            .await
            .unwrap();
        let to = listener.local_addr();
        // The clients, blocking, on a thread of their own (not counted), in
        // step with the accepts so that the accept queue never overflows.
        let (go, ready) = std::sync::mpsc::channel::<()>();
        let clients = std::thread::spawn(move || {
            for _ in 0..N + 10 {
                if ready.recv().is_err() {
                    return;
                }
                let c = std::net::TcpStream::connect(to).unwrap();
                // SO_LINGER 0: no TIME_WAIT left behind.
                socket2::SockRef::from(&c)
                    .set_linger(Some(std::time::Duration::ZERO))
                    .unwrap();
            }
        });
        let one = async || {
            go.send(()).unwrap();
            let (io, _) = listener.accept().await.unwrap();
            drop(io);
        };
        // Warm-up: tables and tokio's slabs reach their size.
        for _ in 0..10 {
            one().await;
        }
        start();
        for _ in 0..N {
            one().await;
        }
        let counts = stop();
        drop(go);
        clients.join().unwrap();
        let per_accept = counts.allocs as f64 / N as f64;
        println!("{per_accept:.2} allocations per accepted and closed connection");
        assert_eq!(service.connections(), 0);
        assert!(per_accept < 3.5, "{per_accept:.2} allocations per accept");
    });
}
