//! How the forwarder's threads share new connections (`--accept`): the
//! real process forwarding in both modes (the shard balance's own unit
//! tests are in src/balance.rs).

use crate::support;

use std::net::SocketAddr;

use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn mapping(port: u16, backend: SocketAddr, extra: &[&str]) -> Setup {
    let mut setup = Setup::mapping(format!("127.0.0.1:{port}={backend}"));
    setup.args.extend(extra.iter().map(|s| s.to_string()));
    setup
}

/// The shard of each `connected` line of the log, in order.
fn shards(log: &str) -> Vec<usize> {
    log.lines()
        .filter(|line| line.contains("connected"))
        .filter_map(|line| {
            let rest = &line[line.find(" shard=")? + 7..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// With `--accept shared`, long-lived connections opened one by one, each
/// held open, go to every shard: a shard two connections ahead of the other leaves the next one
/// to it. (Left to the race for a shared socket, the shard that wakes
/// first could take them all.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_connections_spread_over_the_shards() {
    let backend = banner_backend().await;
    let (fwd, [port]) = Forwarder::start_with_ports(|[port]| {
        mapping(port, backend, &["--threads", "2", "--accept", "shared"])
    });
    let mut held = Vec::new();
    for n in 1..=6 {
        let mut stream = open([127, 0, 0, 1], local(port)).await.expect("forwarded");
        echo(&mut stream, format!("conn {n}").as_bytes()).await;
        held.push(stream);
        fwd.wait_stderr_count("connected", n).await;
    }
    let seen = shards(&fwd.stderr());
    assert_eq!(seen.len(), 6, "one shard per connection: {seen:?}");
    for shard in 0..2 {
        let on = seen.iter().filter(|&&s| s == shard).count();
        assert!(
            on >= 2,
            "shard {shard} got {on} of 6 held connections: {seen:?}"
        );
    }
    // All six still forward, whichever shard holds them.
    for (n, stream) in held.iter_mut().enumerate() {
        echo(stream, format!("again {n}").as_bytes()).await;
    }
}

/// Many short connections at once, through a shared socket and through
/// per-thread `SO_REUSEPORT` sockets: every one is forwarded and counted,
/// and all are closed in the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_connections_are_all_served_in_both_modes() {
    const CONNS: u64 = 200;
    for mode in ["shared", "reuseport"] {
        let backend = banner_backend().await;
        let (fwd, [port]) = Forwarder::start_with_ports(|[port]| {
            mapping(port, backend, &["--threads", "3", "--accept", mode])
        });
        let sid = format!("127.0.0.1:{port}");
        let mut clients = tokio::task::JoinSet::new();
        for n in 0..CONNS {
            clients.spawn(async move {
                let mut stream: TcpStream =
                    open([127, 0, 0, 1], local(port)).await.expect("forwarded");
                echo(&mut stream, format!("short {n}").as_bytes()).await;
                stream.shutdown().await.expect("shutdown");
            });
        }
        while let Some(done) = clients.join_next().await {
            done.expect("client");
        }
        let stats = fwd
            .wait_stats(&sid, "every connection closed", |s| {
                s["accepted"] == CONNS && s["connections"] == 0
            })
            .await;
        let closed: u64 = stats["closed"]
            .as_object()
            .expect("closed by reason")
            .values()
            .filter_map(|n| n.as_u64())
            .sum();
        assert_eq!(closed, CONNS, "{mode}: {stats}");
        let seen = shards(&fwd.stderr());
        assert_eq!(seen.len() as u64, CONNS, "{mode}");
        assert!(seen.iter().all(|&s| s < 3), "{mode}: shards {seen:?}");
    }
}

#[test]
fn an_unknown_accept_mode_is_refused_with_the_choices() {
    let (status, _, stderr) = run_to_end(
        None,
        &["-p", "127.0.0.1:1=127.0.0.1:2", "--accept", "steal"],
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("steal") && stderr.contains("shared") && stderr.contains("reuseport"),
        "{stderr}"
    );
}
