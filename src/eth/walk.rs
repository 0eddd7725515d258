//! The walk behind `eth state-root --datadir`: the state a sync stored, read node by node
//! from the shards' stores on demand, in bounded memory.
//!
//! The walk is independent of the sync engines. It starts at the root the sync report
//! names and goes depth first, in key order, with an explicit stack whose size is bounded
//! by the trie's depth (at most 64 levels of at most 16 children), never by the number of
//! nodes. Every node read is checked against the hash that referenced it (keccak); a node
//! that is missing or does not match stops the walk with one error naming it. Every
//! account's storage trie is walked the same way from the account's storage root, and
//! every contract code is read and its keccak checked. Independently of the hashes, the
//! leaves found are fed in key order to a streaming trie builder ([`StackTrie`]) that
//! keeps only the rightmost path of the trie it rebuilds: the storage roots and the state
//! root are recomputed from the leaves alone.

use alloy_primitives::{keccak256, Bytes, B256};
use catchup_eth::trie::{node_contents, Nibbles, Node, NodeRef};
use catchup_eth::types::Account;

use crate::eth::export::ExportError;

/// keccak of the empty byte string: the code hash of an account without code.
const EMPTY_CODE_HASH: B256 =
    alloy_primitives::b256!("c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470");
/// Root of an empty trie.
const EMPTY_ROOT: B256 =
    alloy_primitives::b256!("56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421");
/// Nibbles of a key of the state and storage tries (32-byte hashes).
const KEY_NIBBLES: usize = 64;
/// Most entries the walk's stack may hold: 64 levels of a branch's 16 children (and the
/// leaves embedded in them), with room to spare.
pub const MAX_STACK_ENTRIES: usize = 64 * 17 * 2;

/// Where the walk reads nodes and codes from: the shards' stores of a data directory.
pub trait NodeReader {
    /// The trie node `hash`, if stored (an I/O or checksum error is a one-line message).
    fn node(&self, hash: &B256) -> Result<Option<Vec<u8>>, String>;
    /// The contract code `hash`, if stored.
    fn code(&self, hash: &B256) -> Result<Option<Vec<u8>>, String>;
}

/// What the walk found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Walked {
    /// The state root rebuilt from the leaves.
    pub computed: B256,
    pub accounts: u64,
    pub storage_slots: u64,
    pub contracts: u64,
    /// Hash-referenced nodes read and checked (state and storage tries).
    pub nodes_checked: u64,
    /// The largest the walk's stack grew (entries).
    pub max_stack_entries: usize,
}

/// A node of the streaming builder: only the rightmost path is open; everything left of
/// it is folded into a reference.
#[derive(Debug)]
enum St {
    Empty,
    Leaf(Vec<u8>, Bytes),
    Ext(Vec<u8>, Box<St>),
    Branch(Box<[St; 16]>),
    Done(NodeRef),
}

