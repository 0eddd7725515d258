//! Snap sync of the same generated state, served static and moving: real `catchup eth
//! serve` processes on loopback (one serving a static chain, one appending a block every
//! `CATCHUP_BENCH_MOVING_GROW_MS` ms and keeping only its last 32 states), synced by
//! `catchup eth sync --mode snap` into scratch data directories, static and moving runs
//! alternating so that both see the same load. Reports each run's time, the moving / static
//! ratio of times, the re-pivots, and the accounts and storage slots verified per second
//! per shard.
//!
//!     CATCHUP_BENCH_MOVING_ACCOUNTS=20000 CATCHUP_BENCH_MOVING_ROUNDS=2 \
//!     CATCHUP_BENCH_MOVING_SHARDS=1,2 cargo bench --bench eth_moving

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_catchup");
const HISTORY: u64 = 32;
const GENERATED_BLOCKS: u64 = 20;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Serve {
    child: Child,
    enode: String,
    genesis: String,
    head: Arc<Mutex<u64>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(accounts: u64, grow_ms: Option<u64>) -> Serve {
    let mut cmd = Command::new(BIN);
    cmd.args(["eth", "serve", "--json", "--network-id", "780"])
        .args(["--generate-accounts", &accounts.to_string()])
        .args(["--generate-blocks", &GENERATED_BLOCKS.to_string()])
        .args(["--listen", "127.0.0.1:0"]);
    if let Some(ms) = grow_ms {
        cmd.args(["--grow-every-ms", &ms.to_string()])
            .args(["--state-history", &HISTORY.to_string()]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn eth serve");
    let out = BufReader::new(child.stdout.take().expect("stdout"));
    let (tx, rx) = mpsc::channel();
    let head = Arc::new(Mutex::new(GENERATED_BLOCKS));
    let h = head.clone();
    std::thread::spawn(move || {
        let mut first = true;
        for l in out.lines() {
            let Ok(l) = l else { return };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&l) else {
                continue;
            };
            if first {
                first = false;
                let _ = tx.send(v);
            } else if let Some(n) = v["head_number"].as_u64() {
                *h.lock().unwrap() = n;
            }
        }
    });
    let info = rx
        .recv_timeout(Duration::from_secs(300))
        .expect("eth serve prints its enode");
    Serve {
        child,
        enode: info["enode"].as_str().expect("enode").to_string(),
        genesis: info["genesis_hash"].as_str().expect("genesis").to_string(),
        head,
    }
}

struct Run {
    seconds: f64,
    repivots: u64,
    leaves: u64,
}

fn sync(s: &Serve, shards: usize) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Instant::now();
    let out = Command::new(BIN)
        .args(["eth", "sync", "--mode", "snap", "--json"])
        .args(["--shards", &shards.to_string()])
        .args(["--stall-timeout-s", "60", "--network-id", "780"])
        .args(["--genesis-hash", &s.genesis, "--peer", &s.enode])
        .arg("--datadir")
        .arg(dir.path())
        .output()
        .expect("run eth sync");
    let seconds = t.elapsed().as_secs_f64();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "eth sync printed no report: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(v["ok"], true, "the sync did not verify: {v}");
    let r = &v["report"];
    let p = &r["progress"];
    Run {
        seconds,
        repivots: r["repivots"].as_u64().unwrap_or(0),
        leaves: p["accounts_downloaded"].as_u64().unwrap_or(0)
            + p["slots_downloaded"].as_u64().unwrap_or(0),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument that is not ours is ignored.
    let accounts = env_u64("CATCHUP_BENCH_MOVING_ACCOUNTS", 20_000);
    let rounds = env_u64("CATCHUP_BENCH_MOVING_ROUNDS", 2);
    let grow_ms = env_u64("CATCHUP_BENCH_MOVING_GROW_MS", 200);
    let shard_counts: Vec<usize> = std::env::var("CATCHUP_BENCH_MOVING_SHARDS")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let fixed = serve(accounts, None);
    let moving = serve(accounts, Some(grow_ms));
    // The moving chain forgets the generated state first, as mainnet's peers do.
    let until = Instant::now() + Duration::from_secs(120);
    while *moving.head.lock().unwrap() < GENERATED_BLOCKS + HISTORY + 2 {
        assert!(Instant::now() < until, "the moving chain did not grow");
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "snap sync of {accounts} generated accounts, static vs moving (a block every {grow_ms} ms, {HISTORY} states kept)"
    );
    println!("| shards | round | static s | moving s | moving / static | re-pivots | static leaves/s per shard | moving leaves/s per shard |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut rows = Vec::new();
    for &shards in &shard_counts {
        for round in 1..=rounds {
            let a = sync(&fixed, shards);
            let b = sync(&moving, shards);
            let per = |r: &Run| r.leaves as f64 / r.seconds / shards as f64;
            println!(
                "| {shards} | {round} | {:.2} | {:.2} | {:.2} | {} | {:.0} | {:.0} |",
                a.seconds,
                b.seconds,
                b.seconds / a.seconds,
                b.repivots,
                per(&a),
                per(&b)
            );
            rows.push(serde_json::json!({
                "shards": shards,
                "round": round,
                "static_s": a.seconds,
                "moving_s": b.seconds,
                "moving_over_static": b.seconds / a.seconds,
                "repivots": b.repivots,
                "static_leaves_per_s_per_shard": per(&a),
                "moving_leaves_per_s_per_shard": per(&b),
            }));
        }
    }
    println!(
        "{}",
        serde_json::json!({ "bench": "eth_moving", "accounts": accounts, "grow_every_ms": grow_ms, "rows": rows })
    );
}
