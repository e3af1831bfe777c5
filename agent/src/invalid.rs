//! The error of a setting that says something invalid.

/// What is wrong with one setting of a configuration or rules file, in words that name the
/// key or column. Checks at every layer return it, and the loader of the file adds the
/// file's path (`ConfigError::Invalid`): callers never act on which check failed, only
/// report it, so one type serves them all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl From<String> for Invalid {
    fn from(m: String) -> Self {
        Invalid(m)
    }
}

impl From<&str> for Invalid {
    fn from(m: &str) -> Self {
        Invalid(m.to_owned())
    }
}
