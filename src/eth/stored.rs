//! What `eth serve --datadir D` serves, read from the shards' stores on demand.
//!
//! One reader thread owns the data directory (its lock and every shard's store) and
//! answers "node by hash", "code by hash", "header, body or receipts of block N" with a
//! `pread` of the store's segment (checksums verified). Nothing of the state and none of
//! the bodies and receipts are loaded into memory: [`StoredState`] implements
//! [`StateView`], so account and storage ranges, proofs and trie nodes by path are walked
//! node by node from the store, and [`StoredChain`] holds only the head header and a
//! by-hash index of 16 bytes a block, built by one pass over the headers at the first
//! start and mapped from `chain-index.bin` at the next ones (see [`chain_index`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::mpsc;

use alloy_primitives::B256;

use crate::eth::chain_index::{self, Fingerprint, HashIndex};
use crate::eth::export::ExportError;
use crate::eth::serve::{leaves_from_source, StateView, ViewNodes};
use crate::eth::sync::persist::{DiskStore, PersistError};
use crate::eth::sync::types::{Body, Header, Receipts};

type Reply<T> = mpsc::SyncSender<Option<T>>;

/// Reads of a whole request, run on the reader thread over every shard's store (with a
/// way to report a damaged record).
type Job = Box<dyn FnOnce(&[DiskStore], &mut dyn FnMut(String)) + Send>;

enum Query {
    Node(B256, Reply<Vec<u8>>),
    Code(B256, Reply<Vec<u8>>),
    Run(Job),
}

impl std::fmt::Debug for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Query::Node(h, _) => write!(f, "node {h:#x}"),
            Query::Code(h, _) => write!(f, "code {h:#x}"),
            Query::Run(_) => write!(f, "reads"),
        }
    }
}

/// A handle to the reader thread (it stops when every handle is gone).
#[derive(Debug, Clone)]
struct Reader {
    tx: mpsc::Sender<Query>,
}

impl Reader {
    fn ask<T>(&self, q: impl FnOnce(Reply<T>) -> Query) -> Option<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.tx.send(q(tx)).ok()?;
        rx.recv().ok().flatten()
    }

    /// Run `job` on the reader thread: one round trip for a whole request.
    fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&[DiskStore], &mut dyn FnMut(String)) -> T + Send + 'static,
    ) -> Option<T> {
        self.ask(|tx| {
            Query::Run(Box::new(move |stores, warn| {
                let _ = tx.send(Some(job(stores, warn)));
            }))
        })
    }
}

/// The state at `root` of a synced data directory, read on demand by its reader thread.
#[derive(Debug)]
pub struct StoredState {
    pub root: B256,
    reader: Reader,
}

impl StoredState {
    /// The contract code `hash`, if stored.
    pub fn code(&self, hash: &B256) -> Option<Vec<u8>> {
        self.reader.ask(|tx| Query::Code(*hash, tx))
    }
}

impl StateView for StoredState {
    fn state_root(&self) -> B256 {
        self.root
    }
    fn node(&self, hash: &B256) -> Option<Cow<'_, [u8]>> {
        self.reader.ask(|tx| Query::Node(*hash, tx)).map(Cow::Owned)
    }
    fn leaves_from(
        &self,
        trie_root: B256,
        _account: Option<&B256>,
        origin: &B256,
        f: &mut dyn FnMut(&B256, &[u8]) -> bool,
    ) {
        leaves_from_source(&ViewNodes(self), trie_root, origin, f);
    }
}

/// The chain of a synced data directory, blocks 1..=head, read on demand by its reader
/// thread. Block `n` is served when its header is stored and its body is stored or
/// empty (rebuilt from the header); the chain ends before the first block that is not.
#[derive(Debug)]
pub struct StoredChain {
    pub head: Header,
    /// Block 1's parent.
    pub genesis: B256,
    /// The difficulty of blocks 1..=head summed (the genesis's is not in it).
    pub difficulty: u128,
    /// The head's timestamp.
    pub head_time: u64,
    /// `(first 8 bytes of the block's hash, number)`, sorted: mapped from the data
    /// directory's `chain-index.bin`.
    by_hash: HashIndex,
    /// Whether the index came from that file or from reading the headers.
    pub index: IndexUse,
    reader: Reader,
}

