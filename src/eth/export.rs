//! Exports of what `eth sync` verified into formats other clients read.
//!
//! [`export_state`] writes the state at the pivot as JSON lines, the shape of geth's
//! iterative dump (`geth dump --iterative`) that reth's `init-state` also reads: a first
//! line with the state root (and here the pivot header), then one line per account with
//! `balance` (decimal), `nonce`, `root` (storage root), `codeHash`, `code` and `storage`.
//! A fast or snap sync learns accounts and storage slots by their keccak only, never the
//! preimages, so each account carries its hashed address as `key` and its storage is keyed
//! by the hashed slot (geth writes the same when it has no preimage).
//!
//! [`state_root_of_dump_lines`] recomputes the root of such a file (what
//! `eth state-root --dump FILE` runs on JSON lines).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use alloy_primitives::{B256, U256};
use catchup_eth::trie::trie_root;
use catchup_eth::types::Account;
use serde_json::{json, Value};

use crate::eth::sync::persist::DiskStore;
use crate::eth::walk::{walk_trie, NodeReader, Walked};

/// keccak of the empty byte string: the code hash of an account without code.
const EMPTY_CODE_HASH: B256 =
    alloy_primitives::b256!("c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470");
/// Root of an empty trie.
const EMPTY_ROOT: B256 =
    alloy_primitives::b256!("56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421");
/// Largest number of accounts one export or one root check handles.
pub const MAX_ACCOUNTS: usize = 50_000_000;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("export: {path}: {what}")]
    DataDir { path: PathBuf, what: String },
    #[error("export: the state trie at root {root:#x} is missing node {node:#x} (under path {path}): the sync did not finish")]
    MissingNode {
        root: B256,
        node: B256,
        path: String,
    },
    #[error("export: node {node:#x}: {what}")]
    BadNode { node: B256, what: String },
    #[error("export: code {hash:#x} of account {account:#x} is not in the data directory")]
    MissingCode { hash: B256, account: B256 },
    #[error("export: writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state dump line {line}: {what}")]
    BadLine { line: usize, what: String },
}

impl ExportError {
    /// Makes [`ExportError::DataDir`] errors about `path`.
    pub fn at(path: &Path) -> impl Fn(String) -> ExportError + '_ {
        move |what| ExportError::DataDir {
            path: path.to_path_buf(),
            what,
        }
    }
}

/// The sync report (`sync-report.json`) of `datadir`.
fn read_report(datadir: &Path) -> Result<Value, ExportError> {
    let bad = ExportError::at(datadir);
    let report_path = datadir.join("sync-report.json");
    std::fs::read(&report_path)
        .map_err(|e| {
            bad(format!(
                "no sync report ({e}): run `eth sync --datadir` first"
            ))
        })
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| bad(format!("sync-report.json: {e}"))))
}

/// The `shard-<N>/` store directories of `datadir`, in order (at least one).
pub(crate) fn shard_dirs(datadir: &Path) -> Result<Vec<PathBuf>, ExportError> {
    let mut dirs = Vec::new();
    for i in 0..catchup_shards::runtime::MAX_SHARDS {
        let d = datadir.join(format!("shard-{i}"));
        if !d.is_dir() {
            break;
        }
        dirs.push(d);
    }
    if dirs.is_empty() {
        return Err(ExportError::DataDir {
            path: datadir.to_path_buf(),
            what: "no shard-<N>/ store: not an `eth sync` data directory".into(),
        });
    }
    Ok(dirs)
}

/// How much an export wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StateExport {
    pub root: String,
    pub pivot_number: Option<u64>,
    pub pivot_hash: Option<String>,
    pub accounts: u64,
    pub storage_slots: u64,
    pub contracts: u64,
    pub out: PathBuf,
}

/// A storage-trie value: the RLP string of a big-endian integer (at most 32 bytes).
fn decode_storage_value(rlp: &[u8]) -> Option<U256> {
    match rlp.first()? {
        b if *b < 0x80 && rlp.len() == 1 => Some(U256::from(*b)),
        b if (0x80..=0xa0).contains(b) => {
            let body = &rlp[1..];
            (body.len() == (*b - 0x80) as usize).then(|| U256::from_be_slice(body))
        }
        _ => None,
    }
}

