//! The `print_bytes` hex dump, as a tracing subscriber sees it.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use monconn::{Registry, ServiceConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing_subscriber::fmt::MakeWriter;

/// Collects everything the subscriber writes.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
    }
}

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

/// Moves a request in and a reply out (the reply as a vectored write).
async fn exchange(print_bytes: bool, sid: &str) -> SocketAddr {
    let service = Registry::new()
        .create(sid, ServiceConfig::default().print_bytes(print_bytes))
        .unwrap();
    let (mut client, server) = tokio::io::duplex(4096);
    let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let mut server = service.wrap(server, peer, local).unwrap();

    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let mut buf = [0; 25];
    server.read_exact(&mut buf).await.unwrap();
    client.write_all(b"\r\n").await.unwrap();
    server.read_exact(&mut buf[..2]).await.unwrap();

    let n = server
        .write_vectored(&[
            IoSlice::new(b"HTTP/1.1 200 OK\r\n"),
            IoSlice::new(b"\x00\x01\xff"),
        ])
        .await
        .unwrap();
    assert_eq!(n, 20);
    assert_eq!(server.record().bytes_read(), 27);
    peer
}

#[tokio::test]
async fn print_bytes_dumps_like_xxd_at_trace_and_only_when_on() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(capture.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .without_time()
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    exchange(true, "dump-on").await;
    // The dumps are written by the dump thread, off the connection's path.
    let mut out = String::new();
    for _ in 0..200 {
        out.push_str(&capture.take());
        if out.matches("TRACE ").count() >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let events: Vec<&str> = out.split("TRACE ").filter(|e| !e.is_empty()).collect();
    assert_eq!(
        events.len(),
        4,
        "one event per read and per vectored slice:\n{out}"
    );

    let fields = |e: &str, dir: &str, offset: u64, len: usize| {
        assert!(e.starts_with("monconn::hexdump:"), "{e}");
        for field in [
            "sid=\"dump-on\"".to_owned(),
            "id=1".to_owned(),
            "peer=192.0.2.7:40000".to_owned(),
            format!("direction=\"{dir}\""),
            format!("offset={offset}"),
            format!("len={len}"),
        ] {
            assert!(e.contains(&field), "{field} missing from {e}");
        }
    };
    fields(events[0], "read", 0, 25);
    assert!(events[0].contains(
        "\n00000000: 4745 5420 2f20 4854 5450 2f31 2e31 0d0a  GET / HTTP/1.1..\n\
         00000010: 486f 7374 3a20 610d 0a                   Host: a..\n"
    ));
    fields(events[1], "read", 25, 2);
    assert!(events[1].contains("\n00000019: 0d0a                                     ..\n"));
    fields(events[2], "write", 0, 17);
    assert!(events[2].contains(
        "\n00000000: 4854 5450 2f31 2e31 2032 3030 204f 4b0d  HTTP/1.1 200 OK.\n\
         00000010: 0a                                       .\n"
    ));
    fields(events[3], "write", 17, 3);
    assert!(events[3].contains("\n00000011: 0001 ff                                  ...\n"));

    // With print_bytes off, nothing is dumped.
    exchange(false, "dump-off").await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let out = capture.take();
    assert!(
        !out.contains("hexdump"),
        "dumped with print_bytes off:\n{out}"
    );
    assert!(
        !out.contains("00000000:"),
        "dumped with print_bytes off:\n{out}"
    );
}
