//! A chain held as raw blocks for serving over the wire, and a [`Responder`] that answers
//! GetBlockHeaders / GetBlockBodies from it within the protocol's limits, with fault
//! profiles for tests and the devnet.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context};
use catchup_devp2p::eth::{EthMessage, HashOrNumber};
use catchup_devp2p::rlp;
use catchup_eth::keccak256;

use super::eth_peer::Responder;
use super::wire::{empty_response, Wire};

/// Most headers or bodies served per request (geth's limits).
pub const MAX_HEADERS_SERVE: usize = 1024;
pub const MAX_BODIES_SERVE: usize = 1024;
/// Soft limit of a response's size.
pub const SOFT_RESPONSE_BYTES: usize = 2 * 1024 * 1024;

/// Blocks `base..base+len` as raw header and body encodings.
#[derive(Debug, Default, Clone)]
pub struct RawChain {
    pub base: u64,
    pub headers: Vec<Vec<u8>>,
    pub hashes: Vec<[u8; 32]>,
    pub bodies: Vec<Vec<u8>>,
    pub by_hash: HashMap<[u8; 32], u64>,
    /// Hash of the parent of the first block (the genesis hash when base is 1).
    pub parent_of_first: [u8; 32],
}

impl RawChain {
    /// Read `chain.rlp`: blocks `[header, txs, ommers, withdrawals?]` back to back, each
    /// following the previous by number and parent hash.
    pub fn from_rlp_file(path: &Path) -> anyhow::Result<Self> {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let mut c = RawChain::default();
        let mut rest: &[u8] = &data;
        let mut at = 0usize;
        while !rest.is_empty() {
            let (block, _, _, r) = rlp::split_item("block", rest)
                .with_context(|| format!("{}: block at byte {at}", path.display()))?;
            let items = rlp::list_exact("block", block, 8)
                .with_context(|| format!("{}: block at byte {at}", path.display()))?;
            if items.len() < 3 {
                bail!(
                    "{}: block at byte {at} has {} fields, expected at least 3",
                    path.display(),
                    items.len()
                );
            }
            let header = items[0].to_vec();
            let fields = rlp::list_exact("header", &header, 32)
                .with_context(|| format!("{}: header at byte {at}", path.display()))?;
            if fields.len() < 15 {
                bail!(
                    "{}: header at byte {at} has {} fields",
                    path.display(),
                    fields.len()
                );
            }
            let number = rlp::uint("header number", fields[8])?;
            let parent = rlp::fixed::<32>("header parent", fields[0])?;
            if c.headers.is_empty() {
                c.base = number;
                c.parent_of_first = parent;
            } else if number != c.base + c.headers.len() as u64
                || parent != *c.hashes.last().unwrap_or(&[0; 32])
            {
                bail!(
                    "{}: block {number} at byte {at} does not follow its predecessor",
                    path.display()
                );
            }
            let hash = keccak256(&header).0;
            c.by_hash.insert(hash, number);
            c.hashes.push(hash);
            c.headers.push(header);
            c.bodies.push(rlp::encode_list(&items[1..]));
            at += block.len();
            rest = r;
        }
        if c.headers.is_empty() {
            bail!("{}: no blocks", path.display());
        }
        Ok(c)
    }

    pub fn head_number(&self) -> u64 {
        self.base + self.headers.len() as u64 - 1
    }

    pub fn head_hash(&self) -> [u8; 32] {
        *self.hashes.last().unwrap_or(&[0; 32])
    }

    fn index(&self, number: u64) -> Option<usize> {
        let i = number.checked_sub(self.base)? as usize;
        (i < self.headers.len()).then_some(i)
    }

    /// Headers for a GetBlockHeaders query.
    pub fn headers_for(
        &self,
        origin: HashOrNumber,
        amount: u64,
        skip: u64,
        reverse: bool,
    ) -> Vec<Vec<u8>> {
        let start = match origin {
            HashOrNumber::Number(n) => Some(n),
            HashOrNumber::Hash(h) => self.by_hash.get(&h).copied(),
        };
        let mut out = Vec::new();
        let Some(mut n) = start else { return out };
        let mut size = 0usize;
        let amount = (amount as usize).min(MAX_HEADERS_SERVE);
        while out.len() < amount && size < SOFT_RESPONSE_BYTES {
            let Some(i) = self.index(n) else { break };
            size += self.headers[i].len();
            out.push(self.headers[i].clone());
            let step = skip.saturating_add(1);
            n = if reverse {
                match n.checked_sub(step) {
                    Some(x) => x,
                    None => break,
                }
            } else {
                match n.checked_add(step) {
                    Some(x) => x,
                    None => break,
                }
            };
        }
        out
    }

