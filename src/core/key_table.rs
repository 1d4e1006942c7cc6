//! A shard's keys, kept in parts by hash value so that SCAN can resume where it stopped whatever
//! the table did in between.
//!
//! One hashbrown table cannot do that. It puts a key in the first free slot along a probe
//! sequence that starts at the key's hash, and growing, shrinking or clearing out deleted slots
//! moves every key to a new slot: a cursor naming a slot means nothing afterwards, and a cursor
//! naming a hash value would need a walk of the whole table to find the keys after it.
//!
//! Here a key's part depends on its hash alone. Each key has a 24-bit *position*, bits 33 to 56
//! of its hash, and part `j` of the `2^depth` parts holds the keys whose position begins with
//! the `depth` bits of `j`: the parts cut the positions into ranges, in order. When the keys
//! outgrow the parts, every part splits into its lower and upper halves; when they thin out,
//! neighbouring halves merge back. The ranges nest, so "every key positioned before `p`" names
//! the same keys at any depth, which is what a cursor needs. Bits 33 to 56 are used because
//! hashbrown reads the low bits (the slot a probe starts at) and the top seven (the tag it
//! compares) inside each part: those stay as varied there as in one big table. Bits 17 to 32
//! name the shard (see `shard::KeyHash`), the same for every key of a table. 2^24 parts of 256
//! keys are more than a shard will ever hold.
//!
//! A part holds 50 to 200 keys on average, so one is visited whole in a few microseconds. Smaller
//! parts would make SCAN's steps finer but the directory of parts bigger, and a lookup reads its
//! part's entry there before the part itself: at this size the directory of a shard of a million
//! keys is about 200 KiB, and a lookup costs a few dozen instructions more than in one table. A
//! split or a merge rehashes every key of the shard, once per doubling or halving of the key
//! count: O(1) amortized, and a pause of the same order as hashbrown's own growth of one big
//! table.

use hashbrown::HashTable;
use hashbrown::hash_table;

/// Bits of a key's position. A SCAN cursor holds one and a shard index (see `LockCore::scan`).
pub(crate) const POSITION_BITS: u32 = 24;
/// Where the position sits in the hash: above the bits hashbrown takes a slot from and the
/// shard's, below the seven it tags slots with.
const POSITION_SHIFT: u32 = 33;
/// The parts split when they hold this many keys on average.
const SPLIT_AT: usize = 200;
/// Room each half of a split part gets: the most a table of 256 slots holds (hashbrown fills
/// them to seven eighths). A half starts with about 100 keys and the split comes at 200 on
/// average, so few parts outgrow their room in between: each key is moved once per doubling of
/// the shard (by the split), not twice (by its part's own growth, then by the split), at about
/// the same bytes a key as halves sized to what they hold, which outgrow them.
const SPLIT_ROOM: usize = 224;
/// And merge when they hold fewer than this: four times fewer, so that a key count going up and
/// down around one threshold does not split and merge over and over.
const MERGE_BELOW: usize = 50;
/// A part is shrunk once fewer than a quarter of its room is used, beyond this much room.
const PART_SLACK: usize = 16;

/// The position of the key with `hash` (see the module docs).
pub(crate) fn position(hash: u64) -> u32 {
    ((hash >> POSITION_SHIFT) & ((1 << POSITION_BITS) - 1)) as u32
}

/// What one SCAN call may still examine: keys, and parts visited (for parts nearly empty).
#[derive(Debug)]
pub(crate) struct ScanBudget {
    keys: usize,
    parts: usize,
}

impl ScanBudget {
    /// Like Redis, which examines up to `count` keys and ten times as many buckets.
    pub(crate) fn new(count: usize) -> ScanBudget {
        ScanBudget { keys: count, parts: count.saturating_mul(10) }
    }

    fn spend(&mut self, keys: usize) {
        self.keys = self.keys.saturating_sub(keys);
        self.parts = self.parts.saturating_sub(1);
    }

    pub(crate) fn exhausted(&self) -> bool {
        self.keys == 0 || self.parts == 0
    }
}

pub(crate) struct KeyTable<T> {
    /// `2^depth` of them, in position order.
    parts: Vec<HashTable<T>>,
    depth: u32,
    len: usize,
}

