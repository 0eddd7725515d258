//! Compiles the XDP program `bpf/repair_xdp.c` with clang (`-target bpf`). clang and the
//! libbpf headers are required (Debian: `clang libbpf-dev`); without them the build stops
//! with a message saying so.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "bpf/repair_xdp.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR set by cargo")).join("repair_xdp.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let arch_inc = format!("-I/usr/include/{}-linux-gnu", std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into()));
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", &arch_inc, "-c", src, "-o"])
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("catchup-io: `{clang}` failed ({s}) compiling {src}; install the libbpf headers (Debian: apt-get install libbpf-dev)"),
        Err(e) => panic!("catchup-io: cannot run `{clang}` ({e}) to compile the XDP program {src}; install clang and libbpf-dev (Debian: apt-get install clang libbpf-dev) or set CLANG"),
    }
}
