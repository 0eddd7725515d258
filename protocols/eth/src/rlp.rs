//! Strict (canonical) RLP reading.
//!
//! Every decoder in this crate reads peer or disk bytes through [`Reader`], which rejects
//! non-canonical encodings: a length written with more bytes than needed, a long form used
//! for a short payload, a single byte below 0x80 wrapped as a string, leading zeros in
//! integers, and trailing bytes. Errors carry the byte offset where the problem starts.
//! Encoding goes through `alloy_rlp`, which always writes the canonical form.

use alloy_primitives::{Address, Bloom, B256, U256};
use thiserror::Error;

/// Largest single RLP item this crate accepts (a length prefix announcing more is rejected
/// before any allocation).
pub const MAX_ITEM_BYTES: usize = 64 * 1024 * 1024;

/// A canonical-form violation or structural error, with the offset (in bytes from the
/// start of the buffer given to the decoder) where it was found.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RlpError {
    #[error(
        "rlp: input ends at offset {offset}: item needs {needed} bytes, {available} available"
    )]
    Truncated {
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error("rlp: empty input at offset {offset}")]
    Empty { offset: usize },
    #[error(
        "rlp: non-canonical length at offset {offset}: long form used for a payload under 56 bytes"
    )]
    NonCanonicalSize { offset: usize },
    #[error("rlp: length prefix with leading zero byte at offset {offset}")]
    LeadingZeroLength { offset: usize },
    #[error("rlp: single byte below 0x80 wrapped as a string at offset {offset}")]
    NonCanonicalSingleByte { offset: usize },
    #[error("rlp: integer with leading zero byte at offset {offset}")]
    LeadingZeroInteger { offset: usize },
    #[error("rlp: integer of {len} bytes at offset {offset} overflows {max_bytes} bytes")]
    IntegerOverflow {
        offset: usize,
        len: usize,
        max_bytes: usize,
    },
    #[error("rlp: {count} trailing bytes at offset {offset}")]
    TrailingBytes { offset: usize, count: usize },
    #[error("rlp: expected a list at offset {offset}, found a string")]
    ExpectedList { offset: usize },
    #[error("rlp: expected a string at offset {offset}, found a list")]
    ExpectedString { offset: usize },
    #[error("rlp: item at offset {offset} announces {len} bytes, above the limit of {limit}")]
    TooLong {
        offset: usize,
        len: usize,
        limit: usize,
    },
    #[error("rlp: string at offset {offset} has {len} bytes, expected {expected}")]
    WrongLength {
        offset: usize,
        len: usize,
        expected: usize,
    },
    #[error("rlp: list at offset {offset} has {count} items, expected {expected}")]
    WrongItemCount {
        offset: usize,
        count: usize,
        expected: &'static str,
    },
    #[error("rlp: list at offset {offset} is missing item {index}")]
    MissingItem { offset: usize, index: usize },
    #[error("rlp: nesting deeper than {limit} at offset {offset}")]
    TooDeep { offset: usize, limit: usize },
    #[error("rlp: {what} at offset {offset}")]
    Invalid { offset: usize, what: &'static str },
    #[error("rlp: list at offset {offset} has more than {limit} items")]
    TooManyItems { offset: usize, limit: usize },
}

impl RlpError {
    /// Offset of the problem, relative to the buffer that was decoded.
    pub fn offset(&self) -> usize {
        match *self {
            RlpError::Truncated { offset, .. }
            | RlpError::Empty { offset }
            | RlpError::NonCanonicalSize { offset }
            | RlpError::LeadingZeroLength { offset }
            | RlpError::NonCanonicalSingleByte { offset }
            | RlpError::LeadingZeroInteger { offset }
            | RlpError::IntegerOverflow { offset, .. }
            | RlpError::TrailingBytes { offset, .. }
            | RlpError::ExpectedList { offset }
            | RlpError::ExpectedString { offset }
            | RlpError::TooLong { offset, .. }
            | RlpError::WrongLength { offset, .. }
            | RlpError::WrongItemCount { offset, .. }
            | RlpError::MissingItem { offset, .. }
            | RlpError::TooDeep { offset, .. }
            | RlpError::Invalid { offset, .. }
            | RlpError::TooManyItems { offset, .. } => offset,
        }
    }
}