impl<T> KeyTable<T> {
    pub(crate) fn new() -> KeyTable<T> {
        KeyTable { parts: vec![HashTable::new()], depth: 0, len: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn part_of(&self, hash: u64) -> usize {
        part_index(position(hash), self.depth)
    }

    #[inline]
    pub(crate) fn find(&self, hash: u64, eq: impl FnMut(&T) -> bool) -> Option<&T> {
        self.parts[self.part_of(hash)].find(hash, eq)
    }

    /// The entry of the key with `hash` that `eq` accepts. `hash_of` rehashes keys when their
    /// tables are resized (and must give each the hash it was entered with). Inlined into a
    /// shard's step, as hashbrown's lookups are.
    #[inline]
    pub(crate) fn entry(&mut self, hash: u64, eq: impl FnMut(&T) -> bool, hash_of: impl Fn(&T) -> u64) -> Entry<'_, T> {
        // Before the lookup rather than after an insert, as hashbrown reserves room: the entry
        // handed out borrows its part.
        if self.len >= self.parts.len() * SPLIT_AT && self.depth < POSITION_BITS {
            self.split(&hash_of);
        }
        let index = self.part_of(hash);
        let KeyTable { parts, len, .. } = self;
        match parts[index].entry(hash, eq, hash_of) {
            hash_table::Entry::Occupied(inner) => Entry::Occupied(OccupiedEntry { inner, len }),
            hash_table::Entry::Vacant(inner) => Entry::Vacant(VacantEntry { inner, len }),
        }
    }

    /// Call after a removal. A table that once held a million keys would otherwise keep their
    /// room after they are gone: halves merge once the parts hold fewer than [`MERGE_BELOW`]
    /// keys on average, four times fewer than a split leaves, so the next merge needs the keys
    /// halved again (O(1) amortized per removal); a part less than a quarter used is shrunk
    /// as its key goes (see [`OccupiedEntry::remove`]).
    pub(crate) fn shrink_if_sparse(&mut self, hash_of: impl Fn(&T) -> u64) {
        while self.depth > 0 && self.len < self.parts.len() * MERGE_BELOW {
            self.merge(&hash_of);
        }
    }

    /// Every part in two: its keys of the lower half of its range, then of the upper half.
    fn split(&mut self, hash_of: &impl Fn(&T) -> u64) {
        let depth = self.depth + 1;
        let mut parts = Vec::with_capacity(self.parts.len() * 2);
        for part in std::mem::take(&mut self.parts) {
            let mut lower = HashTable::with_capacity(SPLIT_ROOM);
            let mut upper = HashTable::with_capacity(SPLIT_ROOM);
            for item in part {
                let hash = hash_of(&item);
                let half = if part_index(position(hash), depth) % 2 == 1 { &mut upper } else { &mut lower };
                half.insert_unique(hash, item, hash_of);
            }
            parts.push(lower);
            parts.push(upper);
        }
        self.parts = parts;
        self.depth = depth;
    }

    /// Every pair of halves back into one part.
    fn merge(&mut self, hash_of: &impl Fn(&T) -> u64) {
        let mut parts = Vec::with_capacity(self.parts.len() / 2);
        let mut halves = std::mem::take(&mut self.parts).into_iter();
        while let (Some(lower), Some(upper)) = (halves.next(), halves.next()) {
            let items = lower.into_iter().chain(upper).map(|item| (hash_of(&item), item)).collect();
            parts.push(table_of(items, hash_of));
        }
        self.parts = parts;
        self.depth -= 1;
    }

    /// The entries that may have `hash`: with it, or tagged as it is by the table.
    pub(crate) fn iter_hash(&self, hash: u64) -> impl Iterator<Item = &T> {
        self.parts[self.part_of(hash)].iter_hash(hash)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.parts.iter().flatten()
    }

    /// Hands `visit` the keys positioned at `from` or later, whole parts at a time in position
    /// order, until `budget` runs out. Returns the position to go on from, or None once the last
    /// part has been visited.
    ///
    /// Every key positioned before the returned position that was here all along has been
    /// visited by this call or by the earlier ones that led to `from`: a part is visited whole,
    /// and which part a key is in depends only on its position, never on where the table put it.
    /// Only when parts were merged since `from` was handed out does `from` fall inside a part;
    /// the keys of that part positioned before it were visited then and are skipped.
    pub(crate) fn scan(
        &self,
        from: u32,
        hash_of: impl Fn(&T) -> u64,
        budget: &mut ScanBudget,
        mut visit: impl FnMut(&T),
    ) -> Option<u32> {
        let mut index = part_index(from, self.depth);
        let mut skip_before = (part_start(index, self.depth) < u64::from(from)).then_some(from);
        loop {
            let part = &self.parts[index];
            for item in part {
                if skip_before.is_none_or(|from| position(hash_of(item)) >= from) {
                    visit(item);
                }
            }
            budget.spend(part.len());
            skip_before = None;
            index += 1;
            if index == self.parts.len() {
                return None;
            }
            if budget.exhausted() {
                // Below 2^POSITION_BITS: `index` is not past the last part.
                return Some(part_start(index, self.depth) as u32);
            }
        }
    }

    /// Room in the parts, summed.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.parts.iter().map(HashTable::capacity).sum()
    }
}

/// The part of `2^depth` that `position` falls in.
fn part_index(position: u32, depth: u32) -> usize {
    (u64::from(position) >> (POSITION_BITS - depth)) as usize
}

