//! Sans-IO Solana snapshot codecs: streaming zstd and tar, manifest, AppendVec, LtHash.
//!
//! - [`zstd_stream`]: push-based zstd decompression; the multi-frame marker and splitter.
//! - [`tar`]: push-based tar parser (ustar, GNU long names, pax) and a header writer.
//! - [`unpack`]: Agave's rules for which archive entries are allowed, and size budgets.
//! - [`manifest`]: the bank snapshot manifest (bincode-1 layout), decoder and encoder.
//! - [`appendvec`]: zero-copy iteration over account storage files, and a writer.
//! - [`lthash`]: the accounts lattice hash.

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
