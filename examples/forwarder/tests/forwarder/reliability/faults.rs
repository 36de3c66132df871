//! Faults, each against the real forwarder process: backends that refuse,
//! never answer, die mid-transfer or stop reading; clients that reset,
//! stop reading or trickle (slowloris); running out of file descriptors.
//! In each, a second, healthy service of the same process keeps serving,
//! the fault is counted by cause, and nothing leaks (connections, IPs,
//! live records, descriptors).

use crate::support;
use crate::support::reliability;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reliability::{
    count, cpu_time, fds, set_nofile, settled_fds, start, wait_drained, wait_fds_back, Svc,
};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Timeouts in these tests are short, and checked every 50 ms.
const FAST: &str = "  idle_interval: 0.05\n  keepalive: false\n";

/// Starts `faulty` (sid `faulty`) beside a healthy service `ok` to a banner
/// backend; returns the forwarder, the two listen addresses and its
/// descriptors once settled.
async fn with_healthy(faulty: SocketAddr, keys: &str) -> (Forwarder, SocketAddr, SocketAddr) {
    let healthy = banner_backend().await;
    let (fwd, addrs) = start(&[
        Svc::new("faulty", faulty, &format!("{FAST}{keys}")),
        Svc::new("ok", healthy, ""),
    ]);
    fwd.stats("ok").await;
    (fwd, addrs[0], addrs[1])
}

/// The healthy service still forwards.
async fn still_serves(ok: SocketAddr) {
    let mut c = open([127, 0, 0, 9], ok).await.expect("healthy service");
    echo(&mut c, b"still serving").await;
}

/// Both services drained, descriptors back: returns the faulty one's stats.
async fn nothing_left(fwd: &Forwarder, at_start: reliability::Fds) -> serde_json::Value {
    wait_drained(fwd, "ok").await;
    let stats = wait_drained(fwd, "faulty").await;
    wait_fds_back(fwd, at_start).await;
    stats
}

