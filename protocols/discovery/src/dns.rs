//! EIP-1459 node lists in DNS: `enrtree://` links, signed roots, branch and leaf entries,
//! and a sans-IO walker that asks for TXT names and consumes the answers.
//!
//! The root `enrtree-root:v1 e=<enr-root> l=<link-root> seq=<n> sig=<base64>` is signed by
//! the list's key: a 65-byte signature over keccak256 of the text before ` sig=`. Every
//! other entry lives at `<hash>.<domain>`, where `hash` is the base32 of a prefix (at least
//! 12 bytes) of keccak256 of the entry text, and is checked against it.

use std::collections::{HashSet, VecDeque};

use alloy_primitives::keccak256;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use secp256k1::PublicKey;

use crate::crypto;
use crate::enr::Enr;
use crate::error::{DiscError, Result};

/// Longest TXT entry text accepted.
pub const MAX_ENTRY_BYTES: usize = 2048;
/// Children of one branch entry accepted.
pub const MAX_BRANCH_CHILDREN: usize = 64;
/// Longest domain name.
pub const MAX_DOMAIN_BYTES: usize = 253;

const ROOT_PREFIX: &str = "enrtree-root:v1";
const BRANCH_PREFIX: &str = "enrtree-branch:";
const LINK_PREFIX: &str = "enrtree://";
const ENR_PREFIX: &str = "enr:";

fn bad(detail: &'static str) -> DiscError {
    DiscError::malformed("dns entry", detail)
}

fn check_domain(d: &str) -> Result<()> {
    if d.is_empty() || d.len() > MAX_DOMAIN_BYTES {
        return Err(bad("domain empty or longer than 253 bytes"));
    }
    if d.split('.').any(|l| {
        l.is_empty()
            || l.len() > 63
            || !l
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    }) {
        return Err(bad("domain has an invalid label"));
    }
    Ok(())
}

/// A subtree hash: base32 of 12 to 32 bytes.
fn check_hash(h: &str) -> Result<()> {
    match crypto::b32_decode(h) {
        Some(b) if (12..=32).contains(&b.len()) => Ok(()),
        _ => Err(bad("hash is not base32 of 12 to 32 bytes")),
    }
}

/// Does `text` hash to `hash` (base32 prefix of its keccak256)?
pub fn hash_matches(hash: &str, text: &str) -> bool {
    match crypto::b32_decode(hash) {
        Some(b) if (12..=32).contains(&b.len()) => keccak256(text.as_bytes()).0.starts_with(&b),
        _ => false,
    }
}

/// The subdomain name of an entry: base32 of the first 16 bytes of keccak256(text).
pub fn entry_hash(text: &str) -> String {
    crypto::b32_encode(&keccak256(text.as_bytes()).0[..16])
}

/// `enrtree://<base32 compressed public key>@<domain>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeLink {
    pub public_key: PublicKey,
    pub domain: String,
}

impl TreeLink {
    pub fn parse(s: &str) -> Result<TreeLink> {
        if s.len() > MAX_ENTRY_BYTES {
            return Err(DiscError::TooLarge {
                what: "enrtree link",
                len_bytes: s.len(),
                limit_bytes: MAX_ENTRY_BYTES,
            });
        }
        let rest = s
            .trim()
            .strip_prefix(LINK_PREFIX)
            .ok_or(bad("missing enrtree:// prefix"))?;
        let (key, domain) = rest.split_once('@').ok_or(bad("link without '@'"))?;
        let key = crypto::b32_decode(key).ok_or(bad("link key is not base32"))?;
        let public_key = PublicKey::from_slice(&key)
            .ok()
            .filter(|_| key.len() == 33)
            .ok_or(bad("link key is not a compressed public key"))?;
        check_domain(domain)?;
        Ok(TreeLink {
            public_key,
            domain: domain.to_string(),
        })
    }
}

impl std::fmt::Display for TreeLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{LINK_PREFIX}{}@{}",
            crypto::b32_encode(&self.public_key.serialize()),
            self.domain
        )
    }
}

/// The signed tree root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    pub enr_root: String,
    pub link_root: String,
    pub seq: u64,
    pub signature: [u8; 65],
}

