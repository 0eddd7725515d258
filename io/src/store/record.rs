//! On-disk record format of the per-shard store (pure functions, no I/O).
//!
//! ```text
//! 0..2    magic 0xC5 0xA7
//! 2       kind
//! 3       flags (0)
//! 4..6    key length in bytes (u16 LE)
//! 6..8    reserved (0)
//! 8..12   value length in bytes (u32 LE)
//! 12..16  body crc32c over key ++ value (u32 LE)
//! 16..20  header crc32c over bytes 0..16 (u32 LE)
//! 20..    key, then value
//! ```
//!
//! The header has its own checksum so that its lengths can be trusted before the body is
//! checked: a record whose header is intact but whose body is short is a torn write, and the
//! scanner knows exactly where the next record would start. Records are packed back to back;
//! the bytes after the last record of a segment are zero (block padding).

/// Size of a record header.
pub const RECORD_HEADER_BYTES: usize = 20;
/// First two bytes of every record.
pub const RECORD_MAGIC: [u8; 2] = [0xC5, 0xA7];

/// Limits applied when parsing records from disk.
#[derive(Debug, Clone, Copy)]
pub struct RecordLimits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
}

/// A parsed header whose checksum matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: u8,
    pub key_len: usize,
    pub value_len: usize,
    pub body_crc: u32,
}

impl RecordHeader {
    /// Total length of the record, header included.
    pub fn record_len(&self) -> usize {
        RECORD_HEADER_BYTES + self.key_len + self.value_len
    }
}

/// Why bytes at some offset are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordDefect {
    /// Fewer bytes than a header remain.
    ShortHeader,
    /// The header is all zero bytes: padding or never written.
    ZeroHeader,
    BadMagic,
    HeaderChecksum,
    /// The header is valid but its lengths exceed the configured limits.
    OverLimit,
    /// The header is valid but the body extends past the available bytes.
    ShortBody,
    BodyChecksum,
}

impl RecordDefect {
    pub fn reason(self) -> &'static str {
        match self {
            RecordDefect::ShortHeader => "record header cut short",
            RecordDefect::ZeroHeader => "zero bytes where a record header was expected",
            RecordDefect::BadMagic => "bad record magic",
            RecordDefect::HeaderChecksum => "record header checksum mismatch",
            RecordDefect::OverLimit => "record lengths exceed limits",
            RecordDefect::ShortBody => "record body cut short",
            RecordDefect::BodyChecksum => "record body checksum mismatch",
        }
    }
}

/// Append the encoding of one record to `out`; returns the number of bytes appended.
/// The caller enforces key/value limits (a key is at most `u16::MAX` bytes).
pub fn encode_record(kind: u8, key: &[u8], value: &[u8], out: &mut Vec<u8>) -> usize {
    assert!(
        key.len() <= u16::MAX as usize,
        "key length checked by caller"
    );
    assert!(
        value.len() <= u32::MAX as usize,
        "value length checked by caller"
    );
    let start = out.len();
    let body_crc = crc32c::crc32c_append(crc32c::crc32c(key), value);
    let mut h = [0u8; RECORD_HEADER_BYTES];
    h[0..2].copy_from_slice(&RECORD_MAGIC);
    h[2] = kind;
    h[3] = 0;
    h[4..6].copy_from_slice(&(key.len() as u16).to_le_bytes());
    h[8..12].copy_from_slice(&(value.len() as u32).to_le_bytes());
    h[12..16].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&h[0..16]);
    h[16..20].copy_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    out.len() - start
}

/// Length of the encoding of a record with these key and value lengths.
pub fn encoded_len(key_len: usize, value_len: usize) -> usize {
    RECORD_HEADER_BYTES + key_len + value_len
}

