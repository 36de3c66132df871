//! The last bytes of a side and its FIN: when the reactor saw the FIN
//! before the read that drained the socket, the copy engine writes those
//! bytes and passes the FIN on in one segment (`MSG_MORE`, then the
//! shutdown), with and without half-close; the bytes arrive whole either way.

use crate::support;

use std::os::fd::AsRawFd;

use monconn::forward::{copy_bidirectional, Mode};
use monconn::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use support::{pattern, quiet_config, within};

/// Segments received by `s` so far (`tcpi_segs_in` of `TCP_INFO`).
fn segments_in(s: &TcpStream) -> u32 {
    // SAFETY: getsockopt writes at most `len` bytes into the zeroed struct
    // we own.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
        info.tcpi_segs_in
    }
}

/// A client wrapped in a service, and a backend whose server writes
/// `reply` and closes. With `fin_first`, the pair starts once the backend's
/// FIN reached the reactor: its first read drains the socket with the FIN
/// known (the reply must fit in the socket's buffers). Returns the client,
/// the pair running, and the client's segment count before the pair started.
async fn reply_then_fin(
    reply: Vec<u8>,
    half_close: bool,
    fin_first: bool,
) -> (
    TcpStream,
    tokio::task::JoinHandle<std::io::Result<(u64, u64)>>,
    u32,
) {
    let service = Registry::new().create("fin", quiet_config()).unwrap();
    let front = support::listen().await;
    let client = TcpStream::connect(front.local_addr().unwrap())
        .await
        .unwrap();
    let wrapped = support::accept_wrapped(&front, &service).await;
    let (mut server, backend) = support::plain_pair().await;
    let write = tokio::spawn(async move {
        server.write_all(&reply).await.unwrap();
    });
    if !fin_first {
        let mode = Mode::default().with_half_close(half_close);
        let pair = tokio::spawn(copy_bidirectional(wrapped, backend, mode));
        return (client, pair, 0);
    }
    within("the reply written", write).await.unwrap();
    within("the backend's FIN reaches the reactor", async {
        while !backend
            .ready(Interest::READABLE)
            .await
            .unwrap()
            .is_read_closed()
        {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let before = segments_in(&client);
    let mode = Mode::default().with_half_close(half_close);
    let pair = tokio::spawn(copy_bidirectional(wrapped, backend, mode));
    (client, pair, before)
}

#[tokio::test]
async fn a_short_reply_and_its_fin_leave_in_one_segment() {
    for half_close in [true, false] {
        let (mut client, pair, before) = reply_then_fin(b"reply".to_vec(), half_close, true).await;
        let mut got = Vec::new();
        within("reply and EOF", client.read_to_end(&mut got))
            .await
            .unwrap();
        assert_eq!(got, b"reply", "half_close {half_close}");
        // The client sent nothing meanwhile: nothing to acknowledge.
        assert_eq!(
            segments_in(&client) - before,
            1,
            "half_close {half_close}: the reply and the FIN in one segment"
        );
        client.shutdown().await.unwrap();
        let result = within("pair ends", pair).await.unwrap();
        assert_eq!(result.unwrap(), (0, 5), "half_close {half_close}");
    }
}

#[tokio::test]
async fn long_replies_with_their_fin_right_behind_arrive_whole() {
    // Full reads (not the last bytes), then a short one, with the FIN known
    // or not yet: every byte arrives, in order, then EOF.
    for (len, fin_first) in [
        (63 * 1024, true),
        (63 * 1024 + 1, true),
        (100_000, true),
        (300_000, false),
        (1_000_003, false),
    ] {
        let reply = pattern(0, len);
        let (mut client, pair, _) = reply_then_fin(reply.clone(), true, fin_first).await;
        let mut got = Vec::new();
        within("reply and EOF", client.read_to_end(&mut got))
            .await
            .unwrap();
        assert!(got == reply, "{len} bytes: got {} bytes", got.len());
        drop(client);
        let result = within("pair ends", pair).await.unwrap();
        assert_eq!(result.unwrap(), (0, len as u64));
    }
}
