//! The sharded account index, built in one pass.
//!
//! # Who does what
//!
//! - **Writer/scanner**: each account file is handed, as its bytes arrive, to one shard —
//!   the one with the fewest bytes queued when the file starts (round-robin among equals),
//!   so large and small files spread evenly. That shard writes the file (glommio DMA
//!   writes through io_uring; plain `write(2)` only where O_DIRECT is refused, the reason
//!   logged) and scans its entries from the same in-memory pieces with
//!   [`AppendVecScanner`]: every entry is parsed and hashed exactly once, by one shard.
//! - **Owner**: shard `owner_of_key(pubkey)` keeps the index slice for its pubkeys. The
//!   scanning shard sends it compact [`IndexEntry`] values (pubkey, slot, file, offset,
//!   lamports, data length) in batches over a full mesh of bounded channels (a full link
//!   is back-pressure: the sender's task waits while its own receiving task keeps
//!   draining, so the mesh cannot deadlock). Newest (slot, file id, offset) wins.
//!
//! # LtHash of the live set, with each account hashed once
//!
//! The scanning shard mixes every entry's LtHash element into its own running sum while
//! the bytes are hot in cache (zero-lamport entries add nothing) and ships no hash. The
//! owner decides winners from the compact entries alone and records each *loser* (an
//! older version, or a newer file's entry that lost the tie-break) whose lamports are
//! non-zero. When totals are asked for, each owner re-reads its losers from the storage
//! files and mixes their elements out. So `Σ shards = Σ scanned − Σ losers = Σ live`,
//! exactly the live-set semantics, and the blake3 XOF runs once per entry plus once per
//! overwritten entry. The alternatives cost more: shipping the 2048-byte element with
//! every entry multiplies the mesh traffic by ~15, keeping it at the owner costs 2 KiB per
//! live account, and hashing only the winners at the end re-reads every account after
//! the stream instead of while it is in cache. Lamports, zero-lamport counts and data
//! bytes work the same way at the owner: every entry adds its values as it arrives (the
//! compact entries carry them), and each superseded version subtracts them, read from
//! its file with its LtHash element.
//!
//! # A lean index
//!
//! An owner keeps 16 bytes a live account (`table`): a keyed 64-bit fingerprint of the
//! pubkey, the storage file as an index into the shard's file table and the offset / 8,
//! in an open-addressing table at most 3/4 full (21–43 bytes per account). Pubkeys are
//! confirmed from the files: an entry whose fingerprint is taken waits for the barrier,
//! then is either a newer or older version of the same account or a different pubkey,
//! kept in an exact side table. Memory maps of storage files are bounded per shard
//! ([`IndexConfig::max_open_maps`], least recently used dropped; `maps`).
//!
//! A file that arrives before the manifest (so its `accounts_current_len` is unknown
//! while it streams) is written first and scanned from its memory map once the manifest
//! is known.
//!
//! # Barrier
//!
//! Totals use a marker protocol: every shard finishes the work queued before the request,
//! flushes its batches, sends a marker to every peer, and answers once it has the markers
//! of all peers (per-link order guarantees every batch before a marker has arrived). A
//! shard's file writes are finished before its marker goes out, so owners may map any
//! file when they retract losers.
//!
//! # Files
//!
//! `set` (the handle the pipeline holds), `inbox` (a shard's command loop), `load`
//! (writing and scanning account files), `mesh` (the links between shards), `shard` (one
//! shard's slice of the index), `table` (its compact fingerprint table), `maps` (its
//! bounded memory maps), `hash` (resolving fingerprint matches and retracting superseded
//! versions).
//!
//! [`AppendVecScanner`]: catchup_solana::appendvec::AppendVecScanner

mod hash;
mod inbox;
mod load;
mod maps;
mod mesh;
pub(crate) mod set;
mod shard;
mod table;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use catchup_solana::LtHash;

pub use hash::{RETRACT_READS_IN_FLIGHT, RETRACT_READ_BYTES};
pub use set::ShardSet;
pub use table::SLOT_BYTES;

/// Memory maps of storage files a shard keeps open by default (the least recently used
/// is dropped beyond it; see [`IndexConfig::max_open_maps`]).
pub const DEFAULT_MAX_OPEN_MAPS_PER_SHARD: usize = 1024;

