//! Per-shard pipeline-stage counters (items and bytes) and the shard placement, fed by
//! the sync drivers and read by `/metrics`, the status page and `catchup status --watch`.
//!
//! Every stage has an items counter and, where the stage moves bytes, a bytes counter,
//! both labelled by shard: `catchup_eth_headers_total`, `catchup_eth_headers_bytes_total`,
//! `catchup_snapshot_download_bytes_total`, ... A driver calls the `record_*` function of
//! its stage from the shard that did the work; the cost is one relaxed atomic add per
//! counter.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use catchup_shards::metrics::{self, Counter};
use catchup_shards::ShardId;
use serde_json::{json, Value};

use crate::eth::sync::engine::{Engine, Event};
use crate::eth::sync::types::Response;

/// One pipeline stage: a name, its items counter and its bytes counter (if it moves bytes).
pub struct Stage {
    pub name: &'static str,
    pub items_metric: &'static str,
    pub bytes_metric: Option<&'static str>,
    pub items: Counter,
    pub bytes: Option<Counter>,
}

macro_rules! stage {
    ($name:literal, $items:literal, $items_help:literal) => {
        Stage {
            name: $name,
            items_metric: $items,
            bytes_metric: None,
            items: metrics::counter($items, $items_help),
            bytes: None,
        }
    };
    ($name:literal, $items:literal, $items_help:literal, $bytes:literal, $bytes_help:literal) => {
        Stage {
            name: $name,
            items_metric: $items,
            bytes_metric: Some($bytes),
            items: metrics::counter($items, $items_help),
            bytes: Some(metrics::counter($bytes, $bytes_help)),
        }
    };
}

/// The Ethereum sync stages.
pub struct EthStages {
    pub headers: Stage,
    pub bodies: Stage,
    pub receipts: Stage,
    pub state: Stage,
    pub accounts: Stage,
    pub storage: Stage,
    pub codes: Stage,
    pub requests: Counter,
    pub timeouts: Counter,
    pub lies: Counter,
}

/// The Ethereum stage counters (registered on first use).
pub fn eth() -> &'static EthStages {
    static S: OnceLock<EthStages> = OnceLock::new();
    S.get_or_init(|| EthStages {
        headers: stage!(
            "headers",
            "catchup_eth_headers_total",
            "Verified block headers stored by this shard.",
            "catchup_eth_headers_bytes_total",
            "Bytes of block-header answers received by this shard."
        ),
        bodies: stage!(
            "bodies",
            "catchup_eth_bodies_total",
            "Verified block bodies stored by this shard.",
            "catchup_eth_bodies_bytes_total",
            "Bytes of block-body answers received by this shard."
        ),
        receipts: stage!(
            "receipts",
            "catchup_eth_receipts_total",
            "Verified block receipt lists stored by this shard.",
            "catchup_eth_receipts_bytes_total",
            "Bytes of receipt answers received by this shard."
        ),
        state: stage!(
            "state",
            "catchup_eth_state_nodes_total",
            "Verified state trie nodes stored by this shard.",
            "catchup_eth_state_bytes_total",
            "Bytes of state answers (trie nodes, ranges, codes) received by this shard."
        ),
        accounts: stage!(
            "accounts",
            "catchup_eth_accounts_total",
            "Accounts proven by snap ranges on this shard."
        ),
        storage: stage!(
            "storage",
            "catchup_eth_storage_slots_total",
            "Storage slots proven by snap ranges on this shard."
        ),
        codes: stage!(
            "codes",
            "catchup_eth_codes_total",
            "Contract codes stored by this shard."
        ),
        requests: metrics::counter(
            "catchup_eth_requests_total",
            "Requests this shard's engine sent to peers.",
        ),
        timeouts: metrics::counter(
            "catchup_eth_timeouts_total",
            "Requests of this shard's engine that timed out.",
        ),
        lies: metrics::counter(
            "catchup_eth_lies_total",
            "Answers that failed verification (the peer is penalised).",
        ),
    })
}

/// The Solana snapshot stages: download (per fetching shard), then the verifying
/// pipeline's decompress and unpack (counted for the shard that feeds it).
pub struct SnapshotStages {
    pub download: Stage,
    pub decompress: Stage,
    pub unpack: Stage,
}

