//! `--help` names every command an operator can run.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_catchup");

fn help(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).arg("--help").output().unwrap();
    assert!(out.status.success(), "{args:?} --help failed");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The line of `text` that describes `command` in a "Commands:" list.
fn command_line<'a>(text: &'a str, command: &str) -> &'a str {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(command))
        .unwrap_or_else(|| panic!("no `{command}` in:\n{text}"))
}

#[test]
fn snapshot_help_lists_serve_and_solana_help_says_so() {
    let snapshot = help(&["solana", "snapshot"]);
    for sub in ["verify", "inspect", "generate", "serve"] {
        command_line(&snapshot, sub);
    }
    assert!(
        snapshot.lines().next().unwrap().contains("serve"),
        "{snapshot}"
    );
    let solana = help(&["solana"]);
    assert!(
        command_line(&solana, "snapshot").contains("serve"),
        "{solana}"
    );
}