impl Root {
    /// The text the signature covers.
    pub fn signed_text(&self) -> String {
        format!(
            "{ROOT_PREFIX} e={} l={} seq={}",
            self.enr_root, self.link_root, self.seq
        )
    }

    /// Check the signature against the tree key (`r || s`; the recovery id is not used).
    pub fn verify(&self, key: &PublicKey) -> bool {
        let digest = keccak256(self.signed_text().as_bytes()).0;
        crypto::verify64(key, &self.signature[..64], &digest)
    }

    /// Sign a root with the tree key.
    pub fn sign(enr_root: &str, link_root: &str, seq: u64, key: &secp256k1::SecretKey) -> Root {
        let mut r = Root {
            enr_root: enr_root.to_string(),
            link_root: link_root.to_string(),
            seq,
            signature: [0u8; 65],
        };
        r.signature = crypto::sign_recoverable(key, &keccak256(r.signed_text().as_bytes()).0);
        r
    }
}

impl std::fmt::Display for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} sig={}",
            self.signed_text(),
            crypto::b64_encode(&self.signature)
        )
    }
}

/// One TXT entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Root(Root),
    Branch(Vec<String>),
    Enr(Enr),
    Link(TreeLink),
}

/// Parse a TXT entry's text.
pub fn parse_entry(text: &str) -> Result<Entry> {
    if text.len() > MAX_ENTRY_BYTES {
        return Err(DiscError::TooLarge {
            what: "dns entry",
            len_bytes: text.len(),
            limit_bytes: MAX_ENTRY_BYTES,
        });
    }
    if let Some(rest) = text.strip_prefix(ROOT_PREFIX) {
        let mut e = None;
        let mut l = None;
        let mut seq = None;
        let mut sig = None;
        for field in rest.split(' ').filter(|f| !f.is_empty()) {
            let (k, v) = field.split_once('=').ok_or(bad("root field without '='"))?;
            let slot = match k {
                "e" => &mut e,
                "l" => &mut l,
                "seq" => &mut seq,
                "sig" => &mut sig,
                _ => return Err(bad("unknown root field")),
            };
            if slot.replace(v).is_some() {
                return Err(bad("repeated root field"));
            }
        }
        let (Some(e), Some(l), Some(seq), Some(sig)) = (e, l, seq, sig) else {
            return Err(bad("root lacks e=, l=, seq= or sig="));
        };
        check_hash(e)?;
        check_hash(l)?;
        if seq.is_empty() || !seq.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad("root seq is not a decimal number"));
        }
        let seq: u64 = seq.parse().map_err(|_| bad("root seq overflows"))?;
        let sig = crypto::b64_decode(sig, 65)
            .and_then(|s| <[u8; 65]>::try_from(s).ok())
            .ok_or(bad("root sig is not 65 bytes of url-safe base64"))?;
        return Ok(Entry::Root(Root {
            enr_root: e.to_string(),
            link_root: l.to_string(),
            seq,
            signature: sig,
        }));
    }
    if let Some(rest) = text.strip_prefix(BRANCH_PREFIX) {
        let mut children = Vec::new();
        for h in rest.split(',').filter(|h| !h.is_empty()) {
            if children.len() >= MAX_BRANCH_CHILDREN {
                return Err(DiscError::TooManyItems {
                    what: "dns branch",
                    count: children.len() + 1,
                    limit: MAX_BRANCH_CHILDREN,
                });
            }
            check_hash(h)?;
            children.push(h.to_string());
        }
        return Ok(Entry::Branch(children));
    }
    if text.starts_with(LINK_PREFIX) {
        return Ok(Entry::Link(TreeLink::parse(text)?));
    }
    if text.starts_with(ENR_PREFIX) {
        return Ok(Entry::Enr(Enr::from_text(text)?));
    }
    Err(bad("unknown entry type"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subtree {
    Enr,
    Link,
}

/// What the walker wants or found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkEvent {
    /// Resolve the TXT records of this name and pass them to [`TreeWalker::on_answer`].
    Query(String),
    /// A verified node record.
    Enr(Enr),
    /// A link to another tree (from the link subtree).
    Link(TreeLink),
    /// Waiting for answers to queries already handed out.
    Wait,
    /// The tree is walked (or the entry bound was reached).
    Done,
}

/// Walks one tree: root first, then both subtrees breadth first, each entry checked against
/// its hash, at most `max_entries` entries resolved.
#[derive(Debug)]
pub struct TreeWalker {
    link: TreeLink,
    max_entries: usize,
    min_seq: u64,
    root: Option<Root>,
    root_asked: bool,
    pending: VecDeque<(String, Subtree)>,
    in_flight: Vec<(String, String, Subtree)>,
    seen: HashSet<String>,
    entries: usize,
    found: VecDeque<WalkEvent>,
    truncated: bool,
    failed: bool,
    rng: Option<StdRng>,
}

impl TreeWalker {
    pub fn new(link: TreeLink, max_entries: usize) -> Self {
        TreeWalker {
            link,
            max_entries,
            min_seq: 0,
            root: None,
            root_asked: false,
            pending: VecDeque::new(),
            in_flight: Vec::new(),
            seen: HashSet::new(),
            entries: 0,
            found: VecDeque::new(),
            truncated: false,
            failed: false,
            rng: None,
        }
    }

    /// Visit each branch's children in an order drawn from `seed` (the spec advises a
    /// random traversal, so that clients spread over the tree).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = Some(StdRng::seed_from_u64(seed));
        self
    }

    /// Refuse roots with a sequence number below `seq` (seen before for this name).
    pub fn with_min_seq(mut self, seq: u64) -> Self {
        self.min_seq = seq;
        self
    }

    pub fn root(&self) -> Option<&Root> {
        self.root.as_ref()
    }

    /// Entries resolved so far (root excluded).
    pub fn entries_resolved(&self) -> usize {
        self.entries
    }

    /// Whether the entry bound cut the walk short.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    pub fn poll(&mut self) -> WalkEvent {
        if let Some(ev) = self.found.pop_front() {
            return ev;
        }
        if self.failed {
            return WalkEvent::Done;
        }
        if !self.root_asked {
            self.root_asked = true;
            return WalkEvent::Query(self.link.domain.clone());
        }
        if let Some((hash, sub)) = self.pending.pop_front() {
            let name = format!("{hash}.{}", self.link.domain);
            self.in_flight.push((name.clone(), hash, sub));
            return WalkEvent::Query(name);
        }
        if self.root.is_none() || !self.in_flight.is_empty() {
            return WalkEvent::Wait;
        }
        WalkEvent::Done
    }

    /// A query failed (no such name, timeout): that subtree is skipped; a failed root ends
    /// the walk.
    pub fn on_failure(&mut self, name: &str) {
        if self.root.is_none() && name == self.link.domain {
            self.failed = true;
        }
        self.in_flight.retain(|(n, _, _)| n != name);
    }

    fn push_child(&mut self, hash: &str, sub: Subtree) {
        if self.seen.contains(hash) {
            return;
        }
        if self.seen.len() >= self.max_entries {
            self.truncated = true;
            return;
        }
        self.seen.insert(hash.to_string());
        self.pending.push_back((hash.to_string(), sub));
    }

    /// The TXT strings of `name` (each record's strings already joined).
    pub fn on_answer(&mut self, name: &str, txts: &[String]) -> Result<()> {
        if self.root.is_none() && name == self.link.domain {
            let result = self.take_root(txts);
            if result.is_err() {
                self.failed = true;
            }
            return result;
        }
        let Some(pos) = self.in_flight.iter().position(|(n, _, _)| n == name) else {
            return Err(bad("answer for a name that was not asked"));
        };
        let (_, hash, sub) = self.in_flight.swap_remove(pos);
        self.entries += 1;
        let text = txts
            .iter()
            .find(|t| hash_matches(&hash, t))
            .ok_or(DiscError::BadHash { what: "dns entry" })?;
        match (parse_entry(text)?, sub) {
            (Entry::Branch(mut children), _) => {
                if let Some(rng) = self.rng.as_mut() {
                    children.shuffle(rng);
                }
                for c in children {
                    self.push_child(&c, sub);
                }
            }
            (Entry::Enr(enr), Subtree::Enr) => self.found.push_back(WalkEvent::Enr(enr)),
            (Entry::Link(link), Subtree::Link) => self.found.push_back(WalkEvent::Link(link)),
            _ => return Err(bad("entry of the wrong type for its subtree")),
        }
        Ok(())
    }

    fn take_root(&mut self, txts: &[String]) -> Result<()> {
        let text = txts
            .iter()
            .find(|t| t.starts_with(ROOT_PREFIX))
            .ok_or(bad("no enrtree-root:v1 record"))?;
        let Entry::Root(root) = parse_entry(text)? else {
            return Err(bad("no enrtree-root:v1 record"));
        };
        if !root.verify(&self.link.public_key) {
            return Err(DiscError::BadSignature { what: "dns root" });
        }
        if root.seq < self.min_seq {
            return Err(bad("root sequence number went backwards"));
        }
        let (e, l) = (root.enr_root.clone(), root.link_root.clone());
        self.root = Some(root);
        self.push_child(&l, Subtree::Link);
        self.push_child(&e, Subtree::Enr);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secp256k1::{SecretKey, SECP256K1};

    // The example zone of EIP-1459 / devp2p dnsdisc.md. The spec does not name the key
    // that signed its root; the key recovered from the signature is the one go-ethereum's
    // dnsdisc client test syncs this zone with.
    const ZONE_KEY: &str = "AKPYQIUQIL7PSIACI32J7FGZW56E5FKHEFCCOFHILBIMW3M6LWXS2";
    const LINK_KEY: &str = "AM5FCQLWIZX2QFPNJAP7VUERCCRNGRHWZG3YYHIUV7BVDQ5FDPRT2";
    const ROOT: &str = "enrtree-root:v1 e=JWXYDBPXYWG6FX3GMDIBFA6CJ4 l=C7HRFPF3BLGF3YR4DY5KX3SMBE seq=1 sig=o908WmNp7LibOfPsr4btQwatZJ5URBr2ZAuxvK4UWHlsB9sUOTJQaGAlLPVAhM__XJesCHxLISo94z5Z2a463gA";
    const ZONE: [(&str, &str); 5] = [
        ("C7HRFPF3BLGF3YR4DY5KX3SMBE", "enrtree://AM5FCQLWIZX2QFPNJAP7VUERCCRNGRHWZG3YYHIUV7BVDQ5FDPRT2@morenodes.example.org"),
        ("JWXYDBPXYWG6FX3GMDIBFA6CJ4", "enrtree-branch:2XS2367YHAXJFGLZHVAWLQD4ZY,H4FHT4B454P6UXFD7JCYQ5PWDY,MHTDO6TMUBRIA2XWG5LUDACK24"),
        ("2XS2367YHAXJFGLZHVAWLQD4ZY", "enr:-HW4QOFzoVLaFJnNhbgMoDXPnOvcdVuj7pDpqRvh6BRDO68aVi5ZcjB3vzQRZH2IcLBGHzo8uUN3snqmgTiE56CH3AMBgmlkgnY0iXNlY3AyNTZrMaECC2_24YYkYHEgdzxlSNKQEnHhuNAbNlMlWJxrJxbAFvA"),
        ("H4FHT4B454P6UXFD7JCYQ5PWDY", "enr:-HW4QAggRauloj2SDLtIHN1XBkvhFZ1vtf1raYQp9TBW2RD5EEawDzbtSmlXUfnaHcvwOizhVYLtr7e6vw7NAf6mTuoCgmlkgnY0iXNlY3AyNTZrMaECjrXI8TLNXU0f8cthpAMxEshUyQlK-AM0PW2wfrnacNI"),
        ("MHTDO6TMUBRIA2XWG5LUDACK24", "enr:-HW4QLAYqmrwllBEnzWWs7I5Ev2IAs7x_dZlbYdRdMUx5EyKHDXp7AV5CkuPGUPdvbv1_Ms1CPfhcGCvSElSosZmyoqAgmlkgnY0iXNlY3AyNTZrMaECriawHKWdDRk2xeZkrOXBQ0dfMFLHY4eENZwdufn1S1o"),
    ];

    fn link(key: &str) -> TreeLink {
        TreeLink::parse(&format!("enrtree://{key}@nodes.example.org")).unwrap()
    }

    /// Answer every query from `zone` (name -> TXT) until the walker is done.
    fn walk(
        mut w: TreeWalker,
        zone: &[(String, String)],
    ) -> (Vec<Enr>, Vec<TreeLink>, Vec<DiscError>) {
        let (mut enrs, mut links, mut errors) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..1000 {
            match w.poll() {
                WalkEvent::Query(name) => {
                    let txts: Vec<String> = zone
                        .iter()
                        .filter(|(n, _)| *n == name)
                        .map(|(_, t)| t.clone())
                        .collect();
                    if txts.is_empty() {
                        w.on_failure(&name);
                    } else if let Err(e) = w.on_answer(&name, &txts) {
                        errors.push(e);
                    }
                }
                WalkEvent::Enr(e) => enrs.push(e),
                WalkEvent::Link(l) => links.push(l),
                WalkEvent::Wait => panic!("all queries are answered at once"),
                WalkEvent::Done => return (enrs, links, errors),
            }
        }
        panic!("walk did not finish")
    }

    fn example_zone() -> Vec<(String, String)> {
        let mut z = vec![("nodes.example.org".to_string(), ROOT.to_string())];
        for (h, t) in ZONE {
            z.push((format!("{h}.nodes.example.org"), t.to_string()));
        }
        z
    }

    #[test]
    fn example_entries_parse_and_hash_to_their_names() {
        let Entry::Root(root) = parse_entry(ROOT).unwrap() else {
            panic!("not a root")
        };
        assert_eq!(root.seq, 1);
        assert_eq!(root.to_string(), ROOT);
        assert!(root.verify(&link(ZONE_KEY).public_key));
        assert!(!root.verify(&link(LINK_KEY).public_key));
        for (h, t) in ZONE {
            assert_eq!(entry_hash(t), h);
            assert!(hash_matches(h, t));
            parse_entry(t).unwrap();
        }
        // The spec's link URL. (The uncompressed key the spec prints next to this URL,
        // 049f8822..., is not the key the URL's base32 encodes.)
        let l = TreeLink::parse(ZONE[0].1).unwrap();
        assert_eq!(l.domain, "morenodes.example.org");
        assert_eq!(
            hex::encode(l.public_key.serialize()),
            "033a514176466fa815ed481ffad09110a2d344f6c9b78c1d14afc351c3a51be33d"
        );
        assert_eq!(l.to_string(), ZONE[0].1);
    }

    #[test]
    fn walker_reads_the_example_zone() {
        let (enrs, links, errors) = walk(TreeWalker::new(link(ZONE_KEY), 100), &example_zone());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(enrs.len(), 3);
        let mut texts: Vec<String> = enrs.iter().map(|e| e.to_text()).collect();
        texts.sort();
        let mut want: Vec<String> = ZONE[2..].iter().map(|(_, t)| t.to_string()).collect();
        want.sort();
        assert_eq!(texts, want);
        assert_eq!(links, vec![TreeLink::parse(ZONE[0].1).unwrap()]);
    }

    #[test]
    fn seeded_walks_find_the_same_records_in_other_orders() {
        let mut orders = HashSet::new();
        for seed in 0..16 {
            let (enrs, links, errors) = walk(
                TreeWalker::new(link(ZONE_KEY), 100).with_seed(seed),
                &example_zone(),
            );
            assert!(errors.is_empty());
            assert_eq!(links.len(), 1);
            let texts: Vec<String> = enrs.iter().map(|e| e.to_text()).collect();
            let mut sorted = texts.clone();
            sorted.sort();
            let mut want: Vec<String> = ZONE[2..].iter().map(|(_, t)| t.to_string()).collect();
            want.sort();
            assert_eq!(sorted, want);
            orders.insert(texts);
        }
        assert!(orders.len() > 1, "the seed changes the order");
    }

    #[test]
    fn walker_refuses_bad_trees() {
        // Wrong tree key: the root signature fails and nothing is walked.
        let (enrs, _, errors) = walk(TreeWalker::new(link(LINK_KEY), 100), &example_zone());
        assert!(enrs.is_empty());
        assert_eq!(errors, vec![DiscError::BadSignature { what: "dns root" }]);
        // Older root than already seen.
        let (enrs, _, errors) = walk(
            TreeWalker::new(link(ZONE_KEY), 100).with_min_seq(2),
            &example_zone(),
        );
        assert!(enrs.is_empty());
        assert_eq!(errors.len(), 1);
        // An entry whose content does not match its name.
        let mut zone = example_zone();
        zone[3].1 = ZONE[3].1.to_string();
        let (enrs, _, errors) = walk(TreeWalker::new(link(ZONE_KEY), 100), &zone);
        assert_eq!(enrs.len(), 2);
        assert_eq!(errors, vec![DiscError::BadHash { what: "dns entry" }]);
        // The entry bound: root's two children, then one child of the branch.
        let mut w = TreeWalker::new(link(ZONE_KEY), 3);
        let (enrs, _, _) = {
            let z = example_zone();
            let mut out: (Vec<Enr>, Vec<TreeLink>, Vec<DiscError>) =
                (Vec::new(), Vec::new(), Vec::new());
            loop {
                match w.poll() {
                    WalkEvent::Query(n) => {
                        let t: Vec<String> = z
                            .iter()
                            .filter(|(x, _)| *x == n)
                            .map(|(_, t)| t.clone())
                            .collect();
                        let _ = w.on_answer(&n, &t);
                    }
                    WalkEvent::Enr(e) => out.0.push(e),
                    WalkEvent::Link(l) => out.1.push(l),
                    WalkEvent::Wait => unreachable!(),
                    WalkEvent::Done => break out,
                }
            }
        };
        assert_eq!(enrs.len(), 1);
        assert!(w.truncated());
        assert_eq!(w.entries_resolved(), 3);
    }

    #[test]
    fn walker_handles_a_tree_it_signed_and_rejects_misplaced_entries() {
        let key = SecretKey::from_slice(&[0x42; 32]).unwrap();
        let tree = TreeLink {
            public_key: key.public_key(SECP256K1),
            domain: "t.example".into(),
        };
        let leaf = ZONE[2].1.to_string();
        // A link placed in the enr subtree is refused.
        let misplaced = ZONE[0].1.to_string();
        let branch = format!(
            "enrtree-branch:{},{}",
            entry_hash(&leaf),
            entry_hash(&misplaced)
        );
        let empty_links = "enrtree-branch:".to_string();
        let root = Root::sign(&entry_hash(&branch), &entry_hash(&empty_links), 5, &key);
        let mut zone = vec![("t.example".to_string(), root.to_string())];
        for t in [&leaf, &misplaced, &branch, &empty_links] {
            zone.push((format!("{}.t.example", entry_hash(t)), t.clone()));
        }
        let (enrs, links, errors) = walk(TreeWalker::new(tree, 10), &zone);
        assert_eq!(enrs.len(), 1);
        assert!(links.is_empty());
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn parse_rejects_malformed_entries() {
        for bad in [
            "enrtree-root:v1 e=JWXYDBPXYWG6FX3GMDIBFA6CJ4 l=C7HRFPF3BLGF3YR4DY5KX3SMBE seq=1",
            "enrtree-root:v1 e=JWXYDBPXYWG6FX3GMDIBFA6CJ4 l=C7HRFPF3BLGF3YR4DY5KX3SMBE seq=-1 sig=AA",
            "enrtree-root:v1 e=x l=C7HRFPF3BLGF3YR4DY5KX3SMBE seq=1 sig=o908WmNp7LibOfPsr4btQwatZJ5URBr2ZAuxvK4UWHlsB9sUOTJQaGAlLPVAhM__XJesCHxLISo94z5Z2a463gA",
            "enrtree-branch:abc",
            "enrtree://AM5FCQ@nodes.example.org",
            "enrtree://AM5FCQLWIZX2QFPNJAP7VUERCCRNGRHWZG3YYHIUV7BVDQ5FDPRT2@bad..domain",
            "enr:AAAA",
            "something else",
        ] {
            assert!(parse_entry(bad).is_err(), "{bad}");
        }
        let long = format!("enrtree-branch:{}", "A".repeat(MAX_ENTRY_BYTES));
        assert!(matches!(
            parse_entry(&long),
            Err(DiscError::TooLarge { .. })
        ));
        let many = format!(
            "enrtree-branch:{}",
            vec!["2XS2367YHAXJFGLZHVAWLQD4ZY"; MAX_BRANCH_CHILDREN + 1].join(",")
        );
        assert!(matches!(
            parse_entry(&many),
            Err(DiscError::TooManyItems { .. })
        ));
    }
}
