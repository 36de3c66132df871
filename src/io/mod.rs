//! The monitored transport: [`MonitoredIo`] counts a connection's bytes into
//! its [`ConnRecord`] and fails once the connection is closed from outside
//! (with a [`CloseCause`]). A leaf: it imports nothing of the crate but the
//! clock, the address helpers and the PROXY header it may keep (`proxied`); the registry's service is reached only
//! through [`Release`](guard::Release), which the service implements, and
//! the tap only through [`Watcher`](watch::Watcher), which its hub
//! implements.
//!
//! # Examples
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let service = monconn::Registry::new().service("demo");
//! let (client, server) = tokio::io::duplex(64);
//! let addr = "127.0.0.1:1".parse().unwrap();
//! let mut server = service.wrap(server, addr, addr)?;
//! let mut client = client;
//! client.write_all(b"ping").await?;
//! let mut buf = [0; 4];
//! server.read_exact(&mut buf).await?;
//! server.write_all(b"pong!").await?;
//! assert_eq!((server.record().bytes_read(), server.record().bytes_written()), (4, 5));
//! assert_eq!(service.bytes(), monconn::ByteCounts { read: 4, written: 5 });
//! # Ok(()) }
//! ```

mod cause;
mod guard;
mod monitored;
mod record;
mod watch;

pub use cause::CloseCause;
pub(crate) use guard::Release;
pub use monitored::MonitoredIo;
pub use record::ConnRecord;
pub(crate) use record::ReadProbe;
pub(crate) use record::Record;
pub(crate) use watch::{Direction, Watcher};
