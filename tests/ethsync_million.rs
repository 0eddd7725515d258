//! A generated state of a million accounts (one in eight with storage, one large storage
//! trie, shared contract codes) synced on 2 shards against mixed peers, with a kill and a
//! restart in snap mode. The slowest tests of the suite (about two minutes per mode in a
//! dev build on a 2-core machine); run alone with `cargo test --test ethsync_million`.

use catchup::eth::sync::config::SyncMode;
use catchup::eth::sync::sim::{run, Profile, SimConfig};

fn million(mode: SyncMode, kills: Vec<u32>) {
    let mut cfg = SimConfig {
        peers: 9,
        profile: Profile::Mixed,
        seed: 1_000_000,
        accounts: 1_000_000,
        blocks: 2_000,
        big_storage_slots: 20_000,
        shards: 2,
        kill_at_pct: kills,
        ..SimConfig::default()
    };
    cfg.sync.mode = mode;
    let t = std::time::Instant::now();
    let r = run(&cfg);
    eprintln!(
        "{mode:?}: {} state nodes, {} headers, correct {} in {:.1} s wall ({} virtual ms)",
        r.state_nodes_verified,
        r.headers_verified,
        r.correct,
        t.elapsed().as_secs_f64(),
        r.virtual_ms
    );
    assert!(
        r.correct,
        "{mode:?}: {:?} root {:?} vs {}",
        r.failure, r.state_root, r.expected_state_root
    );
    assert!(r.state_nodes_verified > 1_000_000);
    assert_eq!(r.progress.refetched_items, 0);
}

#[test]
fn million_accounts_fast_two_shards() {
    million(SyncMode::Fast, vec![]);
}

#[test]
fn million_accounts_snap_two_shards_with_kill() {
    million(SyncMode::Snap, vec![60]);
}
