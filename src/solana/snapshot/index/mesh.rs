//! The full mesh between shards: bounded links that carry index-entry batches to the
//! owners of their pubkeys and the markers of the totals barrier, and the task that
//! applies what peers send.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::shard::{ShardStart, SharedError, State};
use super::{
    Cmd, IndexConfig, IndexEntry, Peer, INDEX_BATCH_ENTRIES, MESH_LINK_CAPACITY,
    MIN_SHARD_INBOX_CAPACITY,
};

pub(super) struct Links {
    pub(super) to_peers: Vec<Option<flume::Sender<Peer>>>,
    pub(super) from_peers: flume::Receiver<Peer>,
}

pub(super) async fn send_batches(
    to_peers: &[Option<flume::Sender<Peer>>],
    out: &mut [Vec<IndexEntry>],
    min_entries: usize,
) -> Result<(), ()> {
    for (owner, batch) in out.iter_mut().enumerate() {
        if batch.len() >= min_entries.max(1) {
            let b = std::mem::replace(batch, Vec::with_capacity(INDEX_BATCH_ENTRIES));
            let Some(tx) = &to_peers[owner] else {
                continue;
            };
            tx.send_async(Peer::Batch(b)).await.map_err(|_| ())?;
        }
    }
    Ok(())
}

/// Apply the index entries peers send, until every peer has closed its link.
pub(super) async fn mesh_task(
    state: Rc<RefCell<State>>,
    from_peers: flume::Receiver<Peer>,
    epochs: flume::Sender<u64>,
) {
    while let Ok(msg) = from_peers.recv_async().await {
        match msg {
            Peer::Batch(b) => {
                let mut st = state.borrow_mut();
                for e in &b {
                    st.apply(e);
                }
            }
            Peer::FileDone { gen, slot, id } => {
                state.borrow_mut().file_complete(gen, slot, id);
            }
            Peer::Marker(epoch) => {
                let mut st = state.borrow_mut();
                let peers = st.shards - 1;
                let n = st.markers.entry(epoch).or_insert(0);
                *n += 1;
                if *n == peers {
                    st.markers.remove(&epoch);
                    let _ = epochs.send(epoch);
                }
            }
        }
    }
}

pub(super) type Parts = (
    Vec<flume::Sender<Cmd>>,
    Vec<Arc<AtomicU64>>,
    Vec<ShardStart>,
    Arc<SharedError>,
);

pub(super) fn make_parts(shards: usize, inbox_capacity: usize, config: &IndexConfig) -> Parts {
    let shared_error = Arc::new(SharedError::default());
    let mut mesh_tx: Vec<Vec<Option<flume::Sender<Peer>>>> =
        (0..shards).map(|_| vec![None; shards]).collect();
    let mut mesh_rx = Vec::with_capacity(shards);
    for to in 0..shards {
        let (tx, rx) = flume::bounded(MESH_LINK_CAPACITY);
        for (from, row) in mesh_tx.iter_mut().enumerate() {
            if from != to {
                row[to] = Some(tx.clone());
            }
        }
        mesh_rx.push(rx);
    }
    let mut inboxes = Vec::with_capacity(shards);
    let mut queued = Vec::with_capacity(shards);
    let mut starts = Vec::with_capacity(shards);
    for (shard, (to_peers, from_peers)) in mesh_tx.into_iter().zip(mesh_rx).enumerate() {
        let (tx, rx) = flume::bounded(inbox_capacity.max(MIN_SHARD_INBOX_CAPACITY));
        let q = Arc::new(AtomicU64::new(0));
        inboxes.push(tx);
        queued.push(q.clone());
        starts.push(ShardStart {
            shard,
            shards,
            inbox: rx,
            links: Links {
                to_peers,
                from_peers,
            },
            queued: q,
            shared_error: shared_error.clone(),
            config: config.clone(),
        });
    }
    (inboxes, queued, starts, shared_error)
}
