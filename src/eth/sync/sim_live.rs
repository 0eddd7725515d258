//! A moving chain for the simulator: after the generated chain's first blocks, every new
//! block changes the state (balances, new accounts, deleted accounts, storage writes and
//! deletions, in the big storage trie too), and the peers keep only the states of their
//! last `history` blocks, answering older roots empty as geth does.
//!
//! The states are replayed from the seed: once to put their roots in the headers, and
//! again while the simulation runs, keeping only the window the peers still serve.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use alloy_primitives::{keccak256, B256};

use super::chain::{GeneratedAccount, SimRng, StateData};
use super::types::AccountView;
use catchup_eth::rlp;
use catchup_eth::EMPTY_CODE_HASH;

/// One account of an evolving state.
#[derive(Debug, Clone)]
struct Acc {
    nonce: u64,
    balance: Vec<u8>,
    slots: BTreeMap<B256, Vec<u8>>,
    code: Option<Vec<u8>>,
}

/// Changes a state block by block, deterministically from its seed.
#[derive(Debug, Clone)]
pub struct Evolver {
    accounts: BTreeMap<B256, Acc>,
    rng: SimRng,
    seed: u64,
    created: u64,
}

impl Evolver {
    /// Start from `st` (a generated state, or any other).
    pub fn new(st: &StateData, seed: u64) -> Evolver {
        let mut accounts = BTreeMap::new();
        for (h, raw) in &st.accounts {
            let Ok(a) = AccountView::decode(raw) else {
                continue;
            };
            let code = (a.code_hash != EMPTY_CODE_HASH)
                .then(|| st.codes.get(&a.code_hash).cloned())
                .flatten();
            let slots = st
                .storage
                .get(h)
                .map(|v| v.iter().cloned().collect())
                .unwrap_or_default();
            accounts.insert(
                *h,
                Acc {
                    nonce: a.nonce,
                    balance: a.balance,
                    slots,
                    code,
                },
            );
        }
        Evolver {
            accounts,
            rng: SimRng::new(seed ^ 0x5eed_11fe),
            seed,
            created: 0,
        }
    }

    fn nth_key(&mut self, filter: impl Fn(&Acc) -> bool) -> Option<B256> {
        let keys: Vec<B256> = self
            .accounts
            .iter()
            .filter(|(_, a)| filter(a))
            .map(|(k, _)| *k)
            .collect();
        (!keys.is_empty()).then(|| keys[self.rng.below(keys.len() as u64) as usize])
    }

    fn value(&mut self) -> Vec<u8> {
        let len = 1 + self.rng.below(32) as usize;
        let mut v = self.rng.bytes(len);
        if v[0] == 0 {
            v[0] = 0x17;
        }
        rlp::bytes_item(&v)
    }

