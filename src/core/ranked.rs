//! An ordered map from `u64` to values that also answers "how many keys are smaller" (the rank),
//! all in O(log n) worst case: an AVL tree whose nodes count their subtree.
//!
//! Why this and not the alternatives, for a queue that only ever appends (keys are join sequence
//! numbers) but leaves from anywhere:
//! - a `VecDeque` needs O(n) to find a rank or remove from the middle;
//! - sequence numbers with a Fenwick tree index a range of numbers, not the live entries: leaving
//!   from the middle leaves holes, so the range (and the memory) grows with every join until the
//!   numbers are compacted, and compacting is an O(n) pause on the request path;
//! - a treap or skip list needs randomness (the core reads none), and with predictable priorities
//!   a hostile client choosing who leaves can unbalance it.
//!
//! The AVL tree's height stays below 1.44 log2(n + 2) whatever the order of operations, so the
//! recursion below is at most a few dozen frames deep even for millions of entries.

use std::cmp::Ordering;

type Link<V> = Option<Box<Node<V>>>;

#[derive(Debug)]
struct Node<V> {
    key: u64,
    value: V,
    height: u8,
    /// Entries in this subtree, this node included.
    size: u32,
    left: Link<V>,
    right: Link<V>,
}

#[derive(Debug)]
pub(crate) struct RankedMap<V> {
    root: Link<V>,
}

impl<V> Default for RankedMap<V> {
    fn default() -> Self {
        RankedMap { root: None }
    }
}

fn height<V>(link: &Link<V>) -> u8 {
    link.as_ref().map_or(0, |node| node.height)
}

fn size<V>(link: &Link<V>) -> u32 {
    link.as_ref().map_or(0, |node| node.size)
}

impl<V> Node<V> {
    fn leaf(key: u64, value: V) -> Box<Node<V>> {
        Box::new(Node { key, value, height: 1, size: 1, left: None, right: None })
    }

    fn refresh(&mut self) {
        self.height = 1 + height(&self.left).max(height(&self.right));
        self.size = 1 + size(&self.left) + size(&self.right);
    }
}

fn rotate_right<V>(mut node: Box<Node<V>>) -> Box<Node<V>> {
    let Some(mut pivot) = node.left.take() else {
        return node;
    };
    node.left = pivot.right.take();
    node.refresh();
    pivot.right = Some(node);
    pivot.refresh();
    pivot
}

fn rotate_left<V>(mut node: Box<Node<V>>) -> Box<Node<V>> {
    let Some(mut pivot) = node.right.take() else {
        return node;
    };
    node.right = pivot.left.take();
    node.refresh();
    pivot.left = Some(node);
    pivot.refresh();
    pivot
}

/// Restores the AVL balance of a node whose subtrees differ in height by at most two.
fn rebalance<V>(mut node: Box<Node<V>>) -> Box<Node<V>> {
    node.refresh();
    let left = i16::from(height(&node.left));
    let right = i16::from(height(&node.right));
    if left > right + 1 {
        if let Some(child) = node.left.take() {
            let inner_heavy = height(&child.right) > height(&child.left);
            node.left = Some(if inner_heavy { rotate_left(child) } else { child });
        }
        return rotate_right(node);
    }
    if right > left + 1 {
        if let Some(child) = node.right.take() {
            let inner_heavy = height(&child.left) > height(&child.right);
            node.right = Some(if inner_heavy { rotate_right(child) } else { child });
        }
        return rotate_left(node);
    }
    node
}

fn insert<V>(link: Link<V>, key: u64, value: V) -> Box<Node<V>> {
    let Some(mut node) = link else {
        return Node::leaf(key, value);
    };
    match key.cmp(&node.key) {
        Ordering::Less => node.left = Some(insert(node.left.take(), key, value)),
        Ordering::Greater => node.right = Some(insert(node.right.take(), key, value)),
        Ordering::Equal => {
            node.value = value;
            return node;
        }
    }
    rebalance(node)
}

/// Detaches the smallest entry of a subtree; returns it and what remains.
fn take_min<V>(mut node: Box<Node<V>>) -> (Box<Node<V>>, Link<V>) {
    match node.left.take() {
        None => {
            let rest = node.right.take();
            (node, rest)
        }
        Some(left) => {
            let (min, rest) = take_min(left);
            node.left = rest;
            (min, Some(rebalance(node)))
        }
    }
}

fn remove<V>(link: &mut Link<V>, key: u64) -> Option<V> {
    let mut node = link.take()?;
    let removed = match key.cmp(&node.key) {
        Ordering::Less => remove(&mut node.left, key),
        Ordering::Greater => remove(&mut node.right, key),
        Ordering::Equal => {
            let Node { value, left, right, .. } = *node;
            *link = match (left, right) {
                (left, None) => left,
                (None, right) => right,
                (left, Some(right)) => {
                    let (mut successor, rest) = take_min(right);
                    successor.left = left;
                    successor.right = rest;
                    Some(rebalance(successor))
                }
            };
            return Some(value);
        }
    };
    *link = Some(rebalance(node));
    removed
}

impl<V> RankedMap<V> {
    /// The allocation each entry takes (its node).
    pub(crate) const ENTRY_BYTES: usize = size_of::<Node<V>>();

    pub(crate) fn len(&self) -> usize {
        size(&self.root) as usize
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.root.is_none()
    }

    /// Adds `key` (replacing its value if present).
    pub(crate) fn insert(&mut self, key: u64, value: V) {
        self.root = Some(insert(self.root.take(), key, value));
    }

    pub(crate) fn remove(&mut self, key: u64) -> Option<V> {
        remove(&mut self.root, key)
    }

