//! The one shape of a refused setting across session-sync: which component refused it, the
//! field, and what is wrong with it. Every crate's `validate()` returns it, so an application
//! can report any configuration mistake the same way.

/// A setting that was refused, naming the component and the field.
///
/// ```
/// use std::time::Duration;
/// use session_core::ExpiryPolicy;
///
/// let err = ExpiryPolicy::new(Duration::ZERO, Duration::from_secs(60)).unwrap_err();
/// assert_eq!(err.field, "idle_timeout");
/// assert_eq!(err.to_string(), "invalid expiry policy setting `idle_timeout`: must be greater than zero");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {component} setting `{field}`: {problem}")]
#[non_exhaustive]
pub struct ConfigError {
    /// What was being configured (`expiry policy`, `session cookie`, `instant-copy`, `sql`, ...).
    pub component: &'static str,
    /// The offending field (`idle_timeout`, `cluster_nodes[1]`, ...).
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    /// A refused `field` of `component`, and why.
    pub fn new(
        component: &'static str,
        field: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        ConfigError {
            component,
            field: field.into(),
            problem: problem.into(),
        }
    }
}
