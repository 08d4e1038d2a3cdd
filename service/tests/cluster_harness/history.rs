//! What the producers were told and what the nodes were seen to hold, and the properties that
//! must hold between the two.
//!
//! Producers record every attempt to write a value (the first send and every retry after an
//! unknown outcome) and every acknowledgement `(offset, value)`. Readers record observations:
//! a node's whole log, read from offset 0. [`History::observe`] checks one observation:
//! - offsets are contiguous from 0;
//! - no offset ever held two different values, across nodes and across observations over
//!   time (and no acknowledgement contradicts what was seen);
//! - every acknowledged offset that the observation covers holds exactly its acknowledged
//!   value, and a complete observation (the node caught up) covers every acknowledged offset;
//! - no value appears more often than it was sent: a value that was acknowledged once and
//!   never retried appears exactly once; one that was retried after an unknown outcome may
//!   appear once per attempt; a value that was never sent never appears.
//!
//! Values are unique per attempt series (`c{cycle}-p{producer}-{seq}`), so a count of
//! appearances says how many writes of it took effect.

#![allow(dead_code)]

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
};

use bytes::Bytes;

/// A broken property, with what it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// The producers were told two different values for one offset.
    AckConflict { offset: u64, first: Bytes, second: Bytes },
    /// A node's log skips an offset (or does not start at 0).
    Gap { node: String, expected: u64, found: u64 },
    /// An offset held two different values: on two nodes, or on one node at two times, or
    /// an acknowledgement names a value other than the one seen there.
    Diverged { offset: u64, first: Bytes, first_seen: String, second: Bytes, second_seen: String },
    /// An acknowledged offset holds another value on a node.
    Changed { node: String, offset: u64, acked: Bytes, found: Bytes },
    /// A complete observation lacks an acknowledged offset.
    Lost { node: String, offset: u64, acked: Bytes, records: u64 },
    /// A value appears more often than it was sent (or was never sent at all).
    Duplicated { node: String, value: Bytes, appearances: u64, attempts: u64 },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::AckConflict { offset, first, second } => {
                write!(f, "offset {offset} was acknowledged for {first:?} and for {second:?}")
            }
            Violation::Gap { node, expected, found } => {
                write!(f, "{node}: offset {expected} expected, {found} found (offsets not contiguous from 0)")
            }
            Violation::Diverged { offset, first, first_seen, second, second_seen } => write!(
                f,
                "offset {offset} held two values: {first:?} ({first_seen}) and {second:?} ({second_seen})"
            ),
            Violation::Changed { node, offset, acked, found } => {
                write!(f, "{node}: acknowledged offset {offset} holds {found:?}, acknowledged {acked:?}")
            }
            Violation::Lost { node, offset, acked, records } => {
                write!(
                    f,
                    "{node}: acknowledged offset {offset} ({acked:?}) lost; the node has {records} records"
                )
            }
            Violation::Duplicated { node, value, appearances, attempts } => write!(
                f,
                "{node}: {value:?} appears {appearances} times, sent {attempts} times (appearances beyond \
                 the attempts are duplicates or values never sent)"
            ),
        }
    }
}

/// The history of one test: attempts, acknowledgements, and every offset's value as first
/// seen.
#[derive(Debug, Default)]
pub struct History {
    attempts: HashMap<Bytes, u64>,
    acked: BTreeMap<u64, Bytes>,
    ack_conflicts: Vec<Violation>,
    /// Every offset's value, from the first observation or acknowledgement that named it,
    /// with who named it.
    seen: BTreeMap<u64, (Bytes, String)>,
    observations: u64,
    /// Copies beyond the first of each value, in the last observation.
    extra_copies: u64,
}

impl History {
    /// A producer is about to send `value` (first time or a retry).
    pub fn sent(&mut self, value: &Bytes) {
        *self.attempts.entry(value.clone()).or_default() += 1;
    }

    /// A producer was told that `value` is at `offset`.
    pub fn acked(&mut self, offset: u64, value: Bytes) {
        match self.acked.get(&offset) {
            Some(first) if *first != value => self.ack_conflicts.push(Violation::AckConflict {
                offset,
                first: first.clone(),
                second: value,
            }),
            Some(_) => {}
            None => {
                self.acked.insert(offset, value);
            }
        }
    }

    /// How many acknowledgements were recorded (distinct offsets).
    pub fn acked_count(&self) -> u64 {
        self.acked.len() as u64
    }

    /// The highest acknowledged offset.
    pub fn last_acked(&self) -> Option<u64> {
        self.acked.keys().next_back().copied()
    }

    /// How many sends were retries (attempts beyond the first of each value).
    pub fn retries(&self) -> u64 {
        self.attempts.values().map(|n| n - 1).sum()
    }

