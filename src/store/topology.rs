//! Noticing cluster failovers and resharding by comparing the slot maps the
//! store's monitor reads once a second. Pure bookkeeping: it neither talks
//! to Redis nor logs; `supervise` does both.

use std::collections::BTreeSet;

use super::conn::SlotMap;

/// What changed between the accepted slot map and a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopologyChange {
    /// The set of primaries changed: a replica was promoted (failover), or
    /// a primary was added or removed.
    Failover {
        /// Primaries no longer serving slots.
        lost: Vec<String>,
        /// Primaries newly serving slots.
        gained: Vec<String>,
    },
    /// The same primaries serve different slot ranges (resharding).
    SlotsMoved,
}

/// Remembers the accepted slot map; accepts a different one once two
/// successive reads agree on it, so that one node with a stale view (the
/// map is read from a random node) does not report a change and its undoing.
#[derive(Debug, Default)]
pub struct TopologyWatch {
    accepted: Option<SlotMap>,
    candidate: Option<SlotMap>,
}

impl TopologyWatch {
    /// Feeds one read of the slot map; returns the change when a new map is accepted.
    pub fn observe(&mut self, map: SlotMap) -> Option<TopologyChange> {
        let Some(accepted) = &self.accepted else {
            self.accepted = Some(map);
            return None;
        };
        if *accepted == map {
            self.candidate = None;
            return None;
        }
        if self.candidate.as_ref() != Some(&map) {
            self.candidate = Some(map);
            return None;
        }
        let old = primaries(accepted);
        let new = primaries(&map);
        self.accepted = Some(map);
        self.candidate = None;
        Some(if old == new {
            TopologyChange::SlotsMoved
        } else {
            TopologyChange::Failover {
                lost: old.difference(&new).cloned().collect(),
                gained: new.difference(&old).cloned().collect(),
            }
        })
    }
}

fn primaries(map: &SlotMap) -> BTreeSet<String> {
    map.iter().map(|(_, _, addr)| addr.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(ranges: &[(u16, u16, &str)]) -> SlotMap {
        ranges
            .iter()
            .map(|(a, b, addr)| (*a, *b, (*addr).to_owned()))
            .collect()
    }

    #[test]
    fn a_failover_is_reported_once_two_reads_agree() {
        let before = map(&[(0, 8191, "a:1"), (8192, 16383, "b:1")]);
        let after = map(&[(0, 8191, "c:1"), (8192, 16383, "b:1")]);
        let mut watch = TopologyWatch::default();
        assert_eq!(
            watch.observe(before.clone()),
            None,
            "the first map is the baseline"
        );
        assert_eq!(watch.observe(before.clone()), None);
        assert_eq!(watch.observe(after.clone()), None, "one read is not enough");
        assert_eq!(
            watch.observe(after.clone()),
            Some(TopologyChange::Failover {
                lost: vec!["a:1".into()],
                gained: vec!["c:1".into()]
            })
        );
        assert_eq!(watch.observe(after), None, "reported once");
    }

    #[test]
    fn a_stale_read_in_between_reports_nothing_and_resharding_is_told_apart() {
        let before = map(&[(0, 8191, "a:1"), (8192, 16383, "b:1")]);
        let moved = map(&[(0, 7000, "a:1"), (7001, 16383, "b:1")]);
        let mut watch = TopologyWatch::default();
        watch.observe(before.clone());
        assert_eq!(watch.observe(moved.clone()), None);
        assert_eq!(
            watch.observe(before.clone()),
            None,
            "back to the accepted map"
        );
        assert_eq!(watch.observe(moved.clone()), None);
        assert_eq!(watch.observe(moved), Some(TopologyChange::SlotsMoved));
    }
}
