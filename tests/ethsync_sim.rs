//! Fast and snap sync under the deterministic simulator: byzantine peers, kills and
//! restarts, determinism, mode switches, and resume without re-fetching.

use catchup::eth::sync::chain::SimRng;
use catchup::eth::sync::config::SyncMode;
use catchup::eth::sync::sim::{run, Profile, SimConfig, SimReport};

fn small(seed: u64, mode: SyncMode) -> SimConfig {
    let mut c = SimConfig {
        peers: 9,
        profile: Profile::Byzantine,
        seed,
        accounts: 120,
        blocks: 200,
        big_storage_slots: 150,
        shards: 2,
        ..SimConfig::default()
    };
    c.sync.mode = mode;
    c.sync.header_batch = 48;
    c
}

fn assert_correct(r: &SimReport, what: &str) {
    assert_correct_refetching(r, what, 0);
}

/// Correct; at most `refetch` stored items fetched again (a re-selected pivot refetches
/// the header batch that held the old head).
fn assert_correct_refetching(r: &SimReport, what: &str, refetch: u64) {
    assert!(
        r.correct,
        "{what}: not correct: finished {} failure {:?} root {:?} vs {} head {:?} vs {} state {} chain {}",
        r.finished,
        r.failure,
        r.state_root,
        r.expected_state_root,
        r.head_hash,
        r.expected_head_hash,
        r.state_complete,
        r.chain_complete
    );
    assert_eq!(r.duplicate_writes, 0, "{what}: an item was written twice");
    assert!(
        r.progress.refetched_items <= refetch,
        "{what}: {} stored items fetched again",
        r.progress.refetched_items
    );
}

#[test]
fn seeds_1_to_50_byzantine_with_kills_fast_and_snap() {
    let mut lies = 0;
    let mut restarts = 0;
    for seed in 1..=50u64 {
        for mode in [SyncMode::Fast, SyncMode::Snap] {
            let mut rng = SimRng::new(seed * 7 + mode as u64);
            let mut cfg = small(seed, mode);
            cfg.kill_at_pct = (0..1 + rng.below(2))
                .map(|_| 5 + rng.below(90) as u32)
                .collect();
            let r = run(&cfg);
            assert_correct(
                &r,
                &format!("seed {seed} {mode:?} kills {:?}", cfg.kill_at_pct),
            );
            // A third of the peers lie.
            assert_eq!(r.peers.iter().filter(|p| p.fault == "lying").count(), 3);
            assert!(r.max_inflight_per_shard <= cfg.sync.max_concurrent_requests);
            lies += r.lies_detected;
            restarts += r.restarts;
        }
    }
    assert!(lies > 50, "liars were caught ({lies})");
    assert!(restarts >= 50, "kills happened ({restarts})");
}

#[test]
fn same_seed_same_trace_other_seed_other_trace() {
    for mode in [SyncMode::Fast, SyncMode::Snap] {
        let mut cfg = small(11, mode);
        cfg.profile = Profile::Mixed;
        cfg.kill_at_pct = vec![40];
        let a = run(&cfg);
        let b = run(&cfg);
        assert_correct(&a, "first run");
        assert_eq!(a.trace_hash, b.trace_hash);
        assert_eq!(a.events, b.events);
        assert_eq!(a.virtual_ms, b.virtual_ms);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        cfg.seed = 12;
        let c = run(&cfg);
        assert_ne!(a.trace_hash, c.trace_hash);
    }
}

