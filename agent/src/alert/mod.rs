//! Alerts: findings grouped by `rules/routing.toml`, routed to receivers through the outbox.

pub mod admin;
pub mod fleet;
pub mod group;
pub mod plan;
pub mod query;
pub mod routing;

pub use group::{apply, Applied};
pub use routing::{Receiver, Routing};

/// The routing rules in force, swapped whole when the file is reloaded.
pub type SharedRouting = std::sync::Arc<std::sync::RwLock<std::sync::Arc<Routing>>>;

/// The current rules (a poisoned lock still holds the last good ones).
pub fn current(shared: &SharedRouting) -> std::sync::Arc<Routing> {
    match shared.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    }
}