fn hash_prefix(h: &B256) -> u64 {
    u64::from_be_bytes(h[..8].try_into().expect("8 bytes"))
}

/// Whether a header names an empty body (no transactions, no ommers, no withdrawals).
fn empty_body(h: &Header) -> bool {
    h.transactions_root == catchup_eth::types::EMPTY_ROOT
        && h.ommers_hash == catchup_eth::types::EMPTY_OMMERS_HASH
        && h.withdrawals_root
            .is_none_or(|w| w == catchup_eth::types::EMPTY_ROOT)
}

/// What a read found, a damaged record reported and taken as missing.
fn found<T>(got: Result<Option<T>, String>, warn: &mut dyn FnMut(String)) -> Option<T> {
    got.unwrap_or_else(|e| {
        warn(e);
        None
    })
}

/// The header among blocks `candidates` whose hash is `hash`.
fn find_header(
    stores: &[DiskStore],
    candidates: &[u64],
    hash: &B256,
    warn: &mut dyn FnMut(String),
) -> Option<Header> {
    candidates
        .iter()
        .filter_map(|&n| found(first_of(stores, |s| s.read_header(n)), warn))
        .find(|h| h.hash == *hash)
}

/// One part of a block besides its header.
trait Part: Sized + Send + 'static {
    fn read(s: &DiskStore, number: u64) -> Result<Option<Self>, PersistError>;
    /// The part of a block that has none of it, when `h` says so.
    fn rebuilt(h: &Header) -> Option<Self>;
    fn size(&self) -> usize;
}

impl Part for Body {
    fn read(s: &DiskStore, number: u64) -> Result<Option<Self>, PersistError> {
        s.read_body(number)
    }
    fn rebuilt(h: &Header) -> Option<Self> {
        empty_body(h).then(|| {
            let empty: &[u8] = if h.withdrawals_root.is_some() {
                &[0xc0, 0xc0, 0xc0]
            } else {
                &[0xc0, 0xc0]
            };
            Body {
                raw: catchup_eth::rlp::wrap_list(empty),
            }
        })
    }
    fn size(&self) -> usize {
        self.raw.len()
    }
}

impl Part for Receipts {
    fn read(s: &DiskStore, number: u64) -> Result<Option<Self>, PersistError> {
        s.read_receipts(number)
    }
    /// Only a block without receipts: the sync may have skipped the others.
    fn rebuilt(h: &Header) -> Option<Self> {
        (h.receipts_root == catchup_eth::types::EMPTY_ROOT).then(|| Receipts { raw: vec![0xc0] })
    }
    fn size(&self) -> usize {
        self.raw.len()
    }
}

impl StoredChain {
    /// Bytes of the by-hash index (16 a block), and whether they are mapped from the
    /// file rather than in the heap.
    pub fn index_bytes(&self) -> (usize, bool) {
        (self.by_hash.bytes(), self.by_hash.mapped())
    }

    /// The served blocks whose hash starts as `hash` does (usually one).
    fn candidates(&self, hash: &B256) -> Vec<u64> {
        self.by_hash.numbers_of(hash_prefix(hash))
    }

    /// The number of the served block whose hash is `hash` (its header is read and
    /// compared whole).
    pub fn number_of(&self, hash: &B256) -> Option<u64> {
        let candidates = self.candidates(hash);
        if candidates.is_empty() {
            return None;
        }
        let hash = *hash;
        self.reader
            .run(move |st, warn| find_header(st, &candidates, &hash, warn).map(|h| h.number))
            .flatten()
    }

    /// The raw headers of blocks `numbers`, up to the first one not served, and while
    /// they stay within `max_bytes` (the one that reaches it included).
    pub fn headers(&self, numbers: Vec<u64>, max_bytes: usize) -> Vec<Vec<u8>> {
        let head = self.head.number;
        if numbers.first().is_none_or(|&n| n == 0 || n > head) || max_bytes == 0 {
            // Nothing to read: no round trip to the reader thread.
            return Vec::new();
        }
        self.reader
            .run(move |st, warn| {
                let mut out = Vec::new();
                let mut size = 0usize;
                for n in numbers {
                    if n == 0 || n > head || size >= max_bytes {
                        break;
                    }
                    let Some(h) = found(first_of(st, |s| s.read_header(n)), warn) else {
                        break;
                    };
                    size += h.raw.len();
                    out.push(h.raw);
                }
                out
            })
            .unwrap_or_default()
    }

