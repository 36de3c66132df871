//! The runtime tap: the events of matching connections (open, each read
//! and write with its first bytes, close with its cause and totals),
//! streamed to whoever asked, while they flow. Start one with
//! [`Registry::tap`](crate::Registry::tap); the admin router serves it as
//! server-sent events on `GET /tap`.
//!
//! # Cost
//! With no tap on, or a tap on other connections, a read or write pays one
//! relaxed load of its own connection's record (a flag that a matching tap
//! sets), and allocates nothing. A tapped connection copies the first
//! [`TapLimits::bytes_per_event`] bytes of each read or write into an event
//! and offers it to the subscriber's bounded queue: it never waits, and an
//! event past the subscriber's rate or into a full queue is dropped and
//! counted ([`Tap::lost`]). A slow subscriber loses events; it never slows a
//! connection.
//!
//! The `print_bytes` hex dump ([`ServiceConfig::print_bytes`](crate::ServiceConfig::print_bytes))
//! takes the same path: the connection queues a copy, and one thread writes
//! the log (see [`dumps_lost`]).
//!
//! Bytes a proxy moves without passing them through the
//! [`MonitoredIo`](crate::MonitoredIo) (`splice(2)` in
//! [`forward`](crate::forward), for connections not watched when their copy
//! started) are counted but not seen by a tap: it sees their open and close.
//!
//! # Examples
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use monconn::tap::{TapFilter, TapKind};
//! use tokio::io::AsyncWriteExt;
//!
//! let registry = monconn::Registry::new();
//! let service = registry.service("web");
//! let mut tap = registry.tap(TapFilter::new().with_sid("web"));
//!
//! let (_client, server) = tokio::io::duplex(64);
//! let addr = "192.0.2.7:4000".parse().unwrap();
//! let mut conn = service.wrap(server, addr, addr)?;
//! conn.write_all(b"hello").await?;
//! drop(conn);
//!
//! assert_eq!(tap.next().await.unwrap().name(), "open");
//! let write = tap.next().await.unwrap();
//! assert_eq!(write.bytes().unwrap().head, b"hello");
//! assert!(write.hex().unwrap().starts_with("00000000: 6865 6c6c 6f"));
//! let close = tap.next().await.unwrap();
//! assert!(matches!(close.kind, TapKind::Close { bytes_written: 5, .. }));
//! assert_eq!(tap.lost(), 0);
//! # Ok(()) }
//! ```

mod event;
mod filter;
mod hexdump;
mod hub;
mod log;
mod subscriber;

pub use event::{TapBytes, TapEvent, TapKind};
pub use filter::{TapFilter, TapLimits, BYTES_PER_EVENT, EVENTS_PER_SEC, QUEUE};
pub(crate) use hub::Hub;
pub use subscriber::Tap;

/// Hex dumps (`print_bytes`) dropped so far in this process because the
/// log did not keep up with them.
pub fn dumps_lost() -> u64 {
    log::lost()
}