#[test]
fn resume_keeps_the_pivot_and_does_not_refetch() {
    for mode in [SyncMode::Fast, SyncMode::Snap] {
        let mut cfg = small(5, mode);
        cfg.profile = Profile::Honest;
        cfg.accounts = 600;
        let clean = run(&cfg);
        assert_correct(&clean, "clean");
        cfg.kill_at_pct = vec![20, 45, 70];
        let killed = run(&cfg);
        assert_correct(&killed, "killed");
        assert_eq!(killed.restarts, 3);
        assert_eq!(
            killed.pivot_block, clean.pivot_block,
            "same pivot after restarts"
        );
        // Work lost at a kill is only what was in flight: at most one window of requests
        // per shard per kill is fetched again.
        let state_kinds = [
            "node_data",
            "account_range",
            "storage_ranges",
            "byte_codes",
            "trie_nodes",
            "headers",
            "bodies",
            "receipts",
        ];
        let sum = |r: &SimReport| {
            state_kinds
                .iter()
                .map(|k| r.requests_by_kind.get(*k).copied().unwrap_or(0))
                .sum::<u64>()
        };
        let window = (cfg.sync.max_concurrent_requests * cfg.shards) as u64 * 3;
        assert!(
            sum(&killed) <= sum(&clean) + window + 40,
            "{mode:?}: {} requests with kills vs {} without",
            sum(&killed),
            sum(&clean)
        );
    }
}

#[test]
fn switch_mode_keeps_verified_data() {
    for (mode, pct) in [
        (SyncMode::Fast, 30),
        (SyncMode::Snap, 30),
        // Headers are stored as they are joined, from the head down, so a switch late in
        // the state sync comes at half of all the work, not later.
        (SyncMode::Fast, 50),
    ] {
        let mut cfg = small(21, mode);
        cfg.profile = Profile::Mixed;
        cfg.accounts = 500;
        let other = if mode == SyncMode::Fast {
            SyncMode::Snap
        } else {
            SyncMode::Fast
        };
        cfg.switch_at = Some((pct, other));
        let r = run(&cfg);
        assert_correct(&r, &format!("switch {mode:?} -> {other:?} at {pct}%"));
        assert_eq!(r.mode, other.name());
    }
}

#[test]
fn honest_profiles_and_more_shards() {
    for shards in [1, 3, 4] {
        for mode in [SyncMode::Fast, SyncMode::Snap] {
            let mut cfg = small(8, mode);
            cfg.shards = shards;
            cfg.profile = Profile::Lossy;
            let r = run(&cfg);
            assert_correct(&r, &format!("{shards} shards {mode:?}"));
        }
    }
}

#[test]
fn pivot_is_reselected_when_the_head_moves_on() {
    for mode in [SyncMode::Fast, SyncMode::Snap] {
        let mut cfg = small(31, mode);
        cfg.profile = Profile::Honest;
        cfg.accounts = 1500;
        cfg.blocks = 1500;
        cfg.initial_best = Some(1000);
        cfg.ms_per_block = 1;
        cfg.sync.pivot_distance = 64;
        cfg.sync.repivot_slack = 32;
        cfg.sync.status_check_ms = 200;
        let r = run(&cfg);
        // A new pivot re-fetches at most the header batch of the old head and the bodies
        // that were in flight.
        let bound = cfg.sync.header_batch
            + (cfg.sync.max_concurrent_requests * cfg.sync.body_batch * cfg.shards) as u64;
        assert_correct_refetching(&r, &format!("growing chain {mode:?}"), r.repivots * bound);
        assert!(r.repivots >= 1, "{mode:?}: the pivot was never re-selected");
        assert!(r.status.highest_block.unwrap() > 1000);
    }
}

#[test]
fn stale_journaled_pivot_is_replaced_on_resume() {
    for mode in [SyncMode::Fast, SyncMode::Snap] {
        let mut cfg = small(32, mode);
        cfg.profile = Profile::Honest;
        cfg.accounts = 2000;
        cfg.blocks = 3000;
        cfg.initial_best = Some(1000);
        cfg.ms_per_block = 5;
        cfg.sync.pivot_distance = 64;
        cfg.sync.repivot_slack = 16;
        cfg.sync.status_check_ms = 0;
        cfg.kill_at_pct = vec![40];
        let r = run(&cfg);
        assert_correct_refetching(
            &r,
            &format!("resume with a stale pivot {mode:?}"),
            r.repivots * cfg.sync.header_batch,
        );
        assert_eq!(r.restarts, 1);
        assert!(r.repivots >= 1, "{mode:?}: the stale pivot was kept");
    }
}

