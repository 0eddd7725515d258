//! Minimal RLP reading and writing used by the sync engines.
//!
//! Reading never panics: every item is bounds-checked against its parent and malformed
//! input is a typed error naming what was wrong.

use thiserror::Error;

/// Errors from reading RLP.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RlpError {
    #[error("rlp: input ends inside an item header at byte {0}")]
    ShortHeader(usize),
    #[error("rlp: item at byte {at} claims {len} payload bytes but only {left} remain")]
    ShortPayload { at: usize, len: usize, left: usize },
    #[error("rlp: non-canonical encoding at byte {0}")]
    NonCanonical(usize),
    #[error("rlp: expected a list at byte {0}")]
    ExpectedList(usize),
    #[error("rlp: expected a string at byte {0}")]
    ExpectedString(usize),
    #[error("rlp: integer of {0} bytes does not fit in u64")]
    IntTooLong(usize),
    #[error("rlp: {0} trailing bytes after the item")]
    Trailing(usize),
    #[error("rlp: list has {got} items, wanted {want}")]
    ItemCount { got: usize, want: &'static str },
    #[error("rlp: more than {0} items in a list")]
    TooManyItems(usize),
}

/// One RLP item inside a buffer: its whole encoding and its payload.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    /// The full encoding, header included.
    pub raw: &'a [u8],
    /// The payload (string bytes, or the concatenated list items).
    pub payload: &'a [u8],
    pub is_list: bool,
}

/// Largest number of items any list is allowed to hold when split.
pub const MAX_LIST_ITEMS: usize = 1 << 20;

/// Read the first item of `buf`; returns it and the number of bytes it used.
pub fn read_item(buf: &[u8]) -> Result<(Item<'_>, usize), RlpError> {
    let b0 = *buf.first().ok_or(RlpError::ShortHeader(0))?;
    let (is_list, hdr, len) = match b0 {
        0x00..=0x7f => {
            return Ok((
                Item {
                    raw: &buf[..1],
                    payload: &buf[..1],
                    is_list: false,
                },
                1,
            ));
        }
        0x80..=0xb7 => {
            let len = (b0 - 0x80) as usize;
            if len == 1 && buf.len() > 1 && buf[1] < 0x80 {
                return Err(RlpError::NonCanonical(0));
            }
            (false, 1usize, len)
        }
        0xb8..=0xbf => {
            let ll = (b0 - 0xb7) as usize;
            let len = read_len(buf, ll)?;
            (false, 1 + ll, len)
        }
        0xc0..=0xf7 => (true, 1usize, (b0 - 0xc0) as usize),
        0xf8..=0xff => {
            let ll = (b0 - 0xf7) as usize;
            let len = read_len(buf, ll)?;
            (true, 1 + ll, len)
        }
    };
    let left = buf.len() - hdr.min(buf.len());
    if buf.len() < hdr || left < len {
        return Err(RlpError::ShortPayload { at: 0, len, left });
    }
    let end = hdr + len;
    Ok((
        Item {
            raw: &buf[..end],
            payload: &buf[hdr..end],
            is_list,
        },
        end,
    ))
}

fn read_len(buf: &[u8], ll: usize) -> Result<usize, RlpError> {
    if buf.len() < 1 + ll {
        return Err(RlpError::ShortHeader(0));
    }
    if buf[1] == 0 {
        return Err(RlpError::NonCanonical(0));
    }
    let mut len: usize = 0;
    for &b in &buf[1..1 + ll] {
        len = len.checked_mul(256).ok_or(RlpError::NonCanonical(0))? + b as usize;
    }
    if len < 56 {
        return Err(RlpError::NonCanonical(0));
    }
    Ok(len)
}

/// Read exactly one item spanning the whole buffer.
pub fn read_exact(buf: &[u8]) -> Result<Item<'_>, RlpError> {
    let (it, used) = read_item(buf)?;
    if used != buf.len() {
        return Err(RlpError::Trailing(buf.len() - used));
    }
    Ok(it)
}