fn empty_children() -> Box<[St; 16]> {
    Box::new(std::array::from_fn(|_| St::Empty))
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl St {
    /// Fold this subtree into its reference (embedded when its RLP is shorter than 32
    /// bytes).
    fn fold(&mut self) {
        if matches!(self, St::Empty | St::Done(_)) {
            return;
        }
        let rlp = self.encode();
        *self = St::Done(NodeRef::for_node(&rlp));
    }

    fn child_ref(&mut self) -> Option<NodeRef> {
        self.fold();
        match self {
            St::Done(r) => Some(r.clone()),
            _ => None,
        }
    }

    /// The RLP of this subtree's top node (children folded).
    fn encode(&mut self) -> Vec<u8> {
        match self {
            St::Empty => Vec::new(),
            St::Leaf(path, value) => Node::Leaf {
                path: Nibbles(path.clone()),
                value: value.clone(),
            }
            .encode(),
            St::Ext(path, child) => {
                let child = child.child_ref().expect("an extension has a child");
                Node::Extension {
                    path: Nibbles(path.clone()),
                    child,
                }
                .encode()
            }
            St::Branch(children) => {
                let mut refs: Box<[Option<NodeRef>; 16]> = Box::default();
                for (r, c) in refs.iter_mut().zip(children.iter_mut()) {
                    *r = c.child_ref();
                }
                Node::Branch {
                    children: refs,
                    value: None,
                }
                .encode()
            }
            St::Done(NodeRef::Embedded(b)) => b.to_vec(),
            St::Done(NodeRef::Hash(_)) => unreachable!("a folded node is not re-encoded"),
        }
    }

    /// Insert `key` (the nibbles left below this node), larger than every key inserted.
    fn insert(&mut self, key: &[u8], value: Bytes) {
        match self {
            St::Empty => *self = St::Leaf(key.to_vec(), value),
            St::Branch(children) => {
                let n = key[0] as usize;
                // Keys arrive in order: every child left of this one is complete.
                for c in children[..n].iter_mut() {
                    c.fold();
                }
                children[n].insert(&key[1..], value);
            }
            St::Ext(path, child) if common_prefix(path, key) == path.len() => {
                let cp = path.len();
                child.insert(&key[cp..], value);
            }
            St::Leaf(path, _) | St::Ext(path, _) => {
                let cp = common_prefix(path, key);
                // Split at `cp`: the old subtree (smaller) goes left, the new leaf right.
                let old = std::mem::replace(self, St::Empty);
                let mut children = empty_children();
                let (old_nibble, mut old_side) = match old {
                    St::Leaf(p, v) => (p[cp], St::Leaf(p[cp + 1..].to_vec(), v)),
                    St::Ext(p, child) if cp + 1 == p.len() => (p[cp], *child),
                    St::Ext(p, child) => (p[cp], St::Ext(p[cp + 1..].to_vec(), child)),
                    _ => unreachable!(),
                };
                old_side.fold();
                children[old_nibble as usize] = old_side;
                children[key[cp] as usize] = St::Leaf(key[cp + 1..].to_vec(), value);
                let branch = St::Branch(children);
                *self = if cp > 0 {
                    St::Ext(key[..cp].to_vec(), Box::new(branch))
                } else {
                    branch
                };
            }
            St::Done(_) => unreachable!("no key is inserted under a folded node"),
        }
    }
}

/// The root of a trie rebuilt from its leaves fed in strictly increasing key order, in
/// memory bounded by the key length (the rightmost path only).
pub struct StackTrie {
    top: St,
    last: Option<Vec<u8>>,
}

impl Default for StackTrie {
    fn default() -> Self {
        Self::new()
    }
}

impl StackTrie {
    pub fn new() -> StackTrie {
        StackTrie {
            top: St::Empty,
            last: None,
        }
    }

    /// Add a leaf (key as nibbles; all keys the same length); false when the key is not
    /// larger than the previous one or the value is empty.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) -> bool {
        if value.is_empty() || self.last.as_deref().is_some_and(|l| l >= key) {
            return false;
        }
        if let Some(l) = &self.last {
            if l.len() != key.len() {
                return false;
            }
        }
        self.top.insert(key, Bytes::copy_from_slice(value));
        self.last = Some(key.to_vec());
        true
    }

    /// The root of what was inserted.
    pub fn root(mut self) -> B256 {
        if matches!(self.top, St::Empty) {
            return EMPTY_ROOT;
        }
        keccak256(self.top.encode())
    }
}

/// What the walk does with each leaf (full path, value).
pub type OnLeaf<'a> = dyn FnMut(&Nibbles, &[u8]) -> Result<(), ExportError> + 'a;

/// One entry of the walk's stack: a node to read, or a leaf to hand out.
enum Entry {
    Node(B256, Nibbles),
    Leaf(Nibbles, Bytes),
}

fn entry_path(e: &Entry) -> &[u8] {
    match e {
        Entry::Node(_, p) | Entry::Leaf(p, _) => p.as_slice(),
    }
}