/// Parse and check a header at the start of `buf`.
pub fn parse_header(buf: &[u8], limits: &RecordLimits) -> Result<RecordHeader, RecordDefect> {
    if buf.len() < RECORD_HEADER_BYTES {
        if buf.iter().all(|b| *b == 0) {
            return Err(RecordDefect::ZeroHeader);
        }
        return Err(RecordDefect::ShortHeader);
    }
    let h = &buf[..RECORD_HEADER_BYTES];
    if h.iter().all(|b| *b == 0) {
        return Err(RecordDefect::ZeroHeader);
    }
    if h[0..2] != RECORD_MAGIC {
        return Err(RecordDefect::BadMagic);
    }
    let header_crc = u32::from_le_bytes(h[16..20].try_into().expect("4 bytes"));
    if crc32c::crc32c(&h[0..16]) != header_crc {
        return Err(RecordDefect::HeaderChecksum);
    }
    let key_len = u16::from_le_bytes(h[4..6].try_into().expect("2 bytes")) as usize;
    let value_len = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes")) as usize;
    if key_len > limits.max_key_bytes || value_len > limits.max_value_bytes || h[3] != 0 {
        return Err(RecordDefect::OverLimit);
    }
    Ok(RecordHeader {
        kind: h[2],
        key_len,
        value_len,
        body_crc: u32::from_le_bytes(h[12..16].try_into().expect("4 bytes")),
    })
}

/// Check a whole record at the start of `buf` (header and body).
pub fn parse_record(buf: &[u8], limits: &RecordLimits) -> Result<RecordHeader, RecordDefect> {
    let h = parse_header(buf, limits)?;
    if buf.len() < h.record_len() {
        return Err(RecordDefect::ShortBody);
    }
    check_body(&h, &buf[RECORD_HEADER_BYTES..h.record_len()])?;
    Ok(h)
}

/// Check the body (key ++ value) of a record against its header.
pub fn check_body(h: &RecordHeader, body: &[u8]) -> Result<(), RecordDefect> {
    if body.len() != h.key_len + h.value_len || crc32c::crc32c(body) != h.body_crc {
        return Err(RecordDefect::BodyChecksum);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIM: RecordLimits = RecordLimits {
        max_key_bytes: 1024,
        max_value_bytes: 1 << 20,
    };

    #[test]
    fn roundtrip() {
        let mut out = Vec::new();
        let n = encode_record(7, b"key", b"value", &mut out);
        assert_eq!(n, out.len());
        assert_eq!(n, encoded_len(3, 5));
        let h = parse_record(&out, &LIM).unwrap();
        assert_eq!(h.kind, 7);
        assert_eq!(&out[RECORD_HEADER_BYTES..][..h.key_len], b"key");
    }

    #[test]
    fn defects_are_classified() {
        let mut out = Vec::new();
        encode_record(1, b"k", b"vvvv", &mut out);
        assert_eq!(
            parse_record(&out[..out.len() - 1], &LIM),
            Err(RecordDefect::ShortBody)
        );
        assert_eq!(
            parse_record(&[0u8; 40], &LIM),
            Err(RecordDefect::ZeroHeader)
        );
        assert_eq!(
            parse_record(&out[..10], &LIM),
            Err(RecordDefect::ShortHeader)
        );
        let mut bad = out.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(parse_record(&bad, &LIM), Err(RecordDefect::BodyChecksum));
        let mut bad = out.clone();
        bad[5] ^= 1;
        assert_eq!(parse_record(&bad, &LIM), Err(RecordDefect::HeaderChecksum));
        let mut bad = out.clone();
        bad[0] = 0;
        assert_eq!(parse_record(&bad, &LIM), Err(RecordDefect::BadMagic));
        let small = RecordLimits {
            max_key_bytes: 1,
            max_value_bytes: 3,
        };
        assert_eq!(parse_record(&out, &small), Err(RecordDefect::OverLimit));
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = parse_record(&bytes, &LIM);
        }

        #[test]
        fn any_bit_flip_is_detected(kind in any::<u8>(),
                                    key in proptest::collection::vec(any::<u8>(), 0..40),
                                    value in proptest::collection::vec(any::<u8>(), 0..80),
                                    bit in any::<usize>()) {
            let mut out = Vec::new();
            encode_record(kind, &key, &value, &mut out);
            let bit = bit % (out.len() * 8);
            out[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(parse_record(&out, &LIM).is_err());
        }
    }
}
