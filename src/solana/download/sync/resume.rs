//! Resume: the journal of finished chunks (source identity, chunk size, bitmap), so a
//! restart against the same archive re-fetches no finished chunk.

use serde::{Deserialize, Serialize};

/// What the journal keeps.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct JournalState {
    pub(super) archive_name: String,
    pub(super) size_bytes: u64,
    pub(super) etag: Option<String>,
    pub(super) last_modified: Option<String>,
    pub(super) chunk_size_bytes: u64,
    /// Hex of the bitmap, bit i = chunk i done (LSB first within each byte).
    pub(super) done_hex: String,
}

pub(crate) const JOURNAL_NAME: &str = "snapshot-download";

pub(super) fn bitmap_to_hex(done: &[bool]) -> String {
    let mut bytes = vec![0u8; done.len().div_ceil(8)];
    for (i, d) in done.iter().enumerate() {
        if *d {
            bytes[i / 8] |= 1 << (i % 8);
        }
    }
    hex::encode(bytes)
}

pub(super) fn hex_to_bitmap(h: &str, n: usize) -> Option<Vec<bool>> {
    let bytes = hex::decode(h).ok()?;
    if bytes.len() != n.div_ceil(8) {
        return None;
    }
    Some((0..n).map(|i| bytes[i / 8] & (1 << (i % 8)) != 0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bitmap_hex_roundtrip_and_rejects_wrong_length() {
        let b = vec![true, false, true, true, false, false, false, false, true];
        let h = bitmap_to_hex(&b);
        assert_eq!(hex_to_bitmap(&h, b.len()), Some(b.clone()));
        assert_eq!(hex_to_bitmap(&h, 20), None);
        assert_eq!(hex_to_bitmap("zz", 1), None);
    }

    proptest! {
        #[test]
        fn journal_state_from_random_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512), n in 0usize..5000) {
            let _ = serde_json::from_slice::<JournalState>(&data);
            if let Ok(t) = std::str::from_utf8(&data) {
                let _ = hex_to_bitmap(t, n);
            }
        }

        #[test]
        fn bitmap_roundtrip(b in proptest::collection::vec(any::<bool>(), 0..3000)) {
            prop_assert_eq!(hex_to_bitmap(&bitmap_to_hex(&b), b.len()), Some(b));
        }
    }
}
