//! What a machine without some prerequisite sees when it runs the test command: the tests
//! that need it print why and pass outside CI, and fail under `CI=true`. Checked by running
//! other test binaries of this build (`cargo test` builds them all before running any) in
//! an environment missing one prerequisite:
//! - a build without the XDP program (clang or libbpf-dev absent): `CATCHUP_NO_XDP=1` makes
//!   the binary and the tests behave as such a build;
//! - no nginx: `CATCHUP_NGINX` points at a file that does not exist.
//!
//! Also `doctor` from a build without the XDP program says so and how to get it.

use std::path::PathBuf;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_catchup");

/// The newest test binary of this build named `<name>-<hash>`, next to this one.
fn test_binary(name: &str) -> PathBuf {
    let me = std::env::current_exe().expect("current exe");
    let dir = me.parent().expect("deps dir");
    let prefix = format!("{name}-");
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .expect("read deps dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.starts_with(&prefix)
                && !n.contains('.')
                && n[prefix.len()..].chars().all(|c| c.is_ascii_hexdigit())
        })
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p).unwrap_or_else(|| {
        panic!(
            "test binary {name} not built in {} (run through `cargo test`, which builds every test first)",
            dir.display()
        )
    })
}

/// Run `tests` of test binary `name` with `env`, with or without `CI=true`, as `cargo test`
/// runs them (output of passing tests captured: a skip reason must show anyway).
fn run(name: &str, tests: &[&str], env: &[(&str, &str)], ci: bool) -> (bool, String) {
    let mut cmd = Command::new(test_binary(name));
    cmd.args(tests).args(["--exact", "--test-threads=1"]);
    cmd.env_remove("CI");
    if ci {
        cmd.env("CI", "true");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run test binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn without_the_xdp_program_the_af_xdp_tests_skip_outside_ci_and_fail_under_it() {
    let no_xdp = [("CATCHUP_NO_XDP", "1")];
    for (bin, test) in [
        (
            "repair_netns",
            "udp_and_af_xdp_repair_the_same_gap_to_identical_slots",
        ),
        (
            "solana_catchup",
            "sync_repairs_the_gap_over_af_xdp_across_a_veth_pair",
        ),
    ] {
        let (ok, text) = run(bin, &[test], &no_xdp, false);
        assert!(
            ok,
            "{bin}::{test} failed outside CI without the XDP program:\n{text}"
        );
        assert!(
            text.contains("1 passed"),
            "{bin}::{test} did not run:\n{text}"
        );
        assert!(
            text.contains("XDP program built in (false: install clang and libbpf-dev"),
            "{bin}::{test} did not say why it skipped:\n{text}"
        );
        let (ok, text) = run(bin, &[test], &no_xdp, true);
        assert!(
            !ok,
            "{bin}::{test} passed under CI=true without the XDP program:\n{text}"
        );
        assert!(text.contains("cannot run under CI"), "{text}");
    }
}

#[test]
fn without_nginx_the_nginx_tests_skip_outside_ci_and_fail_under_it() {
    let no_nginx = [("CATCHUP_NGINX", "/nonexistent/nginx")];
    let test = "nginx_without_ranges_single_stream";
    let (ok, text) = run("download_nginx", &[test], &no_nginx, false);
    assert!(ok, "failed outside CI without nginx:\n{text}");
    assert!(text.contains("SKIP: nginx missing"), "{text}");
    let (ok, text) = run("download_nginx", &[test], &no_nginx, true);
    assert!(!ok, "passed under CI=true without nginx:\n{text}");
    assert!(text.contains("nginx is required under CI=true"), "{text}");
}

#[test]
fn doctor_from_a_build_without_the_xdp_program_says_so_and_how_to_get_it() {
    let out = Command::new(BIN)
        .args(["doctor", "--json"])
        .env("CATCHUP_NO_XDP", "1")
        .output()
        .expect("run doctor");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("doctor JSON");
    let checks = v["checks"].as_array().expect("checks");
    let c = checks
        .iter()
        .find(|c| c["id"] == "CATCH006")
        .expect("CATCH006 present");
    assert_eq!(c["status"], "warn", "{c}");
    let detail = c["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("built without the XDP program")
            && detail.contains("apt-get install clang libbpf-dev"),
        "{detail}"
    );
}