/// One RLP item: whether it is a list, its payload, and where it sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item<'a> {
    pub is_list: bool,
    /// The payload (without the prefix).
    pub payload: &'a [u8],
    /// The whole encoding (prefix and payload).
    pub raw: &'a [u8],
    /// Offset of the first prefix byte.
    pub offset: usize,
    /// Offset of the first payload byte.
    pub payload_offset: usize,
}

/// Parse the item at the start of `buf` (whose first byte sits at absolute `offset`).
/// Returns the item and the number of bytes it spans.
#[inline]
pub fn parse_item(buf: &[u8], offset: usize) -> Result<Item<'_>, RlpError> {
    let first = *buf.first().ok_or(RlpError::Empty { offset })?;
    let (is_list, header_len, payload_len) = match first {
        0x00..=0x7f => {
            return Ok(Item {
                is_list: false,
                payload: &buf[..1],
                raw: &buf[..1],
                offset,
                payload_offset: offset,
            })
        }
        0x80..=0xb7 => (false, 1usize, (first - 0x80) as usize),
        0xb8..=0xbf => {
            let n = (first - 0xb7) as usize;
            (false, 1 + n, read_long_len(buf, n, offset)?)
        }
        0xc0..=0xf7 => (true, 1usize, (first - 0xc0) as usize),
        0xf8..=0xff => {
            let n = (first - 0xf7) as usize;
            (true, 1 + n, read_long_len(buf, n, offset)?)
        }
    };
    if payload_len > MAX_ITEM_BYTES {
        return Err(RlpError::TooLong {
            offset,
            len: payload_len,
            limit: MAX_ITEM_BYTES,
        });
    }
    let total = header_len + payload_len;
    if buf.len() < total {
        return Err(RlpError::Truncated {
            offset,
            needed: total,
            available: buf.len(),
        });
    }
    let payload = &buf[header_len..total];
    if !is_list && header_len == 1 && payload_len == 1 && payload[0] < 0x80 {
        return Err(RlpError::NonCanonicalSingleByte { offset });
    }
    Ok(Item {
        is_list,
        payload,
        raw: &buf[..total],
        offset,
        payload_offset: offset + header_len,
    })
}

#[inline]
fn read_long_len(buf: &[u8], n: usize, offset: usize) -> Result<usize, RlpError> {
    if buf.len() < 1 + n {
        return Err(RlpError::Truncated {
            offset,
            needed: 1 + n,
            available: buf.len(),
        });
    }
    let bytes = &buf[1..1 + n];
    if bytes[0] == 0 {
        return Err(RlpError::LeadingZeroLength { offset });
    }
    if n > 8 {
        return Err(RlpError::TooLong {
            offset,
            len: usize::MAX,
            limit: MAX_ITEM_BYTES,
        });
    }
    let mut len: u64 = 0;
    for b in bytes {
        len = (len << 8) | *b as u64;
    }
    if len < 56 {
        return Err(RlpError::NonCanonicalSize { offset });
    }
    usize::try_from(len).map_err(|_| RlpError::TooLong {
        offset,
        len: usize::MAX,
        limit: MAX_ITEM_BYTES,
    })
}

/// Parse exactly one item spanning all of `buf`.
#[inline]
pub fn parse_exact(buf: &[u8]) -> Result<Item<'_>, RlpError> {
    let item = parse_item(buf, 0)?;
    if item.raw.len() != buf.len() {
        return Err(RlpError::TrailingBytes {
            offset: item.raw.len(),
            count: buf.len() - item.raw.len(),
        });
    }
    Ok(item)
}

