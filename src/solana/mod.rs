//! Solana: snapshot discovery and download, the verifying snapshot loader, shred repair.
//!
//! - [`download`]: sources, the chunk coordinator, multi-source HTTP Range download with
//!   scoring and resume, pipelined into the loader.
//! - [`snapshot`]: zstd + tar unpack, the sharded account index, LtHash and capitalization
//!   checks; archive generation for devnets and benches.
//! - [`repair`]: shred repair of the slot gap to the tip, newest slots first, over UDP or
//!   AF_XDP, and the repair server.
//! - [`gossip`]: keypair files, the UDP gossip node, and the choice of a snapshot that
//!   known validators advertise.
//! - [`handoff`]: verified archives placed where agave-validator and Firedancer look.

pub mod download;
pub mod gossip;
pub mod handoff;
pub mod repair;
pub mod snapshot;
pub mod sync_cmd;

/// CPU seconds (user + system) of this process so far.
pub fn self_cpu_s() -> f64 {
    // SAFETY: getrusage writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}
