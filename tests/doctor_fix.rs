//! `catchup doctor --fix`: the nftables script is printed; with `--apply` it is loaded,
//! which is checked inside a network namespace made for the test.

/// A skip reason shown on the terminal even though libtest hides what passing tests print
/// with `eprintln!`: a skipped test must say why.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_catchup");

fn ci() -> bool {
    std::env::var("CI").map(|v| v == "true").unwrap_or(false)
}

fn tool_works(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn fix_without_apply_only_prints_the_script() {
    // The admin address is in use (say, by the running node): --fix only names its port,
    // it does not try to serve it.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = busy.local_addr().unwrap();
    let out = Command::new(BIN)
        .args([
            "--admin",
            &admin.to_string(),
            "doctor",
            "--fix",
            "--p2p-port",
            "30304",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let admin_rule = format!("tcp dport {} accept", admin.port());
    for line in [
        "table inet catchup {",
        "chain input {",
        "type filter hook input priority filter; policy accept;",
        "tcp dport 30304 accept",
        "udp dport 30304 accept",
        "udp dport 8001 accept",
        "udp dport 8008 accept",
        &admin_rule,
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    assert!(!text.contains("# applied"), "{text}");
    assert!(
        !text.contains("CATCH00"),
        "no checks run with --fix:\n{text}"
    );

    // Without --admin there is no admin rule; --json carries the rules.
    let out = Command::new(BIN)
        .args(["doctor", "--fix", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["applied"], false);
    assert_eq!(v["rules"].as_array().unwrap().len(), 4, "{v:#}");
    assert!(v["script"]
        .as_str()
        .unwrap()
        .contains("udp dport 8008 accept"));

    // --apply needs --fix; a port of 0 is refused.
    for args in [
        &["doctor", "--apply"][..],
        &["doctor", "--fix", "--p2p-port", "0"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn fix_apply_without_nft_is_one_line_naming_it() {
    let out = Command::new(BIN)
        .args(["doctor", "--fix", "--apply", "--nft", "/nonexistent/nft"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing printed as if applied");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    // As root: nft is missing; otherwise: the privilege is.
    assert!(
        err.contains("/nonexistent/nft not found") || err.contains("needs root or CAP_NET_ADMIN"),
        "{err}"
    );
}

/// Deletes the network namespace when dropped (also when the test fails).
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// `doctor --fix --apply` inside a fresh namespace: `nft list ruleset` there shows the
/// table with every rule; applying again replaces the table instead of doubling it.
#[test]
fn fix_apply_loads_the_rules_in_a_namespace() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tools = tool_works("ip", "-V") && tool_works("nft", "--version");
    if !root || !tools {
        let why = format!("needs root ({root}) and the ip and nft binaries ({tools})");
        assert!(!ci(), "CI=true: {why}");
        skip_note!("skipped: {why}");
        return;
    }
    let ns = format!("catchup-doctor-{}", std::process::id());
    let st = Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .unwrap();
    assert!(st.success(), "ip netns add {ns}");
    let _guard = Netns(ns.clone());
    let in_ns = |args: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(args)
            .output()
            .unwrap()
    };
    let ruleset = || {
        let out = in_ns(&["nft", "list", "ruleset"]);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(
        !ruleset().contains("catchup"),
        "a fresh namespace has no rules"
    );

    let out = in_ns(&[
        BIN,
        "--admin",
        "127.0.0.1:9464",
        "doctor",
        "--fix",
        "--apply",
        "--repair-port",
        "8010",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("# applied with `nft -f -`"));
    let rules = ruleset();
    assert!(rules.contains("table inet catchup"), "{rules}");
    for line in [
        "tcp dport 30303 accept",
        "udp dport 30303 accept",
        "udp dport 8001 accept",
        "udp dport 8010 accept",
        "tcp dport 9464 accept",
    ] {
        assert_eq!(rules.matches(line).count(), 1, "{line} in\n{rules}");
    }

    // Again, without --admin: the table is replaced.
    let out = in_ns(&[BIN, "doctor", "--fix", "--apply"]);
    assert!(out.status.success());
    let rules = ruleset();
    assert_eq!(
        rules.matches("udp dport 30303 accept").count(),
        1,
        "{rules}"
    );
    assert!(!rules.contains("dport 9464"), "{rules}");
    assert!(rules.contains("udp dport 8008 accept"), "{rules}");
}