    /// The bodies of blocks `hashes`, up to the first one not served, within `max_bytes`
    /// (an empty body is rebuilt from its header).
    pub fn bodies(&self, hashes: &[B256], max_bytes: usize) -> Vec<Body> {
        self.parts(hashes, max_bytes)
    }

    /// The receipts of blocks `hashes`, up to the first one not served, within
    /// `max_bytes` (those of a block without any are rebuilt from its header).
    pub fn receipts(&self, hashes: &[B256], max_bytes: usize) -> Vec<Receipts> {
        self.parts(hashes, max_bytes)
    }

    fn parts<P: Part>(&self, hashes: &[B256], max_bytes: usize) -> Vec<P> {
        let asked: Vec<(B256, Vec<u64>)> =
            hashes.iter().map(|h| (*h, self.candidates(h))).collect();
        self.reader
            .run(move |st, warn| {
                let mut out = Vec::new();
                let mut size = 0usize;
                for (hash, candidates) in asked {
                    if size >= max_bytes {
                        break;
                    }
                    let Some(h) = find_header(st, &candidates, &hash, warn) else {
                        break;
                    };
                    let got = first_of(st, |s| P::read(s, h.number));
                    let Some(p) = found(got, warn).or_else(|| P::rebuilt(&h)) else {
                        break;
                    };
                    size += p.size();
                    out.push(p);
                }
                out
            })
            .unwrap_or_default()
    }
}