#[test]
fn new_pivot_with_a_changed_state_is_healed() {
    for mode in [SyncMode::Fast, SyncMode::Snap] {
        let mut cfg = small(41, mode);
        cfg.profile = Profile::Honest;
        cfg.accounts = 1500;
        cfg.blocks = 1500;
        cfg.initial_best = Some(1000);
        cfg.ms_per_block = 1;
        cfg.state_change_at = Some(1000);
        cfg.sync.pivot_distance = 64;
        cfg.sync.repivot_slack = 8;
        cfg.sync.status_check_ms = 200;
        let r = run(&cfg);
        let bound = cfg.sync.header_batch
            + (cfg.sync.max_concurrent_requests * cfg.sync.body_batch * cfg.shards) as u64;
        assert_correct_refetching(&r, &format!("changed state {mode:?}"), r.repivots * bound);
        assert!(
            r.pivot_block.unwrap() > 1000,
            "{mode:?}: the final pivot is past the state change"
        );
        assert!(r.repivots >= 1);
        assert!(r.progress.healed_nodes > 0, "{mode:?}: nothing was healed");
        if mode == SyncMode::Snap {
            assert!(
                r.requests_by_kind.get("trie_nodes").copied().unwrap_or(0) > 0,
                "snap healed with GetTrieNodes"
            );
        }
    }
}

/// A chain that moves while it is synced: a block every 300 ms of virtual time, each
/// changing the state; the peers keep only their last 32 blocks' states.
fn moving(seed: u64, mode: SyncMode, peers: usize, shards: usize) -> SimConfig {
    let mut c = small(seed, mode);
    c.profile = Profile::Honest;
    c.peers = peers;
    c.shards = shards;
    c.accounts = 1_000;
    c.big_storage_slots = 400;
    c.blocks = 200;
    c.grow_every_ms = 150;
    c.grow_blocks = 300;
    c.state_history = 32;
    // A slow link (small answers, few requests at a time), so the sync spans several
    // states' lifetimes.
    c.latency_ms = (20, 60);
    c.sync.snap_response_bytes = 2 * 1024;
    c.sync.max_concurrent_requests = 4;
    c.sync.max_inflight_per_peer = 1;
    c.sync.node_batch = 16;
    c.max_virtual_ms = 600_000;
    c.sync.pivot_distance = 4;
    c.sync.pivot_agreement = match peers {
        1 => 1,
        2 => 2,
        _ => 3,
    };
    c.sync.peers_given = peers;
    c
}

fn assert_moved_and_verified(r: &SimReport, what: &str) {
    assert!(
        r.correct,
        "{what}: not correct: finished {} failure {:?} root {:?} vs {} head {:?} vs {} state {} chain {}",
        r.finished,
        r.failure,
        r.state_root,
        r.expected_state_root,
        r.head_hash,
        r.expected_head_hash,
        r.state_complete,
        r.chain_complete
    );
    assert!(r.repivots >= 1, "{what}: never moved the pivot");
    assert!(
        r.pivot_block > r.first_pivot_block,
        "{what}: final pivot {:?} not newer than the first {:?}",
        r.pivot_block,
        r.first_pivot_block
    );
    assert_eq!(r.duplicate_writes, 0, "{what}: an item was written twice");
}

#[test]
fn snap_on_a_moving_chain_with_32_blocks_of_state_history() {
    for (peers, shards) in [(4, 2), (1, 1), (2, 2), (1, 2), (2, 1), (4, 1)] {
        let cfg = moving(61, SyncMode::Snap, peers, shards);
        let r = run(&cfg);
        let what = format!("{peers} peer(s), {shards} shard(s)");
        eprintln!(
            "{what}: repivots {} healed {} pivot {:?} (first {:?}) root {:?} head {} virtual {} ms",
            r.repivots,
            r.healed_nodes,
            r.pivot_block,
            r.first_pivot_block,
            r.state_root,
            r.peers_head,
            r.virtual_ms
        );
        assert_moved_and_verified(&r, &what);
        assert!(
            r.peers_head < cfg.blocks + cfg.grow_blocks,
            "{what}: converged only once the chain stopped growing"
        );
        assert!(r.healed_nodes > 0, "{what}: nothing healed");
        // The heal fetches only what the store lacks: nothing verified comes twice.
        assert_eq!(
            r.progress.refetched_items, 0,
            "{what}: verified items fetched again"
        );
    }
}

