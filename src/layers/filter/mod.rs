//! The blacklist and allowlist layer: [`FilterLayer`] and its service [`Filter`].

mod layer;
mod service;

pub use layer::FilterLayer;
pub use service::Filter;
