//! The forwarder's descriptors: started under a low soft `RLIMIT_NOFILE`
//! (systemd gives services a soft 1,024), it raises the soft limit to the
//! hard one, as Go does for its programs, and logs both.

use crate::support;

use support::*;

/// Started with soft 256 and hard 4,096: the log names both limits, the
/// process runs with 4,096, and 700 clients at once (1,400 descriptors) are
/// all forwarded with no accept error; the admin API still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soft_nofile_limit_is_raised_to_the_hard_one() {
    let backend = banner_backend().await;
    let (fwd, [port]) = Forwarder::start_with_ports(|[port]| Setup {
        nofile: Some((256, 4096)),
        log: Some("info"),
        ..Setup::mapping(format!("127.0.0.1:{port}={backend}"))
    });
    let stderr = fwd.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("RLIMIT_NOFILE"))
        .unwrap_or_else(|| panic!("no RLIMIT_NOFILE line in:\n{stderr}"));
    eprintln!("{line}");
    assert!(
        line.contains("soft=256") && line.contains("hard=4096"),
        "{line}"
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", fwd.pid())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files in /proc/PID/limits");
    assert_eq!(
        open_files.split_whitespace().collect::<Vec<_>>()[3..5],
        ["4096", "4096"],
        "{open_files}"
    );

    let clients = (0..700).map(|_| open([127, 0, 0, 1], local(port)));
    let mut clients = futures_util::future::join_all(clients).await;
    for (n, client) in clients.iter_mut().enumerate() {
        let client = client
            .as_mut()
            .unwrap_or_else(|| panic!("client {n} was refused"));
        echo(client, format!("client {n}").as_bytes()).await;
    }
    let stats = fwd.stats(&format!("127.0.0.1:{port}")).await;
    assert_eq!(stats["connections"], 700, "{stats}");
    assert_eq!(stats["accept_errors"], 0, "{stats}");
    assert_eq!(stats["backend_errors"], 0, "{stats}");
}
