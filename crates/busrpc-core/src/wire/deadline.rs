//! When a caller stops waiting: the `deadline` header, and the deadline of
//! the request a handler serves.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The moment a caller stops waiting, as absolute Unix milliseconds, so that
/// it means the same on every machine whose clock is synchronised.
/// ([`Deadline::current`], the deadline of the request being served, is
/// written beside the rest of what a request being served passes on.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(pub u64);

impl Deadline {
    /// `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        Deadline(unix_ms_now().saturating_add(ms))
    }

    /// Whether the deadline has passed.
    pub fn has_passed(self) -> bool {
        unix_ms_now() > self.0
    }

    /// Time left until the deadline, zero when passed.
    pub fn remaining(self) -> Duration {
        Duration::from_millis(self.0.saturating_sub(unix_ms_now()))
    }
}

/// A `deadline` header that is not a Unix time in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the deadline header {0:?} is not a Unix time in milliseconds (digits only, at most 18446744073709551615)")]
pub struct InvalidDeadline(pub String);

impl std::str::FromStr for Deadline {
    type Err = InvalidDeadline;

    /// Decimal digits only: no sign, no fraction, no exponent, no spaces,
    /// and within a `u64`.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
        match value.parse() {
            Ok(ms) if digits => Ok(Deadline(ms)),
            _ => Err(InvalidDeadline(value.chars().take(64).collect())),
        }
    }
}

impl fmt::Display for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<Deadline> for Arc<str> {
    /// The header value. One allocation, where `to_string()` and then
    /// `Arc::from` take two; every call sends one.
    fn from(deadline: Deadline) -> Self {
        Arc::from(itoa::Buffer::new().format(deadline.0))
    }
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{header, Headers};

    #[test]
    fn deadline_header_parses_or_is_refused() {
        let h = Headers::new().with(header::DEADLINE, "1700000000000");
        assert_eq!(h.deadline(), Ok(Some(Deadline(1_700_000_000_000))));
        let written = Headers::new().with(header::DEADLINE, Deadline(1_700_000_000_000));
        assert_eq!(written.get(header::DEADLINE), Some("1700000000000"));
        assert!(h.deadline().unwrap().unwrap().has_passed());
        assert_eq!(Headers::new().deadline(), Ok(None));
        for bad in [
            "soon",
            "-5",
            "+5",
            "1.5",
            "1e3",
            " 5",
            "",
            "18446744073709551616",
            &"9".repeat(26),
        ] {
            let got = Headers::new().with(header::DEADLINE, bad).deadline();
            assert_eq!(got, Err(InvalidDeadline(bad.to_owned())), "{bad:?}");
        }
        assert_eq!(
            InvalidDeadline("soon".into()).to_string(),
            r#"the deadline header "soon" is not a Unix time in milliseconds (digits only, at most 18446744073709551615)"#
        );
        let d = Deadline::after(Duration::from_secs(60));
        assert!(!d.has_passed());
        assert!(d.remaining() > Duration::from_secs(58));
    }
}
