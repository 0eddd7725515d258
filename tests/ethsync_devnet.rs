//! The devnet fixture (geth's conformance chain) synced from in-process serving peers:
//! fast and snap, with byzantine peers and a kill, must give the fixture's state root and
//! head hash.

/// A skip reason shown on the terminal even though libtest hides what passing tests print
/// with `eprintln!`: a skipped test must say why.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

use std::path::PathBuf;
use std::sync::Arc;

use catchup::eth::sync::chain::{chain_from_rlp_file, StateData};
use catchup::eth::sync::config::SyncMode;
use catchup::eth::sync::sim::{run_over, Profile, SimConfig};

const ROOT: &str = "0x8fcfb02cfca007773bd55bc1c3e50a3c8612a59c87ce057e5957e8bf17c1728b";
const HEAD: &str = "0x44e3809c9a3cda717f00aea3a9da336d149612c8d5657fbc0028176ef8d94d2a";

fn devnet_dir() -> Option<PathBuf> {
    let base = std::env::var_os("CATCHUP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"));
    let dir = base.join("ethereum/devnet");
    if dir.join("chain.rlp").is_file() && dir.join("headstate.json").is_file() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("devnet fixture missing at {} (CI=true)", dir.display());
    }
    skip_note!("skipping: devnet fixture missing at {}", dir.display());
    None
}

#[test]
fn devnet_syncs_to_fixture_root_and_head() {
    let Some(dir) = devnet_dir() else { return };
    let chain = Arc::new(chain_from_rlp_file(&dir.join("chain.rlp")).unwrap());
    let state = Arc::new(StateData::from_geth_dump(&dir.join("headstate.json")).unwrap());
    assert_eq!(format!("{}", state.root), ROOT);
    assert_eq!(format!("{}", chain.head().hash), HEAD);
    for (mode, profile, kills) in [
        (SyncMode::Fast, Profile::Honest, vec![]),
        (SyncMode::Snap, Profile::Honest, vec![]),
        (SyncMode::Fast, Profile::Byzantine, vec![50]),
        (SyncMode::Snap, Profile::Byzantine, vec![30, 80]),
    ] {
        let mut cfg = SimConfig {
            peers: 9,
            profile,
            seed: 600,
            shards: 2,
            kill_at_pct: kills,
            blocks: 600,
            ..SimConfig::default()
        };
        cfg.sync.mode = mode;
        // The dump is the head's state, so the pivot is the head; receipts need execution.
        cfg.sync.pivot_distance = 0;
        cfg.sync.fetch_receipts = false;
        cfg.sync.anchor_number = chain.base - 1;
        cfg.sync.trusted_anchor = Some(chain.anchor_hash());
        let r = run_over(&cfg, chain.clone(), state.clone());
        assert!(r.correct, "{mode:?} {profile:?}: {r:?}");
        assert_eq!(r.state_root.as_deref(), Some(ROOT));
        assert_eq!(r.head_hash.as_deref(), Some(HEAD));
        assert_eq!(r.headers_verified, 600);
        assert_eq!(r.state_nodes_verified, state.nodes.len() as u64);
        assert_eq!(r.codes_verified, 65);
    }
}
