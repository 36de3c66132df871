//! An accept loop out of file descriptors backs off instead of spinning, and
//! recovers when descriptors free up. Runs in a child process, since it lowers
//! the process's RLIMIT_NOFILE and exhausts its descriptors.
#![cfg(target_os = "linux")]

use crate::support;

use std::process::Command;
use std::time::{Duration, Instant};

use monconn::{Listener, Registry};
use support::{quiet_config, within};

const CHILD: &str = "MONCONN_ACCEPT_FD_CHILD";

/// The child test's full name in this binary (`fd::out_of_fds_child`).
fn child_test_name() -> String {
    let module = module_path!();
    let path = module.split_once("::").map_or(module, |(_, rest)| rest);
    format!("{path}::out_of_fds_child")
}

#[test]
fn out_of_fds_backs_off_without_burning_cpu_and_recovers() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &child_test_name(), "--ignored", "--nocapture"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    assert!(stdout.contains("OUT_OF_FDS_OK"), "{stdout}");
}

/// User plus system CPU time of this process.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn set_nofile(soft: u64) {
    // SAFETY: plain syscalls on structs we own.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = soft.min(limit.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

#[test]
#[ignore = "run in a child process by out_of_fds_backs_off_without_burning_cpu_and_recovers"]
fn out_of_fds_child() {
    if std::env::var_os(CHILD).is_none() {
        panic!("run by out_of_fds_backs_off_without_burning_cpu_and_recovers only");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let service = Registry::new().create("fds", quiet_config()).unwrap();
        let listener = Listener::bind("127.0.0.1:0", service.clone())
            .await
            .unwrap();
        let addr = listener.local_addr();
        // The client's socket exists before the descriptors run out.
        let client = tokio::net::TcpSocket::new_v4().unwrap();

        set_nofile(256);
        let mut hogs = Vec::new();
        loop {
            match std::fs::File::open("/dev/null") {
                Ok(f) => hogs.push(f),
                Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
                Err(e) => panic!("unexpected error while exhausting fds: {e}"),
            }
        }
        assert!(std::fs::File::open("/dev/null").is_err());

        let accepting = tokio::spawn(async move {
            let accepted = listener.accept().await;
            (listener, accepted)
        });
        let client = client.connect(addr).await.unwrap();
        let local = client.local_addr().unwrap();

        // Every accept fails with EMFILE now: measure what the loop costs.
        let (wall0, cpu0) = (Instant::now(), cpu_time());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (wall, cpu) = (wall0.elapsed(), cpu_time() - cpu0);
        assert!(
            cpu < wall / 2,
            "accept loop burned {cpu:?} of CPU in {wall:?} while out of fds"
        );

        // Free the descriptors: the waiting connection is accepted.
        drop(hogs);
        let (listener, accepted) = within("accept after recovery", accepting).await.unwrap();
        let (conn, peer) = accepted.unwrap();
        assert_eq!(peer, local);
        let errors = listener.accept_errors();
        // One error per 50 ms backoff at most: 1.5 s gives 30 or so.
        assert!((3..=60).contains(&errors), "accept_errors = {errors}");
        assert_eq!(service.snapshot().accept_errors, errors);
        assert_eq!(service.accepted(), 1);
        assert_eq!(service.connections(), 1);
        drop(conn);
        println!(
            "OUT_OF_FDS_OK accept_errors={errors} cpu_ms={} wall_ms={}",
            cpu.as_millis(),
            wall.as_millis()
        );
    });
}
