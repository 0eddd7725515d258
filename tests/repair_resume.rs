//! `catchup solana repair --datadir`: killed (SIGKILL) part way through a repair from a local
//! serve-repair, restarted on the same data directory, it loads the verified shreds it kept,
//! requests only the rest, and drops (counts, refetches) a stored shred whose record is
//! damaged and one whose signature no longer verifies.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use catchup_io::store::record::{encode_record, parse_record, RecordLimits, RECORD_HEADER_BYTES};

const BIN: &str = env!("CARGO_BIN_EXE_catchup");
const FIRST: u64 = 1000;
const SLOTS: u64 = 120;
const PER_SLOT: u64 = 64;

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn repair_cmd(peer: &str, leader: &str, datadir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.args(["solana", "repair", "--from-slot", &FIRST.to_string()])
        .args(["--to-slot", &(FIRST + SLOTS - 1).to_string()])
        .args([
            "--peer",
            peer,
            "--leader",
            leader,
            "--timeout-secs",
            "60",
            "--json",
        ])
        .arg("--datadir")
        .arg(datadir);
    c
}

fn run_json(mut c: Command) -> (serde_json::Value, String) {
    let o = c.output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "repair failed: {out}\n{err}");
    let line = out.lines().last().unwrap_or_default();
    (
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {out}")),
        err,
    )
}

/// Offsets of the intact records at the start of a segment.
fn records(bytes: &[u8]) -> Vec<(usize, usize, usize)> {
    let limits = RecordLimits {
        max_key_bytes: 12,
        max_value_bytes: 4096,
    };
    let mut out = Vec::new();
    let mut off = 0;
    while let Ok(h) = parse_record(&bytes[off..], &limits) {
        out.push((off, h.key_len, h.value_len));
        off += h.record_len();
    }
    out
}

#[test]
fn a_killed_repair_resumes_from_its_store_and_refetches_damaged_shreds() {
    let mut server = Command::new(BIN)
        .args(["solana", "serve-repair", "--listen", "127.0.0.1:0"])
        .args(["--generate-from", &FIRST.to_string()])
        .args(["--generate-slots", &SLOTS.to_string()])
        .args(["--shreds-per-slot", &PER_SLOT.to_string()])
        .args(["--profile", "slow", "--max-seconds", "120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = server.stdout.take().unwrap();
    let _server = Kill(server);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let info: serde_json::Value = serde_json::from_str(&line).unwrap();
    let peer = format!(
        "{}@{}",
        info["identity"].as_str().unwrap(),
        info["listen"].as_str().unwrap()
    );
    let leader = info["leader"].as_str().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let datadir = tmp.path().join("d");
    let seg = datadir.join("repair/shard-0/seg-00000001.dat");

    // 1. Killed once a good part of the shreds is durable.
    let mut c = repair_cmd(&peer, &leader, &datadir);
    let first = Kill(
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    let mut first = first;
    loop {
        let len = std::fs::metadata(&seg).map_or(0, |m| m.len());
        if len >= 3 << 19 {
            break;
        }
        assert!(
            first.0.try_wait().unwrap().is_none(),
            "the repair ended before it could be killed part way ({len} bytes stored)"
        );
        assert!(start.elapsed() < Duration::from_secs(30), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    first.0.kill().unwrap(); // SIGKILL
    first.0.wait().unwrap();

    // 2. Damage two stored shreds: one record's bytes (its checksum fails), and one shred
    // rewritten under a valid checksum (its signature fails).
    let mut bytes = std::fs::read(&seg).unwrap();
    let recs = records(&bytes);
    assert!(recs.len() > 100, "{} records", recs.len());
    let (off, key_len, _) = recs[10];
    bytes[off + RECORD_HEADER_BYTES + key_len + 200] ^= 0x5a;
    let (off, key_len, value_len) = recs[40];
    let body = off + RECORD_HEADER_BYTES;
    let key = bytes[body..body + key_len].to_vec();
    let mut value = bytes[body + key_len..body + key_len + value_len].to_vec();
    value[150] ^= 0x01;
    let mut rec = Vec::new();
    encode_record(bytes[off + 2], &key, &value, &mut rec);
    bytes[off..off + rec.len()].copy_from_slice(&rec);
    std::fs::write(&seg, &bytes).unwrap();

    // 3. Restart on the same data directory: it finishes, loading what it kept.
    let out3 = tmp.path().join("out3.json");
    let mut c = repair_cmd(&peer, &leader, &datadir);
    c.arg("--out").arg(&out3);
    let (o, err) = run_json(c);
    let total = SLOTS * PER_SLOT;
    let loaded = o["shreds_loaded"].as_u64().unwrap();
    let fetched = o["shreds"].as_u64().unwrap();
    eprintln!(
        "restart: {loaded} shreds loaded, {} slots complete from disk, {fetched} fetched of {total}, {} dropped",
        o["slots_loaded"], o["store_dropped"]
    );
    assert_eq!(o["complete"], true, "{o}");
    assert!(
        loaded >= recs.len() as u64 - 2,
        "{loaded} < {}",
        recs.len() - 2
    );
    assert!(o["slots_loaded"].as_u64().unwrap() >= 1, "{o}");
    assert_eq!(o["store_dropped"], 2, "{o}");
    assert_eq!(o["requests_for_loaded"], 0, "{o}");
    assert_eq!(loaded + fetched, total, "each shred loaded or fetched once");
    assert!(err.contains("stored shreds dropped"), "{err}");
    let shard = &o["shards"][0];
    assert_eq!(shard["store"]["damaged_records"], 1, "{shard}");
    assert_eq!(shard["progress"]["store_rejected"], 1, "{shard}");

    // 4. Once more: everything comes from the data directory, nothing is requested.
    let out4 = tmp.path().join("out4.json");
    let mut c = repair_cmd(&peer, &leader, &datadir);
    c.arg("--out").arg(&out4);
    let (o, _) = run_json(c);
    assert_eq!(o["complete"], true, "{o}");
    assert_eq!(o["shreds_loaded"], total);
    assert_eq!(o["slots_loaded"], SLOTS);
    assert_eq!(o["shreds"], 0);
    assert_eq!(o["store_dropped"], 0);
    assert_eq!(o["shards"][0]["progress"]["requests_sent"], 0, "{o}");
    // The same shreds either way: loaded or fetched.
    let shreds =
        |p: &Path| catchup_shred::files::decode_shred_list(&std::fs::read(p).unwrap()).unwrap();
    let (s3, s4) = (shreds(&out3), shreds(&out4));
    assert_eq!(s4.len() as u64, total);
    assert_eq!(s3, s4);

    // 5. After that clean close (an index checkpoint: records are checked when read, not at
    // open), one damaged record: found by the scan, the rest salvaged, one shred fetched.
    let mut bytes = std::fs::read(&seg).unwrap();
    let recs = records(&bytes);
    let (off, key_len, _) = recs[100];
    bytes[off + RECORD_HEADER_BYTES + key_len + 300] ^= 0x08;
    std::fs::write(&seg, &bytes).unwrap();
    let (o, _) = run_json(repair_cmd(&peer, &leader, &datadir));
    assert_eq!(o["complete"], true, "{o}");
    assert_eq!(o["store_dropped"], 1, "{o}");
    assert_eq!(o["shreds"], 1, "{o}");
    assert_eq!(o["shreds_loaded"], total - 1, "{o}");
}