/// Write the state at the pivot of the sync in `datadir` to `out` as JSON lines (see the
/// module docs). The file appears complete or not at all (written beside, then renamed).
pub fn export_state(datadir: &Path, out: &Path) -> Result<StateExport, ExportError> {
    let report = read_report(datadir)?;
    let status = &report["status"];
    let root_text = status["state_root"]
        .as_str()
        .or(report["state_root"].as_str())
        .ok_or_else(|| ExportError::DataDir {
            path: datadir.to_path_buf(),
            what: "the sync report names no state root: the sync chose no pivot".into(),
        })?;
    let root: B256 = root_text.parse().map_err(|_| ExportError::DataDir {
        path: datadir.to_path_buf(),
        what: format!("bad state root {root_text:?} in sync-report.json"),
    })?;
    if status["state_complete"].as_bool() == Some(false) {
        return Err(ExportError::DataDir {
            path: datadir.to_path_buf(),
            what: "the state download did not complete: sync again over this directory".into(),
        });
    }
    let pivot_number = status["pivot_block"].as_u64();
    // The tries are walked from the stores node by node (every node's keccak checked),
    // one account written at a time: memory does not grow with the state.
    with_stores(datadir, |stores| {
        let src = ShardStores(stores);
        let mut pivot_header = None;
        if let Some(n) = pivot_number {
            for s in stores {
                let h = s.read_header(n).map_err(|e| ExportError::DataDir {
                    path: datadir.to_path_buf(),
                    what: e.to_string(),
                })?;
                if h.is_some() {
                    pivot_header = h;
                    break;
                }
            }
        }
        let tmp = out.with_file_name(format!(
            ".{}.partial",
            out.file_name().and_then(|n| n.to_str()).unwrap_or("state")
        ));
        let werr = |source: std::io::Error| ExportError::Write {
            path: out.to_path_buf(),
            source,
        };
        let file = std::fs::File::create(&tmp).map_err(werr)?;
        let mut w = std::io::BufWriter::new(file);
        let first = json!({
            "root": format!("{root:#x}"),
            "pivot": pivot_header.as_ref().map(|h| json!({
                "number": pivot_number,
                "hash": format!("{:#x}", h.hash),
                "header": format!("0x{}", hex::encode(&h.raw)),
            })),
        });
        writeln!(w, "{first}").map_err(werr)?;
        let (mut accounts, mut slots_total, mut contracts) = (0u64, 0u64, 0u64);
        let mut stats = Walked::default();
        let mut inner = Walked::default();
        walk_trie(&src, root, root, &mut stats, &mut |path, value| {
            accounts += 1;
            if accounts > MAX_ACCOUNTS as u64 {
                return Err(ExportError::DataDir {
                    path: datadir.to_path_buf(),
                    what: format!("more than {MAX_ACCOUNTS} accounts"),
                });
            }
            let key = B256::from_slice(&path.pack().unwrap_or_default());
            let a = Account::decode(value).map_err(|e| ExportError::BadNode {
                node: key,
                what: format!("account: {e}"),
            })?;
            let mut storage = serde_json::Map::new();
            walk_trie(&src, root, a.storage_root, &mut inner, &mut |p, v| {
                let slot = B256::from_slice(&p.pack().unwrap_or_default());
                let v = decode_storage_value(v).ok_or_else(|| ExportError::BadNode {
                    node: slot,
                    what: "storage value is not an RLP integer".into(),
                })?;
                storage.insert(format!("{slot:#x}"), json!(format!("{v:#x}")));
                slots_total += 1;
                Ok(())
            })?;
            let code = if a.code_hash == EMPTY_CODE_HASH {
                Vec::new()
            } else {
                contracts += 1;
                NodeReader::code(&src, &a.code_hash)
                    .map_err(|what| ExportError::BadNode {
                        node: a.code_hash,
                        what,
                    })?
                    .ok_or(ExportError::MissingCode {
                        hash: a.code_hash,
                        account: key,
                    })?
            };
            let line = json!({
                "balance": a.balance.to_string(),
                "nonce": a.nonce,
                "root": format!("{:#x}", a.storage_root),
                "codeHash": format!("{:#x}", a.code_hash),
                "code": format!("0x{}", hex::encode(&code)),
                "storage": storage,
                "key": format!("{key:#x}"),
            });
            writeln!(w, "{line}").map_err(werr)?;
            Ok(())
        })?;
        let file = w.into_inner().map_err(|e| werr(e.into_error()))?;
        file.sync_all().map_err(werr)?;
        drop(file);
        std::fs::rename(&tmp, out).map_err(werr)?;
        Ok(StateExport {
            root: format!("{root:#x}"),
            pivot_number,
            pivot_hash: pivot_header.map(|h| format!("{:#x}", h.hash)),
            accounts,
            storage_slots: slots_total,
            contracts,
            out: out.to_path_buf(),
        })
    })
}

/// Blocks per era1 file.
pub const ERA1_BLOCKS: u64 = 8192;

/// History export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HistoryFormat {
    /// e2store era1: complete pre-merge eras (header, body, receipts, total difficulty,
    /// accumulator).
    Era1,
    /// e2store ere (era execution): pre- and post-merge; headers, bodies, slim receipts,
    /// total difficulty and accumulator where pre-merge, a per-block component index. No
    /// beacon proofs, so files carry the `noproofs` profile in their name.
    Ere,
}

/// One history file written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistoryFile {
    pub path: PathBuf,
    pub era: u64,
    pub first_block: u64,
    pub blocks: u64,
    pub accumulator_root: Option<String>,
}

/// The network name history files carry for a genesis hash (`mainnet`, `sepolia`,
/// `holesky`).
pub fn network_of_genesis(genesis: B256) -> Option<&'static str> {
    const KNOWN: [(&str, B256); 3] = [
        (
            "mainnet",
            alloy_primitives::b256!(
                "d4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3"
            ),
        ),
        (
            "sepolia",
            alloy_primitives::b256!(
                "25a5cc106eea7138acab33231d7160d69cb777ee0c2c553fcddf5138993e6dd9"
            ),
        ),
        (
            "holesky",
            alloy_primitives::b256!(
                "b5f7f912443c940f21fd611f12828d75b534364ed9e95ca4e307729a4661bde4"
            ),
        ),
    ];
    KNOWN.iter().find(|(_, g)| *g == genesis).map(|(n, _)| *n)
}

/// The era1 file name: `<network>-<era, 5 digits>-<first 4 bytes of the accumulator
/// root, hex>.era1`.
pub fn era1_file_name(network: &str, era: u64, accumulator_root: B256) -> String {
    format!(
        "{network}-{era:05}-{}.era1",
        hex::encode(&accumulator_root.as_slice()[..4])
    )
}

/// The ere file name: `<network>-<era, 5 digits>-<first 4 bytes of the last block's
/// hash, hex>[-<profiles>].ere` (profiles in alphabetical order).
pub fn ere_file_name(network: &str, era: u64, last_hash: B256, receipts: bool) -> String {
    let profile = if receipts {
        "-noproofs"
    } else {
        "-noproofs-noreceipts"
    };
    format!(
        "{network}-{era:05}-{}{profile}.ere",
        hex::encode(&last_hash.as_slice()[..4])
    )
}