/// Settings of the index shards.
#[derive(Debug, Clone)]
pub struct IndexConfig {
    /// Storage-file memory maps each shard keeps open at most; a cold file is mapped again
    /// when read. All shards together stay well below Linux's default
    /// `vm.max_map_count` (65,530) with the default.
    pub max_open_maps: usize,
    /// Test only: fingerprints with three values, so nearly every pubkey collides.
    #[cfg(test)]
    pub(crate) weak_fingerprint: bool,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            max_open_maps: DEFAULT_MAX_OPEN_MAPS_PER_SHARD,
            #[cfg(test)]
            weak_fingerprint: false,
        }
    }
}

impl IndexConfig {
    /// These settings with `n` open maps per shard at most.
    pub fn with_max_open_maps(mut self, n: usize) -> Self {
        self.max_open_maps = n.max(1);
        self
    }

    fn weak_fingerprint(&self) -> bool {
        #[cfg(test)]
        return self.weak_fingerprint;
        #[cfg(not(test))]
        false
    }
}

/// Smallest capacity of a shard's inbox from the feeding thread (messages; data messages
/// are at most [`WRITE_CHUNK_BYTES`] each). [`ShardSet::start_with_queue`] sets a deeper
/// one, so a shard can work through a large file while the feeder moves on to the next.
pub const MIN_SHARD_INBOX_CAPACITY: usize = 2;
/// Capacity of each shard-to-shard link (batches).
pub const MESH_LINK_CAPACITY: usize = 4;
/// Index entries per batch sent to an owner.
pub const INDEX_BATCH_ENTRIES: usize = 1024;
/// Size of the pieces of a file handed to its writer shard, and of one DMA write.
pub const WRITE_CHUNK_BYTES: usize = 512 << 10;
/// DMA writes a shard keeps outstanding while it scans the next pieces.
pub const DMA_WRITES_IN_FLIGHT: usize = 4;
/// Bytes hinted for reading per superseded entry before its hash is recomputed.
pub const RETRACT_PREFETCH_BYTES: usize = 4096;
/// How often a busy shard lets its executor submit and reap I/O.
pub const SHARD_IO_LATENCY: std::time::Duration = std::time::Duration::from_millis(1);

/// Streaming memory of a shard set with `shards` shards and `inbox_capacity` messages per
/// inbox, at most: queued and in-process file pieces, one DMA buffer per shard, and full
/// mesh links plus the batches being filled.
pub fn streaming_bytes(shards: usize, inbox_capacity: usize) -> u64 {
    let n = shards.max(1) as u64;
    let batch = (INDEX_BATCH_ENTRIES * std::mem::size_of::<IndexEntry>()) as u64;
    n * (inbox_capacity as u64 + 2) * WRITE_CHUNK_BYTES as u64
        + n * n.saturating_sub(1) * (MESH_LINK_CAPACITY as u64 + 1) * batch
}

/// Where the newest version of an account lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountLocation {
    pub slot: u64,
    pub file_id: u64,
    pub offset: u64,
}

/// An account read back from its storage file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    pub pubkey: [u8; 32],
    pub lamports: u64,
    pub owner: [u8; 32],
    pub executable: bool,
    pub rent_epoch: u64,
    pub data: Vec<u8>,
    pub location: AccountLocation,
}

/// One shard's contribution to verification.
#[derive(Debug, Clone)]
pub struct ShardTotals {
    pub shard: usize,
    /// This shard's part of the live set's LtHash (scanned elements minus retracted
    /// losers; only the sum over all shards is meaningful).
    pub lt_hash: LtHash,
    pub capitalization: u128,
    /// Entries owned by this shard (all versions).
    pub accounts_total: u64,
    /// Stored bytes (headers, data, padding) of the entries this shard owns.
    pub owned_bytes: u64,
    pub accounts_live: u64,
    pub zero_lamport_live: u64,
    pub data_bytes_live: u64,
    /// Entries this shard parsed and hashed (from the files it wrote).
    pub scanned_accounts: u64,
    /// Stored bytes of those entries.
    pub scanned_bytes: u64,
    /// Account files this shard wrote.
    pub files_written: u64,
    /// Superseded versions whose LtHash elements were mixed out.
    pub retracted: u64,
    /// How this shard wrote files: `io_uring-dma`, or `write(2)` and why.
    pub write_mode: String,
    /// Time spent parsing and hashing entries.
    pub scan_ms: u64,
    /// Time spent waiting for file writes.
    pub write_ms: u64,
    /// Time spent waiting for work from the feeding thread.
    pub idle_ms: u64,
    /// Time spent waiting to hand index entries to their owners (their links full).
    pub mesh_wait_ms: u64,
    /// CPU time of the shard's thread so far (all its tasks: scan, writes, index entries
    /// from other shards, retraction).
    pub cpu_ms: u64,
    /// Time spent re-reading and mixing out superseded versions (and telling apart
    /// pubkeys that share a fingerprint), in all.
    pub retract_ms: u64,
    /// Of `retract_ms`, the time spent at totals, after the last file arrived; the rest
    /// ran while files streamed.
    pub retract_tail_ms: u64,
    /// Superseded versions mixed out while files were still streaming.
    pub retracted_in_stream: u64,
    /// Memory of this shard's index at rest (fingerprint table, side table, file tables),
    /// from their capacities.
    pub index_bytes: u64,
    /// Pubkeys kept in the exact side table because another pubkey has their fingerprint.
    pub index_collisions: u64,
    /// Storage files this shard's index refers to.
    pub storage_files: u64,
    /// Storage-file memory maps open now, at most at once, and opened in all.
    pub open_maps: u64,
    pub peak_open_maps: u64,
    pub maps_opened: u64,
    /// First storage-file error this shard saw, if any.
    pub error: Option<String>,
}