/// Split a list item into its items (at most `max` of them).
pub fn list_items<'a>(item: &Item<'a>, max: usize) -> Result<Vec<Item<'a>>, RlpError> {
    if !item.is_list {
        return Err(RlpError::ExpectedList(0));
    }
    // Lifetime: the payload borrows from the original buffer.
    let mut out = Vec::new();
    let mut rest: &[u8] = item.payload;
    let mut at = 0usize;
    while !rest.is_empty() {
        if out.len() >= max {
            return Err(RlpError::TooManyItems(max));
        }
        let (it, used) = read_item(rest).map_err(|e| shift(e, at))?;
        out.push(it);
        rest = &rest[used..];
        at += used;
    }
    Ok(out)
}

fn shift(e: RlpError, at: usize) -> RlpError {
    match e {
        RlpError::ShortHeader(x) => RlpError::ShortHeader(x + at),
        RlpError::ShortPayload { at: a, len, left } => RlpError::ShortPayload { at: a + at, len, left },
        RlpError::NonCanonical(x) => RlpError::NonCanonical(x + at),
        other => other,
    }
}

/// A string item's bytes.
pub fn string<'a>(item: &Item<'a>) -> Result<&'a [u8], RlpError> {
    if item.is_list {
        return Err(RlpError::ExpectedString(0));
    }
    Ok(item.payload)
}

/// A string item as a big-endian unsigned integer.
pub fn uint(item: &Item<'_>) -> Result<u64, RlpError> {
    let b = string(item)?;
    if b.len() > 8 {
        return Err(RlpError::IntTooLong(b.len()));
    }
    if !b.is_empty() && b[0] == 0 {
        return Err(RlpError::NonCanonical(0));
    }
    Ok(b.iter().fold(0u64, |a, &x| (a << 8) | x as u64))
}

/// A string item of exactly 32 bytes.
pub fn b256(item: &Item<'_>) -> Result<[u8; 32], RlpError> {
    let b = string(item)?;
    b.try_into().map_err(|_| RlpError::ExpectedString(0))
}

// ---- writing ----

fn put_header(out: &mut Vec<u8>, len: usize, short: u8) {
    if len < 56 {
        out.push(short + len as u8);
    } else {
        let be = (len as u64).to_be_bytes();
        let skip = be.iter().take_while(|&&b| b == 0).count();
        out.push(short + 55 + (8 - skip) as u8);
        out.extend_from_slice(&be[skip..]);
    }
}

/// Append `bytes` encoded as an RLP string.
pub fn put_str(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.len() == 1 && bytes[0] < 0x80 {
        out.push(bytes[0]);
    } else {
        put_header(out, bytes.len(), 0x80);
        out.extend_from_slice(bytes);
    }
}

/// Append `v` as an RLP integer.
pub fn put_uint(out: &mut Vec<u8>, v: u64) {
    let be = v.to_be_bytes();
    let skip = be.iter().take_while(|&&b| b == 0).count();
    put_str(out, &be[skip..]);
}

/// Wrap an already-encoded list payload into a list.
pub fn list(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 9);
    put_header(&mut out, payload.len(), 0xc0);
    out.extend_from_slice(payload);
    out
}

/// Encode a string on its own.
pub fn str_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 9);
    put_str(&mut out, bytes);
    out
}

/// Encode an integer on its own.
pub fn uint_bytes(v: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    put_uint(&mut out, v);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_strings_and_lists() {
        for len in [0usize, 1, 55, 56, 300, 70000] {
            let data = vec![0xabu8; len];
            let enc = str_bytes(&data);
            let it = read_exact(&enc).unwrap();
            assert_eq!(string(&it).unwrap(), &data[..]);
        }
        let mut p = Vec::new();
        put_uint(&mut p, 0);
        put_uint(&mut p, 1024);
        let l = list(&p);
        let it = read_exact(&l).unwrap();
        let items = list_items(&it, 10).unwrap();
        assert_eq!(uint(&items[0]).unwrap(), 0);
        assert_eq!(uint(&items[1]).unwrap(), 1024);
    }

    #[test]
    fn rejects_non_canonical() {
        assert!(read_exact(&[0x81, 0x05]).is_err());
        assert!(read_exact(&[0xb8, 0x05, 1, 2, 3, 4, 5]).is_err());
        assert!(read_exact(&[0x83, 1]).is_err());
        assert!(uint(&read_exact(&[0x82, 0, 1]).unwrap()).is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(it) = read_exact(&data) {
                if it.is_list { let _ = list_items(&it, 1000); }
                let _ = uint(&it);
            }
        }
    }
}
