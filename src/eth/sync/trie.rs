//! Merkle-Patricia trie pieces the sync engines use. Nodes, references, the streaming
//! builder ([`build_root`], [`build_node`]) and proofs ([`prove`]) are `catchup_eth`'s; the
//! sync adds its limit on the size of a node a peer may send ([`decode_node`]).

use thiserror::Error;

use catchup_eth::rlp::{parse_exact, Item, RlpError};
pub use catchup_eth::trie::{
    build_node, build_node_known, build_root, nibble, prove, KnownSubtree, Nibbles, Node, NodeRef,
    NodeSource,
};

/// Largest trie node accepted from a peer.
pub const MAX_NODE_BYTES: usize = 64 * 1024;

/// Errors from decoding or checking trie data.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TrieError {
    #[error("trie node: {0}")]
    Rlp(#[from] RlpError),
    #[error("trie node: {0} bytes exceeds the {MAX_NODE_BYTES} byte limit")]
    TooLarge(usize),
}

/// Decode a node (with [`catchup_eth::trie::Node::decode`]) that is at most
/// [`MAX_NODE_BYTES`] long.
pub fn decode_node(buf: &[u8]) -> Result<Node, TrieError> {
    if buf.len() > MAX_NODE_BYTES {
        return Err(TrieError::TooLarge(buf.len()));
    }
    Ok(Node::decode(buf)?)
}

/// A child reference read in place from a node's RLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildView<'a> {
    Hash(&'a [u8; 32]),
    /// The child's own RLP (shorter than 32 bytes).
    Embedded(&'a [u8]),
}

/// A checked hex-prefix path, read in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathView<'a>(&'a [u8]);

impl PathView<'_> {
    /// Its length in nibbles.
    pub fn len(&self) -> usize {
        self.0.len() * 2 - if self.0[0] & 0x10 != 0 { 1 } else { 2 }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Append its nibbles to `out`.
    pub fn push_to(&self, out: &mut Vec<u8>) {
        if self.0[0] & 0x10 != 0 {
            out.push(self.0[0] & 0x0f);
        }
        for b in &self.0[1..] {
            out.push(b >> 4);
            out.push(b & 0x0f);
        }
    }
}

/// The nibble path of a trie node in the state or a storage trie: at most 64 nibbles,
/// kept inline (the walk makes one per node it routes, and copies it whole).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TaskPath {
    len: u8,
    nibbles: [u8; 64],
}

impl TaskPath {
    pub const EMPTY: TaskPath = TaskPath {
        len: 0,
        nibbles: [0; 64],
    };
    /// `None` when longer than a key (no node of a state or storage trie is).
    pub fn new(nibbles: &[u8]) -> Option<TaskPath> {
        let mut p = TaskPath::EMPTY;
        p.nibbles.get_mut(..nibbles.len())?.copy_from_slice(nibbles);
        p.len = nibbles.len() as u8;
        Some(p)
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.nibbles[..self.len as usize]
    }
    pub fn len(&self) -> usize {
        self.len as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Append a nibble; `false` (and unchanged) when the path is a whole key already.
    pub fn push(&mut self, nibble: u8) -> bool {
        let Some(slot) = self.nibbles.get_mut(self.len as usize) else {
            return false;
        };
        *slot = nibble;
        self.len += 1;
        true
    }
    /// Append a node's path; `false` (and unchanged) when it would pass 64 nibbles.
    pub fn extend(&mut self, p: &PathView<'_>) -> bool {
        if self.len() + p.len() > 64 {
            return false;
        }
        let mut at = self.len as usize;
        let mut put = |n: u8| {
            self.nibbles[at] = n;
            at += 1;
        };
        if p.0[0] & 0x10 != 0 {
            put(p.0[0] & 0x0f);
        }
        for b in &p.0[1..] {
            put(b >> 4);
            put(b & 0x0f);
        }
        self.len = at as u8;
        true
    }
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len as u8);
    }
}

impl std::fmt::Debug for TaskPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_slice())
    }
}

/// A trie node read in place: what the state walk needs of a node (its children, its
/// leaf), without copying it. It accepts exactly what [`decode_node`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// Read on the stack and dropped: boxing the branch would bring back the allocation.
#[allow(clippy::large_enum_variant)]
pub enum NodeView<'a> {
    Branch([Option<ChildView<'a>>; 16]),
    Extension {
        path: PathView<'a>,
        child: ChildView<'a>,
    },
    Leaf {
        path: PathView<'a>,
        value: &'a [u8],
    },
}

fn child_view<'a>(item: &Item<'a>) -> Result<Option<ChildView<'a>>, RlpError> {
    if item.is_list {
        if item.raw.len() >= 32 {
            return Err(RlpError::Invalid {
                offset: item.offset,
                what: "embedded child node of 32 bytes or more",
            });
        }
        return Ok(Some(ChildView::Embedded(item.raw)));
    }
    match <&[u8; 32]>::try_from(item.payload) {
        Ok(h) => Ok(Some(ChildView::Hash(h))),
        Err(_) if item.payload.is_empty() => Ok(None),
        Err(_) => Err(RlpError::Invalid {
            offset: item.offset,
            what: "child reference is neither empty, a 32-byte hash nor a list",
        }),
    }
}

