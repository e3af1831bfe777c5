//! Detect: judges each enriched access, and each PHI folder event, with Cedar policy packs.

pub mod cedar;
pub(crate) mod explain;
pub mod files;
mod locate;

pub use cedar::{Detector, PolicyError, PolicyPack, Rule};
pub use files::FileDetector;