    /// The next block's changes, and the state after them.
    pub fn step(&mut self) -> StateData {
        // Transfers: balances and nonces.
        for _ in 0..2 + self.rng.below(4) {
            if let Some(k) = self.nth_key(|_| true) {
                let len = 1 + self.rng.below(12) as usize;
                let mut b = self.rng.bytes(len);
                b[0] = b[0].max(1);
                let a = self.accounts.get_mut(&k).expect("picked");
                a.balance = b;
                a.nonce += 1;
            }
        }
        // New accounts, some with storage or code (a contract creation).
        if self.rng.chance(40) {
            self.created += 1;
            let h = keccak256(
                [
                    &self.seed.to_le_bytes()[..],
                    b"new",
                    &self.created.to_le_bytes()[..],
                ]
                .concat(),
            );
            let mut slots = BTreeMap::new();
            let mut code = None;
            if self.rng.chance(30) {
                for j in 0..1 + self.rng.below(4) {
                    let v = self.value();
                    slots.insert(keccak256([&h[..], &j.to_le_bytes()[..]].concat()), v);
                }
                let len = 20 + self.rng.below(100) as usize;
                code = Some(self.rng.bytes(len));
            }
            self.accounts.insert(
                h,
                Acc {
                    nonce: 0,
                    balance: vec![1 + self.rng.below(200) as u8],
                    slots,
                    code,
                },
            );
        }
        // A deleted account (self-destructed or emptied).
        if self.rng.chance(15) {
            if let Some(k) = self.nth_key(|a| a.slots.len() < 50) {
                self.accounts.remove(&k);
            }
        }
        // Storage writes and deletions, in small tries and in the large one.
        for big in [false, true] {
            if !self.rng.chance(if big { 30 } else { 60 }) {
                continue;
            }
            let Some(k) = self.nth_key(|a| !a.slots.is_empty() && (a.slots.len() >= 50) == big)
            else {
                continue;
            };
            for _ in 0..1 + self.rng.below(3) {
                let v = self.value();
                let a = self.accounts.get(&k).expect("picked");
                let i = self.rng.below(a.slots.len() as u64) as usize;
                let slot = *a.slots.keys().nth(i).expect("non-empty");
                let roll = self.rng.below(10);
                let a = self.accounts.get_mut(&k).expect("picked");
                match roll {
                    0..=5 => {
                        a.slots.insert(slot, v);
                    }
                    6..=7 => {
                        let new = keccak256([&slot[..], &v[..]].concat());
                        a.slots.insert(new, v);
                    }
                    _ => {
                        if a.slots.len() > 1 {
                            a.slots.remove(&slot);
                        }
                    }
                }
            }
        }
        self.state()
    }

    /// The current state, built.
    pub fn state(&self) -> StateData {
        let accounts: Vec<GeneratedAccount> = self
            .accounts
            .iter()
            .map(|(h, a)| {
                (
                    *h,
                    a.nonce,
                    a.balance.clone(),
                    a.slots.iter().map(|(k, v)| (*k, v.clone())).collect(),
                    a.code.clone(),
                )
            })
            .collect();
        StateData::build(accounts)
    }
}

/// The roots of `blocks` blocks of changes after `base` (block i's at index i - 1).
pub fn evolved_roots(base: &StateData, seed: u64, blocks: u64) -> Vec<B256> {
    let mut e = Evolver::new(base, seed);
    (0..blocks).map(|_| e.step().root).collect()
}

/// The states the peers still serve: the base state up to block `base_until`, then one
/// state per block, the last `history` of them kept.
pub struct LiveStates {
    base: Arc<StateData>,
    base_until: u64,
    history: u64,
    evolver: Evolver,
    /// (block, state) for the blocks after `base_until` up to `head`, the last `history`.
    window: VecDeque<(u64, Arc<StateData>)>,
    head: u64,
}

impl LiveStates {
    pub fn new(base: Arc<StateData>, base_until: u64, history: u64, seed: u64) -> LiveStates {
        LiveStates {
            evolver: Evolver::new(&base, seed),
            base,
            base_until,
            history: history.max(1),
            window: VecDeque::new(),
            head: base_until,
        }
    }

    pub fn head(&self) -> u64 {
        self.head
    }

    /// Add the next block's state.
    pub fn grow(&mut self) {
        self.head += 1;
        let st = Arc::new(self.evolver.step());
        self.window.push_back((self.head, st));
        while self
            .window
            .front()
            .is_some_and(|(n, _)| *n + self.history <= self.head)
        {
            self.window.pop_front();
        }
    }

    /// The states served at head `best` (at most `self.head`): those of the blocks
    /// `best - history + 1 ..= best`, each root once, newest first.
    pub fn served_at(&self, best: u64) -> Vec<Arc<StateData>> {
        let lo = (best + 1).saturating_sub(self.history);
        let mut out: Vec<Arc<StateData>> = self
            .window
            .iter()
            .rev()
            .filter(|(n, _)| *n >= lo && *n <= best)
            .map(|(_, s)| s.clone())
            .collect();
        if lo <= self.base_until {
            out.push(self.base.clone());
        }
        out
    }
}
