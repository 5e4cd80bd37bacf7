//! Expiry policy: a sliding idle timeout, an absolute timeout, and throttled touches so that
//! reads do not turn into writes.

use std::time::Duration;

use crate::config_error::ConfigError;
use crate::record::SessionRecord;

fn refused(field: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::new("expiry policy", field, problem)
}

/// How long sessions live.
///
/// * `idle_timeout`: the session dies after this long without activity (sliding).
/// * `absolute_timeout`: the session dies this long after creation, however active (OWASP asks
///   for both).
/// * `touch_fraction`: a read refreshes the idle deadline only once this fraction of the idle
///   window has passed since the last refresh. With the default 0.25 and a 30-minute idle
///   timeout, an active reader causes at most one write per 7.5 minutes, and a session lives
///   between 22.5 and 30 minutes after its last use.
///
/// ```
/// use std::time::Duration;
/// use session_core::ExpiryPolicy;
/// let policy = ExpiryPolicy::new(Duration::from_secs(1800), Duration::from_secs(8 * 3600))
///     .unwrap()
///     .with_touch_fraction(0.1)
///     .unwrap();
/// assert_eq!(policy.touch_interval(), Duration::from_secs(180));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExpiryPolicy {
    idle_timeout: Duration,
    absolute_timeout: Duration,
    touch_fraction: f64,
}

impl Default for ExpiryPolicy {
    /// 30 minutes idle, 8 hours absolute, touch after a quarter of the idle window.
    fn default() -> Self {
        ExpiryPolicy {
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(8 * 3600),
            touch_fraction: 0.25,
        }
    }
}

impl ExpiryPolicy {
    /// A policy with the given timeouts and the default touch fraction (0.25).
    pub fn new(idle_timeout: Duration, absolute_timeout: Duration) -> Result<Self, ConfigError> {
        if idle_timeout.is_zero() {
            return Err(refused("idle_timeout", "must be greater than zero"));
        }
        if absolute_timeout.is_zero() {
            return Err(refused("absolute_timeout", "must be greater than zero"));
        }
        Ok(ExpiryPolicy {
            idle_timeout,
            absolute_timeout,
            ..Default::default()
        })
    }

    /// Sets the fraction of the idle window after which a read refreshes the deadline
    /// (0 = every read writes; 1 = reads never extend the session).
    pub fn with_touch_fraction(mut self, fraction: f64) -> Result<Self, ConfigError> {
        if !(0.0..=1.0).contains(&fraction) {
            return Err(refused(
                "touch_fraction",
                format!("must be between 0 and 1, got {fraction}"),
            ));
        }
        self.touch_fraction = fraction;
        Ok(self)
    }

    /// The sliding idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// The absolute timeout.
    pub fn absolute_timeout(&self) -> Duration {
        self.absolute_timeout
    }

    /// The touch fraction.
    pub fn touch_fraction(&self) -> f64 {
        self.touch_fraction
    }

    /// Minimum time between two refreshes of the idle deadline caused by reads.
    pub fn touch_interval(&self) -> Duration {
        self.idle_timeout.mul_f64(self.touch_fraction)
    }

    /// `(idle_deadline, absolute_deadline)` for a session created at `now` (ms).
    pub fn initial_deadlines(&self, now: u64) -> (u64, u64) {
        let absolute = now.saturating_add(self.absolute_timeout.as_millis() as u64);
        (self.refreshed_idle_deadline(now, absolute), absolute)
    }

    /// The idle deadline after activity at `now`, never past the absolute deadline.
    pub fn refreshed_idle_deadline(&self, now: u64, absolute_deadline: u64) -> u64 {
        now.saturating_add(self.idle_timeout.as_millis() as u64)
            .min(absolute_deadline)
    }

    /// True when a read at `now` should refresh the idle deadline: enough of the window has
    /// passed since the last refresh, and refreshing would actually move the deadline.
    pub fn needs_touch(&self, record: &SessionRecord, now: u64) -> bool {
        let since = now.saturating_sub(record.last_access);
        since >= self.touch_interval().as_millis() as u64
            && self.refreshed_idle_deadline(now, record.absolute_deadline) > record.idle_deadline
    }

    /// A fresh record for a new session created at `now`.
    pub fn new_record(&self, id: crate::SessionId, now: u64) -> SessionRecord {
        let (idle_deadline, absolute_deadline) = self.initial_deadlines(now);
        SessionRecord {
            id,
            data: Default::default(),
            created_at: now,
            last_access: now,
            idle_deadline,
            absolute_deadline,
            version: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SessionId;

    #[test]
    fn validates() {
        assert!(ExpiryPolicy::new(Duration::ZERO, Duration::from_secs(1)).is_err());
        assert!(ExpiryPolicy::new(Duration::from_secs(1), Duration::ZERO).is_err());
        assert!(ExpiryPolicy::default().with_touch_fraction(1.5).is_err());
    }

    #[test]
    fn touch_is_throttled_and_capped_by_the_absolute_deadline() {
        let p = ExpiryPolicy::new(Duration::from_secs(100), Duration::from_secs(150)).unwrap();
        let r = p.new_record(SessionId::random(), 0);
        assert_eq!((r.idle_deadline, r.absolute_deadline), (100_000, 150_000));
        assert!(!p.needs_touch(&r, 10_000), "within the first quarter");
        assert!(p.needs_touch(&r, 25_000));
        let mut r2 = r.clone();
        r2.idle_deadline = 150_000;
        r2.last_access = 60_000;
        assert!(
            !p.needs_touch(&r2, 90_000),
            "already at the absolute deadline: nothing to extend"
        );
        assert!(r.is_expired(100_000));
        assert!(!r.is_expired(99_999));
    }
}
