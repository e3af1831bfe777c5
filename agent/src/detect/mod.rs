//! Detect: judges each enriched access, and each PHI folder event, with Cedar policy packs.

pub mod cedar;
pub mod explain;
pub mod files;
mod locate;
pub mod policy_test;

pub use cedar::{Detector, PolicyError, PolicyPack, Rule};

/// A Cedar request that cannot be built or answered. Only a disagreement between the policy
/// schema and the facts enrichment produces can cause one: the detector counts it and judges
/// the access unexplained rather than dropping it.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Entity(#[from] cedar_policy::EntityAttrEvaluationError),
    #[error(transparent)]
    Context(#[from] cedar_policy::ContextCreationError),
    #[error(transparent)]
    Request(#[from] cedar_policy::RequestValidationError),
    #[error(transparent)]
    Entities(#[from] cedar_policy::entities_errors::EntitiesError),
    #[error(transparent)]
    Name(#[from] cedar_policy::ParseErrors),
    #[error(transparent)]
    Evaluation(#[from] cedar_policy::AuthorizationError),
}
pub use files::FileDetector;