/// The first position of part `index` of `2^depth`.
fn part_start(index: usize, depth: u32) -> u64 {
    (index as u64) << (POSITION_BITS - depth)
}

/// A key with its hash, while it moves between parts.
type Hashed<T> = (u64, T);

fn table_of<T>(items: Vec<Hashed<T>>, hash_of: &impl Fn(&T) -> u64) -> HashTable<T> {
    let mut table = HashTable::with_capacity(items.len());
    for (hash, item) in items {
        table.insert_unique(hash, item, hash_of);
    }
    table
}

pub(crate) enum Entry<'a, T> {
    Occupied(OccupiedEntry<'a, T>),
    Vacant(VacantEntry<'a, T>),
}

pub(crate) struct OccupiedEntry<'a, T> {
    inner: hash_table::OccupiedEntry<'a, T>,
    len: &'a mut usize,
}

impl<T> OccupiedEntry<'_, T> {
    pub(crate) fn get(&self) -> &T {
        self.inner.get()
    }

    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }

    /// Removes the key, shrinking its part once it is mostly empty; follow with
    /// [`KeyTable::shrink_if_sparse`].
    pub(crate) fn remove(self, hash_of: impl Fn(&T) -> u64) -> T {
        let (item, vacant) = self.inner.remove();
        *self.len -= 1;
        let part = vacant.into_table();
        if part.capacity() > 4 * part.len() + PART_SLACK {
            part.shrink_to(2 * part.len(), hash_of);
        }
        item
    }
}

pub(crate) struct VacantEntry<'a, T> {
    inner: hash_table::VacantEntry<'a, T>,
    len: &'a mut usize,
}

impl<'a, T> VacantEntry<'a, T> {
    pub(crate) fn insert(self, item: T) -> OccupiedEntry<'a, T> {
        *self.len += 1;
        OccupiedEntry { inner: self.inner.insert(item), len: self.len }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    use hashbrown::DefaultHashBuilder;
    use proptest::prelude::*;

    use super::*;

    struct Table {
        keys: KeyTable<u64>,
        hasher: DefaultHashBuilder,
    }

    impl Table {
        fn new() -> Table {
            Table { keys: KeyTable::new(), hasher: DefaultHashBuilder::default() }
        }

        fn hash(&self, key: u64) -> u64 {
            self.hasher.hash_one(key)
        }

        fn insert(&mut self, key: u64) {
            let hasher = &self.hasher;
            if let Entry::Vacant(entry) = self.keys.entry(hasher.hash_one(key), |k| *k == key, |k| hasher.hash_one(k)) {
                entry.insert(key);
            }
        }

        fn remove(&mut self, key: u64) {
            let hasher = &self.hasher;
            if let Entry::Occupied(entry) = self.keys.entry(hasher.hash_one(key), |k| *k == key, |k| hasher.hash_one(k))
            {
                entry.remove(|k| hasher.hash_one(k));
            }
            self.keys.shrink_if_sparse(|k| hasher.hash_one(k));
        }

        fn contains(&self, key: u64) -> bool {
            self.keys.find(self.hash(key), |k| *k == key).is_some()
        }

        /// One SCAN step: (keys visited, where to go on).
        fn scan(&self, from: u32, count: usize) -> (Vec<u64>, Option<u32>) {
            let mut seen = Vec::new();
            let mut budget = ScanBudget::new(count);
            let next = self.keys.scan(from, |k| self.hasher.hash_one(k), &mut budget, |k| seen.push(*k));
            (seen, next)
        }
    }

    #[test]
    fn parts_split_as_keys_come_and_merge_as_they_go() {
        let mut table = Table::new();
        for key in 0..10_000 {
            table.insert(key);
        }
        assert_eq!(table.keys.len(), 10_000);
        assert!(table.keys.parts.len() >= 10_000 / SPLIT_AT, "{} parts", table.keys.parts.len());
        assert!((0..10_000).all(|key| table.contains(key)));
        assert!(!table.contains(10_000));
        let grown = table.keys.capacity();
        for key in 0..9_990 {
            table.remove(key);
        }
        assert_eq!((table.keys.len(), table.keys.parts.len()), (10, 1));
        assert!((9_990..10_000).all(|key| table.contains(key)));
        assert!(table.keys.capacity() < grown / 100, "{} of {grown} kept", table.keys.capacity());
    }

    #[test]
    fn every_key_is_in_the_part_its_position_names() {
        let mut table = Table::new();
        for key in 0..5_000 {
            table.insert(key);
        }
        for (index, part) in table.keys.parts.iter().enumerate() {
            for key in part {
                assert_eq!(part_index(position(table.hash(*key)), table.keys.depth), index);
            }
        }
    }