/// Walk the trie at `root` depth first in key order: every node read from `src` and its
/// keccak checked, each leaf (64-nibble key, value) given to `leaf` in increasing key
/// order. `state_root` names the state in errors.
pub fn walk_trie(
    src: &dyn NodeReader,
    state_root: B256,
    root: B256,
    stats: &mut Walked,
    leaf: &mut OnLeaf<'_>,
) -> Result<(), ExportError> {
    if root == EMPTY_ROOT {
        return Ok(());
    }
    let mut stack = vec![Entry::Node(root, Nibbles::new())];
    let mut children: Vec<Entry> = Vec::with_capacity(32);
    while let Some(e) = stack.pop() {
        let (hash, path) = match e {
            Entry::Leaf(p, v) => {
                leaf(&p, &v)?;
                continue;
            }
            Entry::Node(h, p) => (h, p),
        };
        let missing = || ExportError::MissingNode {
            root: state_root,
            node: hash,
            path: hex::encode(path.as_slice()),
        };
        let rlp = src
            .node(&hash)
            .map_err(|what| ExportError::BadNode { node: hash, what })?
            .ok_or_else(missing)?;
        let got = keccak256(&rlp);
        if got != hash {
            return Err(ExportError::BadNode {
                node: hash,
                what: format!(
                    "stored node's keccak is {got:#x} (under path {}): the store is damaged",
                    hex::encode(path.as_slice())
                ),
            });
        }
        stats.nodes_checked += 1;
        let c = node_contents(&rlp, &path).map_err(|e| ExportError::BadNode {
            node: hash,
            what: e.to_string(),
        })?;
        children.clear();
        for (p, v) in c.leaves {
            if p.len() != KEY_NIBBLES {
                return Err(ExportError::BadNode {
                    node: hash,
                    what: format!("a leaf path of {} nibbles", p.len()),
                });
            }
            children.push(Entry::Leaf(p, v));
        }
        for (h, p) in c.hashed_children {
            if p.len() >= KEY_NIBBLES {
                return Err(ExportError::BadNode {
                    node: hash,
                    what: format!("a child at a path of {} nibbles", p.len()),
                });
            }
            children.push(Entry::Node(h, p));
        }
        // Largest path first onto the stack: the smallest is popped next.
        children.sort_by(|a, b| entry_path(b).cmp(entry_path(a)));
        stack.append(&mut children);
        stats.max_stack_entries = stats.max_stack_entries.max(stack.len());
        if stack.len() > MAX_STACK_ENTRIES {
            return Err(ExportError::BadNode {
                node: hash,
                what: format!("the walk's stack passed {MAX_STACK_ENTRIES} entries"),
            });
        }
    }
    Ok(())
}

