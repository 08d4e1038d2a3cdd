//! Offset translation: a record's offset counts data entries only, while indexes count every
//! entry (a cluster also writes blank and membership entries). The map lists the indexes of
//! the non-data entries, which are rare, so translating either way is a binary search.
//!
//! Redpanda's offset translator is the model. Invariants: `gaps` is strictly increasing;
//! `below` counts the non-data entries before the first listed one that were forgotten
//! (purged or dropped by retention) and are below every index the log still holds.

/// The non-data entries of a log, for translating between offsets and indexes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct OffsetMap {
    below: u64,
    gaps: Vec<u64>,
}

impl OffsetMap {
    pub(crate) fn new(below: u64, mut gaps: Vec<u64>) -> OffsetMap {
        gaps.sort_unstable();
        gaps.dedup();
        OffsetMap { below, gaps }
    }

    /// Forgotten non-data entries, and the listed ones (for the metadata file).
    pub(crate) fn parts(&self) -> (u64, &[u64]) {
        (self.below, &self.gaps)
    }

    /// Non-data entries before `index`.
    fn before(&self, index: u64) -> u64 {
        self.below + self.gaps.partition_point(|&gap| gap < index) as u64
    }

    /// The offset of the data entry at `index`; for a non-data entry, the offset the next
    /// data entry gets.
    pub(crate) fn offset_of(&self, index: u64) -> u64 {
        index - self.before(index)
    }

    /// The index of the data entry with `offset` (which must not be below the forgotten
    /// entries: the log's lowest offset or later).
    pub(crate) fn index_of(&self, offset: u64) -> u64 {
        let base = offset + self.below;
        // Gap m comes before the entry iff gaps[m] - m <= base; that is monotonic in m.
        let (mut low, mut high) = (0, self.gaps.len());
        while low < high {
            let m = (low + high) / 2;
            if self.gaps[m] - m as u64 <= base {
                low = m + 1;
            } else {
                high = m;
            }
        }
        base + low as u64
    }

    #[cfg(test)]
    fn is_gap(&self, index: u64) -> bool {
        self.gaps.binary_search(&index).is_ok()
    }

    /// Records a non-data entry appended at `index` (past every listed one).
    pub(crate) fn push(&mut self, index: u64) {
        assert!(self.gaps.last().is_none_or(|&last| last < index), "gaps are appended in order");
        self.gaps.push(index);
    }

    /// Forgets the entries after `index` (suffix truncation, or a failed write).
    pub(crate) fn truncate_from(&mut self, next: u64) {
        let keep = self.gaps.partition_point(|&gap| gap < next);
        self.gaps.truncate(keep);
    }

    /// Moves the entries below `first` into the forgotten count (purge, retention).
    pub(crate) fn forget_below(&mut self, first: u64) {
        let forgotten = self.gaps.partition_point(|&gap| gap < first);
        self.below += forgotten as u64;
        self.gaps.drain(..forgotten);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every index of a log whose non-data entries are `gaps`, with its offset if data.
    fn layout(gaps: &[u64], len: u64) -> Vec<(u64, Option<u64>)> {
        let mut offset = 0;
        (0..len)
            .map(|index| {
                if gaps.contains(&index) {
                    (index, None)
                } else {
                    offset += 1;
                    (index, Some(offset - 1))
                }
            })
            .collect()
    }

    #[test]
    fn translation_agrees_with_counting_both_ways() {
        for gaps in [vec![], vec![0], vec![2, 5], vec![0, 1, 2, 7], vec![3, 4, 9]] {
            let map = OffsetMap::new(0, gaps.clone());
            for (index, offset) in layout(&gaps, 12) {
                assert_eq!(map.is_gap(index), offset.is_none());
                if let Some(offset) = offset {
                    assert_eq!(map.offset_of(index), offset, "gaps {gaps:?} index {index}");
                    assert_eq!(map.index_of(offset), index, "gaps {gaps:?} offset {offset}");
                }
            }
        }
    }

    #[test]
    fn forgetting_and_truncating_keep_the_remaining_translation() {
        let gaps = vec![0, 3, 6, 8];
        let full = OffsetMap::new(0, gaps.clone());
        let mut map = full.clone();
        map.forget_below(5);
        assert_eq!(map.parts(), (2, &[6, 8][..]));
        for index in [5, 7, 9, 10] {
            assert_eq!(map.offset_of(index), full.offset_of(index));
            assert_eq!(map.index_of(full.offset_of(index)), index);
        }
        map.truncate_from(7);
        assert_eq!(map.parts(), (2, &[6][..]));
        map.push(7);
        assert!(map.is_gap(7) && !map.is_gap(8));
    }
}
