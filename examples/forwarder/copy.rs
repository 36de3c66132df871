//! Copying bytes between a client and its backend.

use std::io;

use monconn::MonitoredIo;
use tokio::net::TcpStream;

/// Copies both directions between `client` and `backend` until both have
/// ended, passing each side's EOF on as a write shutdown of the other.
/// Returns the bytes copied client -> backend and backend -> client.
///
/// This first version uses `tokio::io::copy_bidirectional` (two 8 KiB
/// buffers per pair); the readiness-based pooled copy replaces it.
pub(crate) async fn pipe(
    mut client: MonitoredIo<TcpStream>,
    mut backend: TcpStream,
) -> io::Result<(u64, u64)> {
    tokio::io::copy_bidirectional(&mut client, &mut backend).await
}