    /// Copies beyond the first of each value in the last observation: writes that took
    /// effect twice because a producer retried after an unknown outcome.
    pub fn extra_copies(&self) -> u64 {
        self.extra_copies
    }

    /// How many observations were checked.
    pub fn observations(&self) -> u64 {
        self.observations
    }

    /// Checks one observation of `node`'s log: `records` as read from offset 0, in order.
    /// `complete` says the node had caught up with every acknowledgement recorded so far, so
    /// that each must be there. Returns every violation found (empty when all hold); what is
    /// seen is remembered for later observations either way.
    pub fn observe(&mut self, node: &str, records: &[(u64, Bytes)], complete: bool) -> Vec<Violation> {
        self.observations += 1;
        let who = format!("{node}, observation {}", self.observations);
        let mut violations = std::mem::take(&mut self.ack_conflicts);
        // Acknowledgements name a value for their offset, just as observations do.
        for (offset, value) in &self.acked {
            if let Some(v) = remember(&mut self.seen, *offset, value, "acknowledged") {
                violations.push(v);
            }
        }
        let mut appearances: HashMap<&Bytes, u64> = HashMap::new();
        for (expected, (offset, value)) in (0u64..).zip(records) {
            if *offset != expected {
                violations.push(Violation::Gap { node: node.to_owned(), expected, found: *offset });
                // Offsets after a gap are compared by their own number below.
            }
            if let Some(acked) = self.acked.get(offset)
                && acked != value
            {
                violations.push(Violation::Changed {
                    node: node.to_owned(),
                    offset: *offset,
                    acked: acked.clone(),
                    found: value.clone(),
                });
            } else if let Some(v) = remember(&mut self.seen, *offset, value, &who) {
                violations.push(v);
            }
            *appearances.entry(value).or_default() += 1;
        }
        self.extra_copies = appearances.values().map(|n| n - 1).sum();
        for (value, appearances) in appearances {
            let attempts = self.attempts.get(value).copied().unwrap_or(0);
            if appearances > attempts {
                violations.push(Violation::Duplicated {
                    node: node.to_owned(),
                    value: value.clone(),
                    appearances,
                    attempts,
                });
            }
        }
        if complete {
            let held: BTreeMap<u64, &Bytes> = records.iter().map(|(o, v)| (*o, v)).collect();
            for (offset, acked) in &self.acked {
                if !held.contains_key(offset) {
                    violations.push(Violation::Lost {
                        node: node.to_owned(),
                        offset: *offset,
                        acked: acked.clone(),
                        records: records.len() as u64,
                    });
                }
            }
        }
        violations
    }
}