/// Two colluding liars of three peers (the same lie for the same request) against one
/// honest peer, in fast and snap mode: the liars can win the pivot vote with a forged head;
/// the sync must find out (their chain does not join, they get caught), turn to the other
/// candidate or vote again among the others, and finish with the peers' real chain.
fn colluding(seed: u64, mode: SyncMode) -> SimReport {
    let mut cfg = small(seed, mode);
    cfg.profile = Profile::Colluding;
    cfg.peers = 3;
    cfg.sync.pivot_agreement = 2;
    cfg.sync.peers_given = 3;
    cfg.max_virtual_ms = 3_600_000;
    run(&cfg)
}

/// The soak's liars row with seed 20261203 stalled: the liars' two votes picked a forged
/// pivot and the honest peer's dissent was taken for a lie.
#[test]
fn seed_20261203_colluding_liars_outvote_the_honest_peer() {
    for mode in [SyncMode::Fast, SyncMode::Snap] {
        let r = colluding(20_261_203, mode);
        assert_correct_refetching(&r, &format!("{mode:?}"), u64::MAX);
        assert!(r.lies_detected > 0, "{mode:?}: no liar caught");
    }
}

/// Seeds 3, 4, 6 and 32 each found a way the recovery could stall or leave the state
/// incomplete (a pivot found false, a vote picking the same pivot again, a switch between
/// pivots with one state root, an honest top batch taken for a lie).
#[test]
fn colluding_liars_beyond_a_third_seeds_1_to_60() {
    let mut moved = 0;
    for seed in 1..=60u64 {
        for mode in [SyncMode::Fast, SyncMode::Snap] {
            let r = colluding(seed, mode);
            assert_correct_refetching(&r, &format!("seed {seed} {mode:?}"), u64::MAX);
            moved += r.repivots;
        }
    }
    assert!(moved > 0, "no seed needed another candidate");
}

/// Fast sync (GetNodeData, answered from the states the peers still keep) on the same
/// moving chain, over one peer (with more it finishes before the first state is gone).
/// Each new pivot restarts the node-by-node walk from its root, so fast mode converges
/// more slowly than snap; this checks that it ends verified at a newer pivot.
#[test]
fn fast_on_a_moving_chain_with_32_blocks_of_state_history() {
    {
        let (peers, shards) = (1, 1);
        let cfg = moving(62, SyncMode::Fast, peers, shards);
        let r = run(&cfg);
        let what = format!("fast, {peers} peer(s), {shards} shard(s)");
        eprintln!(
            "{what}: repivots {} healed {} pivot {:?} (first {:?}) root {:?} head {} virtual {} ms",
            r.repivots,
            r.healed_nodes,
            r.pivot_block,
            r.first_pivot_block,
            r.state_root,
            r.peers_head,
            r.virtual_ms
        );
        assert_moved_and_verified(&r, &what);
    }
}

/// Killed twice in the middle of a snap sync on a moving chain: every restart resumes
/// from the store and the journal, and nothing verified is fetched again (but the header
/// batch of an old head, and the bodies in flight, when the pivot moved).
#[test]
fn moving_chain_sync_resumes_after_kills_without_refetching() {
    for (peers, shards) in [(1, 1), (2, 1)] {
        let mut cfg = moving(63, SyncMode::Snap, peers, shards);
        cfg.kill_at_pct = vec![30, 70];
        let r = run(&cfg);
        let what = format!("killed, {peers} peer(s), {shards} shard(s)");
        eprintln!(
            "{what}: restarts {} repivots {} refetched {} pivot {:?} (first {:?}) virtual {} ms",
            r.restarts,
            r.repivots,
            r.progress.refetched_items,
            r.pivot_block,
            r.first_pivot_block,
            r.virtual_ms
        );
        assert_moved_and_verified(&r, &what);
        assert_eq!(r.restarts, 2, "{what}");
        let bound = r.repivots
            * (cfg.sync.header_batch
                + (cfg.sync.max_concurrent_requests * cfg.sync.body_batch * cfg.shards) as u64);
        assert!(
            r.progress.refetched_items <= bound,
            "{what}: {} verified items fetched again",
            r.progress.refetched_items
        );
    }
}