/// e2store record types of ere.
pub mod ere_types {
    pub const VERSION: u16 = 0x3265;
    pub const COMPRESSED_HEADER: u16 = 0x0003;
    pub const COMPRESSED_BODY: u16 = 0x0004;
    pub const COMPRESSED_SLIM_RECEIPTS: u16 = 0x000a;
    pub const TOTAL_DIFFICULTY: u16 = 0x0006;
    pub const ACCUMULATOR_ROOT: u16 = 0x0007;
    pub const BLOCK_INDEX: u16 = 0x3267;
}

type HistoryBlock = (
    catchup_eth::types::Header,
    catchup_eth::types::BlockBody,
    Option<Vec<catchup_eth::types::Receipt>>,
    U256,
);

/// An ere file from consecutive blocks (header, body, receipts if known, total difficulty;
/// a difficulty of 0 marks a post-merge block). `None` for no or more than 8192 blocks,
/// or receipts for only some blocks.
pub fn write_ere(blocks: &[HistoryBlock]) -> Option<Vec<u8>> {
    use catchup_eth::era1::{accumulator_root, snappy_frame_compress, write_record};
    use ere_types::*;
    if blocks.is_empty() || blocks.len() as u64 > ERA1_BLOCKS {
        return None;
    }
    let receipts = blocks[0].2.is_some();
    if blocks.iter().any(|b| b.2.is_some() != receipts) {
        return None;
    }
    let mut out = Vec::new();
    write_record(VERSION, &[], &mut out);
    let n = blocks.len();
    let components = 3 + receipts as usize;
    let mut offsets = vec![0usize; n * components];
    for (i, (h, _, _, _)) in blocks.iter().enumerate() {
        offsets[i * components] = out.len();
        write_record(
            COMPRESSED_HEADER,
            &snappy_frame_compress(&h.encode()),
            &mut out,
        );
    }
    for (i, (_, b, _, _)) in blocks.iter().enumerate() {
        offsets[i * components + 1] = out.len();
        write_record(
            COMPRESSED_BODY,
            &snappy_frame_compress(&b.encode()),
            &mut out,
        );
    }
    if receipts {
        for (i, (_, _, r, _)) in blocks.iter().enumerate() {
            offsets[i * components + 2] = out.len();
            let enc = catchup_eth::types::encode_receipts_eth69(r.as_deref().unwrap_or(&[]));
            write_record(
                COMPRESSED_SLIM_RECEIPTS,
                &snappy_frame_compress(&enc),
                &mut out,
            );
        }
    }
    // Total difficulty: post-merge blocks carry the chain's final total difficulty.
    let final_td = blocks
        .iter()
        .filter(|b| !b.0.difficulty.is_zero())
        .map(|b| b.3)
        .next_back()
        .unwrap_or(blocks[0].3);
    for (i, (h, _, _, td)) in blocks.iter().enumerate() {
        offsets[i * components + components - 1] = out.len();
        let td = if h.difficulty.is_zero() {
            final_td
        } else {
            *td
        };
        write_record(TOTAL_DIFFICULTY, &td.to_le_bytes::<32>(), &mut out);
    }
    let pre_merge: Vec<(B256, U256)> = blocks
        .iter()
        .filter(|b| !b.0.difficulty.is_zero())
        .map(|b| (b.0.hash(), b.3))
        .collect();
    if !pre_merge.is_empty() {
        write_record(
            ACCUMULATOR_ROOT,
            accumulator_root(&pre_merge)?.as_slice(),
            &mut out,
        );
    }
    let idx_offset = out.len() as i64;
    let mut idx = Vec::with_capacity(8 * (3 + offsets.len()));
    idx.extend_from_slice(&blocks[0].0.number.to_le_bytes());
    for o in &offsets {
        idx.extend_from_slice(&(*o as i64 - idx_offset).to_le_bytes());
    }
    idx.extend_from_slice(&(components as u64).to_le_bytes());
    idx.extend_from_slice(&(n as u64).to_le_bytes());
    write_record(BLOCK_INDEX, &idx, &mut out);
    Some(out)
}

/// One block read back from an ere file (decompressed RLP of each component).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EreBlock {
    pub number: u64,
    pub header_rlp: Vec<u8>,
    pub body_rlp: Vec<u8>,
    pub slim_receipts_rlp: Option<Vec<u8>>,
    pub total_difficulty: Option<U256>,
}

