//! Detect: judges each enriched access with the Cedar policy pack.

pub mod cedar;
mod explain;
mod locate;

pub use cedar::{Detector, PolicyError, PolicyPack, Rule};