    pub(crate) fn pop_first(&mut self) -> Option<(u64, V)> {
        let (min, rest) = take_min(self.root.take()?);
        self.root = rest;
        Some((min.key, min.value))
    }

    pub(crate) fn get(&self, key: u64) -> Option<&V> {
        let mut link = &self.root;
        while let Some(node) = link {
            link = match key.cmp(&node.key) {
                Ordering::Less => &node.left,
                Ordering::Greater => &node.right,
                Ordering::Equal => return Some(&node.value),
            };
        }
        None
    }

    pub(crate) fn get_mut(&mut self, key: u64) -> Option<&mut V> {
        let mut link = &mut self.root;
        while let Some(node) = link {
            link = match key.cmp(&node.key) {
                Ordering::Less => &mut node.left,
                Ordering::Greater => &mut node.right,
                Ordering::Equal => return Some(&mut node.value),
            };
        }
        None
    }

    /// How many keys are smaller than `key`.
    pub(crate) fn rank(&self, key: u64) -> usize {
        let mut smaller = 0;
        let mut link = &self.root;
        while let Some(node) = link {
            link = match key.cmp(&node.key) {
                Ordering::Less => &node.left,
                Ordering::Greater => {
                    smaller += size(&node.left) + 1;
                    &node.right
                }
                Ordering::Equal => return (smaller + size(&node.left)) as usize,
            };
        }
        smaller as usize
    }

    /// The entries in key order.
    pub(crate) fn iter(&self) -> Iter<'_, V> {
        let mut iter = Iter { path: Vec::new() };
        iter.descend_left(&self.root);
        iter
    }

    /// The values in key order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, value)| value)
    }

    /// Empties the map, handing out its values in key order.
    pub(crate) fn drain(&mut self) -> Drain<V> {
        let mut drain = Drain { path: Vec::new() };
        drain.descend_left(self.root.take());
        drain
    }
}

/// In-order traversal; the path holds the nodes whose left side is done.
pub(crate) struct Iter<'a, V> {
    path: Vec<&'a Node<V>>,
}

impl<'a, V> Iter<'a, V> {
    fn descend_left(&mut self, mut link: &'a Link<V>) {
        while let Some(node) = link {
            self.path.push(node);
            link = &node.left;
        }
    }
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (u64, &'a V);

    fn next(&mut self) -> Option<(u64, &'a V)> {
        let node = self.path.pop()?;
        self.descend_left(&node.right);
        Some((node.key, &node.value))
    }
}

pub(crate) struct Drain<V> {
    path: Vec<Box<Node<V>>>,
}

impl<V> Drain<V> {
    fn descend_left(&mut self, mut link: Link<V>) {
        while let Some(mut node) = link {
            link = node.left.take();
            self.path.push(node);
        }
    }
}

impl<V> Iterator for Drain<V> {
    type Item = V;

    fn next(&mut self) -> Option<V> {
        let mut node = self.path.pop()?;
        self.descend_left(node.right.take());
        Some(node.value)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn check_shape<V>(link: &Link<V>) -> (u8, u32) {
        let Some(node) = link else {
            return (0, 0);
        };
        let (left_height, left_size) = check_shape(&node.left);
        let (right_height, right_size) = check_shape(&node.right);
        assert!(left_height.abs_diff(right_height) <= 1, "unbalanced at {}", node.key);
        assert_eq!(node.height, 1 + left_height.max(right_height));
        assert_eq!(node.size, 1 + left_size + right_size);
        (node.height, node.size)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append,
        Remove(usize),
        PopFirst,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![4 => Just(Op::Append), 3 => any::<usize>().prop_map(Op::Remove), 1 => Just(Op::PopFirst)]
    }

    proptest! {
        /// Appends and removals from anywhere, checked against a BTreeMap after every step:
        /// same entries in the same order, ranks, and a balanced tree.
        #[test]
        fn behaves_like_an_ordered_map_with_ranks(ops in prop::collection::vec(op(), 1..400)) {
            let mut map = RankedMap::default();
            let mut model = BTreeMap::new();
            let mut next = 0u64;
            for op in ops {
                match op {
                    Op::Append => {
                        map.insert(next, next * 10);
                        model.insert(next, next * 10);
                        next += 1;
                    }
                    Op::Remove(pick) => {
                        let key = model.keys().copied().nth(pick % model.len().max(1)).unwrap_or(next);
                        prop_assert_eq!(map.remove(key), model.remove(&key));
                    }
                    Op::PopFirst => prop_assert_eq!(map.pop_first(), model.pop_first()),
                }
                check_shape(&map.root);
                prop_assert_eq!(map.len(), model.len());
                prop_assert!(map.values().eq(model.values()));
                for (rank, key) in model.keys().enumerate() {
                    prop_assert_eq!(map.rank(*key), rank);
                    prop_assert_eq!(map.get(*key), model.get(key));
                }
            }
            prop_assert!(map.drain().eq(model.into_values()));
            prop_assert!(map.is_empty());
        }
    }

    #[test]
    fn a_million_appends_stay_shallow() {
        let mut map = RankedMap::default();
        for key in 0..1_000_000u64 {
            map.insert(key, ());
        }
        // 1.44 log2(n + 2) bounds an AVL tree's height: 28.7 for a million entries.
        assert!(height(&map.root) <= 28, "height {}", height(&map.root));
        assert_eq!(map.rank(500_000), 500_000);
        for key in (0..1_000_000u64).step_by(2) {
            map.remove(key);
        }
        assert_eq!(map.rank(500_001), 250_000);
        assert!(height(&map.root) <= 28);
    }
}