    #[test]
    fn a_scan_visits_each_key_once_in_position_order_with_bounded_steps() {
        let mut table = Table::new();
        for key in 0..3_000 {
            table.insert(key);
        }
        let (mut from, mut seen, mut steps) = (0, Vec::new(), 0);
        loop {
            let (keys, next) = table.scan(from, 10);
            assert!(keys.len() < 10 + 4 * SPLIT_AT, "one step visited {}", keys.len());
            seen.extend(keys);
            steps += 1;
            match next {
                Some(next) => {
                    assert!(next > from);
                    from = next;
                }
                None => break,
            }
        }
        let positions: Vec<u32> = seen.iter().map(|key| position(table.hash(*key))).collect();
        assert!(positions.is_sorted_by(|a, b| part_index(*a, table.keys.depth) <= part_index(*b, table.keys.depth)));
        seen.sort_unstable();
        assert_eq!(seen, (0..3_000).collect::<Vec<_>>());
        assert!(steps > 3_000 / (10 + 4 * SPLIT_AT));
    }

    #[test]
    fn an_empty_table_is_scanned_in_one_step() {
        assert_eq!(Table::new().scan(0, 10), (Vec::new(), None));
    }

    #[test]
    fn a_scan_goes_on_across_splits_and_merges() {
        let mut table = Table::new();
        for key in 0..1_000 {
            table.insert(key);
        }
        let (mut seen, mut from) = table.scan(0, 10);
        let depth = table.keys.depth;
        // Twenty times the keys: the parts split four times over.
        for key in 1_000..20_000 {
            table.insert(key);
        }
        assert!(table.keys.depth >= depth + 4);
        for _ in 0..10 {
            let (keys, next) = table.scan(from.expect("not done yet"), 10);
            seen.extend(keys);
            from = next;
        }
        // Back to a handful: merged down to one part, in which the cursor now falls midway.
        for key in 1_000..20_000 {
            table.remove(key);
        }
        for key in 0..990 {
            table.remove(key);
        }
        assert_eq!(table.keys.depth, 0);
        while let Some(at) = from {
            let (keys, next) = table.scan(at, 10);
            seen.extend(keys);
            from = next;
        }
        let visited: HashSet<u64> = seen.iter().copied().collect();
        assert_eq!(visited.len(), seen.len(), "a key visited twice");
        assert!((990..1_000).all(|key| visited.contains(&key)));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16),
        Remove(u16),
        /// Many keys at once, for the parts to split and merge while a scan goes on.
        InsertMany(u16, u16),
        RemoveMany(u16, u16),
        Scan(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..8_192u16).prop_map(Op::Insert),
            3 => (0..8_192u16).prop_map(Op::Remove),
            1 => (0..8_192u16, 1..3_000u16).prop_map(|(from, count)| Op::InsertMany(from, count)),
            1 => (0..8_192u16, 1..3_000u16).prop_map(|(from, count)| Op::RemoveMany(from, count)),
            2 => (1..40u8).prop_map(Op::Scan),
        ]
    }

    fn range(from: u16, count: u16) -> impl Iterator<Item = u64> {
        (u64::from(from)..).take(usize::from(count))
    }

    proptest! {
        /// Redis's guarantee, while keys come and go and the parts split and merge: a key present
        /// from the first step to the last is visited; and no key is visited twice.
        #[test]
        fn a_scan_visits_every_key_present_throughout(
            initial in prop::collection::vec(0..8_192u16, 0..3_000),
            ops in prop::collection::vec(op(), 0..400),
        ) {
            let mut table = Table::new();
            for key in &initial {
                table.insert(u64::from(*key));
            }
            let mut throughout: HashSet<u64> = initial.iter().map(|key| u64::from(*key)).collect();
            let mut seen = Vec::new();
            let mut from = Some(0);
            for op in ops {
                match op {
                    Op::Insert(key) => table.insert(u64::from(key)),
                    Op::Remove(key) => {
                        table.remove(u64::from(key));
                        throughout.remove(&u64::from(key));
                    }
                    Op::InsertMany(from, count) => range(from, count).for_each(|key| table.insert(key)),
                    Op::RemoveMany(from, count) => {
                        for key in range(from, count) {
                            table.remove(key);
                            throughout.remove(&key);
                        }
                    }
                    Op::Scan(count) => {
                        if let Some(at) = from {
                            let (keys, next) = table.scan(at, usize::from(count));
                            seen.extend(keys);
                            from = next;
                        }
                    }
                }
            }
            while let Some(at) = from {
                let (keys, next) = table.scan(at, 10);
                seen.extend(keys);
                from = next;
            }
            let visited: HashSet<u64> = seen.iter().copied().collect();
            prop_assert_eq!(visited.len(), seen.len(), "a key visited twice");
            let missed: Vec<&u64> = throughout.difference(&visited).collect();
            prop_assert!(missed.is_empty(), "missed {missed:?}");
        }
    }
}