    /// Bodies for a GetBlockBodies query (unknown hashes are skipped, as geth does).
    pub fn bodies_for(&self, hashes: &[[u8; 32]]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut size = 0usize;
        for h in hashes.iter().take(MAX_BODIES_SERVE) {
            if size >= SOFT_RESPONSE_BYTES {
                break;
            }
            if let Some(i) = self.by_hash.get(h).and_then(|n| self.index(*n)) {
                size += self.bodies[i].len();
                out.push(self.bodies[i].clone());
            }
        }
        out
    }
}

/// How a serving node misbehaves (for tests and the devnet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// Answers everything correctly and at once.
    Honest,
    /// Holds every answer back by `slow_delay_ms`.
    Slow,
    /// Leaves every fifth request unanswered.
    Lossy,
    /// Corrupts every other answer (headers that do not hash right, swapped bodies).
    Lying,
}

/// Answers eth requests from a [`RawChain`] with a fault profile.
pub struct ChainResponder {
    pub chain: std::sync::Arc<RawChain>,
    pub profile: Profile,
    pub slow_delay_ms: u64,
    served: Cell<u64>,
}

impl ChainResponder {
    pub fn new(chain: std::sync::Arc<RawChain>, profile: Profile) -> Self {
        ChainResponder {
            chain,
            profile,
            slow_delay_ms: 300,
            served: Cell::new(0),
        }
    }
}

impl Responder for ChainResponder {
    fn respond(&self, req: &Wire) -> (Option<Wire>, u64) {
        let n = self.served.get() + 1;
        self.served.set(n);
        let mut resp = match req {
            Wire::Eth(EthMessage::GetBlockHeaders {
                request_id,
                origin,
                amount,
                skip,
                reverse,
            }) => Wire::Eth(EthMessage::BlockHeaders {
                request_id: *request_id,
                headers: self.chain.headers_for(*origin, *amount, *skip, *reverse),
            }),
            Wire::Eth(EthMessage::GetBlockBodies { request_id, hashes }) => {
                Wire::Eth(EthMessage::BlockBodies {
                    request_id: *request_id,
                    bodies: self.chain.bodies_for(hashes),
                })
            }
            other => match empty_response(other) {
                Some(w) => w,
                None => return (None, 0),
            },
        };
        match self.profile {
            Profile::Honest => (Some(resp), 0),
            Profile::Slow => (Some(resp), self.slow_delay_ms),
            Profile::Lossy if n % 5 == 0 => (None, 0),
            Profile::Lossy => (Some(resp), 0),
            Profile::Lying => {
                if n % 2 == 0 {
                    match &mut resp {
                        Wire::Eth(EthMessage::BlockHeaders { headers, .. }) => {
                            // Change the extra-data-adjacent timestamp byte region: still RLP, wrong hash.
                            for h in headers.iter_mut() {
                                if let Some(last) = h.last_mut() {
                                    *last ^= 0x01;
                                }
                            }
                        }
                        Wire::Eth(EthMessage::BlockBodies { bodies, .. }) => bodies.reverse(),
                        _ => {}
                    }
                }
                (Some(resp), 0)
            }
        }
    }
}

/// Blocks of era1 archives (consecutive files, each block linked to the previous): the raw
/// chain for Status and serving, the same blocks with their receipts for the sync's serving
/// peer, and the total difficulty of the last block.
pub fn load_era1(
    paths: &[std::path::PathBuf],
) -> anyhow::Result<(RawChain, crate::eth::sync::chain::ChainData, u128)> {
    use crate::eth::sync::types::{Body, Header as SyncHeader, Receipts};
    let mut raw = RawChain::default();
    let mut data = crate::eth::sync::chain::ChainData::default();
    let mut td: u128 = 0;
    for path in paths {
        let buf = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let era = catchup_eth::era1::Era1::open(&buf)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        for b in era.blocks() {
            let b = b.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let header = b.header.encode();
            let number = b.header.number();
            let parent = b.header.parent_hash().0;
            if raw.headers.is_empty() {
                raw.base = number;
                raw.parent_of_first = parent;
                data.base = number;
            } else if number != raw.base + raw.headers.len() as u64
                || parent != *raw.hashes.last().unwrap_or(&[0; 32])
            {
                bail!(
                    "{}: block {number} does not follow its predecessor",
                    path.display()
                );
            }
            let hash = b.hash.0;
            let body = b.body.encode();
            raw.by_hash.insert(hash, number);
            raw.hashes.push(hash);
            raw.headers.push(header.clone());
            raw.bodies.push(body.clone());
            let h = SyncHeader::decode(&header)
                .map_err(|e| anyhow::anyhow!("{}: block {number}: {e}", path.display()))?;
            data.by_hash.insert(h.hash, number);
            data.headers.push(h);
            data.bodies.push(Body { raw: body });
            data.receipts.push(Some(Receipts {
                raw: catchup_eth::encode_receipts(&b.receipts),
            }));
            td = u128::try_from(b.total_difficulty).unwrap_or(u128::MAX);
        }
    }
    if raw.headers.is_empty() {
        bail!("no blocks in {} era1 file(s)", paths.len());
    }
    Ok((raw, data, td))
}
