//! One error type for the harness: a message that says what was being done and why it failed.

use std::fmt::Display;

/// Why a benchmark step failed. The message names the step and the cause, e.g.
/// `starting ts-redis: cannot connect to redis://127.0.0.1:6379: Connection refused`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BenchError(pub String);

impl BenchError {
    /// An error with a message.
    pub fn msg(message: impl Into<String>) -> Self {
        BenchError(message.into())
    }
}

/// Adds "what we were doing" to any displayable error.
pub trait Context<T> {
    /// Wraps the error as `"{what}: {error}"`.
    fn context(self, what: impl Display) -> Result<T, BenchError>;
}

impl<T, E: Display> Context<T> for Result<T, E> {
    fn context(self, what: impl Display) -> Result<T, BenchError> {
        self.map_err(|e| BenchError(format!("{what}: {e}")))
    }
}

/// `Result` with [`BenchError`].
pub type Result<T, E = BenchError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_prefixes_the_step() {
        let r: std::result::Result<(), std::io::Error> =
            Err(std::io::Error::other("connection refused"));
        let e = r.context("starting ts-redis").unwrap_err();
        assert_eq!(e.to_string(), "starting ts-redis: connection refused");
    }
}