/// No peer serves any state: the pivot moves first (to the head's state), and when that
/// does not help either the sync stops after the stall timeout with one line that names
/// the root, the empty answers and the flags that help; meanwhile `get_status` says what
/// it waits for.
#[test]
fn no_peer_serves_the_state_ends_in_one_line_after_the_stall_timeout() {
    for mode in [SyncMode::Snap, SyncMode::Fast] {
        let mut cfg = small(71, mode);
        cfg.profile = Profile::Stale;
        cfg.peers = 3;
        cfg.sync.pivot_agreement = 2;
        cfg.sync.peers_given = 3;
        cfg.sync.stall_timeout_ms = 20_000;
        let r = run(&cfg);
        let line = r.failure.clone().unwrap_or_default();
        eprintln!("{mode:?}: after {} ms: {line}", r.virtual_ms);
        assert!(!r.finished, "{mode:?}");
        assert!(
            line.starts_with("no peer serves the state of root 0x")
                && line.contains("empty answers from 3 peer(s)")
                && line.contains("--pivot-distance 0")
                && line.contains("--stall-timeout-s"),
            "{mode:?}: {line}"
        );
        assert!(r.repivots >= 1, "{mode:?}: the pivot never moved");
        assert!(
            r.virtual_ms < 20_000 + 60_000,
            "{mode:?}: stopped only after {} ms",
            r.virtual_ms
        );
        let waiting = r.status.waiting.clone().unwrap_or_default();
        assert!(
            waiting.contains("empty answers from"),
            "{mode:?}: {waiting}"
        );
    }
}

/// Fewer peers than must agree on the pivot: the sync says what it waits for and stops
/// after the stall timeout with one line naming the flags that help.
#[test]
fn no_pivot_agreement_ends_in_one_line_after_the_stall_timeout() {
    let mut cfg = small(72, SyncMode::Snap);
    cfg.profile = Profile::Honest;
    cfg.peers = 2;
    cfg.sync.pivot_agreement = 3;
    cfg.sync.stall_timeout_ms = 15_000;
    let r = run(&cfg);
    let line = r.failure.clone().unwrap_or_default();
    assert!(!r.finished);
    assert!(
        line.starts_with("no pivot after 15 s: a pivot: 2 live peer(s)")
            && line.contains("3 must agree")
            && line.contains("--pivot-agreement")
            && line.contains("--stall-timeout-s"),
        "{line}"
    );
    assert!(r.virtual_ms < 15_000 + 1_000, "{}", r.virtual_ms);
}

/// The moving chain with nine peers of every kind (lying, stale, lossy, slow, leaving):
/// a stale or lying peer answering empty does not move the pivot alone, and every sync
/// ends verified (at a newer pivot where the state went out of the history meanwhile).
#[test]
fn moving_chain_with_mixed_peers() {
    let mut moved = 0;
    for seed in 1..=4 {
        let mut cfg = moving(seed, SyncMode::Snap, 9, 2);
        cfg.profile = Profile::Mixed;
        cfg.sync.pivot_agreement = 3;
        cfg.sync.peers_given = 9;
        let r = run(&cfg);
        assert_correct(&r, &format!("mixed, seed {seed}"));
        if r.repivots > 0 {
            assert!(r.pivot_block > r.first_pivot_block, "seed {seed}");
            moved += 1;
        }
    }
    assert!(moved >= 1, "no seed moved its pivot");
}

