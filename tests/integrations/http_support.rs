//! Helpers for the HTTP integration tests: a client TCP stream that counts
//! the bytes it moves, and a hyper HTTP/1 client over it.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What a client moved over its socket, as the client counts it.
#[derive(Clone, Debug, Default)]
pub struct Wire {
    pub read: Arc<AtomicU64>,
    pub written: Arc<AtomicU64>,
}

impl Wire {
    /// (bytes read, bytes written) by the client.
    pub fn get(&self) -> (u64, u64) {
        (self.read.load(Relaxed), self.written.load(Relaxed))
    }
}

/// A client's `TcpStream` that counts every byte it reads and writes.
pub struct Counting {
    inner: TcpStream,
    wire: Wire,
}

impl AsyncRead for Counting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            let n = buf.filled().len() - before;
            self.wire.read.fetch_add(n as u64, Relaxed);
        }
        poll
    }
}

impl AsyncWrite for Counting {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.wire.written.fetch_add(n as u64, Relaxed);
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = poll {
            self.wire.written.fetch_add(n as u64, Relaxed);
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A hyper HTTP/1 client on one keep-alive connection.
pub struct Client {
    pub sender: SendRequest<Full<Bytes>>,
    pub wire: Wire,
    /// The client's own address (the server's peer).
    pub local: SocketAddr,
    /// Ends with the connection.
    pub conn: tokio::task::JoinHandle<hyper::Result<()>>,
}

impl Client {
    /// Connects from `src` to `addr`.
    pub async fn connect_from(src: IpAddr, addr: SocketAddr) -> Client {
        let stream = crate::support::connect_from(src, addr).await;
        let local = stream.local_addr().unwrap();
        let wire = Wire::default();
        let io = Counting {
            inner: stream,
            wire: wire.clone(),
        };
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .expect("handshake");
        let conn = tokio::spawn(conn);
        Client {
            sender,
            wire,
            local,
            conn,
        }
    }

    /// Connects from 127.0.0.1.
    pub async fn connect(addr: SocketAddr) -> Client {
        Client::connect_from(crate::support::LOCALHOST, addr).await
    }

    /// Sends a request and reads the whole response.
    pub async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> hyper::Result<(Response<()>, Bytes)> {
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok((Response::from_parts(parts, ()), body))
    }

    /// GET `path`, expecting a 200 and returning the body.
    pub async fn get(&mut self, path: &str) -> Bytes {
        let (resp, body) = self.send(get(path)).await.expect("GET");
        assert_eq!(resp.status(), 200, "GET {path}");
        body
    }
}

/// A GET request for `path` (Host header set, no body).
pub fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "test")
        .body(Full::default())
        .unwrap()
}

/// A POST request for `path` with `body`.
#[cfg(feature = "axum")]
pub fn post(path: &str, body: Vec<u8>) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("host", "test")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}
