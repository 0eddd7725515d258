//! The engines on the real shard runtime (pinned glommio executors, channel mesh) over a
//! loopback transport to in-process serving peers: fast and snap on 2 shards reach the
//! generated state's root and a complete header chain.

/// A skip reason shown on the terminal even though libtest hides what passing tests print
/// with `eprintln!`: a skipped test must say why.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

use std::sync::Arc;

use catchup::eth::sync::chain::{generate_chain, StateData};
use catchup::eth::sync::config::{SyncConfig, SyncMode};
use catchup::eth::sync::driver::{drive_shard, LoopbackTransport};
use catchup::eth::sync::engine::ShardMsg;
use catchup::eth::sync::sim::check_state;
use catchup::eth::sync::store::MemStore;

#[test]
fn two_shards_on_the_runtime_sync_fast_and_snap() {
    let state = Arc::new(StateData::generate(3_000, 500, 77));
    let chain = Arc::new(generate_chain(400, state.root, 77));
    for mode in [SyncMode::Fast, SyncMode::Snap] {
        let mut cfg = SyncConfig {
            mode,
            ..SyncConfig::default()
        };
        cfg.trusted_anchor = Some(chain.anchor_hash());
        let (c, s) = (chain.clone(), state.clone());
        let rt = catchup_shards::RuntimeConfig {
            handle_signals: false,
            ..catchup_shards::RuntimeConfig::new(2)
        };
        let results =
            match catchup_shards::run(&rt, move |shard: catchup_shards::Shard<ShardMsg>| {
                let (cfg, c, s) = (cfg.clone(), c.clone(), s.clone());
                async move {
                    let mut store = MemStore::default();
                    let mut t = LoopbackTransport::honest(5, c, s);
                    let outcome = drive_shard(&shard, cfg, &mut store, &mut t, 120_000).await;
                    (outcome, store)
                }
            }) {
                Ok(r) => r,
                Err(e) => {
                    if std::env::var("CI").as_deref() == Ok("true") {
                        panic!("cannot start the shard runtime: {e}");
                    }
                    skip_note!("skipping: cannot start the shard runtime here: {e}");
                    return;
                }
            };
        let (outcomes, stores): (Vec<_>, Vec<_>) = results.into_iter().unzip();
        assert!(outcomes[0].finished, "{mode:?}: {:?}", outcomes[0]);
        assert!(outcomes.iter().all(|o| o.failure.is_none()), "{outcomes:?}");
        let (ok, nodes, codes) = check_state(&stores, state.root);
        assert!(ok, "{mode:?}: state incomplete");
        assert_eq!(nodes, state.nodes.len() as u64);
        assert!(codes > 0);
        let headers: usize = stores.iter().map(|s| s.headers.len()).sum();
        assert_eq!(headers, 400);
        assert_eq!(
            outcomes[0].status.state_root.as_deref(),
            Some(format!("{}", state.root).as_str())
        );
        eprintln!("{mode:?}: {} ms on 2 shards", outcomes[0].elapsed_ms);
    }
}

#[test]
fn restart_from_the_disk_store_continues_without_refetching() {
    use catchup::eth::sync::persist::DiskStore;
    let state = Arc::new(StateData::generate(4_000, 800, 78));
    let chain = Arc::new(generate_chain(600, state.root, 78));
    let dir = tempfile::tempdir().unwrap();
    for mode in [SyncMode::Fast, SyncMode::Snap] {
        let base = dir.path().join(mode.name());
        let mut cfg = SyncConfig {
            mode,
            ..SyncConfig::default()
        };
        cfg.trusted_anchor = Some(chain.anchor_hash());
        // First run: stopped after a short while (like a kill: the store is dropped, not
        // closed); second run: from what the first one made durable.
        let mut outcomes = Vec::new();
        let mut loaded = 0;
        for (run, max_ms) in [(0, 40u64), (1, 120_000)] {
            let (c, s, cfg, base) = (chain.clone(), state.clone(), cfg.clone(), base.clone());
            let rt = catchup_shards::RuntimeConfig {
                handle_signals: false,
                ..catchup_shards::RuntimeConfig::new(2)
            };
            let results =
                match catchup_shards::run(&rt, move |shard: catchup_shards::Shard<ShardMsg>| {
                    let (cfg, c, s, base) = (cfg.clone(), c.clone(), s.clone(), base.clone());
                    async move {
                        let mut store =
                            DiskStore::open(&base.join(format!("shard-{}", shard.id().0)))
                                .await
                                .unwrap();
                        let loaded = store.loaded_records;
                        let mut t = LoopbackTransport::honest(5, c, s);
                        let outcome = drive_shard(&shard, cfg, &mut store, &mut t, max_ms).await;
                        let view = if run == 1 {
                            Some(store.close().await.unwrap())
                        } else {
                            None
                        };
                        (outcome, view, loaded)
                    }
                }) {
                    Ok(r) => r,
                    Err(e) => {
                        if std::env::var("CI").as_deref() == Ok("true") {
                            panic!("cannot start the shard runtime: {e}");
                        }
                        skip_note!("skipping: cannot start the shard runtime here: {e}");
                        return;
                    }
                };
            if run == 1 {
                loaded = results.iter().map(|r| r.2).sum::<u64>();
            }
            outcomes.push(results);
        }
        let last = &outcomes[1];
        assert!(last[0].0.finished, "{mode:?}: {:?}", last[0].0);
        let stores: Vec<_> = last.iter().map(|r| r.1.clone().unwrap()).collect();
        let (ok, nodes, _) = check_state(&stores, state.root);
        assert!(
            ok && nodes == state.nodes.len() as u64,
            "{mode:?}: state incomplete after restart"
        );
        assert_eq!(stores.iter().map(|s| s.headers.len()).sum::<usize>(), 600);
        let refetched: u64 = last.iter().map(|r| r.0.progress.refetched_items).sum();
        assert_eq!(
            refetched, 0,
            "{mode:?}: the restart fetched stored items again"
        );
        assert!(stores.iter().all(|s| s.duplicate_writes == 0));
        eprintln!("{mode:?}: restart loaded {loaded} records from disk");
    }
}
