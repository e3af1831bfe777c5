//! Detect: judges each enriched access, and each PHI folder event, with Cedar policy packs.

pub mod cedar;
pub mod explain;
pub mod files;
mod locate;
pub mod policy_test;

pub use cedar::{Detector, PackSources, PolicyError, PolicyPack, Rule};
pub use files::FileDetector;

/// A Cedar request that cannot be built or answered. Only a disagreement between the policy
/// schema and the facts enrichment produces can cause one: the detector counts it and judges
/// the access unexplained rather than dropping it. Boxed: Cedar's errors are large and the
/// request is built on every access.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct RequestError(Box<dyn std::error::Error + Send + Sync>);

macro_rules! request_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for RequestError {
            fn from(e: $t) -> Self {
                RequestError(Box::new(e))
            }
        }
    )*};
}

request_error_from!(
    cedar_policy::EntityAttrEvaluationError,
    cedar_policy::ContextCreationError,
    cedar_policy::RequestValidationError,
    cedar_policy::entities_errors::EntitiesError,
    cedar_policy::ParseErrors,
    cedar_policy::AuthorizationError
);
