//! A small HTTP/1 client, an echo server of a monitored service, and an
//! admin server on a loopback port.

use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::HeaderMap;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use monconn::admin::{self, Admin};
use monconn::{Listener, ServiceMonitor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::within;

/// One answer: status, headers, body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// The JSON error's message.
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

/// Sends one request on a fresh connection.
pub async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let stream = TcpStream::connect(addr)
        .await
        .expect("connect to the admin");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "test");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Full::<Bytes>::default()).unwrap();
    let resp = within("an admin answer", sender.send_request(req))
        .await
        .expect("an answer");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("the body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// GET with no header.
pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    call(addr, Method::GET, path, &[]).await
}

/// A state-changing request with the guard header (and nothing else).
pub async fn act(addr: SocketAddr, method: Method, path: &str) -> Answer {
    call(addr, method, path, &[("x-monconn-request", "1")]).await
}

/// Serves `admin` on a loopback port; returns its address.
pub async fn serve_admin(admin: Admin) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(admin::serve(listener, admin));
    addr
}

/// An echo server of `service` on a loopback port: each connection echoes
/// what it reads, and is dropped at its first error (a kick, say).
pub async fn echo(service: &ServiceMonitor) -> SocketAddr {
    let listener = Listener::bind("127.0.0.1:0", service.clone())
        .await
        .unwrap();
    let addr = listener.local_addr();
    tokio::spawn(async move {
        while let Ok((mut conn, _peer)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0; 16 * 1024];
                loop {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Sends `payload` and reads it back.
pub async fn round_trip(client: &mut TcpStream, payload: &[u8]) {
    client.write_all(payload).await.unwrap();
    let mut back = vec![0; payload.len()];
    within("the echo", client.read_exact(&mut back))
        .await
        .unwrap();
    assert_eq!(back, payload);
}

/// Waits until the server closes `client` (EOF or reset).
pub async fn closed_by_server(client: &mut TcpStream) {
    let mut buf = [0; 64];
    loop {
        match within("the server's close", client.read(&mut buf)).await {
            Ok(0) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}
