//! The limits layer: [`LimitLayer`] and its service [`Limit`].

mod layer;
mod service;

pub use layer::LimitLayer;
pub use service::Limit;