/// Reads until EOF or error; returns the bytes read and how it ended.
async fn drain(stream: &mut TcpStream) -> (u64, &'static str) {
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0;
    loop {
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Err(_) => panic!("still open after {WAIT:?}, {total} bytes read"),
            Ok(Ok(0)) => return (total, "eof"),
            Ok(Ok(n)) => total += n as u64,
            Ok(Err(_)) => return (total, "reset"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_refusing_is_counted_and_the_client_closed() {
    let dead: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let (fwd, faulty, ok) = with_healthy(dead, "").await;
    let at_start = settled_fds(fwd.pid()).await;
    for _ in 0..20 {
        let mut c = connect_from([127, 0, 0, 2], faulty).await;
        assert_eq!(drain(&mut c).await.0, 0);
    }
    still_serves(ok).await;
    let stats = nothing_left(&fwd, at_start).await;
    assert_eq!(stats["backend_errors"], 20, "{stats}");
    assert_eq!(stats["accepted"], 20);
    assert_eq!(stats["bytes_written"], 0);
    let sid = stats["sid"].as_str().unwrap();
    let (status, metrics) = fwd.http("GET", "/metrics").await;
    assert_eq!(status, 200);
    let line = format!("monconn_backend_errors_total{{service=\"{sid}\"}} 20");
    assert!(metrics.contains(&line), "no `{line}` in:\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_that_never_answers_is_closed_by_read_timeout() {
    let silent = backend(|mut s: TcpStream| async move {
        let mut buf = [0u8; 64];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    let (fwd, faulty, ok) = with_healthy(silent, "  read_timeout: 0.4\n  max_idle: 0\n").await;
    let at_start = settled_fds(fwd.pid()).await;
    let mut clients = Vec::new();
    for _ in 0..10 {
        let mut c = connect_from([127, 0, 0, 3], faulty).await;
        c.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        clients.push(c);
    }
    still_serves(ok).await;
    let started = Instant::now();
    for c in &mut clients {
        assert_eq!(drain(c).await.0, 0, "the silent backend sent nothing");
    }
    let waited = started.elapsed();
    let stats = nothing_left(&fwd, at_start).await;
    assert_eq!(count(&stats, "closed", "read_timeout"), 10, "{stats}");
    assert_eq!(stats["bytes_read"], 10 * 18);
    assert_eq!(stats["backend_errors"], 0);
    println!("silent backend: 10 clients closed by read_timeout 0.4 s after {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_dying_mid_transfer_ends_the_client_with_what_was_sent() {
    // Sends 300 KiB and a tail, then resets (SO_LINGER 0): a crash.
    let sent = Arc::new(AtomicU64::new(0));
    let dying = backend({
        let sent = sent.clone();
        move |mut s: TcpStream| {
            let sent = sent.clone();
            async move {
                let mut req = [0u8; 4];
                s.read_exact(&mut req).await.unwrap();
                let chunk = vec![7u8; 300 << 10];
                s.write_all(&chunk).await.unwrap();
                sent.fetch_add(chunk.len() as u64, Relaxed);
                if s.write_all(b"tail!\n").await.is_ok() {
                    sent.fetch_add(6, Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                reset(s);
            }
        }
    })
    .await;
    let (fwd, faulty, ok) = with_healthy(dying, "").await;
    let at_start = settled_fds(fwd.pid()).await;
    let mut received = 0;
    let mut ends = Vec::new();
    for _ in 0..5 {
        let mut c = connect_from([127, 0, 0, 4], faulty).await;
        c.write_all(b"go!\n").await.unwrap();
        let (n, how) = drain(&mut c).await;
        assert!(n <= (300 << 10) + 6, "{n}");
        received += n;
        ends.push(how);
    }
    still_serves(ok).await;
    let stats = nothing_left(&fwd, at_start).await;
    // The client sent only its request and read to the end: what the
    // forwarder wrote to it is exactly what it received.
    assert_eq!(stats["bytes_read"], 5 * 4);
    assert_eq!(stats["bytes_written"], received, "{stats}");
    let closed = count(&stats, "closed", "normal") + count(&stats, "closed", "error");
    assert_eq!(closed, 5, "{stats}");
    println!(
        "dying backend: clients received {received} of {} bytes sent; client ends {ends:?}; closed {}",
        sent.load(Relaxed),
        stats["closed"]
    );
}

/// The backend stops reading: the forwarder's writes to it stall, so it
/// stops reading the client, and the client's connection goes quiet.
/// `write_timeout` watches the backend side too: it cuts the pair before
/// `max_idle` would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_that_stops_reading_is_closed_by_write_timeout() {
    let deaf = backend(|s: TcpStream| async move {
        // Holds the connection, reads nothing, until the forwarder closes it.
        let _ = s.readable().await;
        tokio::time::sleep(WAIT).await;
        drop(s);
    })
    .await;
    let (fwd, faulty, ok) = with_healthy(
        deaf,
        "  max_idle: 0.5\n  write_timeout: 0.3\n  read_timeout: 0\n",
    )
    .await;
    let at_start = settled_fds(fwd.pid()).await;
    let mut c = connect_from([127, 0, 0, 5], faulty).await;
    let chunk = vec![1u8; 64 << 10];
    let mut sent = 0u64;
    let started = Instant::now();
    // Writes until the stall shows (a write that does not complete), then
    // until the forwarder closes the connection (a write error).
    loop {
        match tokio::time::timeout(WAIT, c.write(&chunk)).await {
            Err(_) => panic!("a stalled client was never closed ({sent} bytes sent)"),
            Ok(Ok(n)) => sent += n as u64,
            Ok(Err(_)) => break,
        }
    }
    let took = started.elapsed();
    still_serves(ok).await;
    let stats = nothing_left(&fwd, at_start).await;
    assert_eq!(count(&stats, "closed", "write_timeout"), 1, "{stats}");
    let read = stats["bytes_read"].as_u64().unwrap();
    assert!(read <= sent, "bytes_read {read} <= sent {sent}");
    println!("deaf backend: client sent {sent} bytes, forwarder read {read}, closed (write_timeout) after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_stops_reading_is_closed_by_write_timeout() {
    let flood = backend(|mut s: TcpStream| async move {
        let chunk = vec![2u8; 64 << 10];
        while s.write_all(&chunk).await.is_ok() {}
    })
    .await;
    let (fwd, faulty, ok) = with_healthy(
        flood,
        "  write_timeout: 0.4\n  max_idle: 0\n  read_timeout: 0\n",
    )
    .await;
    let at_start = settled_fds(fwd.pid()).await;
    let mut c = connect_from([127, 0, 0, 6], faulty).await;
    // Reads nothing until the forwarder gave up writing to it.
    fwd.wait_stats("faulty", "a write timeout", |s| {
        count(s, "closed", "write_timeout") == 1
    })
    .await;
    let (got, _) = drain(&mut c).await;
    still_serves(ok).await;
    let stats = nothing_left(&fwd, at_start).await;
    let written = stats["bytes_written"].as_u64().unwrap();
    assert!(
        got <= written,
        "client got {got} <= bytes_written {written}"
    );
    println!(
        "deaf client: forwarder wrote {written} bytes, client read {got}; closed by write_timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_with_rst_closes_the_backend_side_too() {
    let backend_ends = Arc::new(AtomicU64::new(0));
    let streaming = backend({
        let ends = backend_ends.clone();
        move |mut s: TcpStream| {
            let ends = ends.clone();
            async move {
                let chunk = vec![3u8; 4096];
                // Streams slowly until the forwarder closes its side.
                while s.write_all(&chunk).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                ends.fetch_add(1, Relaxed);
            }
        }
    })
    .await;
    let (fwd, faulty, ok) = with_healthy(streaming, "").await;
    let at_start = settled_fds(fwd.pid()).await;
    for _ in 0..10 {
        let mut c = connect_from([127, 0, 0, 7], faulty).await;
        c.write_all(b"unread request").await.unwrap();
        let mut first = [0u8; 4096];
        c.read_exact(&mut first).await.unwrap();
        reset(c);
    }
    still_serves(ok).await;
    let stats = nothing_left(&fwd, at_start).await;
    assert_eq!(count(&stats, "closed", "error"), 10, "{stats}");
    assert_eq!(stats["bytes_read"], 10 * 14);
    let deadline = Instant::now() + WAIT;
    while backend_ends.load(Relaxed) < 10 {
        assert!(Instant::now() < deadline, "backend connections left open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// 200 clients send a byte every 3 s; read_timeout 1.5 s closes each after
/// its first byte, while 300 normal exchanges are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_closed_by_read_timeout_while_normal_clients_are_served() {
    const SLOW: usize = 200;
    const NORMAL: usize = 300;
    let (fwd, addrs) = start(&[Svc::new(
        "web",
        banner_backend().await,
        &format!("{FAST}  read_timeout: 1.5\n  max_idle: 0\n"),
    )]);
    let addr = addrs[0];
    fwd.stats("web").await;
    let at_start = settled_fds(fwd.pid()).await;
    let started = Instant::now();

    let greeted = Arc::new(AtomicU64::new(0));
    let mut slow = tokio::task::JoinSet::new();
    for i in 0..SLOW {
        let from = [127, 0, 1, 1 + (i % 50) as u8];
        let greeted = greeted.clone();
        slow.spawn(async move {
            let mut c = connect_from(from, addr).await;
            let mut hello = [0u8; 6];
            c.read_exact(&mut hello).await.expect("greeting");
            greeted.fetch_add(1, Relaxed);
            let mut bytes = 0;
            loop {
                if c.write_all(b"x").await.is_err() {
                    break;
                }
                bytes += 1;
                // The echo comes back; then a long pause, then the next byte,
                // unless the forwarder has closed the connection meanwhile.
                let mut buf = [0u8; 16];
                match tokio::time::timeout(WAIT, c.read(&mut buf)).await {
                    Ok(Ok(1)) => {}
                    Ok(_) => break,
                    Err(_) => panic!("no echo"),
                }
                match tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf)).await {
                    Err(_) => continue, // still open: send the next byte
                    Ok(_) => break,     // EOF or reset: closed
                }
            }
            bytes
        });
    }

    // The normal clients come once every slow one is in.
    let deadline = Instant::now() + WAIT;
    while greeted.load(Relaxed) < SLOW as u64 {
        assert!(Instant::now() < deadline, "slow clients not connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let open_slow = fwd.stats("web").await["connections"].as_u64().unwrap();
    let normal_start = Instant::now();
    let served = Arc::new(AtomicU64::new(0));
    let mut normal = tokio::task::JoinSet::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(10));
    for i in 0..NORMAL {
        let (served, gate) = (served.clone(), gate.clone());
        normal.spawn(async move {
            let _slot = gate.acquire().await.unwrap();
            let mut c = open([127, 0, 2, 1 + (i % 10) as u8], addr)
                .await
                .expect("a normal client is admitted");
            echo(&mut c, b"GET /index.html").await;
            served.fetch_add(1, Relaxed);
        });
    }
    while let Some(r) = normal.join_next().await {
        r.expect("normal client");
    }
    let normal_done = normal_start.elapsed();
    let mut slow_bytes = 0;
    while let Some(r) = slow.join_next().await {
        slow_bytes += r.expect("slowloris client");
    }
    let stats = wait_drained(&fwd, "web").await;
    wait_fds_back(&fwd, at_start).await;
    assert_eq!(served.load(Relaxed), NORMAL as u64);
    assert_eq!(
        count(&stats, "closed", "read_timeout"),
        SLOW as u64,
        "{stats}"
    );
    assert_eq!(count(&stats, "closed", "normal"), NORMAL as u64, "{stats}");
    assert_eq!(stats["accepted"], (SLOW + NORMAL) as u64);
    println!(
        "slowloris: {SLOW} trickling clients ({slow_bytes} bytes) all closed by read_timeout; \
         {NORMAL}/{NORMAL} normal exchanges served in {normal_done:?}, starting with \
         {open_slow} slow connections open; total {:?}",
        started.elapsed()
    );
}

/// With RLIMIT_NOFILE a little above what it holds at rest, the forwarder
/// runs out of descriptors: 60 clients arrive, then 40 more at once while
/// it is saturated. It neither spins nor dies: new clients wait in the
/// backlog or are closed (a backend connect that failed, counted); once the
/// first clients leave, it serves again.
///
/// Run twice, with an even and an odd number of spare descriptors: one run
/// ends saturated with no descriptor left (accepts fail, clients wait in
/// the backlog until some leave), the other with one left (each client is
/// accepted, its backend connect fails, it is closed). Which run is which
/// depends on what the forwarder holds at rest; both regimes are covered.
async fn out_of_descriptors(headroom: u64) {
    const FIRST: usize = 60;
    const BURST: usize = 40;
    let (fwd, addrs) = start(&[Svc::new("web", banner_backend().await, FAST)]);
    let addr = addrs[0];
    fwd.stats("web").await;
    let pid = fwd.pid();
    let at_start = settled_fds(pid).await;
    // Room for about 10 forwarded pairs (2 descriptors each).
    let limit = at_start.total() as u64 + headroom;
    set_nofile(pid, limit);

    /// Waits for a client's greeting: served (Some) or closed (None).
    async fn outcome(c: &mut TcpStream, wait: Duration) -> Option<bool> {
        let mut hello = [0u8; 6];
        match tokio::time::timeout(wait, c.read_exact(&mut hello)).await {
            Ok(Ok(_)) => Some(true),
            Ok(Err(_)) => Some(false),
            Err(_) => None,
        }
    }

    let mut served = Vec::new();
    let mut pending = Vec::new();
    let mut closed = 0u64;
    for i in 0..FIRST {
        let mut c = connect_from([127, 0, 3, 1 + (i % 20) as u8], addr).await;
        match outcome(&mut c, Duration::from_millis(300)).await {
            Some(true) => served.push(c),
            Some(false) => closed += 1,
            None => pending.push(c),
        }
    }
    assert!(served.len() < FIRST, "the limit was never reached");
    let held = fds(pid).total() as u64;
    assert!(held + 2 >= limit, "saturated: {held} of {limit} fds");

    // Saturated, with a burst of clients in the backlog: it must not spin.
    // Each failed accept is logged, then its shard sleeps 50 ms: the count
    // of failed accepts is bounded whatever the machine's speed. CPU time is
    // not (it grows on a slower or busier machine), so it is only checked
    // against a spinning thread's: a whole core.
    const BACKOFF: Duration = Duration::from_millis(50);
    let failed = || {
        fwd.stderr()
            .matches("accept failed for lack of resources")
            .count()
    };
    let (wall0, cpu0, failed0) = (Instant::now(), cpu_time(pid), failed());
    for i in 0..BURST {
        pending.push(connect_from([127, 0, 4, 1 + (i % 20) as u8], addr).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu, failed_in_window, wall) = (cpu_time(pid) - cpu0, failed() - failed0, wall0.elapsed());
    // Each shard is a thread (the process may have a few more).
    let shards = reliability::threads(pid);
    let most = shards * (wall.as_millis() / BACKOFF.as_millis() + 2) as usize;
    assert!(
        failed_in_window <= most,
        "{failed_in_window} failed accepts in {wall:?} (at most {shards} shards backing off {BACKOFF:?} \
         allow {most}): it spins"
    );
    assert!(
        cpu < wall,
        "the forwarder burned {cpu:?} of CPU in {wall:?} while out of descriptors"
    );

    // Free the descriptors: every client still waiting gets an answer. They
    // wait all at once, each closing as soon as answered: the forwarder
    // takes them in its own order (one backlog per shard), and a served
    // client held open while the test waited on another would keep the
    // descriptors that one needs.
    let served_at_once = served.len();
    drop(served);
    let mut waiting = tokio::task::JoinSet::new();
    for mut c in pending {
        waiting.spawn(async move { outcome(&mut c, WAIT).await });
    }
    let mut late = 0;
    while let Some(answer) = waiting.join_next().await {
        match answer.expect("client task") {
            Some(true) => late += 1,
            Some(false) => closed += 1,
            None => panic!("a client never got an answer"),
        }
    }
    // The forwarder closes the dropped clients' pairs on its own time (on
    // either shard): until it has, a new client may still meet a backend
    // connect error (EMFILE). Recovery must come within WAIT.
    let mut refused_while_freeing = 0u64;
    let deadline = Instant::now() + WAIT;
    let mut c = loop {
        match open([127, 0, 0, 1], addr).await {
            Some(c) => break c,
            None if Instant::now() < deadline => {
                refused_while_freeing += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            None => panic!("not served again {WAIT:?} after the descriptors were freed"),
        }
    };
    echo(&mut c, b"back").await;
    drop(c);
    for _ in 1..5 {
        let mut c = open([127, 0, 0, 1], addr).await.expect("served again");
        echo(&mut c, b"back").await;
    }
    let stats = wait_drained(&fwd, "web").await;
    wait_fds_back(&fwd, at_start).await;
    let total = (FIRST + BURST) as u64;
    assert_eq!(
        stats["accepted"],
        total + 5 + refused_while_freeing,
        "{stats}"
    );
    // Each client closed without a greeting met a backend connect error.
    assert_eq!(
        stats["backend_errors"],
        closed + refused_while_freeing,
        "{stats}"
    );
    assert_eq!(served_at_once as u64 + late + closed, total);
    // Accept errors are counted by the listener and logged, one per 50 ms
    // backoff at most.
    let accept_errors = fwd
        .stderr()
        .matches("accept failed for lack of resources")
        .count();
    // ... and each one is in the service's stats.
    // (the log is read by another thread, so it may trail the counter).
    assert!(accept_errors > 0, "no accept error logged");
    let counted = stats["accept_errors"]
        .as_u64()
        .expect("accept_errors in /stats");
    assert!(
        counted >= accept_errors as u64,
        "{counted} < {accept_errors}: {stats}"
    );
    println!(
        "out of fds (limit {limit}): {served_at_once} served at once, {closed} closed by backend \
         connect errors (counted), {late} served after waiting, {accept_errors} accept errors \
         logged; while saturated: {failed_in_window} failed accepts and CPU {cpu:?} in {wall:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_backs_off_without_spinning_and_recovers() {
    out_of_descriptors(20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_one_descriptor_higher_recovers_too() {
    out_of_descriptors(21).await;
}