/// The first value `read` finds in any shard's store.
fn first_of<T>(
    stores: &[DiskStore],
    read: impl Fn(&DiskStore) -> Result<Option<T>, crate::eth::sync::persist::PersistError>,
) -> Result<Option<T>, String> {
    for s in stores {
        if let Some(v) = read(s).map_err(|e| e.to_string())? {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// A data directory's stores opened to read blocks one at a time (tools over a finished
/// sync, such as `eth export-history`): nothing is loaded up front, so the memory a tool
/// takes is that of the blocks it holds, not of the directory.
pub struct ChainStores {
    stores: Vec<DiskStore>,
    _lock: catchup_io::datadir::DataDir,
}

impl ChainStores {
    /// Open every shard's store of `datadir`, holding the directory's lock.
    pub async fn open(datadir: &Path) -> Result<ChainStores, ExportError> {
        let bad = ExportError::at(datadir);
        let dirs = crate::eth::export::shard_dirs(datadir)?;
        let lock = catchup_io::datadir::DataDir::open(datadir).map_err(|e| bad(e.to_string()))?;
        let mut stores = Vec::with_capacity(dirs.len());
        for d in &dirs {
            stores.push(
                DiskStore::open(d)
                    .await
                    .map_err(|e| bad(format!("{}: {e}", d.display())))?,
            );
        }
        Ok(ChainStores {
            stores,
            _lock: lock,
        })
    }

    /// Whether header `number` is stored (from the stores' indexes, no read).
    pub fn has_header(&self, number: u64) -> bool {
        self.stores.iter().any(|s| s.has_committed_header(number))
    }

    pub fn header(&self, number: u64) -> Result<Option<Header>, String> {
        first_of(&self.stores, |s| s.read_header(number))
    }

    pub fn body(&self, number: u64) -> Result<Option<Body>, String> {
        first_of(&self.stores, |s| s.read_body(number))
    }

    pub fn receipts(&self, number: u64) -> Result<Option<Receipts>, String> {
        first_of(&self.stores, |s| s.read_receipts(number))
    }

    pub async fn close(self) {
        for s in self.stores {
            let _ = s.close().await;
        }
    }
}

/// What one pass over a data directory's headers keeps: the head, the by-hash index,
/// the summed difficulty and the head's time.
struct Scan {
    genesis: B256,
    head: Header,
    by_hash: HashIndex,
    difficulty: u128,
    head_time: u64,
    index: IndexUse,
}

/// How `eth serve --datadir` had its by-hash index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexUse {
    /// Every header was read (no usable `chain-index.bin`); the file was written.
    Scanned,
    /// From `chain-index.bin`, without reading the headers.
    Loaded,
    /// From `chain-index.bin`, and the blocks stored past its head since were read.
    Extended,
}

/// A scan in progress: blocks 1..=head read.
#[derive(Default)]
struct Walk {
    genesis: Option<B256>,
    head: Option<Header>,
    by_hash: Vec<(u64, u64)>,
    difficulty: u128,
    head_time: u64,
}

/// Block `n`'s header when it is served: its header is stored, and its body is stored
/// or empty (only the store's index is looked at for the body).
fn served_header(stores: &[DiskStore], n: u64) -> Result<Option<Header>, String> {
    let Some(h) = first_of(stores, |s| s.read_header(n))? else {
        return Ok(None);
    };
    Ok((empty_body(&h) || stores.iter().any(|s| s.has_committed_body(n))).then_some(h))
}

/// Blocks a scan of the stored chain reads at once (their headers and which bodies are
/// stored): about 2 MB of headers.
const SCAN_BATCH_BLOCKS: u64 = 4096;

/// Go on reading blocks past `w`'s head while they are served (at most `max_blocks`),
/// [`SCAN_BATCH_BLOCKS`] at a time from each store (a header in several stores is taken
/// from the first, as [`first_of`] does).
fn scan_chain(stores: &[DiskStore], max_blocks: u64, mut w: Walk) -> Result<Walk, String> {
    let mut n = w.head.as_ref().map_or(1, |h| h.number + 1);
    while n <= max_blocks {
        let hi = n.saturating_add(SCAN_BATCH_BLOCKS - 1).min(max_blocks);
        let mut headers: BTreeMap<u64, Header> = BTreeMap::new();
        let mut bodies: BTreeSet<u64> = BTreeSet::new();
        for s in stores {
            for h in s.read_headers_in(n, hi).map_err(|e| e.to_string())? {
                headers.entry(h.number).or_insert(h);
            }
            bodies.extend(
                s.committed_body_numbers_in(n, hi)
                    .map_err(|e| e.to_string())?,
            );
        }
        for (number, h) in headers {
            // Served: its header is stored, and its body is stored or empty.
            if number != n || !(empty_body(&h) || bodies.contains(&n)) {
                return Ok(w);
            }
            if let Some((_, time, d)) =
                crate::eth::net::chainspec::header_number_time_difficulty(&h.raw)
            {
                w.difficulty = w.difficulty.saturating_add(d);
                w.head_time = time;
            }
            w.by_hash.push((hash_prefix(&h.hash), n));
            w.genesis.get_or_insert(h.parent_hash);
            w.head = Some(h);
            n += 1;
        }
        if n <= hi {
            // A block of the batch is not served: the chain ends before it.
            break;
        }
    }
    Ok(w)
}

/// The chain of `datadir`: from its `chain-index.bin` when that still describes the
/// stored chain (extended by the blocks stored since), else by a scan of the headers,
/// after which the file is written for the next start.
fn open_chain(datadir: &Path, stores: &[DiskStore]) -> Result<Option<Scan>, String> {
    let shown = datadir.display();
    let loaded = chain_index::load(datadir).unwrap_or_else(|why| {
        tracing::warn!("{why}; reading the headers again");
        None
    });
    if let Some((fp, idx)) = loaded {
        match first_of(stores, |s| s.read_header(fp.head_number))? {
            Some(head) if head.hash == fp.head_hash => {
                if served_header(stores, fp.head_number + 1)?.is_none()
                    || fp.head_number >= MAX_SERVED_BLOCKS
                {
                    return Ok(Some(Scan {
                        genesis: fp.genesis,
                        head,
                        by_hash: idx,
                        difficulty: fp.difficulty,
                        head_time: fp.head_time,
                        index: IndexUse::Loaded,
                    }));
                }
                let w = Walk {
                    genesis: Some(fp.genesis),
                    head: Some(head),
                    by_hash: idx.into_vec(),
                    difficulty: fp.difficulty,
                    head_time: fp.head_time,
                };
                let w = scan_chain(stores, MAX_SERVED_BLOCKS, w)?;
                return Ok(keep_index(datadir, w, IndexUse::Extended));
            }
            _ => tracing::warn!(
                "{shown}/{}: made for another chain head; reading the headers again",
                chain_index::FILE
            ),
        }
    }
    let w = scan_chain(stores, MAX_SERVED_BLOCKS, Walk::default())?;
    Ok(keep_index(datadir, w, IndexUse::Scanned))
}

/// Sort what a scan read, write it to `chain-index.bin` and serve from the mapped file
/// (from memory when it cannot be written: the next start reads the headers again).
fn keep_index(datadir: &Path, mut w: Walk, index: IndexUse) -> Option<Scan> {
    let head = w.head?;
    let genesis = w.genesis.unwrap_or(head.parent_hash);
    w.by_hash.sort_unstable();
    let fp = Fingerprint {
        head_number: head.number,
        head_hash: head.hash,
        genesis,
        difficulty: w.difficulty,
        head_time: w.head_time,
    };
    let by_hash = match chain_index::write(datadir, &fp, &w.by_hash) {
        Ok(mapped) => mapped,
        Err(e) => {
            tracing::warn!(
                "{}: could not write {}: {e}; the next start reads the headers again",
                datadir.display(),
                chain_index::FILE
            );
            HashIndex::Owned(w.by_hash)
        }
    };
    Some(Scan {
        genesis,
        head,
        by_hash,
        difficulty: w.difficulty,
        head_time: w.head_time,
        index,
    })
}

/// Send what a read found; a damaged record is reported (once) and not served: the peer
/// asks another node.
fn answer<T>(got: Result<Option<T>, String>, reply: Reply<T>, warn: &mut dyn FnMut(String)) {
    let _ = reply.send(found(got, warn));
}

/// Most blocks `eth serve --datadir` reads.
pub const MAX_SERVED_BLOCKS: u64 = 100_000_000;

/// Open the data directory's stores on a reader thread that keeps them (and the
/// directory's lock) until every handle is dropped; scan the chain's headers; the state
/// at `root` is served when `state` (the sync completed it) and its root node is stored.
/// `None` for the chain: no block 1 with its body is stored.
pub fn open_stored(
    datadir: &Path,
    root: Option<B256>,
) -> Result<(Option<StoredChain>, Option<StoredState>), ExportError> {
    let bad = ExportError::at(datadir);
    let dirs = crate::eth::export::shard_dirs(datadir)?;
    let lock = catchup_io::datadir::DataDir::open(datadir).map_err(|e| bad(e.to_string()))?;
    type Ready = Result<(Option<Scan>, bool), String>;
    let (ready_tx, ready_rx) = mpsc::sync_channel::<Ready>(1);
    let (tx, rx) = mpsc::channel::<Query>();
    let shown = datadir.display().to_string();
    let datadir_owned = datadir.to_path_buf();
    std::thread::Builder::new()
        .name("serve-store".into())
        .spawn(move || {
            let _lock = lock;
            catchup_io::exec::run_unbound(async move {
                let mut stores = Vec::with_capacity(dirs.len());
                for d in &dirs {
                    match DiskStore::open(d).await {
                        Ok(s) => stores.push(s),
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("{}: {e}", d.display())));
                            return;
                        }
                    }
                }
                let chain = open_chain(&datadir_owned, &stores);
                let has_root = match root {
                    Some(r) => first_of(&stores, |s| s.read_node(&r)).map(|n| n.is_some()),
                    None => Ok(false),
                };
                let ready = match (chain, has_root) {
                    (Ok(c), Ok(h)) => Ok((c, h)),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                };
                let failed = ready.is_err();
                if ready_tx.send(ready).is_err() || failed {
                    return;
                }
                let mut warned = false;
                let mut warn = |e: String| {
                    if !warned {
                        tracing::warn!("{shown}: {e}");
                        warned = true;
                    }
                };
                // Ends when every handle is gone.
                while let Ok(q) = rx.recv() {
                    let st = &stores;
                    match q {
                        Query::Node(h, r) => {
                            answer(first_of(st, |s| s.read_node(&h)), r, &mut warn)
                        }
                        Query::Code(h, r) => {
                            answer(first_of(st, |s| s.read_code(&h)), r, &mut warn)
                        }
                        Query::Run(job) => job(st, &mut warn),
                    }
                }
                for s in stores {
                    let _ = s.close().await;
                }
            })
        })
        .map_err(|e| bad(format!("starting the store reader: {e}")))?;
    let (scan, has_root) = ready_rx
        .recv()
        .map_err(|_| bad("the store reader stopped".into()))?
        .map_err(bad)?;
    let reader = Reader { tx };
    let state = match root {
        Some(root) if has_root => Some(StoredState {
            root,
            reader: reader.clone(),
        }),
        _ => None,
    };
    if let Some(s) = &scan {
        tracing::info!(
            blocks = s.head.number,
            how = ?s.index,
            mapped = s.by_hash.mapped(),
            "{}: the chain's by-hash index ({})",
            datadir.display(),
            chain_index::FILE
        );
    }
    let chain = scan.map(|s| StoredChain {
        genesis: s.genesis,
        head: s.head,
        difficulty: s.difficulty,
        head_time: s.head_time,
        by_hash: s.by_hash,
        index: s.index,
        reader,
    });
    Ok((chain, state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eth::serve::ServingPeer;
    use crate::eth::sync::chain::{generate_chain, ChainData};
    use crate::eth::sync::store::SyncStore;
    use crate::eth::sync::types::{HashOrNumber, Request, Response};
    use std::sync::Arc;

    fn is_empty_body(b: &Body) -> bool {
        [&[0xc0u8, 0xc0][..], &[0xc0, 0xc0, 0xc0]]
            .iter()
            .any(|e| b.raw == catchup_eth::rlp::wrap_list(e))
    }

    /// Headers 1..=30 in shard 0; in shard 1, the bodies of blocks 1..=20 that are not
    /// empty and the receipts of blocks 1..=10.
    fn write_dir(dir: &Path, c: &ChainData) {
        catchup_io::exec::run_unbound(async {
            let mut a = DiskStore::open(&dir.join("shard-0")).await.unwrap();
            let mut b = DiskStore::open(&dir.join("shard-1")).await.unwrap();
            for n in 1..=30u64 {
                let i = n as usize;
                a.put_header(&c.headers[i]);
                if n <= 20 && !is_empty_body(&c.bodies[i]) {
                    b.put_body(n, &c.bodies[i]);
                }
                if n <= 10 {
                    b.put_receipts(n, c.receipts[i].as_ref().unwrap());
                }
            }
            a.commit().await.unwrap();
            b.commit().await.unwrap();
            a.close().await.unwrap();
            b.close().await.unwrap();
        });
    }

    #[test]
    fn a_scan_reads_across_batches_and_stops_at_the_first_gap() {
        let n = 2 * SCAN_BATCH_BLOCKS + 10;
        let c = generate_chain(n, B256::ZERO, 5);
        let d = tempfile::tempdir().unwrap();
        // The first block of the second batch whose body is not empty: not stored.
        let gap = (SCAN_BATCH_BLOCKS + 1..n)
            .find(|&k| !is_empty_body(&c.bodies[k as usize]))
            .expect("a block with transactions");
        catchup_io::exec::run_unbound(async {
            let mut a = DiskStore::open(&d.path().join("shard-0")).await.unwrap();
            let mut b = DiskStore::open(&d.path().join("shard-1")).await.unwrap();
            for k in 1..=n {
                let i = k as usize;
                // Headers split between the stores; every stored body in the second.
                if k % 3 == 0 { &mut b } else { &mut a }.put_header(&c.headers[i]);
                if k != gap && !is_empty_body(&c.bodies[i]) {
                    b.put_body(k, &c.bodies[i]);
                }
            }
            a.commit().await.unwrap();
            b.commit().await.unwrap();
            let stores = vec![a, b];
            let w = scan_chain(&stores, u64::MAX, Walk::default()).unwrap();
            let head = gap - 1;
            assert_eq!(w.head.as_ref().map(|h| h.number), Some(head));
            assert_eq!(w.by_hash.len() as u64, head);
            assert!(w
                .by_hash
                .iter()
                .enumerate()
                .all(|(i, &(p, k))| k == i as u64 + 1
                    && p == hash_prefix(&c.headers[k as usize].hash)));
            // At most `max_blocks`.
            let w = scan_chain(&stores, 100, Walk::default()).unwrap();
            assert_eq!(w.head.map(|h| h.number), Some(100));
            for s in stores {
                s.close().await.unwrap();
            }
        });
    }

    #[test]
    fn a_stored_chain_is_served_block_by_block_from_the_stores() {
        // A seed whose blocks 1..=20 include an empty body (rebuilt, not stored).
        let (c, empty) = (0..64)
            .find_map(|seed| {
                let c = generate_chain(30, B256::ZERO, seed);
                let e = (1..=20).find(|&n| is_empty_body(&c.bodies[n]))?;
                Some((c, e))
            })
            .expect("some seed has an empty block");
        let d = tempfile::tempdir().unwrap();
        write_dir(d.path(), &c);
        // The chain ends before the first block past 20 whose body is not empty.
        let head = (21..=30)
            .find(|&n| !is_empty_body(&c.bodies[n]))
            .map_or(30, |n| n - 1) as u64;
        let (chain, state) = open_stored(d.path(), None).unwrap();
        assert!(state.is_none());
        let chain = Arc::new(chain.expect("block 1 is stored"));
        assert_eq!(chain.head.number, head);
        assert_eq!(chain.genesis, c.headers[0].hash);
        assert_eq!(chain.index, IndexUse::Scanned);
        assert_eq!(chain.index_bytes(), (16 * head as usize, true));
        assert!(chain_index::path(d.path()).exists());
        let peer = ServingPeer::from_stored(chain.clone(), None);
        let hash = |n: usize| c.headers[n].hash;

        let Response::Status {
            best_number,
            best_hash,
            genesis,
        } = peer.handle(&Request::Status)
        else {
            panic!("status")
        };
        assert_eq!(
            (best_number, best_hash, genesis),
            (head, hash(head as usize), hash(0))
        );

        // Headers by hash and by number, never past the head.
        let headers = |origin, amount, reverse| match peer.handle(&Request::BlockHeaders {
            origin,
            amount,
            skip: 0,
            reverse,
        }) {
            Response::BlockHeaders(h) => h,
            r => panic!("{r:?}"),
        };
        let raws = |ns: std::ops::RangeInclusive<usize>| -> Vec<Vec<u8>> {
            ns.map(|n| c.headers[n].raw.clone()).collect()
        };
        assert_eq!(headers(HashOrNumber::Hash(hash(5)), 4, false), raws(5..=8));
        assert_eq!(
            headers(HashOrNumber::Number(head - 1), 5, false),
            raws(head as usize - 1..=head as usize)
        );
        let mut back = raws(1..=3);
        back.reverse();
        assert_eq!(headers(HashOrNumber::Hash(hash(3)), 10, true), back);
        assert!(headers(HashOrNumber::Hash(B256::repeat_byte(7)), 4, false).is_empty());
        assert!(headers(HashOrNumber::Hash(hash(head as usize + 1)), 1, false).is_empty());

        // Bodies: stored ones read, the empty one rebuilt; an unknown hash ends the answer.
        let Response::BlockBodies(b) =
            peer.handle(&Request::BlockBodies(vec![hash(3), hash(empty), hash(2)]))
        else {
            panic!("bodies")
        };
        assert_eq!(
            b,
            vec![
                c.bodies[3].clone(),
                c.bodies[empty].clone(),
                c.bodies[2].clone()
            ]
        );
        let Response::BlockBodies(b) = peer.handle(&Request::BlockBodies(vec![
            hash(1),
            B256::repeat_byte(9),
            hash(2),
        ])) else {
            panic!("bodies")
        };
        assert_eq!(b, vec![c.bodies[1].clone()]);

        // Receipts: stored for 1..=10; past that only a block without any is answered.
        let all: Vec<B256> = (1..=10).map(hash).collect();
        let Response::Receipts(r) = peer.handle(&Request::Receipts(all)) else {
            panic!("receipts")
        };
        let want: Vec<Receipts> = (1..=10).map(|n| c.receipts[n].clone().unwrap()).collect();
        assert_eq!(r, want);
        for n in 11..=head as usize {
            let Response::Receipts(r) = peer.handle(&Request::Receipts(vec![hash(n)])) else {
                panic!("receipts")
            };
            let none = c.headers[n].receipts_root == catchup_eth::types::EMPTY_ROOT;
            assert_eq!(r.len(), usize::from(none), "block {n}");
            if none {
                assert_eq!(r[0], c.receipts[n].clone().unwrap(), "block {n}");
            }
        }
    }

    /// Open the directory again once the last reader thread has let go of its lock.
    fn reopen(dir: &Path) -> StoredChain {
        let t = std::time::Instant::now();
        loop {
            match open_stored(dir, None) {
                Ok((c, _)) => return c.expect("block 1 is stored"),
                Err(e) if t.elapsed().as_secs() < 10 && e.to_string().contains("in use") => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Every block of 1..=head by hash, through `chain`'s index.
    fn all_found(chain: &StoredChain, c: &ChainData) -> bool {
        (1..=chain.head.number).all(|n| chain.number_of(&c.headers[n as usize].hash) == Some(n))
    }

    #[test]
    fn the_chain_index_is_kept_reused_extended_and_rebuilt_when_damaged() {
        let c = (0..64)
            .map(|seed| generate_chain(30, B256::ZERO, seed))
            .find(|c| (21..=30).any(|n| !is_empty_body(&c.bodies[n])))
            .expect("a block past 20 with a body");
        let d = tempfile::tempdir().unwrap();
        write_dir(d.path(), &c);
        let first = reopen(d.path());
        assert_eq!(first.index, IndexUse::Scanned);
        let (head, difficulty, time) = (first.head.number, first.difficulty, first.head_time);
        assert!(head < 30 && all_found(&first, &c));
        drop(first);

        // Read from the file, same chain, without reading the headers.
        let again = reopen(d.path());
        assert_eq!(again.index, IndexUse::Loaded);
        assert_eq!(
            (again.head.number, again.difficulty, again.head_time),
            (head, difficulty, time)
        );
        assert_eq!(again.genesis, c.headers[0].hash);
        assert!(all_found(&again, &c));
        assert!(again
            .number_of(&c.headers[head as usize + 1].hash)
            .is_none());
        drop(again);

        // The bodies of 21..=30 stored since: the file is extended to block 30.
        catchup_io::exec::run_unbound(async {
            // Once the last reader thread has closed it.
            let t = std::time::Instant::now();
            let mut b = loop {
                match DiskStore::open(&d.path().join("shard-1")).await {
                    Ok(b) => break b,
                    Err(e)
                        if t.elapsed().as_secs() < 10 && e.to_string().contains("already open") =>
                    {
                        glommio::timer::sleep(std::time::Duration::from_millis(20)).await
                    }
                    Err(e) => panic!("{e}"),
                }
            };
            for n in 21..=30usize {
                if !is_empty_body(&c.bodies[n]) {
                    b.put_body(n as u64, &c.bodies[n]);
                }
            }
            b.commit().await.unwrap();
            b.close().await.unwrap();
        });
        let longer = reopen(d.path());
        assert_eq!((longer.index, longer.head.number), (IndexUse::Extended, 30));
        assert!(all_found(&longer, &c));
        let extended = (longer.difficulty, longer.head_time, longer.genesis);
        drop(longer);
        assert_eq!(reopen(d.path()).index, IndexUse::Loaded);

        // A damaged file, and one made for another head, are replaced by a scan.
        let p = chain_index::path(d.path());
        let mut bytes = std::fs::read(&p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&p, &bytes).unwrap();
        let rebuilt = reopen(d.path());
        assert_eq!(
            (rebuilt.index, rebuilt.head.number),
            (IndexUse::Scanned, 30)
        );
        assert!(all_found(&rebuilt, &c));
        // What the extension summed is what a whole scan sums.
        assert_eq!(
            (rebuilt.difficulty, rebuilt.head_time, rebuilt.genesis),
            extended
        );
        drop(rebuilt);
        let fp = Fingerprint {
            head_number: 30,
            head_hash: B256::repeat_byte(1),
            genesis: c.headers[0].hash,
            difficulty: 0,
            head_time: 0,
        };
        chain_index::write(d.path(), &fp, &[(0, 1); 30]).unwrap();
        let rebuilt = reopen(d.path());
        assert_eq!(rebuilt.index, IndexUse::Scanned);
        assert!(all_found(&rebuilt, &c));
    }
}