/// Walk the state at `root` from `src` (see the module docs): every node and code
/// checked, the storage roots and the state root rebuilt from the leaves.
pub fn walk_state(src: &dyn NodeReader, root: B256) -> Result<Walked, ExportError> {
    let mut stats = Walked {
        computed: EMPTY_ROOT,
        accounts: 0,
        storage_slots: 0,
        contracts: 0,
        nodes_checked: 0,
        max_stack_entries: 0,
    };
    let mut state = StackTrie::new();
    // The storage walk runs inside the account walk's leaf callback; its counts are
    // gathered apart and added after.
    let mut inner = Walked { ..stats };
    walk_trie(src, root, root, &mut stats, &mut |path, value| {
        let key = B256::from_slice(&path.pack().expect("64 nibbles pack"));
        let mut a = Account::decode(value).map_err(|e| ExportError::BadNode {
            node: key,
            what: format!("account: {e}"),
        })?;
        let mut storage = StackTrie::new();
        let (mut bad_order, mut slots) = (false, 0u64);
        walk_trie(src, root, a.storage_root, &mut inner, &mut |p, v| {
            bad_order |= !storage.insert(p.as_slice(), v);
            slots += 1;
            Ok(())
        })?;
        inner.storage_slots += slots;
        if bad_order {
            return Err(ExportError::BadNode {
                node: a.storage_root,
                what: format!("storage trie of account {key:#x} has an empty value"),
            });
        }
        a.storage_root = storage.root();
        if a.code_hash != EMPTY_CODE_HASH {
            inner.contracts += 1;
            let code = src
                .code(&a.code_hash)
                .map_err(|what| ExportError::BadNode {
                    node: a.code_hash,
                    what,
                })?
                .ok_or(ExportError::MissingCode {
                    hash: a.code_hash,
                    account: key,
                })?;
            // A damaged code shows as a different code hash, hence a different root.
            a.code_hash = keccak256(&code);
        }
        if !state.insert(path.as_slice(), &a.encode()) {
            return Err(ExportError::BadNode {
                node: key,
                what: "account out of key order".into(),
            });
        }
        inner.accounts += 1;
        Ok(())
    })?;
    stats.computed = state.root();
    stats.accounts = inner.accounts;
    stats.storage_slots = inner.storage_slots;
    stats.contracts = inner.contracts;
    stats.nodes_checked += inner.nodes_checked;
    stats.max_stack_entries = stats.max_stack_entries.max(inner.max_stack_entries);
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use catchup_eth::trie::trie_root;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, HashMap};

    fn nibbles(k: &[u8]) -> Vec<u8> {
        k.iter().flat_map(|b| [b >> 4, b & 0x0f]).collect()
    }

    fn stack_root(pairs: &BTreeMap<Vec<u8>, Vec<u8>>) -> B256 {
        let mut st = StackTrie::new();
        for (k, v) in pairs {
            assert!(st.insert(&nibbles(k), v));
        }
        st.root()
    }

    #[test]
    fn stack_trie_matches_the_reference_builder_on_small_tries() {
        let mut m = BTreeMap::new();
        assert_eq!(stack_root(&m), EMPTY_ROOT);
        m.insert(vec![0x12; 32], vec![1]);
        assert_eq!(stack_root(&m), trie_root(m.iter()));
        // Shared prefixes, embedded (short) leaves and branches.
        let mut k = vec![0x12; 32];
        k[31] = 0x13;
        m.insert(k.clone(), vec![2]);
        k[5] = 0x34;
        m.insert(k, vec![3; 40]);
        m.insert(vec![0xff; 32], vec![4]);
        assert_eq!(stack_root(&m), trie_root(m.iter()));
        let mut st = StackTrie::new();
        assert!(st.insert(&nibbles(&[0x20; 32]), &[1]));
        assert!(!st.insert(&nibbles(&[0x10; 32]), &[1]), "out of order");
        assert!(!st.insert(&nibbles(&[0x30; 32]), &[]), "empty value");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn stack_trie_matches_the_reference_builder(
            keys in proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 32),
                proptest::collection::vec(any::<u8>(), 1..50),
                0..200,
            ),
            prefix_len in 0usize..4,
        ) {
            // Shared leading bytes make long extensions.
            let keys: BTreeMap<Vec<u8>, Vec<u8>> = keys
                .into_iter()
                .map(|(mut k, v)| { for b in k.iter_mut().take(prefix_len) { *b = 0xab; } (k, v) })
                .collect();
            prop_assert_eq!(stack_root(&keys), trie_root(keys.iter()));
        }
    }

    /// Nodes and codes in memory.
    struct Mem {
        nodes: HashMap<B256, Vec<u8>>,
        codes: HashMap<B256, Vec<u8>>,
    }

    impl NodeReader for Mem {
        fn node(&self, hash: &B256) -> Result<Option<Vec<u8>>, String> {
            Ok(self.nodes.get(hash).cloned())
        }
        fn code(&self, hash: &B256) -> Result<Option<Vec<u8>>, String> {
            Ok(self.codes.get(hash).cloned())
        }
    }

    fn generated() -> (crate::eth::sync::chain::StateData, Mem) {
        let st = crate::eth::sync::chain::StateData::generate(3000, 2000, 5);
        let mem = Mem {
            nodes: st.nodes.clone(),
            codes: st.codes.clone(),
        };
        (st, mem)
    }

    #[test]
    fn the_walk_rebuilds_the_generated_root_with_a_bounded_stack() {
        let (st, mem) = generated();
        let w = walk_state(&mem, st.root).unwrap();
        assert_eq!(w.computed, st.root);
        assert_eq!(w.accounts, st.accounts.len() as u64);
        let slots: usize = st.storage.values().map(|s| s.len()).sum();
        assert_eq!(w.storage_slots, slots as u64);
        // Storage tries shared by several accounts are walked once per account.
        assert!(w.nodes_checked as usize >= st.nodes.len());
        assert!(w.max_stack_entries <= MAX_STACK_ENTRIES);
    }

    #[test]
    fn a_missing_or_damaged_node_is_one_error_naming_it() {
        let (st, mut mem) = generated();
        // A node deep in the tries (not the root).
        let victim = *mem.nodes.keys().find(|h| **h != st.root).unwrap();
        let raw = mem.nodes.remove(&victim).unwrap();
        let e = walk_state(&mem, st.root).unwrap_err().to_string();
        assert!(e.contains(&format!("{victim:#x}")), "{e}");
        assert!(e.contains("missing node"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let mut bad = raw.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        mem.nodes.insert(victim, bad);
        let e = walk_state(&mem, st.root).unwrap_err().to_string();
        assert!(e.contains(&format!("{victim:#x}")), "{e}");
        assert!(e.contains("keccak"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        mem.nodes.insert(victim, raw);
        assert_eq!(walk_state(&mem, st.root).unwrap().computed, st.root);
        // A missing code.
        let code = *mem.codes.keys().next().unwrap();
        mem.codes.remove(&code);
        let e = walk_state(&mem, st.root).unwrap_err().to_string();
        assert!(e.contains(&format!("{code:#x}")), "{e}");
    }
}
