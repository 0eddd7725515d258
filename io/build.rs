//! Compiles the XDP program `bpf/repair_xdp.c` with clang (`-target bpf`; Debian packages
//! `clang libbpf-dev`). Without them the crate still builds, with a cargo warning and an
//! empty object: AF_XDP then reports "built without the XDP program" at run time and the
//! repair path falls back to UDP. Under `CI=true` a missing compiler stops the build.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "bpf/repair_xdp.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR set by cargo"))
        .join("repair_xdp.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let arch_inc = format!(
        "-I/usr/include/{}-linux-gnu",
        std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into())
    );
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", &arch_inc, "-c", src, "-o"])
        .arg(&out)
        .status();
    println!("cargo:rerun-if-env-changed=CI");
    let problem = match status {
        Ok(s) if s.success() => return,
        Ok(s) => format!("`{clang}` failed ({s}) compiling {src}; install the libbpf headers (Debian: apt-get install libbpf-dev)"),
        Err(e) => format!("cannot run `{clang}` ({e}) to compile the XDP program {src}; install clang and libbpf-dev (Debian: apt-get install clang libbpf-dev) or set CLANG"),
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("catchup-io: {problem}");
    }
    // Build again once the tools arrive: a clang on a new PATH, clang installed into
    // /usr/bin, or the libbpf headers installed under /usr/include (a directory's listing
    // changes when a package adds to it). Only watched while the program is missing.
    println!("cargo:rerun-if-env-changed=PATH");
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/include"] {
        if std::path::Path::new(dir).is_dir() {
            println!("cargo:rerun-if-changed={dir}");
        }
    }
    println!("cargo:warning=catchup-io: {problem}; AF_XDP will be unavailable (repair falls back to UDP)");
    std::fs::write(&out, b"").expect("writing the empty XDP object placeholder");
}