/// A compact index entry, sent from the scanning shard to the owner of its pubkey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub pubkey: [u8; 32],
    pub slot: u64,
    pub id: u64,
    pub offset: u64,
    pub lamports: u64,
    pub data_len: u32,
    /// Which snapshot (0: full, 1: incremental on top, ...) the file belongs to.
    pub gen: u32,
}

impl IndexEntry {
    fn stored_bytes(&self) -> u64 {
        (catchup_solana::appendvec::ENTRY_HEADER_BYTES as u64 + self.data_len as u64 + 7) & !7
    }
}

/// Messages from the feeding thread to a shard.
enum Cmd {
    /// The accounts directory of snapshot generation `gen` (broadcast; sent again after
    /// the directory is renamed into place).
    SetDir {
        gen: u32,
        dir: PathBuf,
    },
    /// Start writing (and, when `current_len` is known, scanning) a file.
    Begin {
        gen: u32,
        slot: u64,
        id: u64,
        declared_bytes: u64,
        current_len: Option<u64>,
    },
    Data(Vec<u8>),
    End {
        fsync: bool,
    },
    /// Scan a file written earlier, from its memory map.
    Scan {
        gen: u32,
        slot: u64,
        id: u64,
        current_len: u64,
    },
    Totals {
        epoch: u64,
        reply: flume::Sender<ShardTotals>,
    },
    Get([u8; 32], flume::Sender<Option<AccountRecord>>),
    All(flume::Sender<Vec<AccountRecord>>),
}

enum Peer {
    Batch(Vec<IndexEntry>),
    /// The writer wrote this storage file in full: what waits to read it can go on.
    FileDone {
        gen: u32,
        slot: u64,
        id: u64,
    },
    Marker(u64),
}

/// Environment variable selecting the index shards' runtime: `threads` for pinned plain
/// threads (write(2), mmap reads); unset or anything else for the glommio shard runtime
/// (io_uring DMA writes and reads), which falls back to threads where it cannot start.
pub const INDEX_RUNTIME_ENV: &str = "CATCHUP_SNAPSHOT_INDEX_RUNTIME";

/// A shard worker stopped unexpectedly.
#[derive(Debug, thiserror::Error)]
#[error("snapshot index shard stopped unexpectedly")]
pub struct ShardGone;

/// Helpers shared by the stage tests: build account files and stream them to a shard set.
#[cfg(test)]
mod test_support {
    use super::ShardSet;
    use catchup_solana::appendvec::append_account;

    pub(super) fn file(entries: &[([u8; 32], u64, &[u8])]) -> Vec<u8> {
        let mut f = Vec::new();
        for (k, l, d) in entries {
            append_account(&mut f, k, *l, 0, &[9; 32], false, d);
        }
        f
    }

    /// Stream `bytes` as accounts/<slot>.<id> in pieces of `piece` bytes; with
    /// `late_scan` the file is written first and scanned from its map afterwards.
    pub(super) fn stream(
        set: &mut ShardSet,
        (slot, id): (u64, u64),
        bytes: &[u8],
        piece: usize,
        late_scan: bool,
    ) {
        let len = bytes.len() as u64;
        let w = set
            .begin_file(0, slot, id, len, (!late_scan).then_some(len))
            .unwrap();
        for c in bytes.chunks(piece) {
            set.file_data(c.to_vec()).unwrap();
        }
        set.end_file(false).unwrap();
        if late_scan {
            set.scan_file(w, 0, slot, id, len).unwrap();
        }
    }
}
