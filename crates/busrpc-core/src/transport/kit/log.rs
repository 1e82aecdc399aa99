//! Logging what untrusted input and a failing broker produce without
//! letting either flood the logs: payloads shown as a short excerpt, and
//! repeated warnings let through at most once per interval.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How much of a payload a log line shows.
pub const EXCERPT_BYTES: usize = 256;

/// Displays the first [`EXCERPT_BYTES`] of a payload (lossy UTF-8), and
/// its full length when it is cut: a message of 1 MiB from a stranger
/// makes a log line of a few hundred bytes.
pub struct Excerpt<'a>(pub &'a [u8]);

impl fmt::Display for Excerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        if bytes.len() <= EXCERPT_BYTES {
            return write!(f, "{}", String::from_utf8_lossy(bytes));
        }
        let head = String::from_utf8_lossy(&bytes[..EXCERPT_BYTES]);
        // A character cut in two shows as one replacement character.
        write!(f, "{head}… ({} bytes)", bytes.len())
    }
}

/// Lets a repeated log line through at most once per `every`, saying how
/// many were held back since the last one.
pub struct Throttle {
    every: Duration,
    last: Mutex<Option<Instant>>,
    held_back: AtomicU64,
}

impl Throttle {
    /// Lets a line through at most once per `every`.
    pub const fn new(every: Duration) -> Self {
        Self {
            every,
            last: Mutex::new(None),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(n)` if this line is to be logged, `n` being how many were
    /// held back before it; `None` to hold it back.
    pub fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match *last {
            Some(at) if now.duration_since(at) < self.every => {
                self.held_back.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.held_back.swap(0, Ordering::Relaxed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short_and_say_how_long_the_whole_was() {
        assert_eq!(Excerpt(b"{\"id\":1}").to_string(), "{\"id\":1}");
        let big = vec![b'x'; 1_000_000];
        let shown = Excerpt(&big).to_string();
        assert_eq!(shown, format!("{}… (1000000 bytes)", "x".repeat(256)));
        assert_eq!(Excerpt(b"\xff ok").to_string(), "\u{fffd} ok");
    }

    #[test]
    fn throttled_lines_pass_once_per_interval_and_count_the_rest() {
        let throttle = Throttle::new(Duration::from_secs(3600));
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        let open = Throttle::new(Duration::ZERO);
        assert_eq!(open.allow(), Some(0));
        assert_eq!(open.allow(), Some(0));
        *throttle.last.lock().unwrap() = Some(Instant::now() - Duration::from_secs(7200));
        assert_eq!(throttle.allow(), Some(2), "two held back since");
    }
}
