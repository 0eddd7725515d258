//! `catchup solana sync` / `snapshot serve` user mistakes: one clear line, non-zero exit.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_catchup"))
        .args(args)
        .output()
        .expect("run catchup");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sync_user_mistakes_give_one_line_and_nonzero_exit() {
    let d = tempfile::tempdir().unwrap();
    let dd = d.path().join("data");
    let dd = dd.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["solana", "sync", "--datadir", dd],
            "give at least one --source URL or an --rpc URL",
        ),
        (
            &["solana", "sync", "--source", "ftp://x/", "--datadir", dd],
            "only http:// is supported",
        ),
        (
            &[
                "solana",
                "sync",
                "--source",
                "http://127.0.0.1:1/",
                "--datadir",
                dd,
                "--chunk-size",
                "1000",
            ],
            "multiple of 4096",
        ),
        (
            &[
                "solana",
                "sync",
                "--source",
                "http://127.0.0.1:1/",
                "--datadir",
                dd,
                "--io-timeout-ms",
                "500",
            ],
            "no usable snapshot source",
        ),
    ];
    for (args, want) in cases {
        let (code, err) = run(args);
        assert_ne!(code, 0, "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn serve_refuses_a_missing_directory() {
    let (code, err) = run(&[
        "solana",
        "snapshot",
        "serve",
        "/nonexistent/snapshots",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/snapshots"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