fn path_view<'a>(item: &Item<'a>) -> Result<(PathView<'a>, bool), RlpError> {
    let buf = item.bytes()?;
    let (_, leaf) = catchup_eth::trie::hex_prefix_check(buf, item.offset)?;
    Ok((PathView(buf), leaf))
}

impl<'a> NodeView<'a> {
    /// Read a node of at most [`MAX_NODE_BYTES`].
    pub fn parse(buf: &'a [u8]) -> Result<NodeView<'a>, TrieError> {
        if buf.len() > MAX_NODE_BYTES {
            return Err(TrieError::TooLarge(buf.len()));
        }
        let item = parse_exact(buf)?;
        let mut r = item.list()?;
        // One pass over the items: a node is 2 or 17 of them.
        let mut items: [Option<Item<'a>>; 17] = [None; 17];
        let mut count = 0;
        while let Some(i) = r.next_opt()? {
            if count < 17 {
                items[count] = Some(i);
            }
            count += 1;
        }
        match (count, items) {
            (17, items) => {
                let mut children = [None; 16];
                for (c, i) in children.iter_mut().zip(items.iter().flatten()) {
                    *c = child_view(i)?;
                }
                items[16].as_ref().map(Item::bytes).transpose()?;
                Ok(NodeView::Branch(children))
            }
            (2, [Some(p), Some(second), ..]) => {
                let (path, leaf) = path_view(&p)?;
                if leaf {
                    return Ok(NodeView::Leaf {
                        path,
                        value: second.bytes()?,
                    });
                }
                if path.is_empty() {
                    return Err(RlpError::Invalid {
                        offset: p.offset,
                        what: "extension node with an empty path",
                    }
                    .into());
                }
                let child = child_view(&second)?.ok_or(RlpError::Invalid {
                    offset: second.offset,
                    what: "extension node without a child",
                })?;
                Ok(NodeView::Extension { path, child })
            }
            _ => Err(RlpError::WrongItemCount {
                offset: item.offset,
                count,
                expected: "2 or 17",
            }
            .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{keccak256, B256};
    use catchup_eth::rlp;
    use catchup_eth::EMPTY_ROOT;
    use proptest::prelude::*;
    use std::collections::HashMap;

    type Made = (Vec<([u8; 32], Vec<u8>)>, HashMap<B256, Vec<u8>>, B256);

    fn make(n: usize, seed: u8) -> Made {
        let mut e: Vec<([u8; 32], Vec<u8>)> = (0..n)
            .map(|i| {
                (
                    keccak256([seed, (i >> 8) as u8, i as u8]).0,
                    rlp::bytes_item(&[(i as u8).wrapping_add(1); 3]),
                )
            })
            .collect();
        e.sort();
        let mut nodes = HashMap::new();
        let root = build_root(&e, &mut |h, r| {
            nodes.insert(h, r.to_vec());
        });
        (e, nodes, root)
    }

    fn same_reading(buf: &[u8]) {
        let view = NodeView::parse(buf);
        let node = decode_node(buf);
        assert_eq!(
            view.is_ok(),
            node.is_ok(),
            "{buf:02x?}: {view:?} / {node:?}"
        );
        let (Ok(view), Ok(node)) = (view, node) else {
            return;
        };
        let child = |c: &Option<ChildView<'_>>| match c {
            None => None,
            Some(ChildView::Hash(h)) => Some(NodeRef::Hash(B256::from(**h))),
            Some(ChildView::Embedded(r)) => {
                Some(NodeRef::Embedded(catchup_eth::Bytes::copy_from_slice(r)))
            }
        };
        let nibbles = |p: &PathView<'_>| {
            let mut v = Vec::new();
            p.push_to(&mut v);
            assert_eq!(v.len(), p.len());
            Nibbles(v)
        };
        match (view, node) {
            (NodeView::Branch(cs), Node::Branch { children, .. }) => {
                for (a, b) in cs.iter().zip(children.iter()) {
                    assert_eq!(child(a), *b);
                }
            }
            (NodeView::Extension { path, child: c }, Node::Extension { path: p, child: d }) => {
                assert_eq!(nibbles(&path), p);
                assert_eq!(child(&Some(c)), Some(d));
            }
            (NodeView::Leaf { path, value }, Node::Leaf { path: p, value: v }) => {
                assert_eq!(nibbles(&path), p);
                assert_eq!(value, &v[..]);
            }
            (a, b) => panic!("{a:?} read as {b:?}"),
        }
    }

    #[test]
    fn task_paths_hold_at_most_a_key() {
        let (_, nodes, _) = make(300, 3);
        let mut p = TaskPath::EMPTY;
        for raw in nodes.values() {
            let (NodeView::Leaf { path, .. } | NodeView::Extension { path, .. }) =
                NodeView::parse(raw).unwrap()
            else {
                continue;
            };
            let mut q = p;
            let mut want = p.as_slice().to_vec();
            path.push_to(&mut want);
            assert_eq!(q.extend(&path), want.len() <= 64);
            if want.len() <= 64 {
                assert_eq!(q.as_slice(), &want[..]);
                p = q;
            } else {
                assert_eq!(q, p);
            }
        }
        let mut full = TaskPath::new(&[7; 64]).unwrap();
        assert!(!full.push(1));
        assert_eq!(full.len(), 64);
        assert!(TaskPath::new(&[7; 65]).is_none());
        full.truncate(3);
        assert_eq!(full.as_slice(), &[7, 7, 7]);
        assert!(full.push(2));
        assert_eq!(full.as_slice(), &[7, 7, 7, 2]);
    }

    #[test]
    fn node_view_reads_every_node_of_a_trie_like_the_decoder() {
        for seed in 0..4 {
            let (_, nodes, _) = make(500, seed);
            for raw in nodes.values() {
                same_reading(raw);
            }
        }
    }

    #[test]
    fn empty_and_known_roots() {
        assert_eq!(build_root::<&[u8], &[u8]>(&[], &mut |_, _| {}), EMPTY_ROOT);
    }

    #[test]
    fn nodes_decode_and_reencode() {
        let (_, nodes, root) = make(300, 1);
        assert!(nodes.contains_key(&root));
        for (h, raw) in &nodes {
            assert_eq!(keccak256(raw), *h);
            let n = decode_node(raw).unwrap();
            assert_eq!(&n.encode(), raw);
        }
    }

    fn verify(
        root: B256,
        origin: &[u8; 32],
        keys: &[[u8; 32]],
        vals: &[Vec<u8>],
        proof: &[Vec<u8>],
    ) -> Result<bool, String> {
        let proof: Vec<catchup_eth::Bytes> = proof
            .iter()
            .map(|p| catchup_eth::Bytes::copy_from_slice(p))
            .collect();
        catchup_eth::verify_range_proof(root, origin, keys, vals, &proof).map_err(|e| e.to_string())
    }

    #[test]
    fn proofs_made_here_pass_the_data_layer_range_check() {
        let (e, nodes, root) = make(200, 2);
        for (a, b) in [
            (0usize, 200usize),
            (0, 50),
            (17, 90),
            (150, 200),
            (199, 200),
            (5, 6),
        ] {
            let origin = e[a].0;
            let keys: Vec<[u8; 32]> = e[a..b].iter().map(|x| x.0).collect();
            let vals: Vec<Vec<u8>> = e[a..b].iter().map(|x| x.1.clone()).collect();
            let mut proof = Vec::new();
            prove(&nodes, root, &origin, &mut proof);
            prove(&nodes, root, keys.last().unwrap(), &mut proof);
            assert_eq!(
                verify(root, &origin, &keys, &vals, &proof).unwrap(),
                b < 200,
                "range {a}..{b}"
            );
            if keys.len() > 2 {
                let mut k2 = keys.clone();
                let mut v2 = vals.clone();
                k2.remove(1);
                v2.remove(1);
                assert!(verify(root, &origin, &k2, &v2, &proof).is_err());
            }
            let mut v3 = vals.clone();
            v3[0] = rlp::bytes_item(b"liar");
            assert!(verify(root, &origin, &keys, &v3, &proof).is_err());
        }
    }

    #[test]
    fn ordered_roots_match_the_data_layer() {
        let vals: Vec<Vec<u8>> = (0..300u32)
            .map(|i| rlp::bytes_item(&i.to_be_bytes()))
            .collect();
        let mut entries: Vec<(Vec<u8>, &[u8])> = vals
            .iter()
            .enumerate()
            .map(|(i, v)| (rlp::u64_item(i as u64), v.as_slice()))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            build_root(&entries, &mut |_, _| {}),
            catchup_eth::ordered_root(&vals)
        );
    }

    proptest! {
        #[test]
        fn node_decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode_node(&data);
        }

        /// The in-place reader accepts exactly what the decoder accepts, and reads the
        /// same children, paths and values: on random bytes, and on real nodes with one
        /// byte changed.
        #[test]
        fn node_view_agrees_with_the_decoder(
            data in proptest::collection::vec(any::<u8>(), 0..600),
            seed in 0u8..8,
            pick in any::<usize>(),
            at in any::<usize>(),
            byte in any::<u8>(),
        ) {
            let (_, nodes, _) = make(40, seed);
            let mut real: Vec<&Vec<u8>> = nodes.values().collect();
            real.sort();
            let mut changed = real[pick % real.len()].clone();
            let i = at % changed.len();
            changed[i] = byte;
            for buf in [&data, real[pick % real.len()], &changed] {
                same_reading(buf);
            }
        }

    }
}