#[test]
fn a_kill_inside_a_large_storage_trie_keeps_its_verified_ranges() {
    // One storage trie of 30,000 slots fetched in many ranges; kills part-way through.
    let mut cfg = small(61, SyncMode::Snap);
    cfg.profile = Profile::Honest;
    cfg.accounts = 200;
    cfg.big_storage_slots = 30_000;
    // Small responses: the trie takes about a hundred ranges.
    cfg.sync.snap_response_bytes = 16 * 1024;
    let whole = run(&cfg);
    assert_correct(&whole, "no kill");
    cfg.kill_at_pct = vec![10, 30, 50, 70];
    let killed = run(&cfg);
    assert_correct(&killed, "killed inside the large storage trie");
    assert!(killed.restarts >= 1);
    let (a, b) = (&whole.progress, &killed.progress);
    eprintln!(
        "slots fetched: {} without kills, {} with {} kills ({} kept across restarts)",
        a.slots_downloaded, b.slots_downloaded, killed.restarts, b.slots_resumed
    );
    assert!(b.slots_resumed > 0, "no verified storage range was kept");
    // Only the ranges in flight at a kill may be fetched again (a few responses), not
    // the trie from its start.
    assert!(
        b.slots_downloaded <= a.slots_downloaded + 4_000,
        "{} slots fetched with kills against {} without",
        b.slots_downloaded,
        a.slots_downloaded
    );
}

/// The engine's backlog of open storage tries is bounded by its cap, not by the state:
/// account ranges (and, after a restart, the accounts stored before it) wait while it is
/// full, and the sync still completes without fetching anything twice.
#[test]
fn the_storage_backlog_stays_within_its_cap_through_kills() {
    let mut cfg = small(7, SyncMode::Snap);
    cfg.profile = Profile::Honest;
    cfg.accounts = 6000;
    // Small account responses: each opens few storage tries, so the cap is tight.
    cfg.sync.snap_response_bytes = 2048;
    let open = run(&cfg);
    assert_correct(&open, "uncapped");
    // An account response of 2 KiB holds at most 2048 / 32 accounts.
    let per_response = 2048 / 32;
    let cap = 16;
    assert!(
        open.progress.storage_backlog_peak as usize > 2 * (cap + per_response),
        "without a cap the backlog follows the state: peak {}",
        open.progress.storage_backlog_peak
    );
    cfg.sync.storage_backlog_accounts = cap;
    let capped = run(&cfg);
    assert_correct(&capped, "capped");
    cfg.kill_at_pct = vec![25, 50, 75];
    let killed = run(&cfg);
    assert_correct(&killed, "capped, killed");
    assert_eq!(killed.restarts, 3);
    // A restart reads the stored accounts again only from each range's journaled
    // follow-up mark (the first account whose storage trie or code was open), not
    // every account stored before it (about 1.5 × 6,000 over these three kills).
    eprintln!(
        "accounts read again after the restarts: {}",
        killed.progress.accounts_reread
    );
    assert!(
        killed.progress.accounts_reread < cfg.accounts / 4,
        "{} stored accounts read again after 3 restarts",
        killed.progress.accounts_reread
    );
    for (r, what) in [(&capped, "capped"), (&killed, "capped, killed")] {
        assert!(
            r.progress.storage_backlog_peak as usize <= cap + per_response,
            "{what}: backlog peak {} over the cap {cap} plus one response",
            r.progress.storage_backlog_peak
        );
    }
}

/// The coordinator joins header batches from the head down, so the shards fetch them in
/// that order: a batch is joined and stored soon after it arrives, and the batches held
/// in memory stay near the request window, whatever the chain's length.
#[test]
fn header_batches_held_for_the_join_stay_near_the_request_window() {
    for (seed, shards) in [(3u64, 1usize), (4, 2)] {
        let mut cfg = small(seed, SyncMode::Fast);
        cfg.profile = Profile::Honest;
        cfg.blocks = 6000;
        cfg.accounts = 50;
        cfg.shards = shards;
        let r = run(&cfg);
        assert_correct(&r, "long chain");
        let batches = 6000 / cfg.sync.header_batch as usize;
        let window = cfg.sync.max_concurrent_requests;
        assert!(
            r.max_held_batches <= 2 * window,
            "{shards} shard(s): {} of {batches} batches held at once (window {window})",
            r.max_held_batches
        );
    }
}

