//! Snapshot archive generator: writes a valid archive of any size, streaming to disk, with
//! Agave's naming (`snapshot-<slot>-<hash>.tar.zst`), layout (`version`,
//! `snapshots/<slot>/<slot>`, `snapshots/status_cache`, `accounts/<slot>.<id>`), manifest
//! layout, and a correct accounts LtHash and capitalization.
//!
//! Accounts are derived deterministically from `(seed, index)`. Storage files cover slots
//! `slot - files + 1 ..= slot`; each file after the first also holds newer versions of
//! every `overwrite_every`-th account of the file before it (so "newest slot wins" is
//! exercised), and every `zero_lamport_every`-th account has zero lamports. Two passes:
//! the first computes file lengths, capitalization and the LtHash (the manifest comes first
//! in the archive), the second writes.
//!
//! With `frames > 1` the tar stream is cut into that many independent zstd frames, each
//! preceded by the frame marker of [`catchup_solana::zstd_stream`]. The bank hash written is
//! `blake3("catchup-generated" ‖ slot ‖ LtHash checksum)`, not a real bank hash; the hash in
//! the file name is the base58 LtHash checksum.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use catchup_solana::appendvec::{append_account, ENTRY_HEADER_BYTES};
use catchup_solana::manifest::{encode_manifest, Manifest, StorageInfo};
use catchup_solana::tar::{padding_len, write_header, EntryKind, END_OF_ARCHIVE};
use catchup_solana::zstd::stream::raw::{Encoder, InBuffer, Operation, OutBuffer};
use catchup_solana::zstd_stream::FrameMarker;
use catchup_solana::{base58, LtHash};
use serde::Serialize;
use thiserror::Error;

/// Largest data size the generator accepts (Agave's account data limit).
pub const MAX_DATA_BYTES: u64 = 10 * 1024 * 1024;

#[derive(Debug, Error)]
pub enum GenerateError {
    #[error("generate: {0}")]
    Config(String),
    #[error("generate: {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Distribution of account data sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSize {
    Fixed(u64),
    /// Inclusive range.
    Uniform {
        min: u64,
        max: u64,
    },
}