/// The snapshot stage counters (registered on first use).
pub fn snapshot() -> &'static SnapshotStages {
    static S: OnceLock<SnapshotStages> = OnceLock::new();
    S.get_or_init(|| SnapshotStages {
        download: stage!(
            "download",
            "catchup_snapshot_chunks_total",
            "Snapshot archive chunks fetched and written by this shard.",
            "catchup_snapshot_download_bytes_total",
            "Snapshot archive bytes fetched and written by this shard."
        ),
        decompress: stage!(
            "decompress",
            "catchup_snapshot_frames_total",
            "zstd frames of the snapshot archive decompressed.",
            "catchup_snapshot_decompressed_bytes_total",
            "Snapshot archive bytes after zstd decompression."
        ),
        unpack: stage!(
            "unpack",
            "catchup_snapshot_entries_total",
            "tar entries of the snapshot archive unpacked and checked."
        ),
    })
}

/// Every stage, for the status page and the terminal view: (family, stage).
pub fn all_stages() -> Vec<(&'static str, &'static Stage)> {
    let e = eth();
    let s = snapshot();
    vec![
        ("eth", &e.headers),
        ("eth", &e.bodies),
        ("eth", &e.receipts),
        ("eth", &e.state),
        ("eth", &e.accounts),
        ("eth", &e.storage),
        ("eth", &e.codes),
        ("solana", &s.download),
        ("solana", &s.decompress),
        ("solana", &s.unpack),
    ]
}

/// Where a shard runs: its core (and, with a plan, its NIC queues come from the plan).
#[derive(Default)]
struct Placement {
    cores: BTreeMap<usize, usize>,
}

fn placement() -> &'static Mutex<Placement> {
    static P: OnceLock<Mutex<Placement>> = OnceLock::new();
    P.get_or_init(|| Mutex::new(Placement::default()))
}

thread_local! {
    static PIPELINE_LAST: Cell<[u64; 3]> = const { Cell::new([0; 3]) };
    static CURRENT_SHARD: Cell<Option<usize>> = const { Cell::new(None) };
    static ETH_LAST: RefCell<EthLast> = RefCell::new(EthLast::default());
}

/// Record that the calling thread runs shard `shard` on `core`: later `record_*` calls
/// from this thread are counted for it, and the placement shows in `/status`.
pub fn enter_shard(shard: usize, core: usize) {
    CURRENT_SHARD.with(|c| c.set(Some(shard)));
    placement()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .cores
        .insert(shard, core);
}

/// The shard the calling thread runs (see [`enter_shard`]); shard 0 when unknown.
pub fn current_shard() -> ShardId {
    ShardId(CURRENT_SHARD.with(|c| c.get()).unwrap_or(0))
}

/// Shard → core of every shard that entered (for `/status`).
pub fn placement_json() -> Value {
    let p = placement().lock().unwrap_or_else(|p| p.into_inner());
    Value::Object(
        p.cores
            .iter()
            .map(|(s, c)| (s.to_string(), json!({ "core": c })))
            .collect(),
    )
}

/// A snapshot download shard wrote `bytes` of the archive; `chunk_done` when that
/// finished a chunk.
pub fn record_snapshot_download(bytes: u64, chunk_done: bool) {
    let s = &snapshot().download;
    let shard = current_shard();
    if let Some(b) = &s.bytes {
        b.add(shard, bytes);
    }
    if chunk_done {
        s.items.inc(shard);
    }
}

/// The snapshot pipeline's counters after a feed (cumulative for one pipeline; smaller
/// values mean a new pipeline): the decompress and unpack stages grow by the difference.
pub fn record_snapshot_pipeline(p: &crate::solana::snapshot::pipeline::Progress) {
    let now = [p.frames, p.decompressed_bytes, p.entries];
    let last = PIPELINE_LAST.with(|l| l.replace(now));
    let d = |i: usize| now[i].checked_sub(last[i]).unwrap_or(now[i]);
    let s = snapshot();
    let shard = current_shard();
    s.decompress.items.add(shard, d(0));
    if let Some(b) = &s.decompress.bytes {
        b.add(shard, d(1));
    }
    s.unpack.items.add(shard, d(2));
}