/// A batch near the head that is late (a lost or slow answer) must not make the shards
/// hold the chain below it: at `held_header_batches` a shard starts only a batch above
/// all it holds, which the join's next batch always is, and asks a second peer for its
/// top batch when the first is late.
#[test]
fn held_header_batches_stay_within_their_cap_while_a_batch_is_late() {
    for (profile, seed) in [(Profile::Lossy, 5u64), (Profile::Slow, 6)] {
        let mut cfg = small(seed, SyncMode::Fast);
        cfg.profile = profile;
        cfg.blocks = 6000;
        cfg.accounts = 50;
        cfg.shards = 2;
        cfg.sync.held_header_batches = usize::MAX;
        let open = run(&cfg);
        assert_correct(&open, "no cap");
        let cap = 3;
        cfg.sync.held_header_batches = cap;
        let capped = run(&cfg);
        assert_correct(&capped, "capped");
        eprintln!(
            "{profile:?}: held {} without a cap ({} virtual ms), {} with a cap of {cap} ({} ms, {} batches asked again)",
            open.max_held_batches,
            open.virtual_ms,
            capped.max_held_batches,
            capped.virtual_ms,
            capped.progress.header_hedges
        );
        assert!(
            open.max_held_batches > 4 * cap,
            "{profile:?}: without a cap only {} held: the case does not test the cap",
            open.max_held_batches
        );
        assert!(
            capped.progress.header_hedges > 0,
            "{profile:?}: a late batch at the cap was not asked of a second peer"
        );
        assert!(
            capped.max_held_batches <= cap,
            "{profile:?}: {} held with a cap of {cap} per shard",
            capped.max_held_batches
        );
    }
}

/// The subtries that verified account ranges built are kept in the store, so the rebuild
/// after a restart references them instead of hashing the accounts stored before the
/// restart again.
#[test]
fn a_restart_rebuild_reuses_the_subtries_ranges_built_before_it() {
    let mut cfg = small(11, SyncMode::Snap);
    cfg.profile = Profile::Honest;
    cfg.accounts = 20_000;
    cfg.big_storage_slots = 0;
    cfg.sync.snap_response_bytes = 16 * 1024;
    let whole = run(&cfg);
    assert_correct(&whole, "no kill");
    let reused = whole.progress.rebuild_subtries_reused;
    assert!(reused > 0, "the rebuild reused no subtrie");
    for pct in [30u32, 50, 70] {
        cfg.kill_at_pct = vec![pct];
        let killed = run(&cfg);
        assert_correct(&killed, "killed");
        assert_eq!(killed.restarts, 1);
        let got = killed.progress.rebuild_subtries_reused;
        eprintln!("kill at {pct} %: {got} subtries reused, {reused} without a kill");
        // Without the kept records a restart after most ranges reuses about a sixth.
        assert!(
            got * 20 >= reused * 19,
            "kill at {pct} %: {got} subtries reused against {reused} without a kill"
        );
    }
}

/// After clean snap ranges (no restart, no pivot moved, every storage trie and code
/// followed up), the rebuild marks the subtries it built from complete accounts, and the
/// walk that checks the state stops at them instead of reading the whole trie back.
#[test]
fn a_clean_snap_walk_stops_at_the_subtries_the_rebuild_built_complete() {
    for shards in [1usize, 2] {
        let mut cfg = small(12, SyncMode::Snap);
        cfg.profile = Profile::Honest;
        cfg.accounts = 20_000;
        cfg.shards = shards;
        let r = run(&cfg);
        assert_correct(&r, "clean snap");
        let visited = r.progress.state_nodes_visited;
        eprintln!(
            "{shards} shard(s): the walk visited {visited} state items of {} verified",
            r.state_nodes_verified
        );
        assert!(
            visited * 10 < r.state_nodes_verified,
            "{shards} shard(s): the walk visited {visited} of {} state items: the complete subtries were read back",
            r.state_nodes_verified
        );
    }
}
