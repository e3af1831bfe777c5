//! Alerts: findings grouped by `rules/routing.toml`, routed to receivers through the outbox.

pub mod admin;
pub mod group;
pub mod routing;

pub use group::{apply, Applied};
pub use routing::{Receiver, Routing};
