//! What `eth serve --datadir D` serves, read from the shards' stores on demand.
//!
//! One reader thread owns the data directory (its lock and every shard's store) and
//! answers "node by hash" and "code by hash" with a `pread` of the store's segment
//! (checksums verified); nothing of the state is loaded into memory. [`StoredState`] is
//! the serving shards' handle to it and implements [`StateView`], so account and storage
//! ranges, proofs and trie nodes by path are walked node by node from the store. The
//! chain (headers, bodies, receipts) is read once at start.

use std::borrow::Cow;
use std::path::Path;
use std::sync::mpsc;

use alloy_primitives::B256;

use crate::eth::export::ExportError;
use crate::eth::serve::{leaves_from_source, StateView, ViewNodes};
use crate::eth::sync::persist::DiskStore;
use crate::eth::sync::types::{Body, Header, Receipts};

enum Query {
    Node(B256, mpsc::SyncSender<Option<Vec<u8>>>),
    Code(B256, mpsc::SyncSender<Option<Vec<u8>>>),
}

/// The state at `root` of a synced data directory, read on demand by its reader thread.
#[derive(Debug)]
pub struct StoredState {
    pub root: B256,
    tx: mpsc::Sender<Query>,
}

impl std::fmt::Debug for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Query::Node(h, _) => write!(f, "node {h:#x}"),
            Query::Code(h, _) => write!(f, "code {h:#x}"),
        }
    }
}

impl StoredState {
    fn ask(&self, q: impl FnOnce(mpsc::SyncSender<Option<Vec<u8>>>) -> Query) -> Option<Vec<u8>> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.tx.send(q(tx)).ok()?;
        rx.recv().ok().flatten()
    }

    /// The contract code `hash`, if stored.
    pub fn code(&self, hash: &B256) -> Option<Vec<u8>> {
        self.ask(|tx| Query::Code(*hash, tx))
    }
}

impl StateView for StoredState {
    fn state_root(&self) -> B256 {
        self.root
    }
    fn node(&self, hash: &B256) -> Option<Cow<'_, [u8]>> {
        self.ask(|tx| Query::Node(*hash, tx)).map(Cow::Owned)
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

/// The chain a data directory holds (blocks 1..=head as stored).
pub struct StoredChain {
    pub headers: Vec<Header>,
    /// Per block: the stored body, if any.
    pub bodies: Vec<Option<Body>>,
    pub receipts: Vec<Option<Receipts>>,
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

/// Blocks 1, 2, … as long as headers are stored (at most `max_blocks`).
fn read_chain(stores: &[DiskStore], max_blocks: u64) -> Result<StoredChain, String> {
    let mut c = StoredChain {
        headers: Vec::new(),
        bodies: Vec::new(),
        receipts: Vec::new(),
    };
    let mut n = 1u64;
    while n <= max_blocks {
        let Some(h) = first_of(stores, |s| s.read_header(n))? else {
            break;
        };
        c.headers.push(h);
        c.bodies.push(first_of(stores, |s| s.read_body(n))?);
        c.receipts.push(first_of(stores, |s| s.read_receipts(n))?);
        n += 1;
    }
    Ok(c)
}

/// Most blocks `eth serve --datadir` reads.
pub const MAX_SERVED_BLOCKS: u64 = 100_000_000;

/// Open the data directory's stores on a reader thread that keeps them (and the
/// directory's lock) until every [`StoredState`] handle is dropped; read the chain; the
/// state at `root` is served when `state` (the sync completed it) and its root node is
/// stored.
pub fn open_stored(
    datadir: &Path,
    root: Option<B256>,
) -> Result<(StoredChain, Option<StoredState>), ExportError> {
    let bad = ExportError::at(datadir);
    let dirs = crate::eth::export::shard_dirs(datadir)?;
    let lock = catchup_io::datadir::DataDir::open(datadir).map_err(|e| bad(e.to_string()))?;
    type Ready = Result<(StoredChain, bool), String>;
    let (ready_tx, ready_rx) = mpsc::sync_channel::<Ready>(1);
    let (tx, rx) = mpsc::channel::<Query>();
    let shown = datadir.display().to_string();
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
                let chain = read_chain(&stores, MAX_SERVED_BLOCKS);
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
                // Ends when every handle is gone.
                while let Ok(q) = rx.recv() {
                    let (got, reply) = match q {
                        Query::Node(h, r) => (first_of(&stores, |s| s.read_node(&h)), r),
                        Query::Code(h, r) => (first_of(&stores, |s| s.read_code(&h)), r),
                    };
                    let v = got.unwrap_or_else(|e| {
                        // A damaged record is not served; the peer asks another node.
                        if !warned {
                            tracing::warn!("{shown}: {e}");
                            warned = true;
                        }
                        None
                    });
                    let _ = reply.send(v);
                }
                for s in stores {
                    let _ = s.close().await;
                }
            })
        })
        .map_err(|e| bad(format!("starting the store reader: {e}")))?;
    let (chain, has_root) = ready_rx
        .recv()
        .map_err(|_| bad("the store reader stopped".into()))?
        .map_err(bad)?;
    let state = match root {
        Some(root) if has_root => Some(StoredState { root, tx }),
        _ => None,
    };
    Ok((chain, state))
}
