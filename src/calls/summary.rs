//! A log summariser: lets one line per kind of event through per period and
//! counts the ones it held back, so that a flood of identical failures
//! (an overload, a Redis outage) writes one line a second, not one a call.

use std::{
    collections::BTreeMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// One period's state of one kind.
#[derive(Debug, Clone, Copy)]
struct Window {
    logged_at: Instant,
    suppressed: u64,
}

/// Rate limit of log lines, per kind.
#[derive(Debug)]
pub struct Summary {
    every: Duration,
    // A BTreeMap because its `new` is const (the summariser is a static);
    // it holds one entry per kind, a handful.
    windows: Mutex<BTreeMap<&'static str, Window>>,
}

impl Summary {
    /// At most one line per kind per `every`.
    pub const fn new(every: Duration) -> Self {
        Self {
            every,
            windows: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether an event of `kind` at `now` should be logged: `Some(n)` with
    /// the number of events of that kind held back since its previous line,
    /// or `None` to stay quiet (the event is counted for the next line).
    pub fn admit(&self, kind: &'static str, now: Instant) -> Option<u64> {
        // A panic elsewhere while holding the lock leaves the map valid.
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        match windows.get_mut(kind) {
            Some(window) if now.saturating_duration_since(window.logged_at) < self.every => {
                window.suppressed += 1;
                None
            }
            Some(window) => {
                let suppressed = window.suppressed;
                *window = Window {
                    logged_at: now,
                    suppressed: 0,
                };
                Some(suppressed)
            }
            None => {
                windows.insert(
                    kind,
                    Window {
                        logged_at: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_per_period_with_the_count_held_back() {
        let summary = Summary::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let ms = Duration::from_millis;

        assert_eq!(summary.admit("overloaded", t0), Some(0));
        assert_eq!(summary.admit("overloaded", t0 + ms(1)), None);
        assert_eq!(summary.admit("overloaded", t0 + ms(999)), None);
        assert_eq!(
            summary.admit("io", t0 + ms(2)),
            Some(0),
            "kinds are independent"
        );
        assert_eq!(summary.admit("overloaded", t0 + ms(1000)), Some(2));
        assert_eq!(summary.admit("overloaded", t0 + ms(1500)), None);
        assert_eq!(summary.admit("overloaded", t0 + ms(2500)), Some(1));
    }
}