/// Read every block of an ere file through its block index, with the accumulator root
/// when present. Never panics on any input.
pub fn read_ere(buf: &[u8]) -> Result<(Vec<EreBlock>, Option<B256>), String> {
    use catchup_eth::era1::{read_record, snappy_frame_decompress};
    use ere_types::*;
    const LIMIT: usize = 64 << 20;
    let u64_at =
        |o: usize| -> Option<u64> { Some(u64::from_le_bytes(buf.get(o..o + 8)?.try_into().ok()?)) };
    let len = buf.len();
    if len < 24 {
        return Err("file too short".into());
    }
    let count = u64_at(len - 8).ok_or("no count")? as usize;
    let components = u64_at(len - 16).ok_or("no component count")? as usize;
    if !(2..=5).contains(&components) || count == 0 || count as u64 > ERA1_BLOCKS {
        return Err(format!("index of {count} blocks × {components} components"));
    }
    let data_len = 8 * (1 + count * components + 2);
    let idx_start = len
        .checked_sub(8 + data_len)
        .ok_or("index longer than the file")?;
    let idx = read_record(buf, idx_start, usize::MAX).map_err(|e| e.to_string())?;
    if idx.type_ != BLOCK_INDEX || idx.data.len() != data_len {
        return Err("last record is not a block index".into());
    }
    let start = u64_at(idx_start + 8).ok_or("no starting number")?;
    let first = read_record(buf, 0, 0).map_err(|e| e.to_string())?;
    if first.type_ != VERSION {
        return Err("no version record".into());
    }
    let mut accumulator = None;
    let mut blocks = Vec::with_capacity(count);
    let component = |b: usize, c: usize, want: u16| -> Result<Vec<u8>, String> {
        let rel = u64_at(idx_start + 16 + 8 * (b * components + c)).ok_or("short index")? as i64;
        let at = (idx_start as i64)
            .checked_add(rel)
            .filter(|a| *a >= 0)
            .ok_or("bad offset")? as usize;
        let r = read_record(buf, at, b).map_err(|e| e.to_string())?;
        if r.type_ != want {
            return Err(format!(
                "block {b} component {c}: record type {:#06x}",
                r.type_
            ));
        }
        if want == TOTAL_DIFFICULTY {
            return Ok(r.data.to_vec());
        }
        snappy_frame_decompress(r.data, LIMIT).map_err(|e| format!("block {b}: {e:?}"))
    };
    for b in 0..count {
        let header_rlp = component(b, 0, COMPRESSED_HEADER)?;
        let body_rlp = component(b, 1, COMPRESSED_BODY)?;
        let (slim, td) = match components {
            2 => (None, None),
            3 => (None, Some(component(b, 2, TOTAL_DIFFICULTY)?)),
            _ => (
                Some(component(b, 2, COMPRESSED_SLIM_RECEIPTS)?),
                Some(component(b, 3, TOTAL_DIFFICULTY)?),
            ),
        };
        let td = match td {
            Some(t) if t.len() == 32 => Some(U256::from_le_slice(&t)),
            Some(_) => return Err(format!("block {b}: total difficulty not 32 bytes")),
            None => None,
        };
        blocks.push(EreBlock {
            number: start + b as u64,
            header_rlp,
            body_rlp,
            slim_receipts_rlp: slim,
            total_difficulty: td,
        });
    }
    for r in catchup_eth::era1::Records::new(&buf[..idx_start]).flatten() {
        if r.type_ == ACCUMULATOR_ROOT && r.data.len() == 32 {
            accumulator = Some(B256::from_slice(r.data));
        }
    }
    Ok((blocks, accumulator))
}

/// Write what the sync in `datadir` holds as history files in `out_dir`: era1 for every
/// complete pre-merge era; ere for every era, the last one possibly partial.
/// `genesis_json` is the chain's geth genesis file (block 0, the starting total
/// difficulty); `network` names the files (default: from the genesis hash).
pub fn export_history(
    datadir: &Path,
    genesis_json: &Path,
    network: Option<&str>,
    format: HistoryFormat,
    out_dir: &Path,
) -> Result<Vec<HistoryFile>, ExportError> {
    let bad = ExportError::at(datadir);
    let bad_genesis = ExportError::at(genesis_json);
    let text = std::fs::read_to_string(genesis_json).map_err(|e| bad_genesis(e.to_string()))?;
    let (genesis, _) =
        catchup_eth::state::genesis_from_json(&text).map_err(|e| bad_genesis(e.to_string()))?;
    let genesis_hash = genesis.hash();
    let network = match network {
        Some(n) => n.to_string(),
        None => network_of_genesis(genesis_hash)
            .ok_or_else(|| {
                bad(format!(
                    "genesis {genesis_hash:#x} is not a known network: give --network NAME"
                ))
            })?
            .to_string(),
    };
    catchup_io::exec::run_unbound(async {
        let stores = crate::eth::stored::ChainStores::open(datadir).await?;
        let r = write_history(
            &stores,
            datadir,
            genesis_json,
            &genesis,
            &network,
            format,
            out_dir,
        );
        stores.close().await;
        r
    })
}

