//! Writing and scanning account files: each file streams to one shard, which writes it
//! (io_uring DMA, or `write(2)`) and parses its entries from the same pieces, or later
//! from its memory map.

use std::path::{Path, PathBuf};

use catchup_io::files::{DmaCreate, DmaStreamWriter, StreamedFile};
use catchup_shards::ownership::owner_of_key;
use catchup_solana::appendvec::{iter_accounts, AppendVecScanner, StoredAccount};

use super::shard::State;
use super::{IndexEntry, DMA_WRITES_IN_FLIGHT, WRITE_CHUNK_BYTES};

impl State {
    /// Hash one scanned entry into this shard's sum and route its index entry.
    pub(super) fn scanned(
        &mut self,
        a: &StoredAccount<'_>,
        gen: u32,
        slot: u64,
        id: u64,
        out: &mut [Vec<IndexEntry>],
    ) {
        self.lt_hash
            .mix_in_account(a.lamports, a.data, a.executable, a.owner, a.pubkey);
        self.scanned_accounts += 1;
        self.scanned_bytes += a.stored_size_bytes() as u64;
        let e = IndexEntry {
            pubkey: *a.pubkey,
            slot,
            id,
            offset: a.offset,
            lamports: a.lamports,
            // Bounded by MAX_ACCOUNT_DATA_BYTES (10 MiB) in the parser.
            data_len: a.data.len() as u32,
            gen,
        };
        let owner = owner_of_key(a.pubkey, self.shards).0;
        if owner == self.shard {
            self.apply(&e);
        } else {
            out[owner].push(e);
        }
    }

    /// Scan a complete file from its memory map.
    pub(super) fn scan_mapped(
        &mut self,
        gen: u32,
        slot: u64,
        id: u64,
        current_len: u64,
        out: &mut [Vec<IndexEntry>],
    ) {
        let map = match self.intern(gen, slot, id).and_then(|f| self.map(f)) {
            Ok(m) => m,
            Err(e) => return self.fail(e),
        };
        map.advise_sequential();
        let iter = match iter_accounts(map.bytes(), current_len) {
            Ok(it) => it,
            Err(e) => return self.fail(format!("accounts/{slot}.{id}: {e}")),
        };
        for item in iter {
            match item {
                Ok(a) => self.scanned(&a, gen, slot, id, out),
                Err(e) => return self.fail(format!("accounts/{slot}.{id}: {e}")),
            }
        }
    }
}

/// Where a shard writes: glommio DMA (io_uring, O_DIRECT) inside an executor, plain
/// `write(2)` on the thread fallback or where O_DIRECT is refused.
pub(super) enum Sink {
    Dma(DmaStreamWriter),
    Plain(StreamedFile),
}

pub(super) struct OpenFile {
    pub(super) gen: u32,
    pub(super) slot: u64,
    pub(super) id: u64,
    pub(super) path: PathBuf,
    pub(super) declared_bytes: u64,
    pub(super) received_bytes: u64,
    pub(super) sink: Option<Sink>,
    pub(super) scanner: Option<AppendVecScanner>,
    pub(super) failed: bool,
}

pub(super) async fn open_sink(
    path: &Path,
    declared_bytes: u64,
    dma: bool,
    mode: &mut String,
) -> Result<Sink, String> {
    if dma {
        match DmaStreamWriter::create(
            path,
            declared_bytes,
            WRITE_CHUNK_BYTES,
            DMA_WRITES_IN_FLIGHT,
        )
        .await
        {
            Ok(DmaCreate::Dma(w)) => {
                if mode.is_empty() {
                    *mode = "io_uring-dma".into();
                }
                return Ok(Sink::Dma(w));
            }
            Ok(DmaCreate::Refused(e)) => {
                if !mode.starts_with("write(2)") {
                    tracing::warn!(path = %path.display(), reason = %e,
                        "O_DIRECT refused for account files; writing them with write(2)");
                    *mode = format!("write(2): O_DIRECT refused: {e}");
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    } else if mode.is_empty() {
        *mode = "write(2): no io_uring executor".into();
    }
    StreamedFile::create(path, declared_bytes, WRITE_CHUNK_BYTES)
        .map(Sink::Plain)
        .map_err(|e| e.to_string())
}

impl Sink {
    pub(super) async fn write(&mut self, data: &[u8]) -> Result<(), String> {
        match self {
            Sink::Plain(f) => f.write(data),
            Sink::Dma(w) => w.write(data).await,
        }
        .map_err(|e| e.to_string())
    }

    pub(super) async fn finish(self, fsync: bool) -> Result<(), String> {
        match self {
            Sink::Plain(f) => f.finish(fsync).map(drop),
            Sink::Dma(w) => w.finish(fsync).await.map(drop),
        }
        .map_err(|e| e.to_string())
    }
}
