//! Sans-IO Solana snapshot codecs: streaming zstd and tar, manifest, AppendVec, LtHash.
//!
//! - [`zstd_stream`]: push-based zstd decompression; the multi-frame marker and splitter.
//! - [`tar`]: push-based tar parser (ustar, GNU long names, pax) and a header writer.
//! - [`unpack`]: Agave's rules for which archive entries are allowed, and size budgets.
//! - [`manifest`]: the bank snapshot manifest (bincode-1 layout), decoder and encoder.
//! - [`appendvec`]: zero-copy iteration over account storage files, and a writer.
//! - [`lthash`]: the accounts lattice hash; [`account_xof`]: its element, the blake3 XOF of
//!   an account, eight output blocks per AVX2 step.

pub mod account_xof;
pub mod accounts_hash;
pub mod appendvec;
pub mod lthash;
pub mod manifest;
pub mod tar;
pub mod unpack;
pub mod zstd_stream;

pub use appendvec::{iter_accounts, AppendVecError, StoredAccount};
pub use lthash::LtHash;
pub use manifest::{decode_manifest, encode_manifest, Manifest, ManifestError, StorageInfo};
pub use tar::{EntryHeader, EntryKind, TarError, TarParser, TarSink};
pub use unpack::{classify, SnapshotEntry, UnpackBudget, UnpackError, UnpackLimits};
pub use zstd_stream::{FrameMarker, FrameSplitter, ZstdError, ZstdStream};

/// Base58 text of a hash or pubkey, as Solana prints them.
pub fn base58(bytes: &[u8]) -> String {
    bs58::encode(bytes).into_string()
}

/// Decode base58 text (pubkeys, hashes) into 32 bytes.
pub fn base58_32(text: &str) -> Option<[u8; 32]> {
    let v = bs58::decode(text).into_vec().ok()?;
    v.try_into().ok()
}

/// The zstd and blake3 crates as this crate uses them (for writers of archives).
pub use {blake3, zstd};