impl<'a> Item<'a> {
    /// The payload of a string item; an error if this is a list.
    #[inline]
    pub fn bytes(&self) -> Result<&'a [u8], RlpError> {
        if self.is_list {
            return Err(RlpError::ExpectedString {
                offset: self.offset,
            });
        }
        Ok(self.payload)
    }

    /// A reader over the items of a list; an error if this is a string.
    #[inline]
    pub fn list(&self) -> Result<Reader<'a>, RlpError> {
        if !self.is_list {
            return Err(RlpError::ExpectedList {
                offset: self.offset,
            });
        }
        Ok(Reader {
            buf: self.payload,
            pos: 0,
            base: self.payload_offset,
            index: 0,
            list_offset: self.offset,
        })
    }

    /// All items of a list (at most `max_items` of them); an error if this is a string.
    pub fn items(&self, max_items: usize) -> Result<Vec<Item<'a>>, RlpError> {
        let mut r = self.list()?;
        let mut out = Vec::new();
        while let Some(item) = r.next_opt()? {
            if out.len() >= max_items {
                return Err(RlpError::TooManyItems {
                    offset: self.offset,
                    limit: max_items,
                });
            }
            out.push(item);
        }
        Ok(out)
    }

    /// A canonical unsigned integer of at most `max_bytes` bytes, as big-endian bytes.
    pub fn uint_bytes(&self, max_bytes: usize) -> Result<&'a [u8], RlpError> {
        let b = self.bytes()?;
        if b.len() > max_bytes {
            return Err(RlpError::IntegerOverflow {
                offset: self.offset,
                len: b.len(),
                max_bytes,
            });
        }
        if b.first() == Some(&0) {
            return Err(RlpError::LeadingZeroInteger {
                offset: self.offset,
            });
        }
        Ok(b)
    }

    pub fn u64(&self) -> Result<u64, RlpError> {
        let b = self.uint_bytes(8)?;
        Ok(b.iter().fold(0u64, |acc, x| (acc << 8) | *x as u64))
    }

    pub fn u256(&self) -> Result<U256, RlpError> {
        let b = self.uint_bytes(32)?;
        Ok(U256::from_be_slice(b))
    }

    /// A string of exactly `N` bytes.
    pub fn fixed<const N: usize>(&self) -> Result<[u8; N], RlpError> {
        self.fixed_ref().copied()
    }

    /// [`Item::fixed`], borrowed.
    pub fn fixed_ref<const N: usize>(&self) -> Result<&'a [u8; N], RlpError> {
        let b = self.bytes()?;
        b.try_into().map_err(|_| RlpError::WrongLength {
            offset: self.offset,
            len: b.len(),
            expected: N,
        })
    }

    pub fn b256(&self) -> Result<B256, RlpError> {
        Ok(B256::from(self.fixed::<32>()?))
    }

    pub fn address(&self) -> Result<Address, RlpError> {
        Ok(Address::from(self.fixed::<20>()?))
    }

    pub fn bloom(&self) -> Result<Bloom, RlpError> {
        Ok(Bloom::from(self.fixed::<256>()?))
    }
}

/// Sequential reader over the items of one list.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
    index: usize,
    list_offset: usize,
}

impl<'a> Reader<'a> {
    /// A reader over a top-level sequence of items (not wrapped in a list), e.g. a file of
    /// concatenated blocks.
    pub fn sequence(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            base: 0,
            index: 0,
            list_offset: 0,
        }
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Absolute offset of the next item.
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    /// The next item, or `None` at the end of the list.
    #[inline]
    pub fn next_opt(&mut self) -> Result<Option<Item<'a>>, RlpError> {
        if self.is_empty() {
            return Ok(None);
        }
        let item = parse_item(&self.buf[self.pos..], self.base + self.pos)?;
        self.pos += item.raw.len();
        self.index += 1;
        Ok(Some(item))
    }

    /// The next item; an error naming the missing index if the list has ended.
    #[allow(clippy::should_implement_trait)]
    #[inline]
    pub fn next(&mut self) -> Result<Item<'a>, RlpError> {
        let index = self.index;
        self.next_opt()?.ok_or(RlpError::MissingItem {
            offset: self.list_offset,
            index,
        })
    }

    pub fn u64(&mut self) -> Result<u64, RlpError> {
        self.next()?.u64()
    }
    pub fn u256(&mut self) -> Result<U256, RlpError> {
        self.next()?.u256()
    }
    pub fn b256(&mut self) -> Result<B256, RlpError> {
        self.next()?.b256()
    }
    pub fn address(&mut self) -> Result<Address, RlpError> {
        self.next()?.address()
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], RlpError> {
        self.next()?.bytes()
    }
    pub fn list(&mut self) -> Result<Reader<'a>, RlpError> {
        self.next()?.list()
    }

    /// Count the remaining items (validating each prefix) without consuming them.
    pub fn remaining_count(&self) -> Result<usize, RlpError> {
        let mut r = self.clone();
        let mut n = 0;
        while r.next_opt()?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    /// Error if any item is left.
    pub fn finish(&self) -> Result<(), RlpError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(RlpError::TrailingBytes {
                offset: self.offset(),
                count: self.buf.len() - self.pos,
            })
        }
    }
}

