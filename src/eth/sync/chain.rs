//! Chain and state sources for the serving peer: generated (seeded) chains and states, and
//! the devnet fixture (`chain.rlp` + a geth `headstate.json` dump).

use std::collections::HashMap;
use std::path::Path;

use alloy_primitives::{keccak256, B256};
use anyhow::{bail, Context};

use super::trie::build_root;
use super::types::{AccountView, Body, Header, Receipts};
use catchup_eth::ordered_root;
use catchup_eth::rlp;
use catchup_eth::EMPTY_CODE_HASH;

/// A small deterministic RNG (splitmix64): the simulator's only source of randomness.
#[derive(Debug, Clone)]
pub struct SimRng(catchup_eth::bench::SplitMix);

impl SimRng {
    pub fn new(seed: u64) -> Self {
        SimRng(catchup_eth::bench::SplitMix::new(
            seed ^ 0x9e37_79b9_7f4a_7c15,
        ))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// True with probability `pct`/100.
    pub fn chance(&mut self, pct: u32) -> bool {
        self.below(100) < pct as u64
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// An account to build a state from: (account hash, nonce, balance bytes, storage slots
/// (slot hash, RLP value), code).
pub type GeneratedAccount = (B256, u64, Vec<u8>, Vec<(B256, Vec<u8>)>, Option<Vec<u8>>);

/// A chain a serving peer can answer from: headers, bodies and (when known) receipts.
#[derive(Debug, Default, Clone)]
pub struct ChainData {
    /// Number of the first header held (0 when genesis is included).
    pub base: u64,
    pub headers: Vec<Header>,
    pub bodies: Vec<Body>,
    /// Per block; `None` when receipts are unknown (they need execution).
    pub receipts: Vec<Option<Receipts>>,
    pub by_hash: HashMap<B256, u64>,
}

impl ChainData {
    pub fn head(&self) -> &Header {
        self.headers
            .last()
            .expect("chain data holds at least one header")
    }
    pub fn header(&self, number: u64) -> Option<&Header> {
        number
            .checked_sub(self.base)
            .and_then(|i| self.headers.get(i as usize))
    }
    pub fn index_of(&self, hash: &B256) -> Option<usize> {
        self.by_hash.get(hash).map(|n| (n - self.base) as usize)
    }
    /// The hash every synced chain must start from (the parent of the first held block,
    /// or the genesis itself).
    pub fn anchor_hash(&self) -> B256 {
        if self.base == 0 {
            self.headers[0].hash
        } else {
            self.headers[0].parent_hash
        }
    }
    fn push(&mut self, h: Header, b: Body, r: Option<Receipts>) {
        self.by_hash.insert(h.hash, h.number);
        self.headers.push(h);
        self.bodies.push(b);
        self.receipts.push(r);
    }
}

/// A state at one root: every trie node by hash, codes, and the sorted leaves (for snap).
#[derive(Debug, Default, Clone)]
pub struct StateData {
    pub root: B256,
    pub nodes: HashMap<B256, Vec<u8>>,
    pub codes: HashMap<B256, Vec<u8>>,
    /// (account hash, full account RLP), sorted by hash.
    pub accounts: Vec<(B256, Vec<u8>)>,
    /// Account hash → (slot hash, RLP value), sorted by slot hash.
    pub storage: HashMap<B256, Vec<(B256, Vec<u8>)>>,
}

impl StateData {
    /// Build all tries from accounts (with their storage slots and code).
    /// `accounts`: (account hash, nonce, balance bytes, slots (hash, rlp value), code).
    pub fn build(mut accounts: Vec<GeneratedAccount>) -> StateData {
        let mut st = StateData::default();
        accounts.sort_by_key(|a| a.0);
        let mut leaves = Vec::with_capacity(accounts.len());
        for (hash, nonce, balance, mut slots, code) in accounts {
            slots.sort_by_key(|a| a.0);
            let nodes = &mut st.nodes;
            let storage_root = build_root(&slots, &mut |h, r| {
                nodes.insert(h, r.to_vec());
            });
            let code_hash = match code {
                Some(c) if !c.is_empty() => {
                    let h = keccak256(&c);
                    st.codes.insert(h, c);
                    h
                }
                _ => EMPTY_CODE_HASH,
            };
            if !slots.is_empty() {
                st.storage.insert(hash, slots);
            }
            leaves.push((
                hash,
                AccountView {
                    nonce,
                    balance,
                    storage_root,
                    code_hash,
                }
                .encode(),
            ));
        }
        let nodes = &mut st.nodes;
        st.root = build_root(&leaves, &mut |h, r| {
            nodes.insert(h, r.to_vec());
        });
        st.accounts = leaves;
        st
    }

    /// A generated state: `n` accounts; about one in eight has storage (one large storage
    /// trie of `big_slots` slots), one in sixteen has code (shared among 64 contracts).
    pub fn generate(n: u64, big_slots: u64, seed: u64) -> StateData {
        Self::generate_variant(n, big_slots, seed, 0)
    }

    /// [`StateData::generate`] as it is `variant` blocks of changes later: one account in
    /// seven has another balance (variant 0 is the original state).
    pub fn generate_variant(n: u64, big_slots: u64, seed: u64, variant: u8) -> StateData {
        let mut rng = SimRng::new(seed.wrapping_mul(31).wrapping_add(7));
        let codes: Vec<Vec<u8>> = (0..64)
            .map(|_| {
                let len = 40 + rng.below(400) as usize;
                rng.bytes(len)
            })
            .collect();
        let mut accounts = Vec::with_capacity(n as usize);
        for i in 0..n {
            let hash = keccak256([&seed.to_le_bytes()[..], &i.to_le_bytes()[..]].concat());
            let blen = 1 + rng.below(12) as usize;
            let mut balance = rng.bytes(blen);
            if balance[0] == 0 {
                balance[0] = 1;
            }
            if variant != 0 && i % 7 == 0 {
                balance.push(variant);
            }
            let nslots = if i == 3 {
                big_slots
            } else if i % 8 == 0 {
                1 + rng.below(12)
            } else {
                0
            };
            let slots: Vec<(B256, Vec<u8>)> = (0..nslots)
                .map(|j| {
                    let k = keccak256([&hash[..], &j.to_le_bytes()[..]].concat());
                    let vlen = 1 + rng.below(32) as usize;
                    let mut v = rng.bytes(vlen);
                    if v[0] == 0 {
                        v[0] = 0x42;
                    }
                    (k, rlp::bytes_item(&v))
                })
                .collect();
            let code = if i % 16 == 1 {
                Some(codes[rng.below(64) as usize].clone())
            } else {
                None
            };
            accounts.push((hash, i % 5, balance, slots, code));
        }
        StateData::build(accounts)
    }

    /// Load a geth state dump (`headstate.json` form).
    pub fn from_geth_dump(path: &Path) -> anyhow::Result<StateData> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let accts = v
            .get("accounts")
            .and_then(|a| a.as_object())
            .context("dump has no `accounts` object")?;
        let mut out = Vec::with_capacity(accts.len());
        for (addr, a) in accts {
            let ctx = || format!("account {addr} in {}", path.display());
            let addr_bytes = hex_bytes(addr).with_context(ctx)?;
            let hash = keccak256(&addr_bytes);
            let balance = decimal_to_be(a.get("balance").and_then(|b| b.as_str()).unwrap_or("0"))
                .with_context(ctx)?;
            let nonce = a.get("nonce").and_then(|n| n.as_u64()).unwrap_or(0);
            let code = match a.get("code").and_then(|c| c.as_str()) {
                Some(c) => Some(hex_bytes(c).with_context(ctx)?),
                None => None,
            };
            let mut slots = Vec::new();
            if let Some(s) = a.get("storage").and_then(|s| s.as_object()) {
                for (k, val) in s {
                    let key = hex_bytes(k).with_context(ctx)?;
                    let val = hex_bytes(val.as_str().unwrap_or("")).with_context(ctx)?;
                    let skip = val.iter().take_while(|&&b| b == 0).count();
                    if skip == val.len() {
                        continue;
                    }
                    slots.push((keccak256(&key), rlp::bytes_item(&val[skip..])));
                }
            }
            out.push((hash, nonce, balance, slots, code));
        }
        let st = StateData::build(out);
        if let Some(want) = v.get("root").and_then(|r| r.as_str()) {
            let want = B256::from_slice(&hex_bytes(want)?);
            if want != st.root {
                bail!(
                    "state dump {}: built root {} differs from its `root` {}",
                    path.display(),
                    st.root,
                    want
                );
            }
        }
        Ok(st)
    }
}

fn hex_bytes(s: &str) -> anyhow::Result<Vec<u8>> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    let padded = if s.len() % 2 == 1 {
        format!("0{s}")
    } else {
        s.to_string()
    };
    hex::decode(&padded).with_context(|| format!("bad hex `{s}`"))
}

fn decimal_to_be(s: &str) -> anyhow::Result<Vec<u8>> {
    if s.len() > 80 {
        bail!("balance `{s}` too long");
    }
    let mut out: Vec<u8> = Vec::new(); // little-endian
    for c in s.chars() {
        let d = c
            .to_digit(10)
            .with_context(|| format!("bad decimal `{s}`"))?;
        let mut carry = d;
        for b in out.iter_mut() {
            let x = *b as u32 * 10 + carry;
            *b = x as u8;
            carry = x >> 8;
        }
        while carry > 0 {
            out.push(carry as u8);
            carry >>= 8;
        }
    }
    while out.last() == Some(&0) {
        out.pop();
    }
    out.reverse();
    Ok(out)
}

fn header_rlp(
    parent: B256,
    state_root: B256,
    tx_root: B256,
    receipts_root: B256,
    wd_root: B256,
    number: u64,
    extra: &[u8],
) -> Vec<u8> {
    catchup_eth::Header {
        parent_hash: parent,
        ommers_hash: catchup_eth::EMPTY_OMMERS_HASH,
        state_root,
        transactions_root: tx_root,
        receipts_root,
        number,
        gas_limit: 30_000_000,
        gas_used: 21_000 * 3,
        timestamp: 1_700_000_000 + number * 12,
        extra_data: catchup_eth::Bytes::copy_from_slice(extra),
        base_fee_per_gas: Some(7),
        withdrawals_root: Some(wd_root),
        ..Default::default()
    }
    .encode()
}

/// A generated chain of `blocks` blocks after genesis, every header carrying `state_root`
/// (the generated state does not change along it). Blocks carry pseudo transactions
/// (legacy and typed), receipts and withdrawals whose roots are in the headers.
pub fn generate_chain(blocks: u64, state_root: B256, seed: u64) -> ChainData {
    generate_chain_with_roots(blocks, &|_| state_root, seed)
}

/// A generated chain whose block `n` carries `root_at(n)` as its state root.
pub fn generate_chain_with_roots(
    blocks: u64,
    root_at: &dyn Fn(u64) -> B256,
    seed: u64,
) -> ChainData {
    let state_root = root_at(0);
    let mut rng = SimRng::new(seed ^ 0xc4a1_5eed);
    let mut c = ChainData::default();
    let empty_list = rlp::wrap_list(&[]);
    let genesis = header_rlp(
        B256::ZERO,
        state_root,
        ordered_root::<Vec<u8>>(&[]),
        ordered_root::<Vec<u8>>(&[]),
        ordered_root::<Vec<u8>>(&[]),
        0,
        &seed.to_be_bytes(),
    );
    let body0 = Body {
        raw: rlp::wrap_list(&[empty_list.clone(), empty_list.clone(), empty_list.clone()].concat()),
    };
    c.push(
        Header::decode(&genesis).expect("generated genesis decodes"),
        body0,
        Some(Receipts {
            raw: empty_list.clone(),
        }),
    );
    for n in 1..=blocks {
        let ntx = rng.below(4) as usize;
        let mut tx_enc = Vec::new();
        let mut tx_items = Vec::new();
        let mut rc_enc = Vec::new();
        let mut rc_items = Vec::new();
        for t in 0..ntx {
            let mut p = Vec::new();
            rlp::encode_u64(t as u64, &mut p);
            rlp::encode_bytes(&rng.bytes(20), &mut p);
            let dlen = 1 + rng.below(60) as usize;
            rlp::encode_bytes(&rng.bytes(dlen), &mut p);
            let payload = rlp::wrap_list(&p);
            let mut r = Vec::new();
            rlp::encode_u64(1, &mut r);
            rlp::encode_u64(21_000 * (t as u64 + 1), &mut r);
            rlp::encode_bytes(&[0u8; 256], &mut r);
            r.extend_from_slice(&empty_list);
            let receipt = rlp::wrap_list(&r);
            if rng.chance(50) {
                tx_items.extend_from_slice(&payload);
                tx_enc.push(payload);
                rc_items.extend_from_slice(&receipt);
                rc_enc.push(receipt);
            } else {
                let typed = [&[2u8][..], &payload].concat();
                rlp::encode_bytes(&typed, &mut tx_items);
                tx_enc.push(typed);
                let typed_r = [&[2u8][..], &receipt].concat();
                rlp::encode_bytes(&typed_r, &mut rc_items);
                rc_enc.push(typed_r);
            }
        }
        let mut wd_items = Vec::new();
        let mut wd_enc = Vec::new();
        for w in 0..rng.below(3) {
            let mut p = Vec::new();
            rlp::encode_u64(n * 4 + w, &mut p);
            rlp::encode_u64(rng.below(1000), &mut p);
            rlp::encode_bytes(&rng.bytes(20), &mut p);
            rlp::encode_u64(1 + rng.below(1 << 30), &mut p);
            let e = rlp::wrap_list(&p);
            wd_items.extend_from_slice(&e);
            wd_enc.push(e);
        }
        let parent = c.head().hash;
        let raw = header_rlp(
            parent,
            root_at(n),
            ordered_root(&tx_enc),
            ordered_root(&rc_enc),
            ordered_root(&wd_enc),
            n,
            &[],
        );
        let body = Body {
            raw: rlp::wrap_list(
                &[
                    rlp::wrap_list(&tx_items),
                    empty_list.clone(),
                    rlp::wrap_list(&wd_items),
                ]
                .concat(),
            ),
        };
        c.push(
            Header::decode(&raw).expect("generated header decodes"),
            body,
            Some(Receipts {
                raw: rlp::wrap_list(&rc_items),
            }),
        );
    }
    c
}

/// Load `chain.rlp` (blocks after genesis, back to back). Receipts are unknown.
pub fn chain_from_rlp_file(path: &Path) -> anyhow::Result<ChainData> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut c = ChainData::default();
    let mut rest: &[u8] = &data;
    let mut at = 0usize;
    let mut first = true;
    while !rest.is_empty() {
        let block = rlp::parse_item(rest, at)
            .with_context(|| format!("{}: block at byte {at}", path.display()))?;
        let used = block.raw.len();
        let f = block
            .items(4)
            .with_context(|| format!("{}: block at byte {at}", path.display()))?;
        if f.len() < 3 {
            bail!(
                "{}: block at byte {at} has {} fields",
                path.display(),
                f.len()
            );
        }
        let h = Header::decode(f[0].raw)
            .with_context(|| format!("{}: header at byte {at}", path.display()))?;
        if first {
            c.base = h.number;
            first = false;
        } else if h.number != c.head().number + 1 || h.parent_hash != c.head().hash {
            bail!(
                "{}: block {} at byte {at} does not follow its predecessor",
                path.display(),
                h.number
            );
        }
        let body_payload: Vec<u8> = f[1..].iter().flat_map(|x| x.raw.iter().copied()).collect();
        c.push(
            h,
            Body {
                raw: rlp::wrap_list(&body_payload),
            },
            None,
        );
        rest = &rest[used..];
        at += used;
    }
    if c.headers.is_empty() {
        bail!("{}: no blocks", path.display());
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use catchup_eth::EMPTY_ROOT;

    /// The simulator's stream is splitmix64 (reference outputs for state 0).
    #[test]
    fn sim_rng_is_splitmix64() {
        let mut r = SimRng::new(0x9e37_79b9_7f4a_7c15);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(SimRng::new(0).next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    /// The generated headers keep their field-by-field layout (15 legacy fields, base fee,
    /// withdrawals root), so generated chains hash as before.
    #[test]
    fn generated_header_bytes() {
        let (a, b, c, d, e) = (
            keccak256(b"a"),
            keccak256(b"b"),
            keccak256(b"c"),
            keccak256(b"d"),
            keccak256(b"e"),
        );
        let mut p = Vec::new();
        for h in [a, keccak256([0xc0u8])] {
            rlp::encode_bytes(h.as_slice(), &mut p);
        }
        rlp::encode_bytes(&[0u8; 20], &mut p);
        for h in [b, c, d] {
            rlp::encode_bytes(h.as_slice(), &mut p);
        }
        rlp::encode_bytes(&[0u8; 256], &mut p);
        for v in [0, 42, 30_000_000, 63_000, 1_700_000_000 + 42 * 12] {
            rlp::encode_u64(v, &mut p);
        }
        rlp::encode_bytes(b"xy", &mut p);
        rlp::encode_bytes(&[0u8; 32], &mut p);
        rlp::encode_bytes(&[0u8; 8], &mut p);
        rlp::encode_u64(7, &mut p);
        rlp::encode_bytes(e.as_slice(), &mut p);
        assert_eq!(header_rlp(a, b, c, d, e, 42, b"xy"), rlp::wrap_list(&p));
    }

    #[test]
    fn generated_chain_verifies() {
        let st = StateData::generate(50, 40, 1);
        let c = generate_chain(20, st.root, 1);
        assert_eq!(c.headers.len(), 21);
        for i in 1..c.headers.len() {
            assert_eq!(c.headers[i].parent_hash, c.headers[i - 1].hash);
            c.bodies[i].verify(&c.headers[i]).unwrap();
            c.receipts[i]
                .as_ref()
                .unwrap()
                .verify(&c.headers[i])
                .unwrap();
        }
        assert_ne!(st.root, EMPTY_ROOT);
        assert!(st.nodes.contains_key(&st.root));
    }

    #[test]
    fn decimal_conversion() {
        assert_eq!(decimal_to_be("0").unwrap(), Vec::<u8>::new());
        assert_eq!(decimal_to_be("256").unwrap(), vec![1, 0]);
        assert_eq!(
            decimal_to_be("121816101").unwrap(),
            121816101u64.to_be_bytes()[4..].to_vec()
        );
    }
}
