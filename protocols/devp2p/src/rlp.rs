//! Small RLP helpers over `alloy_rlp::Header` that never panic and name what they decode.
//! Items are handled as raw encodings (`&[u8]` including their header) so that codecs can
//! pass them on untouched (headers, bodies, receipts, trie nodes).

use alloy_rlp::{Encodable, Header};

use crate::error::{Devp2pError, Result};

/// One RLP item split off a buffer: (whole item encoding, header, payload, rest of the buffer).
pub type Split<'a> = (&'a [u8], Header, &'a [u8], &'a [u8]);

/// Split one RLP item off the front of `buf`: returns (whole item encoding, header, payload, rest).
pub fn split_item<'a>(what: &'static str, buf: &'a [u8]) -> Result<Split<'a>> {
    let mut b = buf;
    let h = Header::decode(&mut b).map_err(|e| Devp2pError::rlp(what, e))?;
    let header_len = buf.len() - b.len();
    if b.len() < h.payload_length {
        return Err(Devp2pError::rlp(
            what,
            format!("item of {} bytes truncated to {}", h.payload_length, b.len()),
        ));
    }
    let total = header_len + h.payload_length;
    let payload = &b[..h.payload_length];
    Ok((&buf[..total], h, payload, &buf[total..]))
}

/// The raw encodings of the items of the list at the front of `buf` (trailing bytes are
/// returned as the second value), at most `max_items` of them.
pub fn list<'a>(what: &'static str, buf: &'a [u8], max_items: usize) -> Result<(Vec<&'a [u8]>, &'a [u8])> {
    let (_, h, mut payload, rest) = split_item(what, buf)?;
    if !h.list {
        return Err(Devp2pError::rlp(what, "expected a list, found a string"));
    }
    let mut items = Vec::new();
    while !payload.is_empty() {
        if items.len() >= max_items {
            return Err(Devp2pError::TooManyItems {
                what,
                count: items.len() + 1,
                limit: max_items,
            });
        }
        let (item, _, _, r) = split_item(what, payload)?;
        items.push(item);
        payload = r;
    }
    Ok((items, rest))
}

/// The items of a list that must fill `buf` exactly.
pub fn list_exact<'a>(what: &'static str, buf: &'a [u8], max_items: usize) -> Result<Vec<&'a [u8]>> {
    let (items, rest) = list(what, buf, max_items)?;
    if !rest.is_empty() {
        return Err(Devp2pError::rlp(
            what,
            format!("{} trailing bytes after the list", rest.len()),
        ));
    }
    Ok(items)
}

/// The payload of an RLP string item.
pub fn bytes<'a>(what: &'static str, item: &'a [u8]) -> Result<&'a [u8]> {
    let (_, h, payload, rest) = split_item(what, item)?;
    if h.list {
        return Err(Devp2pError::rlp(what, "expected a string, found a list"));
    }
    if !rest.is_empty() {
        return Err(Devp2pError::rlp(what, "trailing bytes"));
    }
    Ok(payload)
}

/// A fixed-size string item.
pub fn fixed<const N: usize>(what: &'static str, item: &[u8]) -> Result<[u8; N]> {
    let b = bytes(what, item)?;
    b.try_into()
        .map_err(|_| Devp2pError::rlp(what, format!("expected {N} bytes, found {}", b.len())))
}

/// An unsigned integer of at most 8 bytes (canonical: no leading zero).
pub fn uint(what: &'static str, item: &[u8]) -> Result<u64> {
    let b = bytes(what, item)?;
    if b.len() > 8 {
        return Err(Devp2pError::rlp(
            what,
            format!("integer of {} bytes does not fit u64", b.len()),
        ));
    }
    if b.first() == Some(&0) {
        return Err(Devp2pError::rlp(what, "integer with leading zero byte"));
    }
    Ok(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
}

/// An unsigned integer of at most 32 bytes as big-endian bytes without leading zeros.
pub fn big_uint(what: &'static str, item: &[u8]) -> Result<Vec<u8>> {
    let b = bytes(what, item)?;
    if b.len() > 32 {
        return Err(Devp2pError::rlp(
            what,
            format!("integer of {} bytes exceeds 256 bits", b.len()),
        ));
    }
    if b.first() == Some(&0) {
        return Err(Devp2pError::rlp(what, "integer with leading zero byte"));
    }
    Ok(b.to_vec())
}

/// Encode a list whose items are already RLP encodings.
pub fn encode_list<I: AsRef<[u8]>>(items: &[I]) -> Vec<u8> {
    let payload_length: usize = items.iter().map(|i| i.as_ref().len()).sum();
    let mut out = Vec::with_capacity(payload_length + 9);
    Header {
        list: true,
        payload_length,
    }
    .encode(&mut out);
    for i in items {
        out.extend_from_slice(i.as_ref());
    }
    out
}

/// Encode a byte string.
pub fn enc_bytes(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() + 9);
    b.encode(&mut out);
    out
}

/// Encode an unsigned integer.
pub fn enc_uint(v: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    v.encode(&mut out);
    out
}

/// Encode a big-endian unsigned integer given as bytes (leading zeros are stripped).
pub fn enc_big_uint(be: &[u8]) -> Vec<u8> {
    let start = be.iter().position(|b| *b != 0).unwrap_or(be.len());
    enc_bytes(&be[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_and_uint() {
        let enc = encode_list(&[enc_uint(0), enc_uint(1024), enc_bytes(b"dog")]);
        let items = list_exact("t", &enc, 10).unwrap();
        assert_eq!(uint("a", items[0]).unwrap(), 0);
        assert_eq!(uint("b", items[1]).unwrap(), 1024);
        assert_eq!(bytes("c", items[2]).unwrap(), b"dog");
        assert!(list_exact("t", &enc, 2).is_err());
        assert!(uint("x", &[0x81, 0x00]).is_err());
        assert!(list_exact("t", &enc[..enc.len() - 1], 10).is_err());
    }
}