/// Maximum nesting accepted by [`validate_canonical`].
pub const MAX_DEPTH: usize = 128;

/// Check that `buf` is exactly one canonical RLP item, recursively (every nested item is
/// canonical too). Used for opaque payloads whose inner structure is not otherwise decoded.
pub fn validate_canonical(buf: &[u8]) -> Result<(), RlpError> {
    let item = parse_exact(buf)?;
    validate_item(&item, 0)
}

fn validate_item(item: &Item<'_>, depth: usize) -> Result<(), RlpError> {
    if !item.is_list {
        return Ok(());
    }
    if depth >= MAX_DEPTH {
        return Err(RlpError::TooDeep {
            offset: item.offset,
            limit: MAX_DEPTH,
        });
    }
    let mut r = item.list()?;
    while let Some(child) = r.next_opt()? {
        validate_item(&child, depth + 1)?;
    }
    Ok(())
}

/// A generic decoded RLP value (for conformance tests and debugging).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Bytes(Vec<u8>),
    List(Vec<Value>),
}

impl Value {
    /// Decode one canonical item spanning all of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Value, RlpError> {
        let item = parse_exact(buf)?;
        Self::from_item(&item, 0)
    }

    fn from_item(item: &Item<'_>, depth: usize) -> Result<Value, RlpError> {
        if !item.is_list {
            return Ok(Value::Bytes(item.payload.to_vec()));
        }
        if depth >= MAX_DEPTH {
            return Err(RlpError::TooDeep {
                offset: item.offset,
                limit: MAX_DEPTH,
            });
        }
        let mut r = item.list()?;
        let mut out = Vec::new();
        while let Some(child) = r.next_opt()? {
            out.push(Self::from_item(&child, depth + 1)?);
        }
        Ok(Value::List(out))
    }

    /// Canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Value::Bytes(b) => {
                alloy_rlp::Encodable::encode(&b.as_slice(), out);
            }
            Value::List(items) => {
                let mut payload = Vec::new();
                for i in items {
                    i.encode_into(&mut payload);
                }
                alloy_rlp::Header {
                    list: true,
                    payload_length: payload.len(),
                }
                .encode(out);
                out.extend_from_slice(&payload);
            }
        }
    }
}

/// Write a list header for `payload_length` bytes.
pub fn list_header(payload_length: usize, out: &mut Vec<u8>) {
    alloy_rlp::Header {
        list: true,
        payload_length,
    }
    .encode(out);
}

/// Write `payload` wrapped as an RLP string.
pub fn encode_bytes(payload: &[u8], out: &mut Vec<u8>) {
    alloy_rlp::Encodable::encode(&payload, out);
}

/// Write `v` as a canonical RLP integer.
pub fn encode_u64(v: u64, out: &mut Vec<u8>) {
    alloy_rlp::Encodable::encode(&v, out);
}

/// `v` encoded as a canonical RLP integer, on its own.
pub fn u64_item(v: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    encode_u64(v, &mut out);
    out
}

/// `payload` encoded as an RLP string, on its own.
pub fn bytes_item(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 9);
    encode_bytes(payload, &mut out);
    out
}