/// [`export_history`] over the opened stores, one era in memory at a time.
fn write_history(
    stores: &crate::eth::stored::ChainStores,
    datadir: &Path,
    genesis_json: &Path,
    genesis: &catchup_eth::types::Header,
    network: &str,
    format: HistoryFormat,
    out_dir: &Path,
) -> Result<Vec<HistoryFile>, ExportError> {
    use catchup_eth::era1::{accumulator_root, write_era1};
    use catchup_eth::types::{decode_receipts, BlockBody, Header as EthHeader, EMPTY_OMMERS_HASH};
    let bad = ExportError::at(datadir);
    let genesis_hash = genesis.hash();
    match stores.header(1).map_err(&bad)? {
        Some(h) if h.parent_hash == genesis_hash => {}
        Some(h) => {
            return Err(bad(format!(
                "block 1's parent {:#x} is not the genesis {genesis_hash:#x} of {}",
                h.parent_hash,
                genesis_json.display()
            )))
        }
        None => return Err(bad("no block 1: the sync stored no headers".into())),
    }
    // Blocks 0..=last, consecutive.
    let mut last = 0u64;
    while stores.has_header(last + 1) {
        last += 1;
    }
    let eras = match format {
        HistoryFormat::Era1 => (last + 1) / ERA1_BLOCKS,
        HistoryFormat::Ere => last / ERA1_BLOCKS + 1,
    };
    if eras == 0 {
        return Err(bad(format!(
            "{} consecutive blocks: an era1 file needs {ERA1_BLOCKS}",
            last + 1
        )));
    }
    std::fs::create_dir_all(out_dir).map_err(|source| ExportError::Write {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let mut td = U256::ZERO;
    let mut files = Vec::new();
    let mut all_receipts = true;
    for era in 0..eras {
        let first = era * ERA1_BLOCKS;
        let end = (first + ERA1_BLOCKS - 1).min(last);
        let mut blocks: Vec<HistoryBlock> = Vec::with_capacity((end - first + 1) as usize);
        for n in first..=end {
            let header = if n == 0 {
                genesis.clone()
            } else {
                let h = stores.header(n).map_err(&bad)?.ok_or_else(|| {
                    bad(format!(
                        "header {n}: indexed but its record is not readable"
                    ))
                })?;
                EthHeader::decode(&h.raw).map_err(|e| bad(format!("header {n}: {e}")))?
            };
            if header.difficulty.is_zero() && format == HistoryFormat::Era1 {
                // The merge: era1 holds proof-of-work blocks only.
                return if files.is_empty() {
                    Err(bad(format!(
                        "block {n} is after the merge: era1 holds pre-merge blocks only (use --format ere)"
                    )))
                } else {
                    Ok(files)
                };
            }
            td += header.difficulty;
            let body = match stores.body(n).map_err(&bad)? {
                Some(b) => BlockBody::decode(&b.raw).map_err(|e| bad(format!("body {n}: {e}")))?,
                None if header.transactions_root == EMPTY_ROOT
                    && header.ommers_hash == EMPTY_OMMERS_HASH =>
                {
                    BlockBody {
                        transactions: Vec::new(),
                        ommers: Vec::new(),
                        withdrawals: header.withdrawals_root.map(|_| Vec::new()),
                    }
                }
                None => return Err(bad(format!("block {n}: no body stored"))),
            };
            let receipts = match stores.receipts(n).map_err(&bad)? {
                Some(r) => {
                    Some(decode_receipts(&r.raw).map_err(|e| bad(format!("receipts {n}: {e}")))?)
                }
                None if header.receipts_root == EMPTY_ROOT => Some(Vec::new()),
                None => None,
            };
            all_receipts &= receipts.is_some();
            blocks.push((header, body, receipts, td));
        }
        let (bytes, name, root) = match format {
            HistoryFormat::Era1 => {
                if !all_receipts {
                    return Err(bad(
                        "receipts missing: sync with receipts for an era1 export".into(),
                    ));
                }
                let full: Vec<_> = blocks
                    .iter()
                    .map(|(h, b, r, td)| (h.clone(), b.clone(), r.clone().unwrap_or_default(), *td))
                    .collect();
                let records: Vec<(B256, U256)> =
                    full.iter().map(|(h, _, _, td)| (h.hash(), *td)).collect();
                let root =
                    accumulator_root(&records).ok_or_else(|| bad("too many blocks".into()))?;
                let bytes = write_era1(&full)
                    .ok_or_else(|| bad("era1 writer refused the blocks".into()))?;
                (bytes, era1_file_name(network, era, root), Some(root))
            }
            HistoryFormat::Ere => {
                if !all_receipts {
                    // A file either has every block's receipts or none.
                    for b in &mut blocks {
                        b.2 = None;
                    }
                }
                let last_hash = blocks.last().map(|b| b.0.hash()).unwrap_or_default();
                let bytes = write_ere(&blocks)
                    .ok_or_else(|| bad("ere writer refused the blocks".into()))?;
                let pre: Vec<(B256, U256)> = blocks
                    .iter()
                    .filter(|b| !b.0.difficulty.is_zero())
                    .map(|b| (b.0.hash(), b.3))
                    .collect();
                let root = if pre.is_empty() {
                    None
                } else {
                    accumulator_root(&pre)
                };
                (
                    bytes,
                    ere_file_name(network, era, last_hash, all_receipts),
                    root,
                )
            }
        };
        let path = out_dir.join(&name);
        let tmp = out_dir.join(format!(".{name}.partial"));
        let werr = |source: std::io::Error| ExportError::Write {
            path: path.clone(),
            source,
        };
        let mut f = std::fs::File::create(&tmp).map_err(werr)?;
        f.write_all(&bytes).map_err(werr)?;
        f.sync_all().map_err(werr)?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(werr)?;
        files.push(HistoryFile {
            path,
            era,
            first_block: first,
            blocks: blocks.len() as u64,
            accumulator_root: root.map(|r| format!("{r:#x}")),
        });
    }
    Ok(files)
}

/// What `eth serve --datadir D` serves from a synced data directory: the chain (blocks
/// 1..=head, as stored; bodies of empty blocks rebuilt from their header) and the state at
/// the pivot when the sync completed it, both read from the stores on demand
/// ([`crate::eth::stored`]).
pub struct Serving {
    pub chain: crate::eth::stored::StoredChain,
    pub state: Option<crate::eth::stored::StoredState>,
}

/// Open a synced data directory for serving. `genesis_hash` must be block 1's parent.
pub fn load_for_serving(datadir: &Path, genesis_hash: B256) -> Result<Serving, ExportError> {
    let bad = ExportError::at(datadir);
    let report = read_report(datadir)?;
    let status = &report["status"];
    let root = status["state_root"]
        .as_str()
        .and_then(|r| r.parse::<B256>().ok())
        .filter(|_| status["state_complete"].as_bool() == Some(true));
    let (chain, state) = crate::eth::stored::open_stored(datadir, root)?;
    let Some(chain) = chain else {
        return Err(bad(
            "no block 1 with its body: the sync stored no blocks to serve".into(),
        ));
    };
    if chain.genesis != genesis_hash {
        return Err(bad(format!(
            "block 1's parent {:#x} is not the genesis {genesis_hash:#x}",
            chain.genesis
        )));
    }
    Ok(Serving { chain, state })
}

/// Whether `text` is a JSON-lines dump (a first line that is a whole object with `root`).
pub fn is_dump_lines(text: &str) -> bool {
    text.lines()
        .next()
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
        .is_some_and(|v| v.get("root").is_some())
}

/// The root of a JSON-lines dump, recomputed from its accounts (keyed by `key`, the hashed
/// address, or `address`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpRoot {
    pub computed: B256,
    pub claimed: Option<B256>,
    pub accounts: u64,
    pub storage_slots: u64,
    pub contracts: u64,
}

fn parse_u256(v: &Value) -> Option<U256> {
    match v {
        Value::String(s) => match s.strip_prefix("0x") {
            Some("") => Some(U256::ZERO),
            Some(h) => U256::from_str_radix(h, 16).ok(),
            None => U256::from_str_radix(s, 10).ok(),
        },
        Value::Number(n) => n.as_u64().map(U256::from),
        _ => None,
    }
}

fn parse_b256(v: &Value) -> Option<B256> {
    v.as_str()?.parse().ok()
}

/// Recompute the state root of a JSON-lines dump. Never panics on any input.
pub fn state_root_of_dump_lines(text: &str) -> Result<DumpRoot, ExportError> {
    let bad = |line: usize, what: &str| ExportError::BadLine {
        line,
        what: what.to_string(),
    };
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, first) = lines.next().ok_or_else(|| bad(1, "empty file"))?;
    let first: Value = serde_json::from_str(first).map_err(|e| bad(1, &e.to_string()))?;
    let claimed = first.get("root").and_then(parse_b256);
    let mut accounts: BTreeMap<B256, Vec<u8>> = BTreeMap::new();
    let (mut slots, mut contracts) = (0u64, 0u64);
    for (i, l) in lines {
        let n = i + 1;
        if accounts.len() >= MAX_ACCOUNTS {
            return Err(bad(n, "too many accounts"));
        }
        let v: Value = serde_json::from_str(l).map_err(|e| bad(n, &e.to_string()))?;
        let key = match (v.get("key").and_then(parse_b256), v.get("address")) {
            (Some(k), _) => k,
            (None, Some(a)) => {
                let a: alloy_primitives::Address = a
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad(n, "bad address"))?;
                alloy_primitives::keccak256(a)
            }
            (None, None) => return Err(bad(n, "an account needs `key` or `address`")),
        };
        let balance = parse_u256(&v["balance"]).ok_or_else(|| bad(n, "bad balance"))?;
        let nonce = v["nonce"].as_u64().unwrap_or(0);
        let code = match v["code"].as_str() {
            Some(c) => hex::decode(c.trim_start_matches("0x")).map_err(|_| bad(n, "bad code"))?,
            None => Vec::new(),
        };
        if !code.is_empty() {
            contracts += 1;
        }
        let mut storage: Vec<(B256, Vec<u8>)> = Vec::new();
        if let Some(m) = v["storage"].as_object() {
            for (k, val) in m {
                let k: B256 = k.parse().map_err(|_| bad(n, "bad storage key"))?;
                let val = parse_u256(val).ok_or_else(|| bad(n, "bad storage value"))?;
                if !val.is_zero() {
                    storage.push((k, catchup_eth::state::storage_value_rlp(val)));
                }
            }
        }
        slots += storage.len() as u64;
        let storage_root = if storage.is_empty() {
            EMPTY_ROOT
        } else {
            trie_root(storage.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
        };
        let code_hash = if code.is_empty() {
            EMPTY_CODE_HASH
        } else {
            alloy_primitives::keccak256(&code)
        };
        let acc = Account {
            nonce,
            balance,
            storage_root,
            code_hash,
        };
        if accounts.insert(key, acc.encode()).is_some() {
            return Err(bad(n, "the same account twice"));
        }
    }
    let computed = if accounts.is_empty() {
        EMPTY_ROOT
    } else {
        trie_root(accounts.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
    };
    Ok(DumpRoot {
        computed,
        claimed,
        accounts: accounts.len() as u64,
        storage_slots: slots,
        contracts,
    })
}

/// Print a recomputed root (text or JSON, with the walk's time when given); returns
/// whether it matches the claimed one (None: nothing claimed).
fn print_root(r: &DumpRoot, json_out: bool, elapsed_ms: Option<u64>) -> Option<bool> {
    let matches = r.claimed.map(|c| c == r.computed);
    if json_out {
        let mut v = json!({
            "root": format!("{:#x}", r.computed),
            "accounts": r.accounts,
            "storage_slots": r.storage_slots,
            "contracts": r.contracts,
            "claimed_root": r.claimed.map(|c| format!("{c:#x}")),
            "matches_claimed": matches,
        });
        if let Some(ms) = elapsed_ms {
            v["elapsed_ms"] = ms.into();
        }
        println!("{v}");
    } else {
        println!("root {:#x}", r.computed);
        let took = elapsed_ms
            .map(|ms| format!("  ({ms} ms)"))
            .unwrap_or_default();
        println!(
            "accounts {}  storage slots {}  contracts {}{took}",
            r.accounts, r.storage_slots, r.contracts
        );
    }
    matches
}

/// `eth state-root --dump FILE` on a JSON-lines dump: print the root (text or JSON); exit
/// 1 when it differs from the root the file claims.
pub fn state_root_cmd(path: &Path, text: &str, json_out: bool) -> anyhow::Result<i32> {
    let r =
        state_root_of_dump_lines(text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let matches = print_root(&r, json_out, None);
    if matches == Some(false) {
        eprintln!(
            "{}: computed root {:#x} differs from the dump's root {:#x}",
            path.display(),
            r.computed,
            r.claimed.unwrap_or_default()
        );
        return Ok(1);
    }
    Ok(0)
}

/// The shards' stores of a data directory, read on demand (see [`crate::eth::walk`]).
struct ShardStores<'a>(&'a [DiskStore]);

impl NodeReader for ShardStores<'_> {
    fn node(&self, hash: &B256) -> Result<Option<Vec<u8>>, String> {
        for s in self.0 {
            if let Some(v) = s.read_node(hash).map_err(|e| e.to_string())? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }
    fn code(&self, hash: &B256) -> Result<Option<Vec<u8>>, String> {
        for s in self.0 {
            if let Some(v) = s.read_code(hash).map_err(|e| e.to_string())? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }
}

/// Open every shard's store of `datadir` (locked while open; values stay on disk, read
/// on demand), run `f` over them, and close them.
pub fn with_stores<T>(
    datadir: &Path,
    f: impl FnOnce(&[DiskStore]) -> Result<T, ExportError>,
) -> Result<T, ExportError> {
    let bad = ExportError::at(datadir);
    let _lock = catchup_io::datadir::DataDir::open(datadir).map_err(|e| bad(e.to_string()))?;
    let dirs = shard_dirs(datadir)?;
    catchup_io::exec::run_unbound(async {
        let mut stores = Vec::with_capacity(dirs.len());
        for d in &dirs {
            let s = DiskStore::open(d)
                .await
                .map_err(|e| bad(format!("{}: {e}", d.display())))?;
            stores.push(s);
        }
        let out = f(&stores);
        for s in stores {
            s.close().await.map_err(|e| bad(e.to_string()))?;
        }
        out
    })
}

/// Recompute the state root of what `eth sync` stored in `datadir`, by a walk over the
/// store that is independent of the sync engines and reads nodes on demand in bounded
/// memory ([`crate::eth::walk`]): the account trie is walked from the root the sync
/// report names (a missing node fails: the walk is also the completeness check), every
/// node's keccak is checked, every account's storage trie is walked from its storage
/// root and rebuilt from its leaves, every code is read and its keccak taken, and the
/// account trie is rebuilt from its leaves. `claimed` is the sync report's root;
/// `computed` the rebuilt one.
pub fn state_root_of_datadir(datadir: &Path) -> Result<DumpRoot, ExportError> {
    let bad = ExportError::at(datadir);
    let report = read_report(datadir)?;
    let status = &report["status"];
    let root_text = status["state_root"]
        .as_str()
        .or(report["state_root"].as_str())
        .ok_or_else(|| {
            bad("the sync report names no state root: the sync chose no pivot".into())
        })?;
    let claimed: B256 = root_text
        .parse()
        .map_err(|_| bad(format!("bad state root {root_text:?} in sync-report.json")))?;
    let w = with_stores(datadir, |stores| {
        crate::eth::walk::walk_state(&ShardStores(stores), claimed)
    })?;
    if w.accounts > MAX_ACCOUNTS as u64 {
        return Err(bad(format!("more than {MAX_ACCOUNTS} accounts")));
    }
    Ok(DumpRoot {
        computed: w.computed,
        claimed: Some(claimed),
        accounts: w.accounts,
        storage_slots: w.storage_slots,
        contracts: w.contracts,
    })
}

/// `eth state-root --datadir D`: print the root recomputed from the store (text or JSON);
/// exit 1 when it differs from the root the sync reported.
pub fn state_root_datadir_cmd(datadir: &Path, json_out: bool) -> anyhow::Result<i32> {
    anyhow::ensure!(
        datadir.is_dir(),
        "--datadir {}: no such directory (the data directory of an `eth sync`)",
        datadir.display()
    );
    let t = std::time::Instant::now();
    let r = state_root_of_datadir(datadir)?;
    let elapsed_ms = t.elapsed().as_millis() as u64;
    let matches = print_root(&r, json_out, Some(elapsed_ms));
    if matches == Some(false) {
        eprintln!(
            "{}: root recomputed from the store {:#x} differs from the sync report's {:#x}",
            datadir.display(),
            r.computed,
            r.claimed.unwrap_or_default()
        );
        return Ok(1);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_lines_roundtrip_through_the_root() {
        // Two accounts, one with storage and code; the root is the trie's over hashed keys.
        let k1 = B256::repeat_byte(0x11);
        let k2 = B256::repeat_byte(0x22);
        let slot = B256::repeat_byte(0x33);
        let storage_root = trie_root([(
            slot.as_slice(),
            catchup_eth::state::storage_value_rlp(U256::from(7u64)),
        )]);
        let code = vec![0x60u8, 0x00];
        let a1 = Account {
            nonce: 1,
            balance: U256::from(1000u64),
            storage_root,
            code_hash: alloy_primitives::keccak256(&code),
        };
        let a2 = Account {
            nonce: 0,
            balance: U256::from(5u64),
            ..Account::default()
        };
        let root = trie_root([(k1.as_slice(), a1.encode()), (k2.as_slice(), a2.encode())]);
        let text = format!(
            "{{\"root\":\"{root:#x}\"}}\n\
             {{\"balance\":\"1000\",\"nonce\":1,\"code\":\"0x6000\",\"storage\":{{\"{slot:#x}\":\"0x7\"}},\"key\":\"{k1:#x}\"}}\n\
             {{\"balance\":\"5\",\"nonce\":0,\"code\":\"0x\",\"storage\":{{}},\"key\":\"{k2:#x}\"}}\n"
        );
        assert!(is_dump_lines(&text));
        let r = state_root_of_dump_lines(&text).unwrap();
        assert_eq!(r.computed, root);
        assert_eq!(r.claimed, Some(root));
        assert_eq!((r.accounts, r.storage_slots, r.contracts), (2, 1, 1));
        assert!(!is_dump_lines("{\n  \"root\": \"0x00\"\n}\n"));
        assert!(
            state_root_of_dump_lines("{\"root\":1}\n{\"balance\":\"x\",\"key\":\"0x11\"}").is_err()
        );
    }

    #[test]
    fn era1_names() {
        let root: B256 = "0x5ec1ffb8c3b146f42606c74ced973dc16ec5a107c0345858c343fc94780b4218"
            .parse()
            .unwrap();
        assert_eq!(
            era1_file_name("mainnet", 0, root),
            "mainnet-00000-5ec1ffb8.era1"
        );
        assert_eq!(
            era1_file_name("sepolia", 21, root),
            "sepolia-00021-5ec1ffb8.era1"
        );
        let mainnet = "0xd4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3";
        assert_eq!(
            network_of_genesis(mainnet.parse().unwrap()),
            Some("mainnet")
        );
        assert_eq!(network_of_genesis(B256::ZERO), None);
    }

    #[test]
    fn ere_roundtrip_fills_post_merge_difficulty() {
        use catchup_eth::types::{BlockBody, Header};
        let mk = |n: u64, difficulty: u64| Header {
            number: n,
            difficulty: U256::from(difficulty),
            ..Header::default()
        };
        let blocks: Vec<HistoryBlock> = vec![
            (
                mk(10, 5),
                BlockBody::default(),
                Some(vec![]),
                U256::from(105u64),
            ),
            (
                mk(11, 7),
                BlockBody::default(),
                Some(vec![]),
                U256::from(112u64),
            ),
            (
                mk(12, 0),
                BlockBody::default(),
                Some(vec![]),
                U256::from(112u64),
            ),
        ];
        let bytes = write_ere(&blocks).unwrap();
        let (back, acc) = read_ere(&bytes).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[0].number, 10);
        assert_eq!(back[2].header_rlp, blocks[2].0.encode());
        assert_eq!(back[2].total_difficulty, Some(U256::from(112u64)));
        let pre = [
            (blocks[0].0.hash(), blocks[0].3),
            (blocks[1].0.hash(), blocks[1].3),
        ];
        assert_eq!(acc, catchup_eth::era1::accumulator_root(&pre));
        assert!(back.iter().all(|b| b.slim_receipts_rlp.is_some()));
        // Receipts for some blocks only: refused.
        let mut mixed = blocks.clone();
        mixed[1].2 = None;
        assert!(write_ere(&mixed).is_none());
        // Truncated or corrupted files are errors, not panics.
        for cut in [0, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(read_ere(&bytes[..cut]).is_err());
        }
    }

    proptest::proptest! {
        #[test]
        fn ere_reader_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = read_ere(&data);
        }

        #[test]
        fn dump_lines_never_panic(text in "(?s).{0,300}") {
            let _ = state_root_of_dump_lines(&text);
            let _ = is_dump_lines(&text);
        }
    }

    /// A data directory of two shards holding `state`'s nodes and codes (split by the
    /// first nibble of the hash; `skip` left out, `replace` stored with other bytes) and
    /// a sync report naming its root.
    fn datadir_of(
        dir: &Path,
        state: &crate::eth::sync::chain::StateData,
        skip: Option<B256>,
        replace: Option<(B256, Vec<u8>)>,
    ) {
        use crate::eth::sync::store::SyncStore;
        catchup_io::exec::run_unbound(async {
            let mut shards = Vec::new();
            for i in 0..2 {
                shards.push(
                    DiskStore::open(&dir.join(format!("shard-{i}")))
                        .await
                        .unwrap(),
                );
            }
            for (h, raw) in &state.nodes {
                if Some(*h) == skip {
                    continue;
                }
                let raw = match &replace {
                    Some((r, bytes)) if r == h => bytes.clone(),
                    _ => raw.clone(),
                };
                shards[(h[0] >> 7) as usize].put_node(*h, &raw);
            }
            for (h, code) in &state.codes {
                shards[(h[0] >> 7) as usize].put_code(*h, code);
            }
            for s in shards {
                s.close().await.unwrap();
            }
        });
        let report =
            json!({"status": {"state_root": format!("{:#x}", state.root), "state_complete": true}});
        std::fs::write(dir.join("sync-report.json"), report.to_string()).unwrap();
    }

    #[test]
    fn the_datadir_walk_reads_the_stores_and_names_a_missing_or_damaged_node() {
        let state = crate::eth::sync::chain::StateData::generate(2000, 1500, 9);
        let slots: usize = state.storage.values().map(|s| s.len()).sum();
        let tmp = tempfile::tempdir().unwrap();
        let whole = tmp.path().join("whole");
        datadir_of(&whole, &state, None, None);
        let r = state_root_of_datadir(&whole).unwrap();
        assert_eq!(r.computed, state.root);
        assert_eq!(r.claimed, Some(state.root));
        assert_eq!(r.accounts, 2000);
        assert_eq!(r.storage_slots, slots as u64);

        // A node below the root, left out: one line naming it.
        let victim = *state.nodes.keys().find(|h| **h != state.root).unwrap();
        let missing = tmp.path().join("missing");
        datadir_of(&missing, &state, Some(victim), None);
        let e = state_root_of_datadir(&missing).unwrap_err().to_string();
        assert!(
            e.contains("missing node") && e.contains(&format!("{victim:#x}")),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");

        // The same node stored with one byte changed (its record's checksum is right:
        // only the keccak tells).
        let mut bad = state.nodes[&victim].clone();
        let at = bad.len() / 2;
        bad[at] ^= 0x01;
        let damaged = tmp.path().join("damaged");
        datadir_of(&damaged, &state, None, Some((victim, bad)));
        let e = state_root_of_datadir(&damaged).unwrap_err().to_string();
        assert!(
            e.contains("keccak") && e.contains(&format!("{victim:#x}")),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }
}
