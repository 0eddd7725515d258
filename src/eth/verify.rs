//! `catchup eth verify-era1`, `eth state-root` and `eth verify-blocktest`: chain data
//! checked against its roots, without a network.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde_json::json;

use catchup_eth::blocktest::{check_blocktest, Rejection};
use catchup_eth::era1::Era1;
use catchup_eth::state::{parse_alloc, parse_geth_dump};
use catchup_eth::{
    verify_ommers_hash, verify_parent_hash, verify_receipts, verify_transactions_root,
    verify_withdrawals, B256,
};

/// Largest input file read into memory by these commands.
const MAX_INPUT_FILE_BYTES: u64 = 4 << 30;

#[derive(Args, Debug, Clone)]
pub struct VerifyEra1Args {
    /// era1 files, checked in the order given (consecutive files are linked by parent hash).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["alloc", "dump", "datadir"])))]
pub struct StateRootArgs {
    /// Genesis allocation JSON (`{"alloc": {address: balance | {balance, nonce, code, storage}}}`
    /// or a genesis.json).
    #[arg(long, value_name = "FILE")]
    pub alloc: Option<PathBuf>,
    /// geth state dump JSON (`{"root": …, "accounts": {…}}`); the computed root must
    /// equal the dump's root.
    #[arg(long, value_name = "FILE")]
    pub dump: Option<PathBuf>,
    /// Data directory of an `eth sync`: the root is recomputed from the stored trie nodes
    /// and codes by a walk that is also the completeness check (every node's keccak
    /// checked; nodes read from the stores on demand, memory bounded by the trie's depth
    /// besides the stores' index); it must equal the root the sync reported.
    #[arg(long, value_name = "DIR")]
    pub datadir: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct VerifyBlocktestArgs {
    /// BlockchainTests JSON files.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

fn read_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    anyhow::ensure!(
        meta.len() <= MAX_INPUT_FILE_BYTES,
        "{}: {} bytes, above the limit of {MAX_INPUT_FILE_BYTES}",
        path.display(),
        meta.len()
    );
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    String::from_utf8(read_file(path)?)
        .with_context(|| format!("{}: not UTF-8 text", path.display()))
}

/// Totals of `verify-era1`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Era1Report {
    pub files: usize,
    pub blocks: u64,
    pub first: Option<u64>,
    pub last: Option<u64>,
    pub last_hash: Option<String>,
    pub headers_ok: u64,
    pub tx_roots_ok: u64,
    pub ommers_ok: u64,
    pub withdrawals_ok: u64,
    pub receipt_roots_ok: u64,
    pub failures: Vec<serde_json::Value>,
}

/// Most failures listed in a report (the counts stay exact).
const MAX_REPORTED_FAILURES: usize = 1000;

/// Check era1 files; the library entry point behind `catchup eth verify-era1`.
pub fn check_era1_files(files: &[PathBuf]) -> anyhow::Result<Era1Report> {
    let mut rep = Era1Report::default();
    let mut prev: Option<(B256, catchup_eth::Header)> = None;
    let fail = |rep: &mut Era1Report, v: serde_json::Value| {
        if rep.failures.len() < MAX_REPORTED_FAILURES {
            rep.failures.push(v);
        }
    };
    for path in files {
        let buf = read_file(path)?;
        rep.files += 1;
        let file = path.display().to_string();
        let era = match Era1::open(&buf) {
            Ok(e) => e,
            Err(e) => {
                fail(
                    &mut rep,
                    json!({"file": file, "block": null, "field": "file", "error": e.to_string()}),
                );
                prev = None;
                continue;
            }
        };
        let mut records = Vec::with_capacity(era.block_count());
        let mut complete = true;
        for b in era.blocks() {
            let b = match b {
                Ok(b) => b,
                Err(e) => {
                    fail(
                        &mut rep,
                        json!({"file": file, "block": null, "field": "record", "error": e.to_string()}),
                    );
                    prev = None;
                    complete = false;
                    break;
                }
            };
            let n = b.header.number;
            rep.blocks += 1;
            rep.first.get_or_insert(n);
            rep.last = Some(n);
            rep.last_hash = Some(format!("{:#x}", b.hash));
            let record = |rep: &mut Era1Report,
                          r: Result<(), catchup_eth::VerifyError>,
                          ok: fn(&mut Era1Report)| match r {
                Ok(()) => ok(rep),
                Err(e) => fail(
                    rep,
                    json!({"file": file, "block": n, "field": e.field().as_str(), "error": e.to_string()}),
                ),
            };
            let link = match &prev {
                // Files of distant ranges are checked independently.
                Some((ph, ph_header)) if ph_header.number.checked_add(1) == Some(n) => {
                    verify_parent_hash(*ph, ph_header.number, &b.header)
                        .and_then(|()| catchup_eth::verify_header_rules(ph_header, &b.header))
                }
                Some(_) => Ok(()),
                None => Ok(()),
            };
            let header_ok = if b.hash == b.header.hash() {
                link
            } else {
                Err(catchup_eth::VerifyError::Mismatch {
                    number: n,
                    field: catchup_eth::Field::HeaderHash,
                    expected: b.hash,
                    got: b.header.hash(),
                })
            };
            record(&mut rep, header_ok, |r| r.headers_ok += 1);
            record(
                &mut rep,
                verify_transactions_root(&b.header, &b.body),
                |r| r.tx_roots_ok += 1,
            );
            record(&mut rep, verify_ommers_hash(&b.header, &b.body), |r| {
                r.ommers_ok += 1
            });
            record(&mut rep, verify_withdrawals(&b.header, &b.body), |r| {
                r.withdrawals_ok += 1
            });
            record(&mut rep, verify_receipts(&b.header, &b.receipts), |r| {
                r.receipt_roots_ok += 1
            });
            // Total difficulty grows by each header's difficulty.
            if let Some(&(_, prev_td)) = records.last() {
                if b.total_difficulty != prev_td + b.header.difficulty {
                    fail(
                        &mut rep,
                        json!({"file": file, "block": n, "field": "totalDifficulty",
                               "error": format!("block {n}: total difficulty {} is not the previous {} plus difficulty {}",
                                                b.total_difficulty, prev_td, b.header.difficulty)}),
                    );
                }
            }
            records.push((b.hash, b.total_difficulty));
            prev = Some((b.hash, b.header.clone()));
        }
        if complete {
            let computed = catchup_eth::era1::accumulator_root(&records);
            if computed != era.accumulator {
                fail(
                    &mut rep,
                    json!({"file": file, "block": null, "field": "accumulator",
                           "error": format!("accumulator record {:?} differs from the root over the blocks {:?}",
                                            era.accumulator, computed)}),
                );
            }
        }
    }
    Ok(rep)
}

pub fn verify_era1(a: &VerifyEra1Args) -> anyhow::Result<i32> {
    let rep = check_era1_files(&a.files)?;
    let failed = !rep.failures.is_empty();
    if a.json {
        println!("{}", serde_json::to_string(&rep)?);
    } else {
        println!(
            "{} file(s), {} blocks {}..{}, last hash {}",
            rep.files,
            rep.blocks,
            rep.first.map_or("-".into(), |x| x.to_string()),
            rep.last.map_or("-".into(), |x| x.to_string()),
            rep.last_hash.as_deref().unwrap_or("-")
        );
        println!(
            "headers ok {}  tx roots ok {}  ommers ok {}  withdrawals ok {}  receipt roots ok {}",
            rep.headers_ok,
            rep.tx_roots_ok,
            rep.ommers_ok,
            rep.withdrawals_ok,
            rep.receipt_roots_ok
        );
    }
    if failed {
        for f in &rep.failures {
            eprintln!(
                "FAIL {} block {} {}: {}",
                f["file"].as_str().unwrap_or("-"),
                f["block"],
                f["field"].as_str().unwrap_or("-"),
                f["error"].as_str().unwrap_or("-")
            );
        }
        return Ok(1);
    }
    Ok(0)
}

pub fn state_root(a: &StateRootArgs) -> anyhow::Result<i32> {
    if let Some(dd) = &a.datadir {
        return crate::eth::export::state_root_datadir_cmd(dd, a.json);
    }
    let (path, kind) = match (&a.alloc, &a.dump) {
        (Some(p), None) => (p, "alloc"),
        (None, Some(p)) => (p, "dump"),
        _ => anyhow::bail!("give exactly one of --alloc FILE or --dump FILE"),
    };
    let text = read_text(path)?;
    if kind == "dump" && crate::eth::export::is_dump_lines(&text) {
        return crate::eth::export::state_root_cmd(path, &text, a.json);
    }
    let (state, claimed) = if kind == "alloc" {
        (
            parse_alloc(&text).with_context(|| format!("{}", path.display()))?,
            None,
        )
    } else {
        parse_geth_dump(&text).with_context(|| format!("{}", path.display()))?
    };
    let tries = state.build();
    let matches = claimed.map(|c| c == tries.root);
    if a.json {
        println!(
            "{}",
            json!({
                "root": format!("{:#x}", tries.root),
                "accounts": state.accounts.len(),
                "storage_slots": tries.storage_slots,
                "accounts_with_storage": tries.storage.len(),
                "code": tries.code.len(),
                "contracts": state.accounts.values().filter(|x| !x.code.is_empty()).count(),
                "claimed_root": claimed.map(|c| format!("{c:#x}")),
                "matches_claimed": matches,
            })
        );
    } else {
        println!("root {:#x}", tries.root);
        println!(
            "accounts {}  storage slots {}  accounts with storage {}  contracts {}  distinct code {}",
            state.accounts.len(),
            tries.storage_slots,
            tries.storage.len(),
            state.accounts.values().filter(|x| !x.code.is_empty()).count(),
            tries.code.len()
        );
    }
    if matches == Some(false) {
        eprintln!(
            "{}: computed root {:#x} differs from the dump's root {:#x}",
            path.display(),
            tries.root,
            claimed.unwrap_or_default()
        );
        return Ok(1);
    }
    Ok(0)
}

pub fn verify_blocktest(a: &VerifyBlocktestArgs) -> anyhow::Result<i32> {
    let mut tests_json = Vec::new();
    let mut unexpected = 0usize;
    for path in &a.files {
        let text = read_text(path)?;
        let outcomes = check_blocktest(&text).with_context(|| format!("{}", path.display()))?;
        for t in outcomes {
            let mut blocks = Vec::new();
            for b in &t.blocks {
                if !b.as_expected() {
                    unexpected += 1;
                }
                let caught = b.rejected_by.as_ref().map(|r| r.name());
                let status = match (b.expected_invalid, &b.rejected_by) {
                    (false, None) => "valid",
                    (false, Some(_)) => "FAILED",
                    (true, Some(_)) => "invalid, caught",
                    (true, None) => "invalid, needs execution to catch",
                };
                if !a.json {
                    println!(
                        "{} {} block {}{}: {}{}",
                        path.display(),
                        t.name,
                        b.index,
                        b.number.map_or(String::new(), |n| format!(" (#{n})")),
                        status,
                        caught
                            .as_deref()
                            .map_or(String::new(), |c| format!(" by {c}"))
                    );
                    if let Some(Rejection::Decode(msg)) = &b.rejected_by {
                        println!("    decode error: {msg}");
                    }
                }
                blocks.push(json!({
                    "index": b.index,
                    "number": b.number,
                    "hash": b.hash.map(|h| format!("{h:#x}")),
                    "expected_invalid": b.expected_invalid,
                    "passed": b.passed,
                    "caught_by": caught,
                    "as_expected": b.as_expected(),
                }));
            }
            tests_json.push(json!({
                "file": path.display().to_string(),
                "test": t.name,
                "genesis_hash": format!("{:#x}", t.genesis_hash),
                "genesis_hash_ok": t.genesis_hash_ok,
                "last_accepted_hash": format!("{:#x}", t.last_accepted_hash),
                "last_block_hash_ok": t.last_block_hash_ok,
                "blocks": blocks,
            }));
            for (what, ok) in [
                ("genesis hash", t.genesis_hash_ok),
                ("last block hash", t.last_block_hash_ok),
            ] {
                if ok == Some(false) {
                    unexpected += 1;
                    if !a.json {
                        println!(
                            "{} {}: {what} differs from the test's",
                            path.display(),
                            t.name
                        );
                    }
                }
            }
        }
    }
    if a.json {
        println!("{}", json!({"tests": tests_json, "unexpected": unexpected}));
    }
    Ok(if unexpected > 0 { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> Option<PathBuf> {
        let dir = std::env::var_os("CATCHUP_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures")
            });
        let p = dir.join(rel);
        if p.exists() {
            return Some(p);
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "fixture {} missing under CI=true",
            p.display()
        );
        eprintln!("SKIP: fixture {} missing", p.display());
        None
    }

    #[test]
    fn verify_era1_report_on_sepolia_and_a_corrupted_copy() {
        let Some(p) = fixture("ethereum/chain/sepolia-00021-b8814b14.era1") else {
            return;
        };
        let rep = check_era1_files(std::slice::from_ref(&p)).unwrap();
        assert_eq!(
            (rep.files, rep.blocks, rep.first, rep.last),
            (1, 8192, Some(172032), Some(180223))
        );
        assert_eq!(rep.headers_ok, 8192);
        assert_eq!(rep.receipt_roots_ok, 8192);
        assert!(rep.failures.is_empty(), "{:?}", rep.failures);
        let v = serde_json::to_value(&rep).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        for k in [
            "files",
            "blocks",
            "first",
            "last",
            "last_hash",
            "headers_ok",
            "tx_roots_ok",
            "ommers_ok",
        ] {
            assert!(keys.contains(&k), "{k}");
        }

        // Corrupt a compressed body: the failure names the file, record and offset.
        let mut buf = std::fs::read(&p).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.era1");
        buf[304 + 8 + 10] ^= 0xff; // inside the body record of the first block
        std::fs::write(&bad, &buf).unwrap();
        let rep = check_era1_files(std::slice::from_ref(&bad)).unwrap();
        assert_eq!(rep.failures.len(), 1, "{:?}", rep.failures);
        let f = &rep.failures[0];
        assert_eq!(f["field"], "record");
        assert!(f["file"].as_str().unwrap().ends_with("bad.era1"));
        assert!(
            f["error"]
                .as_str()
                .unwrap()
                .contains("record 2 at offset 304"),
            "{f}"
        );

        let mut p2 = std::fs::read(&p).unwrap();
        let era = Era1::open(&p2).unwrap();
        let off = era.index.header_offsets[0];
        drop(era);
        // Truncating the file removes the index: one failure naming the file.
        p2.truncate(off + 100);
        let t = dir.path().join("trunc.era1");
        std::fs::write(&t, &p2).unwrap();
        let rep = check_era1_files(std::slice::from_ref(&t)).unwrap();
        assert_eq!(rep.failures.len(), 1);
        assert_eq!(rep.failures[0]["field"], "file");
    }

    #[test]
    fn verify_era1_names_block_and_field() {
        use catchup_eth::{BlockBody, Header, Receipt, ReceiptOutcome, U256};
        let mut blocks = Vec::new();
        let mut parent = B256::ZERO;
        for n in 0..5u64 {
            let receipts = vec![Receipt {
                outcome: ReceiptOutcome::Status(true),
                cumulative_gas_used: 21000 + n,
                ..Default::default()
            }];
            let mut h = Header {
                number: n,
                parent_hash: parent,
                ommers_hash: catchup_eth::EMPTY_OMMERS_HASH,
                transactions_root: catchup_eth::EMPTY_ROOT,
                receipts_root: catchup_eth::receipts_root(&receipts),
                difficulty: U256::from(7),
                gas_limit: 30_000_000,
                timestamp: 1 + 12 * n,
                ..Default::default()
            };
            if n == 3 {
                h.receipts_root = B256::repeat_byte(0x11);
            }
            parent = h.hash();
            blocks.push((h, BlockBody::default(), receipts, U256::from(7 * (n + 1))));
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("five.era1");
        std::fs::write(&p, catchup_eth::era1::write_era1(&blocks).unwrap()).unwrap();
        let rep = check_era1_files(std::slice::from_ref(&p)).unwrap();
        assert_eq!(
            (
                rep.blocks,
                rep.headers_ok,
                rep.tx_roots_ok,
                rep.receipt_roots_ok
            ),
            (5, 5, 5, 4)
        );
        assert_eq!(rep.failures.len(), 1, "{:?}", rep.failures);
        assert_eq!(rep.failures[0]["block"], 3);
        assert_eq!(rep.failures[0]["field"], "receiptsRoot");
        // A wrong total difficulty is caught too.
        blocks[2].3 = U256::from(1000);
        std::fs::write(&p, catchup_eth::era1::write_era1(&blocks).unwrap()).unwrap();
        let rep = check_era1_files(std::slice::from_ref(&p)).unwrap();
        assert!(
            rep.failures
                .iter()
                .any(|f| f["field"] == "totalDifficulty" && f["block"] == 2),
            "{:?}",
            rep.failures
        );
        // A header rule (timestamps must increase) is caught on the last block.
        blocks[4].0.timestamp = blocks[3].0.timestamp;
        std::fs::write(&p, catchup_eth::era1::write_era1(&blocks).unwrap()).unwrap();
        let rep = check_era1_files(std::slice::from_ref(&p)).unwrap();
        assert!(
            rep.failures
                .iter()
                .any(|f| f["field"] == "timestamp" && f["block"] == 4),
            "{:?}",
            rep.failures
        );
        assert_eq!(rep.headers_ok, 4);
    }

    #[test]
    fn state_root_exit_codes() {
        let Some(p) = fixture("ethereum/devnet/headstate.json") else {
            return;
        };
        let args = StateRootArgs {
            alloc: None,
            dump: Some(p.clone()),
            datadir: None,
            json: true,
        };
        assert_eq!(state_root(&args).unwrap(), 0);
        // A dump whose claimed root is wrong exits 1.
        let text = std::fs::read_to_string(&p).unwrap();
        let bad = text.replacen("8fcfb02c", "00000000", 1);
        assert_ne!(bad, text);
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("bad.json");
        std::fs::write(&q, bad).unwrap();
        let args = StateRootArgs {
            alloc: None,
            dump: Some(q.clone()),
            datadir: None,
            json: false,
        };
        assert_eq!(state_root(&args).unwrap(), 1);
        // Not JSON: an error naming the file.
        std::fs::write(&q, "{not json").unwrap();
        let e = state_root(&args).unwrap_err();
        assert!(format!("{e:#}").contains("bad.json"), "{e:#}");
    }

    #[test]
    fn verify_blocktest_exit_codes() {
        let Some(valid) = fixture("ethereum/tests/blocks/valid/SimpleTx.json") else {
            return;
        };
        let Some(invalid) = fixture("ethereum/tests/blocks/invalid/wrongUncleHash.json") else {
            return;
        };
        let args = VerifyBlocktestArgs {
            files: vec![valid, invalid.clone()],
            json: true,
        };
        assert_eq!(verify_blocktest(&args).unwrap(), 0);
        // The same invalid block presented as valid fails.
        let text = std::fs::read_to_string(&invalid)
            .unwrap()
            .replace("\"expectException\"", "\"expectExceptionX\"");
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("as_valid.json");
        std::fs::write(&q, text).unwrap();
        let args = VerifyBlocktestArgs {
            files: vec![q],
            json: false,
        };
        assert_eq!(verify_blocktest(&args).unwrap(), 1);
    }
}