/// Records `value` at `offset` unless another value was seen there first (then returns that
/// divergence).
fn remember(
    seen: &mut BTreeMap<u64, (Bytes, String)>,
    offset: u64,
    value: &Bytes,
    who: &str,
) -> Option<Violation> {
    match seen.get(&offset) {
        Some((first, first_seen)) if first != value => Some(Violation::Diverged {
            offset,
            first: first.clone(),
            first_seen: first_seen.clone(),
            second: value.clone(),
            second_seen: who.to_owned(),
        }),
        Some(_) => None,
        None => {
            seen.insert(offset, (value.clone(), who.to_owned()));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn log(values: &[&str]) -> Vec<(u64, Bytes)> {
        (0u64..).zip(values.iter().map(|v| b(v))).collect()
    }

    /// Three values sent and acknowledged at 0, 1, 2, plus one sent and never answered.
    fn history() -> History {
        let mut h = History::default();
        for (offset, v) in ["p0-0", "p1-0", "p0-1"].into_iter().enumerate() {
            h.sent(&b(v));
            h.acked(offset as u64, b(v));
        }
        h.sent(&b("p1-1"));
        h
    }

    #[test]
    fn a_consistent_history_passes() {
        let mut h = history();
        // A lagging node (a prefix, not complete), then caught-up nodes, one with the
        // unacknowledged value committed after all.
        assert_eq!(h.observe("n1", &log(&["p0-0", "p1-0"]), false), vec![]);
        assert_eq!(h.observe("n2", &log(&["p0-0", "p1-0", "p0-1"]), true), vec![]);
        assert_eq!(h.observe("n3", &log(&["p0-0", "p1-0", "p0-1", "p1-1"]), true), vec![]);
        assert_eq!(h.observe("n2", &log(&["p0-0", "p1-0", "p0-1", "p1-1"]), true), vec![]);
        assert_eq!(h.observations(), 4);
        assert_eq!(h.last_acked(), Some(2));
    }

    #[test]
    fn a_value_retried_after_an_unknown_outcome_may_appear_once_per_attempt() {
        let mut h = history();
        // p1-1's first send had an unknown outcome; the retry was acknowledged at 4, and the
        // first send took effect too, at 3.
        h.sent(&b("p1-1"));
        h.acked(4, b("p1-1"));
        assert_eq!(h.observe("n1", &log(&["p0-0", "p1-0", "p0-1", "p1-1", "p1-1"]), true), vec![]);
        assert_eq!(h.retries(), 1);
        assert_eq!(h.extra_copies(), 1);
        // A third copy is one more than was ever sent.
        let v = h.observe("n2", &log(&["p0-0", "p1-0", "p0-1", "p1-1", "p1-1", "p1-1"]), true);
        assert!(matches!(&v[..], [Violation::Duplicated { appearances: 3, attempts: 2, .. }]), "{v:?}");
    }

    #[test]
    fn a_gap_in_offsets_fails() {
        let mut h = history();
        let records = vec![(0, b("p0-0")), (2, b("p0-1"))];
        let v = h.observe("n1", &records, false);
        assert!(matches!(&v[..], [Violation::Gap { expected: 1, found: 2, .. }]), "{v:?}");
        // Not starting at 0 is a gap too.
        let v = h.observe("n2", &[(1, b("p1-0"))], false);
        assert!(matches!(&v[..], [Violation::Gap { expected: 0, found: 1, .. }]), "{v:?}");
    }

    #[test]
    fn an_acknowledged_offset_missing_from_a_caught_up_node_fails() {
        let mut h = history();
        let v = h.observe("n1", &log(&["p0-0", "p1-0"]), true);
        assert!(matches!(&v[..], [Violation::Lost { offset: 2, records: 2, .. }]), "{v:?}");
    }

    #[test]
    fn an_acknowledged_offset_holding_another_value_fails() {
        let mut h = history();
        let v = h.observe("n1", &log(&["p0-0", "p1-1", "p0-1"]), true);
        assert!(matches!(&v[..], [Violation::Changed { offset: 1, .. }]), "{v:?}");
    }

    #[test]
    fn two_nodes_holding_different_values_at_one_offset_fails() {
        let mut h = history();
        h.sent(&b("p2-0"));
        assert_eq!(h.observe("n1", &log(&["p0-0", "p1-0", "p0-1", "p1-1"]), true), vec![]);
        let v = h.observe("n2", &log(&["p0-0", "p1-0", "p0-1", "p2-0"]), true);
        assert!(matches!(&v[..], [Violation::Diverged { offset: 3, .. }]), "{v:?}");
    }

    #[test]
    fn one_node_holding_different_values_at_one_offset_over_time_fails() {
        let mut h = history();
        h.sent(&b("p2-0"));
        assert_eq!(h.observe("n1", &log(&["p0-0", "p1-0", "p0-1", "p1-1"]), true), vec![]);
        let v = h.observe("n1", &log(&["p0-0", "p1-0", "p0-1", "p2-0", "p1-1"]), true);
        assert!(matches!(&v[..], [Violation::Diverged { offset: 3, .. }, ..]), "{v:?}");
    }

    #[test]
    fn an_acknowledgement_contradicting_what_was_seen_fails() {
        let mut h = history();
        h.sent(&b("p2-0"));
        assert_eq!(h.observe("n1", &log(&["p0-0", "p1-0", "p0-1", "p1-1"]), true), vec![]);
        // Offset 3 was seen holding p1-1, and then a producer is told p2-0 is there.
        h.acked(3, b("p2-0"));
        let v = h.observe("n2", &log(&["p0-0", "p1-0", "p0-1"]), false);
        assert!(matches!(&v[..], [Violation::Diverged { offset: 3, .. }]), "{v:?}");
    }

    #[test]
    fn two_acknowledgements_of_one_offset_with_different_values_fail() {
        let mut h = history();
        h.sent(&b("p2-0"));
        h.acked(2, b("p2-0"));
        let v = h.observe("n1", &log(&["p0-0", "p1-0", "p0-1"]), true);
        assert!(matches!(&v[..], [Violation::AckConflict { offset: 2, .. }]), "{v:?}");
    }

    #[test]
    fn a_value_appearing_twice_without_a_retry_fails() {
        let mut h = history();
        let v = h.observe("n1", &log(&["p0-0", "p1-0", "p0-1", "p0-1"]), true);
        assert!(matches!(&v[..], [Violation::Duplicated { appearances: 2, attempts: 1, .. }]), "{v:?}");
    }

    #[test]
    fn a_value_never_sent_fails() {
        let mut h = history();
        let v = h.observe("n1", &log(&["p0-0", "p1-0", "p0-1", "stranger"]), true);
        assert!(matches!(&v[..], [Violation::Duplicated { appearances: 1, attempts: 0, .. }]), "{v:?}");
    }
}
