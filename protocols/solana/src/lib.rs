//! Sans-IO Solana snapshot codecs: streaming zstd and tar, manifest, AppendVec, LtHash.
