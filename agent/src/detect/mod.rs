//! Detect: judges each enriched access, and each PHI folder event, with Cedar policy packs.

pub mod cedar;
pub mod explain;
pub mod files;
mod locate;
pub mod policy_test;

pub use cedar::{Detector, PolicyError, PolicyPack, Rule};
pub use files::FileDetector;
