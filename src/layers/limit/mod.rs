//! The limits layer: connections, client IPs, connections per IP, and the
//! per-IP connection rate (IPv6 clients keyed by prefix; see
//! [`client_key`](crate::registry::client_key)).
//!
//! # Examples
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use monconn::layers::{LimitLayer, Pass};
//! use monconn::{Accepted, Reason, Rejected, Registry, ServiceConfig};
//! use tower::{Layer, ServiceExt};
//!
//! let service = Registry::new().create("web", ServiceConfig::default().with_conn_limit(Some(1)));
//! let limit = LimitLayer::new(&service).layer(Pass);
//! let (peer, local) = ("10.0.0.1:5555".parse().unwrap(), "127.0.0.1:80".parse().unwrap());
//!
//! let first = limit.clone().oneshot(Accepted::new((), peer, local)).await.unwrap();
//! assert!(first.admission.is_some());
//! assert_eq!(service.connections(), 1);
//! let err = limit.clone().oneshot(Accepted::new((), peer, local)).await.unwrap_err();
//! assert_eq!(err.downcast_ref::<Rejected>().unwrap().reason(), &Reason::ConnLimit);
//!
//! drop(first); // the slot is given back
//! assert_eq!(service.connections(), 0);
//! # }
//! ```

mod layer;
mod service;

pub use layer::LimitLayer;
pub use service::Limit;