/// An already-encoded list payload (concatenated items) wrapped into a list.
pub fn wrap_list(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 9);
    list_header(payload.len(), &mut out);
    out.extend_from_slice(payload);
    out
}

/// Wrap already-encoded items into a list.
pub fn encode_list_of_raw<'a>(
    items: impl IntoIterator<Item = &'a [u8]> + Clone,
    out: &mut Vec<u8>,
) {
    let len: usize = items.clone().into_iter().map(|i| i.len()).sum();
    list_header(len, out);
    for i in items {
        out.extend_from_slice(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_canonical_forms() {
        assert!(matches!(
            parse_exact(&[0x81, 0x05]),
            Err(RlpError::NonCanonicalSingleByte { offset: 0 })
        ));
        assert!(matches!(
            parse_exact(&[0xb8, 0x02, 1, 2]),
            Err(RlpError::NonCanonicalSize { offset: 0 })
        ));
        assert!(matches!(
            parse_exact(&[0xb9, 0x00, 0x40]),
            Err(RlpError::LeadingZeroLength { offset: 0 })
        ));
        assert!(matches!(
            parse_exact(&[0x80, 0x80]),
            Err(RlpError::TrailingBytes {
                offset: 1,
                count: 1
            })
        ));
        let item = parse_exact(&[0x82, 0x00, 0x01]).unwrap();
        assert!(matches!(
            item.u64(),
            Err(RlpError::LeadingZeroInteger { offset: 0 })
        ));
        assert!(matches!(
            parse_exact(&[0x83, 1, 2]),
            Err(RlpError::Truncated { .. })
        ));
        assert!(matches!(
            parse_exact(&[0xbb, 0xff, 0xff, 0xff, 0xff]),
            Err(RlpError::TooLong { .. })
        ));
    }

    #[test]
    fn value_round_trip() {
        let v = Value::List(vec![
            Value::Bytes(b"cat".to_vec()),
            Value::List(vec![]),
            Value::Bytes(vec![0x05]),
        ]);
        let enc = v.encode();
        assert_eq!(Value::decode(&enc).unwrap(), v);
    }

    #[test]
    fn writers_round_trip_through_items() {
        for len in [0usize, 1, 55, 56, 300, 70000] {
            let data = vec![0xabu8; len];
            let enc = bytes_item(&data);
            assert_eq!(parse_exact(&enc).unwrap().bytes().unwrap(), &data[..]);
        }
        assert_eq!(bytes_item(&[0x05]), vec![0x05]);
        let mut p = Vec::new();
        encode_u64(0, &mut p);
        encode_u64(1024, &mut p);
        encode_u64(u64::MAX, &mut p);
        assert_eq!(&p[..4], &[0x80, 0x82, 0x04, 0x00]);
        assert_eq!(u64_item(1024), vec![0x82, 0x04, 0x00]);
        assert_eq!(u64_item(0x7f), vec![0x7f]);
        let l = wrap_list(&p);
        let items = parse_exact(&l).unwrap().items(3).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].u64().unwrap(), 0);
        assert_eq!(items[1].u64().unwrap(), 1024);
        assert_eq!(items[2].u64().unwrap(), u64::MAX);
        assert_eq!(items[1].offset, l.len() - p.len() + 1);
        assert!(matches!(
            parse_exact(&l).unwrap().items(2),
            Err(RlpError::TooManyItems {
                offset: 0,
                limit: 2
            })
        ));
        assert!(matches!(
            parse_exact(&[0x80]).unwrap().items(2),
            Err(RlpError::ExpectedList { offset: 0 })
        ));
        let long = wrap_list(&[0x01u8; 60]);
        assert_eq!(&long[..2], &[0xf8, 60]);
        assert_eq!(parse_exact(&long).unwrap().items(100).unwrap().len(), 60);
    }

    proptest::proptest! {
        #[test]
        fn items_on_random_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            if let Ok(it) = parse_exact(&data) {
                let _ = it.items(1000);
                let _ = it.u64();
            }
        }
    }
}