impl std::str::FromStr for DataSize {
    type Err = String;
    /// `N`, `fixed:N` or `uniform:A-B` (bytes, each at most 10 MiB).
    fn from_str(s: &str) -> Result<Self, String> {
        let num = |t: &str| {
            t.trim()
                .parse::<u64>()
                .map_err(|_| format!("`{t}` is not a byte count"))
        };
        let d = if let Some(r) = s.strip_prefix("uniform:") {
            let (a, b) = r
                .split_once('-')
                .ok_or_else(|| format!("`{s}`: expected uniform:MIN-MAX"))?;
            let (min, max) = (num(a)?, num(b)?);
            if min > max {
                return Err(format!("`{s}`: MIN is larger than MAX"));
            }
            DataSize::Uniform { min, max }
        } else {
            DataSize::Fixed(num(s.strip_prefix("fixed:").unwrap_or(s))?)
        };
        let max = match d {
            DataSize::Fixed(n) => n,
            DataSize::Uniform { max, .. } => max,
        };
        if max > MAX_DATA_BYTES {
            return Err(format!(
                "`{s}`: account data is limited to {MAX_DATA_BYTES} bytes"
            ));
        }
        Ok(d)
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateConfig {
    pub accounts: u64,
    pub data_size: DataSize,
    pub frames: u32,
    pub slot: u64,
    pub seed: u64,
    /// Target size of each storage file.
    pub file_size_bytes: u64,
    pub zstd_level: i32,
    /// Every n-th account of a file gets a newer version in the next file (0: never).
    pub overwrite_every: u64,
    /// Every n-th account has zero lamports (0: never).
    pub zero_lamport_every: u64,
    /// The one staked node of the bank's epoch stakes (the snapshot's epoch and the two
    /// after it): every slot's leader in those epochs. None: no stakes.
    pub leader: Option<[u8; 32]>,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            accounts: 1000,
            data_size: DataSize::Uniform { min: 0, max: 256 },
            frames: 1,
            slot: 100,
            seed: 1,
            file_size_bytes: 64 << 20,
            zstd_level: 1,
            overwrite_every: 50,
            zero_lamport_every: 1000,
            leader: None,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct Generated {
    pub path: PathBuf,
    pub slot: u64,
    pub storages: u64,
    pub accounts_written: u64,
    pub accounts_live: u64,
    pub capitalization: u64,
    pub lt_hash: String,
    pub bank_hash: String,
    pub uncompressed_bytes: u64,
    pub compressed_bytes: u64,
    pub frames: u32,
}

struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn fill(&mut self, out: &mut [u8]) {
        for c in out.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

struct Acc {
    pubkey: [u8; 32],
    lamports: u64,
    owner: [u8; 32],
    executable: bool,
    data_len: usize,
    rng: SplitMix,
}

const OWNERS: [[u8; 32]; 4] = [[0u8; 32], [6u8; 32], [7u8; 32], [8u8; 32]];

impl GenerateConfig {
    fn account(&self, index: u64, version: u64) -> Acc {
        let mut id = SplitMix(self.seed ^ index.wrapping_mul(0xA24B_AED4_963E_E407));
        let mut pubkey = [0u8; 32];
        id.fill(&mut pubkey);
        let mut rng = SplitMix(id.next() ^ version.wrapping_mul(0x9FB2_1C65_1E98_DF25));
        let zero = self.zero_lamport_every > 0
            && index % self.zero_lamport_every == self.zero_lamport_every - 1;
        let lamports = if zero {
            0
        } else {
            1 + rng.next() % 1_000_000_000
        };
        let owner = OWNERS[(rng.next() % 4) as usize];
        let executable = rng.next() % 97 == 0;
        let data_len = match self.data_size {
            DataSize::Fixed(n) => n,
            DataSize::Uniform { min, max } => min + rng.next() % (max - min + 1),
        } as usize;
        Acc {
            pubkey,
            lamports,
            owner,
            executable,
            data_len,
            rng,
        }
    }

    /// A quarter random bytes, the rest zero: compresses roughly like real account data.
    fn fill_data(acc: &mut Acc, buf: &mut Vec<u8>) {
        buf.clear();
        buf.resize(acc.data_len, 0);
        let random = acc.data_len.div_ceil(4);
        acc.rng.fill(&mut buf[..random]);
    }

    fn entry_size(&self, index: u64, version: u64) -> u64 {
        let a = self.account(index, version);
        ((ENTRY_HEADER_BYTES + a.data_len + 7) & !7) as u64
    }

    fn is_overwritten(&self, index: u64, file: usize, files: usize) -> bool {
        self.overwrite_every > 0 && index % self.overwrite_every == 0 && file + 1 < files
    }
}

/// One storage file: its native account range, and the range of the previous file whose
/// every `overwrite_every`-th account it updates.
struct FilePlan {
    natives: std::ops::Range<u64>,
    updates: std::ops::Range<u64>,
    len_bytes: u64,
}

impl FilePlan {
    fn entries<'a>(&'a self, cfg: &'a GenerateConfig) -> impl Iterator<Item = (u64, u64)> + 'a {
        let updates = self
            .updates
            .clone()
            .filter(move |j| cfg.overwrite_every > 0 && j % cfg.overwrite_every == 0)
            .map(|j| (j, 1));
        self.natives.clone().map(|i| (i, 0)).chain(updates)
    }
}

fn plan(cfg: &GenerateConfig) -> Vec<FilePlan> {
    let mut files: Vec<FilePlan> = Vec::new();
    let mut i = 0;
    while i < cfg.accounts || files.is_empty() {
        let start = i;
        let mut len = 0u64;
        while i < cfg.accounts && (len < cfg.file_size_bytes || i == start) {
            len += cfg.entry_size(i, 0);
            i += 1;
        }
        let updates = files.last().map(|f| f.natives.clone()).unwrap_or(0..0);
        let mut f = FilePlan {
            natives: start..i,
            updates,
            len_bytes: 0,
        };
        f.len_bytes = f.entries(cfg).map(|(j, v)| cfg.entry_size(j, v)).sum();
        files.push(f);
        if cfg.accounts == 0 {
            break;
        }
    }
    files
}

/// Compressed output: one zstd stream, or marked frames of about `frame_target_bytes`.
struct FrameWriter {
    out: BufWriter<File>,
    path: PathBuf,
    level: i32,
    marked: bool,
    frame_target_bytes: u64,
    enc: Option<Encoder<'static>>,
    marker_pos: u64,
    frame_in_bytes: u64,
    frame_out_bytes: u64,
    pos: u64,
    buf: Vec<u8>,
    frames: u32,
    total_in_bytes: u64,
}

impl FrameWriter {
    fn io(&self) -> impl FnOnce(std::io::Error) -> GenerateError + '_ {
        move |source| GenerateError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn start_frame(&mut self) -> Result<(), GenerateError> {
        let enc = Encoder::new(self.level).map_err(self.io())?;
        if self.marked {
            self.marker_pos = self.pos;
            let placeholder = [0u8; catchup_solana::zstd_stream::FRAME_MARKER_BYTES];
            self.out
                .write_all(&placeholder)
                .map_err(|source| GenerateError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            self.pos += placeholder.len() as u64;
        }
        self.enc = Some(enc);
        self.frame_in_bytes = 0;
        self.frame_out_bytes = 0;
        Ok(())
    }

    fn end_frame(&mut self) -> Result<(), GenerateError> {
        let Some(mut enc) = self.enc.take() else {
            return Ok(());
        };
        let path = self.path.clone();
        let io = |source| GenerateError::Io {
            path: path.clone(),
            source,
        };
        loop {
            let mut ob = OutBuffer::around(&mut self.buf[..]);
            let remaining = enc.finish(&mut ob, true).map_err(io)?;
            let n = ob.pos();
            self.out.write_all(&self.buf[..n]).map_err(io)?;
            self.pos += n as u64;
            self.frame_out_bytes += n as u64;
            if remaining == 0 {
                break;
            }
        }
        if self.marked {
            let m = FrameMarker {
                compressed_bytes: self.frame_out_bytes,
                decompressed_bytes: self.frame_in_bytes,
            };
            self.out.flush().map_err(io)?;
            let f = self.out.get_mut();
            f.seek(SeekFrom::Start(self.marker_pos)).map_err(io)?;
            f.write_all(&m.encode()).map_err(io)?;
            f.seek(SeekFrom::Start(self.pos)).map_err(io)?;
        }
        self.frames += 1;
        Ok(())
    }

    fn write(&mut self, mut data: &[u8]) -> Result<(), GenerateError> {
        let path = self.path.clone();
        let io = |source| GenerateError::Io {
            path: path.clone(),
            source,
        };
        while !data.is_empty() {
            if self.enc.is_none() {
                self.start_frame()?;
            }
            let room = if self.marked {
                self.frame_target_bytes - self.frame_in_bytes
            } else {
                u64::MAX
            };
            let take = (data.len() as u64).min(room) as usize;
            let mut ib = InBuffer::around(&data[..take]);
            while ib.pos < take {
                let mut ob = OutBuffer::around(&mut self.buf[..]);
                self.enc
                    .as_mut()
                    .expect("frame open")
                    .run(&mut ib, &mut ob)
                    .map_err(io)?;
                let n = ob.pos();
                self.out.write_all(&self.buf[..n]).map_err(io)?;
                self.pos += n as u64;
                self.frame_out_bytes += n as u64;
            }
            self.frame_in_bytes += take as u64;
            self.total_in_bytes += take as u64;
            data = &data[take..];
            if self.marked && self.frame_in_bytes >= self.frame_target_bytes {
                self.end_frame()?;
            }
        }
        Ok(())
    }
}

fn push_entry_header(
    w: &mut FrameWriter,
    path: &str,
    size: u64,
    kind: EntryKind,
) -> Result<(), GenerateError> {
    let mut h = Vec::with_capacity(1024);
    write_header(&mut h, path, size, kind);
    w.write(&h)
}

fn push_padding(w: &mut FrameWriter, size: u64) -> Result<(), GenerateError> {
    w.write(&[0u8; 512][..padding_len(size) as usize])
}

fn header_bytes(path: &str) -> u64 {
    if path.len() > 100 {
        1024 + (path.len() as u64 + 1 + padding_len(path.len() as u64 + 1))
    } else {
        512
    }
}

/// Generate an archive into `out_dir`.
pub fn generate(cfg: &GenerateConfig, out_dir: &Path) -> Result<Generated, GenerateError> {
    if cfg.frames == 0 {
        return Err(GenerateError::Config("--frames must be at least 1".into()));
    }
    let files = plan(cfg);
    let nfiles = files.len();
    if cfg.slot + 1 < nfiles as u64 {
        return Err(GenerateError::Config(format!(
            "--slot {} is too small for {nfiles} storage files (one slot each): pass --slot {} or more, or a larger --file-size-bytes",
            cfg.slot,
            nfiles - 1
        )));
    }
    let first_slot = cfg.slot + 1 - nfiles as u64;
    // Pass 1: LtHash and capitalization over the live versions.
    let mut lt = LtHash::identity();
    let mut cap: u64 = 0;
    let mut live = 0u64;
    let mut written = 0u64;
    let mut data = Vec::new();
    for (f, plan) in files.iter().enumerate() {
        for (j, v) in plan.entries(cfg) {
            written += 1;
            if v == 0 && cfg.is_overwritten(j, f, nfiles) {
                continue;
            }
            live += 1;
            let mut a = cfg.account(j, v);
            if a.lamports == 0 {
                continue;
            }
            GenerateConfig::fill_data(&mut a, &mut data);
            lt.mix_in(&LtHash::of_account(
                a.lamports,
                &data,
                a.executable,
                &a.owner,
                &a.pubkey,
            ));
            cap = cap
                .checked_add(a.lamports)
                .ok_or_else(|| GenerateError::Config("capitalization overflows u64".into()))?;
        }
    }
    let storages: Vec<StorageInfo> = files
        .iter()
        .enumerate()
        .map(|(f, p)| StorageInfo {
            slot: first_slot + f as u64,
            id: f as u64,
            accounts_current_len: p.len_bytes,
        })
        .collect();
    let checksum = lt.checksum();
    let mut bank = catchup_solana::blake3::Hasher::new();
    bank.update(b"catchup-generated");
    bank.update(&cfg.slot.to_le_bytes());
    bank.update(&checksum);
    let bank_hash = *bank.finalize().as_bytes();
    let mut m = Manifest::new(cfg.slot, bank_hash, cap, storages.clone());
    m.accounts_lt_hash = Some(Box::new(lt));
    m.accounts_data_len = 0;
    if let Some(leader) = cfg.leader {
        let (epoch, _, _) = m.epoch_schedule.epoch_of(cfg.slot);
        m.epoch = epoch;
        m.versioned_epoch_stakes_epochs = (epoch..=epoch + 2).collect();
        m.epoch_node_stakes = (epoch..=epoch + 2)
            .map(|e| (e, vec![(leader, 1_000_000_000)]))
            .collect();
    }
    let manifest = encode_manifest(&m);
    let status_cache = 0u64.to_le_bytes();
    let version = b"1.2.0";
    let slot_s = cfg.slot.to_string();
    let manifest_path = format!("snapshots/{slot_s}/{slot_s}");
    // Total tar size, for the frame targets.
    let mut tar_bytes: u64 = 0;
    let mut add =
        |path: &str, size: u64| tar_bytes += header_bytes(path) + size + padding_len(size);
    add("version", version.len() as u64);
    add("snapshots/", 0);
    add("snapshots/status_cache", status_cache.len() as u64);
    add(&format!("snapshots/{slot_s}/"), 0);
    add(&manifest_path, manifest.len() as u64);
    add("accounts/", 0);
    for s in &storages {
        add(
            &format!("accounts/{}.{}", s.slot, s.id),
            s.accounts_current_len,
        );
    }
    tar_bytes += END_OF_ARCHIVE.len() as u64;

    std::fs::create_dir_all(out_dir).map_err(|source| GenerateError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let name = format!("snapshot-{}-{}.tar.zst", cfg.slot, base58(&checksum));
    let final_path = out_dir.join(&name);
    let tmp_path = out_dir.join(format!(".{name}.tmp"));
    let file = File::create(&tmp_path).map_err(|source| GenerateError::Io {
        path: tmp_path.clone(),
        source,
    })?;
    let mut w = FrameWriter {
        out: BufWriter::with_capacity(1 << 20, file),
        path: tmp_path.clone(),
        level: cfg.zstd_level,
        marked: cfg.frames > 1,
        frame_target_bytes: tar_bytes.div_ceil(cfg.frames as u64).max(1),
        enc: None,
        marker_pos: 0,
        frame_in_bytes: 0,
        frame_out_bytes: 0,
        pos: 0,
        buf: vec![0u8; catchup_solana::zstd::zstd_safe::CCtx::out_size()],
        frames: 0,
        total_in_bytes: 0,
    };
    // Pass 2: write.
    let put = |w: &mut FrameWriter, path: &str, bytes: &[u8]| -> Result<(), GenerateError> {
        push_entry_header(w, path, bytes.len() as u64, EntryKind::File)?;
        w.write(bytes)?;
        push_padding(w, bytes.len() as u64)
    };
    put(&mut w, "version", version)?;
    push_entry_header(&mut w, "snapshots/", 0, EntryKind::Directory)?;
    put(&mut w, "snapshots/status_cache", &status_cache)?;
    push_entry_header(
        &mut w,
        &format!("snapshots/{slot_s}/"),
        0,
        EntryKind::Directory,
    )?;
    put(&mut w, &manifest_path, &manifest)?;
    push_entry_header(&mut w, "accounts/", 0, EntryKind::Directory)?;
    let mut entry = Vec::with_capacity(1 << 16);
    for (f, plan) in files.iter().enumerate() {
        let s = &storages[f];
        push_entry_header(
            &mut w,
            &format!("accounts/{}.{}", s.slot, s.id),
            s.accounts_current_len,
            EntryKind::File,
        )?;
        let mut file_bytes = 0u64;
        for (j, v) in plan.entries(cfg) {
            let mut a = cfg.account(j, v);
            GenerateConfig::fill_data(&mut a, &mut data);
            entry.clear();
            append_account(
                &mut entry,
                &a.pubkey,
                a.lamports,
                u64::MAX,
                &a.owner,
                a.executable,
                &data,
            );
            file_bytes += entry.len() as u64;
            w.write(&entry)?;
        }
        debug_assert_eq!(file_bytes, s.accounts_current_len);
        push_padding(&mut w, s.accounts_current_len)?;
    }
    w.write(&END_OF_ARCHIVE)?;
    w.end_frame()?;
    let uncompressed = w.total_in_bytes;
    let frames = w.frames;
    let mut out = w.out;
    out.flush().map_err(|source| GenerateError::Io {
        path: tmp_path.clone(),
        source,
    })?;
    let compressed = out.get_ref().metadata().map(|m| m.len()).unwrap_or(0);
    drop(out);
    std::fs::rename(&tmp_path, &final_path).map_err(|source| GenerateError::Io {
        path: final_path.clone(),
        source,
    })?;
    Ok(Generated {
        path: final_path,
        slot: cfg.slot,
        storages: nfiles as u64,
        accounts_written: written,
        accounts_live: live,
        capitalization: cap,
        lt_hash: base58(&checksum),
        bank_hash: base58(&bank_hash),
        uncompressed_bytes: uncompressed,
        compressed_bytes: compressed,
        frames,
    })
}

/// What to change in an incremental snapshot generated on top of a full archive.
#[derive(Debug, Clone)]
pub struct IncrementalConfig {
    /// The incremental snapshot's slot (after the full snapshot's).
    pub slot: u64,
    /// Existing accounts given a new version (new lamports and data).
    pub changed: u64,
    /// New accounts.
    pub added: u64,
    /// Existing accounts removed (stored again with zero lamports).
    pub removed: u64,
    pub seed: u64,
    pub zstd_level: i32,
}

/// What was written for an incremental snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct GeneratedIncremental {
    pub path: PathBuf,
    pub full_slot: u64,
    pub slot: u64,
    pub changed: u64,
    pub added: u64,
    pub removed: u64,
    /// Capitalization of full + incremental (the incremental manifest's).
    pub capitalization: u64,
    /// LtHash checksum of full + incremental (the name's hash).
    pub lt_hash: String,
    pub bank_hash: String,
    pub uncompressed_bytes: u64,
    pub compressed_bytes: u64,
}

/// Generate `incremental-snapshot-<full_slot>-<slot>-<hash>.tar.zst` into `out_dir` on top
/// of the full archive `full`, which is verified first (in a scratch directory under
/// `out_dir`, removed afterwards). The incremental holds one storage file at `slot` with the
/// new versions of `changed` and `removed` existing accounts (spread over the full's live
/// accounts in pubkey order) and `added` new ones. Its manifest carries the LtHash and
/// capitalization of full + incremental (the hash in its name is that LtHash's checksum)
/// and, as Agave's incrementals since SIMD-0220 (the fixture 1→4), no incremental
/// persistence fields (the merkle accounts hashes they carried are no longer computed).
pub fn generate_incremental(
    full: &Path,
    cfg: &IncrementalConfig,
    out_dir: &Path,
    pipeline: super::PipelineConfig,
) -> Result<GeneratedIncremental, GenerateError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GenerateError::Io { path, source }
    };
    let is_incremental = full
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(catchup_solana::unpack::parse_archive_name)
        .is_some_and(|n| n.base_slot.is_some());
    if is_incremental {
        return Err(GenerateError::Config(format!(
            "--incremental-of {}: that archive is an incremental snapshot, give a full one",
            full.display()
        )));
    }
    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let scratch = out_dir.join(format!(".incremental-base-{}", std::process::id()));
    let verified = super::verify_archive_snapshot(full, None, &scratch, pipeline)
        .map_err(|e| GenerateError::Config(format!("--incremental-of {}: {e}", full.display())));
    let result = verified.and_then(|v| {
        let accounts = v
            .accounts()
            .map_err(|e| GenerateError::Config(format!("--incremental-of: {e}")))?;
        Ok((v.manifest.clone(), accounts))
    });
    let _ = std::fs::remove_dir_all(&scratch);
    let (base, mut accounts) = result?;
    if cfg.slot <= base.slot {
        return Err(GenerateError::Config(format!(
            "--slot {} must be after the full snapshot's slot {}",
            cfg.slot, base.slot
        )));
    }
    let Some(base_lt) = base.accounts_lt_hash.as_deref() else {
        return Err(GenerateError::Config(format!(
            "--incremental-of {}: the full manifest has no accounts LtHash",
            full.display()
        )));
    };
    accounts.retain(|a| a.lamports > 0);
    accounts.sort_unstable_by_key(|a| a.pubkey);
    let touched = cfg.changed + cfg.removed;
    if touched > accounts.len() as u64 {
        return Err(GenerateError::Config(format!(
            "--changed {} plus --removed {} is more than the {} live accounts of the full snapshot",
            cfg.changed,
            cfg.removed,
            accounts.len()
        )));
    }
    let mut lt = (*base_lt).clone();
    let mut cap = base.capitalization as u128;
    let mut rng = SplitMix(cfg.seed ^ cfg.slot.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let mut storage = Vec::new();
    let put = |storage: &mut Vec<u8>,
               lt: &mut LtHash,
               cap: &mut u128,
               pubkey: &[u8; 32],
               lamports: u64,
               owner: &[u8; 32],
               executable: bool,
               data: &[u8]| {
        append_account(storage, pubkey, lamports, u64::MAX, owner, executable, data);
        if lamports > 0 {
            lt.mix_in(&LtHash::of_account(
                lamports, data, executable, owner, pubkey,
            ));
            *cap += lamports as u128;
        }
    };
    for k in 0..touched {
        // Spread over the live accounts; distinct because touched <= len.
        let a = &accounts[(k * accounts.len() as u64 / touched.max(1)) as usize];
        lt.mix_out(&LtHash::of_account(
            a.lamports,
            &a.data,
            a.executable,
            &a.owner,
            &a.pubkey,
        ));
        cap -= a.lamports as u128;
        if k < cfg.changed {
            let mut data = a.data.clone();
            let random = data.len().div_ceil(4);
            rng.fill(&mut data[..random]);
            let lamports = 1 + rng.next() % 1_000_000_000;
            put(
                &mut storage,
                &mut lt,
                &mut cap,
                &a.pubkey,
                lamports,
                &a.owner,
                a.executable,
                &data,
            );
        } else {
            put(
                &mut storage,
                &mut lt,
                &mut cap,
                &a.pubkey,
                0,
                &[0u8; 32],
                false,
                &[],
            );
        }
    }
    for _ in 0..cfg.added {
        let mut pubkey = [0u8; 32];
        rng.fill(&mut pubkey);
        let mut data = vec![0u8; (rng.next() % 200) as usize];
        rng.fill(&mut data[..]);
        let lamports = 1 + rng.next() % 1_000_000_000;
        let owner = OWNERS[(rng.next() % 4) as usize];
        put(
            &mut storage,
            &mut lt,
            &mut cap,
            &pubkey,
            lamports,
            &owner,
            false,
            &data,
        );
    }
    let cap = u64::try_from(cap)
        .map_err(|_| GenerateError::Config("capitalization overflows u64".into()))?;
    let checksum = lt.checksum();
    let mut bank = catchup_solana::blake3::Hasher::new();
    bank.update(b"catchup-generated");
    bank.update(&cfg.slot.to_le_bytes());
    bank.update(&checksum);
    let bank_hash = *bank.finalize().as_bytes();
    let id = base
        .storages
        .iter()
        .map(|s| s.id)
        .max()
        .map_or(0, |m| m + 1);
    let info = StorageInfo {
        slot: cfg.slot,
        id,
        accounts_current_len: storage.len() as u64,
    };
    let mut m = Manifest::new(cfg.slot, bank_hash, cap, vec![info]);
    m.epoch_schedule = base.epoch_schedule;
    m.epoch = m.epoch_schedule.epoch_of(cfg.slot).0;
    m.versioned_epoch_stakes_epochs = base.versioned_epoch_stakes_epochs.clone();
    m.epoch_node_stakes = base.epoch_node_stakes.clone();
    m.accounts_lt_hash = Some(Box::new(lt));
    m.accounts_data_len = 0;
    let manifest = encode_manifest(&m);

    let name = format!(
        "incremental-snapshot-{}-{}-{}.tar.zst",
        base.slot,
        cfg.slot,
        base58(&checksum)
    );
    let final_path = out_dir.join(&name);
    let tmp_path = out_dir.join(format!(".{name}.tmp"));
    let file = File::create(&tmp_path).map_err(io(&tmp_path))?;
    let mut w = FrameWriter {
        out: BufWriter::with_capacity(1 << 20, file),
        path: tmp_path.clone(),
        level: cfg.zstd_level,
        marked: false,
        frame_target_bytes: u64::MAX,
        enc: None,
        marker_pos: 0,
        frame_in_bytes: 0,
        frame_out_bytes: 0,
        pos: 0,
        buf: vec![0u8; catchup_solana::zstd::zstd_safe::CCtx::out_size()],
        frames: 0,
        total_in_bytes: 0,
    };
    let put = |w: &mut FrameWriter, path: &str, bytes: &[u8]| -> Result<(), GenerateError> {
        push_entry_header(w, path, bytes.len() as u64, EntryKind::File)?;
        w.write(bytes)?;
        push_padding(w, bytes.len() as u64)
    };
    let slot_s = cfg.slot.to_string();
    put(&mut w, "version", b"1.2.0")?;
    push_entry_header(&mut w, "snapshots/", 0, EntryKind::Directory)?;
    put(&mut w, "snapshots/status_cache", &0u64.to_le_bytes())?;
    push_entry_header(
        &mut w,
        &format!("snapshots/{slot_s}/"),
        0,
        EntryKind::Directory,
    )?;
    put(&mut w, &format!("snapshots/{slot_s}/{slot_s}"), &manifest)?;
    push_entry_header(&mut w, "accounts/", 0, EntryKind::Directory)?;
    put(&mut w, &format!("accounts/{}.{}", cfg.slot, id), &storage)?;
    w.write(&END_OF_ARCHIVE)?;
    w.end_frame()?;
    let uncompressed = w.total_in_bytes;
    let mut out = w.out;
    out.flush().map_err(io(&tmp_path))?;
    let compressed = out.get_ref().metadata().map(|m| m.len()).unwrap_or(0);
    drop(out);
    std::fs::rename(&tmp_path, &final_path).map_err(io(&final_path))?;
    Ok(GeneratedIncremental {
        path: final_path,
        full_slot: base.slot,
        slot: cfg.slot,
        changed: cfg.changed,
        added: cfg.added,
        removed: cfg.removed,
        capitalization: cap,
        lt_hash: base58(&checksum),
        bank_hash: base58(&bank_hash),
        uncompressed_bytes: uncompressed,
        compressed_bytes: compressed,
    })
}