/// Bytes of eth answers in a batch of engine events, counted for `shard` by stage.
pub fn record_eth_events(shard: usize, events: &[Event]) {
    let e = eth();
    let id = ShardId(shard);
    for ev in events {
        let Event::Response { resp, .. } = ev else {
            continue;
        };
        let stage = match resp {
            Response::Status { .. } => continue,
            Response::BlockHeaders(_) => &e.headers,
            Response::BlockBodies(_) => &e.bodies,
            Response::Receipts(_) => &e.receipts,
            Response::NodeData(_)
            | Response::AccountRange { .. }
            | Response::StorageRanges { .. }
            | Response::ByteCodes(_)
            | Response::TrieNodes(_) => &e.state,
        };
        if let Some(b) = &stage.bytes {
            b.add(id, resp.size_bytes() as u64);
        }
    }
}

#[derive(Default)]
struct EthLast {
    values: [u64; 10],
    published: Option<Instant>,
}

/// How often a shard republishes its peers' scores in `/status`.
pub const PEERS_PUBLISH_EVERY_MS: u128 = 1_000;

/// After a batch of engine events on `shard` (running on `core`): add what the engine
/// verified since the last call to the stage counters, and now and then publish the
/// engine's peer scores in `/status` (`eth_peers_shard_<id>`).
pub fn record_eth_progress(shard: usize, core: usize, engine: &Engine) {
    let p = engine.get_progress();
    let now = [
        p.headers_downloaded,
        p.bodies_downloaded,
        p.receipts_downloaded,
        p.state_nodes_downloaded + p.healed_nodes,
        p.accounts_downloaded,
        p.slots_downloaded,
        p.codes_downloaded,
        p.requests_sent,
        p.timeouts,
        p.lies_detected,
    ];
    let e = eth();
    let counters = [
        &e.headers.items,
        &e.bodies.items,
        &e.receipts.items,
        &e.state.items,
        &e.accounts.items,
        &e.storage.items,
        &e.codes.items,
        &e.requests,
        &e.timeouts,
        &e.lies,
    ];
    let id = ShardId(shard);
    let publish = ETH_LAST.with(|l| {
        let mut l = l.borrow_mut();
        if l.published.is_none() {
            enter_shard(shard, core);
        }
        for (i, c) in counters.iter().enumerate() {
            // Progress counts only grow within a run; a smaller value is a new run.
            let delta = now[i].checked_sub(l.values[i]).unwrap_or(now[i]);
            if delta > 0 {
                c.add(id, delta);
            }
            l.values[i] = now[i];
        }
        let due = l
            .published
            .is_none_or(|t| t.elapsed().as_millis() >= PEERS_PUBLISH_EVERY_MS);
        if due {
            l.published = Some(Instant::now());
        }
        due
    });
    if publish {
        let peers: Vec<Value> = engine
            .peers
            .peers
            .iter()
            .map(|(id, s)| {
                let mut v = serde_json::to_value(s).unwrap_or_default();
                if let Value::Object(m) = &mut v {
                    m.insert("peer".into(), json!(id));
                    m.insert("shard".into(), json!(shard));
                }
                v
            })
            .collect();
        crate::node::admin::set_status(&format!("eth_peers_shard_{shard}"), json!(peers));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_download_counts_for_the_entered_shard() {
        std::thread::spawn(|| {
            enter_shard(3, 7);
            let before = snapshot().download.items.get(ShardId(3));
            record_snapshot_download(4096, true);
            record_snapshot_download(100, false);
            assert_eq!(snapshot().download.items.get(ShardId(3)), before + 1);
            assert!(snapshot().download.bytes.as_ref().unwrap().get(ShardId(3)) >= 4196);
        })
        .join()
        .unwrap();
        assert_eq!(placement_json()["3"]["core"], 7);
    }

    #[test]
    fn pipeline_counters_grow_by_differences_and_restart() {
        std::thread::spawn(|| {
            enter_shard(4, 0);
            let s = snapshot();
            let items = |st: &Stage| st.items.get(ShardId(4));
            let (f0, e0) = (items(&s.decompress), items(&s.unpack));
            let mut p = crate::solana::snapshot::pipeline::Progress {
                frames: 2,
                decompressed_bytes: 1000,
                entries: 5,
                ..Default::default()
            };
            record_snapshot_pipeline(&p);
            p.frames = 3;
            p.entries = 9;
            record_snapshot_pipeline(&p);
            assert_eq!((items(&s.decompress), items(&s.unpack)), (f0 + 3, e0 + 9));
            // A new pipeline (after an audit) starts from zero again.
            p.frames = 1;
            p.entries = 1;
            record_snapshot_pipeline(&p);
            assert_eq!((items(&s.decompress), items(&s.unpack)), (f0 + 4, e0 + 10));
        })
        .join()
        .unwrap();
    }
}
