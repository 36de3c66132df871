//! The admin API of the real forwarder process against clients that hold
//! on: silent connections, answers never read, and the `Authorization`
//! header as RFC 9110 spells it. None of them may take from forwarding.

use crate::support;

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// `tcp_info.tcpi_state`s (Linux's `TCP_ESTABLISHED`, `TCP_CLOSE`).
const ESTABLISHED: u8 = 1;
const CLOSED: u8 = 7;

/// The kernel's state of `stream`'s connection (TCP_INFO).
fn tcp_state(stream: &TcpStream) -> u8 {
    // SAFETY: getsockopt(2) writes at most `len` bytes into `info`, a plain
    // C struct for which all zeroes is a valid value.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
        info.tcpi_state
    }
}

/// Polls `cond` every 20 ms for up to [`WAIT`].
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "never {what} in {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// 300 connections to the admin port that never send a byte, with the
/// process at 256 descriptors (soft and hard limit): the admin server holds
/// at most 64 of them (the rest wait in the kernel's backlog, without a
/// descriptor), and forwarding keeps what it needs: 50 clients at once are
/// all forwarded, with no accept error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_admin_connections_cannot_starve_forwarding() {
    let backend = banner_backend().await;
    let (fwd, [port]) = Forwarder::start_with_ports(|[port]| Setup {
        nofile: Some((256, 256)),
        args: vec![
            "-p".into(),
            format!("127.0.0.1:{port}={backend}"),
            "--threads".into(),
            "1".into(),
        ],
        ..Setup::default()
    });
    // The readiness probe's connection, closed, is gone.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle = fwd.open_fds();

    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(TcpStream::connect(fwd.admin).await.expect("connect"));
    }
    wait_for("64 admin connections accepted", || {
        fwd.open_fds() >= idle + 64
    })
    .await;
    // Time for more accepts, if the server were to take more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = fwd.open_fds() - idle;
    eprintln!("the admin server holds {held} descriptors for 300 silent connections");
    assert!(
        held <= 64,
        "the admin server holds {held} descriptors for 300 silent connections"
    );

    let clients = (0..50).map(|_| open([127, 0, 0, 1], local(port)));
    let mut clients: Vec<_> = futures_util::future::join_all(clients).await;
    for (n, client) in clients.iter_mut().enumerate() {
        let client = client
            .as_mut()
            .unwrap_or_else(|| panic!("client {n} refused"));
        echo(client, format!("client {n}").as_bytes()).await;
    }
    assert!(
        !fwd.stderr().contains("lack of resources"),
        "{}",
        fwd.stderr()
    );
    drop(silent);
    let stats = fwd.stats(&format!("127.0.0.1:{port}")).await;
    assert_eq!(stats["accept_errors"], 0, "{stats}");
    assert_eq!(stats["connections"], 50, "{stats}");
}

/// A client that asks for `/stats/{sid}/connections` again and again
/// (pipelined) and never reads the answers: once the answers fill the
/// socket buffers, the admin server is stuck writing to it. It is cut (a
/// reset) at its deadline, and the admin API answers others meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_client_that_never_reads_is_cut() {
    let backend = banner_backend().await;
    let (fwd, [port]) =
        Forwarder::start_with_ports(|[port]| Setup::mapping(format!("127.0.0.1:{port}={backend}")));
    let sid = format!("127.0.0.1:{port}");
    let mut live = Vec::new();
    for _ in 0..20 {
        live.push(open([127, 0, 0, 1], local(port)).await.expect("forwarded"));
    }

    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stuck = socket.connect(fwd.admin).await.expect("connect");
    let request = format!(
        "GET /stats/{}/connections HTTP/1.1\r\nHost: x\r\n\r\n",
        encode(&sid)
    );
    let requests = request.repeat(3000);
    let (reader, mut writer) = stuck.into_split();
    // Writes until the server stops reading; never reads.
    tokio::spawn(async move {
        let _ = writer.write_all(requests.as_bytes()).await;
        std::future::pending::<()>().await;
        drop(writer);
    });
    let started = Instant::now();
    // The answers pile up: the server is stuck writing.
    let (status, _) = fwd.http("GET", "/stats").await;
    assert_eq!(status, 200, "others are answered meanwhile");

    let stuck = reader.as_ref();
    wait_for("the stuck client cut", || tcp_state(stuck) != ESTABLISHED).await;
    eprintln!("the stuck client was cut after {:?}", started.elapsed());
    assert_eq!(tcp_state(stuck), CLOSED, "reset, not closed in order");
    let (status, body) = fwd.http("GET", &format!("/stats/{}", encode(&sid))).await;
    assert_eq!(status, 200, "{body}");
    drop(reader);
    drop(live);
}

/// The `Authorization` scheme is case-insensitive (RFC 9110 §11.1) and may
/// be followed by several spaces (`1*SP`, §11.4); the token itself is
/// compared exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_scheme_is_case_insensitive_and_the_token_exact() {
    let backend = banner_backend().await;
    let fwd = start_with_token(backend, "t0ken");
    for auth in [
        "Bearer t0ken",
        "bearer t0ken",
        "BEARER t0ken",
        "bEaReR t0ken",
        "Bearer  t0ken",
    ] {
        let (status, body) = http(fwd.admin, "GET", "/stats", &[("Authorization", auth)]).await;
        assert_eq!(status, 200, "{auth:?}: {body}");
    }
    for auth in [
        "bearer T0KEN",
        "bearer t0ke",
        "bearer t0kenn",
        "bearer",
        "bearer ",
        "bearert0ken",
        "Basic t0ken",
        "t0ken",
    ] {
        let (status, body) = http(fwd.admin, "GET", "/stats", &[("Authorization", auth)]).await;
        assert_eq!(status, 401, "{auth:?}: {body}");
    }
}

/// A cross-site form can POST to a loopback admin address but cannot set a
/// header: a ban or a kick without `X-Monconn-Request` gets 403 and changes
/// nothing, with or without a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changes_without_the_request_header_are_refused() {
    let backend = banner_backend().await;
    let (fwd, [port]) =
        Forwarder::start_with_ports(|[port]| Setup::mapping(format!("127.0.0.1:{port}={backend}")));
    let sid = encode(&format!("127.0.0.1:{port}"));
    let ban = format!("/services/{sid}/blacklist/127.0.0.0%2F8?kick=1");
    // What a form sends: no custom header. Refused, and says why.
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    for method in ["POST", "DELETE"] {
        let (status, body) = http(fwd.admin, method, &ban, &form).await;
        assert_eq!(status, 403, "{method}: {body}");
        assert!(body.contains("X-Monconn-Request"), "{body}");
    }
    let kick = format!("/services/{sid}/connections/1/kick");
    assert_eq!(http(fwd.admin, "POST", &kick, &form).await.0, 403);
    // Nothing changed: 127.0.0.1 is still served.
    let mut client = open([127, 0, 0, 1], local(port))
        .await
        .expect("still served after a refused ban");
    echo(&mut client, b"ping").await;
    // With the header (as the dashboard sends it), the same ban applies.
    let (status, body) = fwd.http("POST", &ban).await;
    assert_eq!(status, 200, "{body}");
    assert!(open([127, 0, 0, 1], local(port)).await.is_none());
}
