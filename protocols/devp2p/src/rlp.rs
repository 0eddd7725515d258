//! RLP helpers for the wire codecs that name what they decode, over the strict reader
//! `catchup_eth::rlp` (canonical forms only, bounded item sizes, never panics). Items are
//! handled as raw encodings (`&[u8]` including their header) so that codecs can pass them on
//! untouched (headers, bodies, receipts, trie nodes).

use alloy_rlp::Header;
use catchup_eth::rlp as strict;

use crate::error::{Devp2pError, Result};

/// One RLP item split off a buffer: (whole item encoding, header, payload, rest of the buffer).
pub type Split<'a> = (&'a [u8], Header, &'a [u8], &'a [u8]);

/// Split one RLP item off the front of `buf`: returns (whole item encoding, header, payload, rest).
pub fn split_item<'a>(what: &'static str, buf: &'a [u8]) -> Result<Split<'a>> {
    let it = strict::parse_item(buf, 0).map_err(|e| Devp2pError::rlp(what, e))?;
    let header = Header {
        list: it.is_list,
        payload_length: it.payload.len(),
    };
    Ok((it.raw, header, it.payload, &buf[it.raw.len()..]))
}

/// The raw encodings of the items of the list at the front of `buf` (trailing bytes are
/// returned as the second value), at most `max_items` of them.
pub fn list<'a>(
    what: &'static str,
    buf: &'a [u8],
    max_items: usize,
) -> Result<(Vec<&'a [u8]>, &'a [u8])> {
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
pub fn list_exact<'a>(
    what: &'static str,
    buf: &'a [u8],
    max_items: usize,
) -> Result<Vec<&'a [u8]>> {
    let (items, rest) = list(what, buf, max_items)?;
    if !rest.is_empty() {
        return Err(Devp2pError::rlp(
            what,
            format!("{} trailing bytes after the list", rest.len()),
        ));
    }
    Ok(items)
}

/// The one item spanning all of `item`.
fn exact<'a>(what: &'static str, item: &'a [u8]) -> Result<strict::Item<'a>> {
    strict::parse_exact(item).map_err(|e| Devp2pError::rlp(what, e))
}

/// The payload of an RLP string item.
pub fn bytes<'a>(what: &'static str, item: &'a [u8]) -> Result<&'a [u8]> {
    exact(what, item)?
        .bytes()
        .map_err(|e| Devp2pError::rlp(what, e))
}

/// A fixed-size string item.
pub fn fixed<const N: usize>(what: &'static str, item: &[u8]) -> Result<[u8; N]> {
    exact(what, item)?
        .fixed::<N>()
        .map_err(|e| Devp2pError::rlp(what, e))
}

/// An unsigned integer of at most 8 bytes (canonical: no leading zero).
pub fn uint(what: &'static str, item: &[u8]) -> Result<u64> {
    exact(what, item)?
        .u64()
        .map_err(|e| Devp2pError::rlp(what, e))
}

/// An unsigned integer of at most 32 bytes as big-endian bytes without leading zeros.
pub fn big_uint(what: &'static str, item: &[u8]) -> Result<Vec<u8>> {
    let b = exact(what, item)?
        .uint_bytes(32)
        .map_err(|e| Devp2pError::rlp(what, e))?;
    Ok(b.to_vec())
}

/// Encode a list whose items are already RLP encodings.
pub fn encode_list<I: AsRef<[u8]>>(items: &[I]) -> Vec<u8> {
    let payload_length: usize = items.iter().map(|i| i.as_ref().len()).sum();
    let mut out = Vec::with_capacity(payload_length + 9);
    strict::encode_list_of_raw(items.iter().map(|i| i.as_ref()), &mut out);
    out
}

/// Encode a byte string.
pub fn enc_bytes(b: &[u8]) -> Vec<u8> {
    strict::bytes_item(b)
}

/// Encode an unsigned integer.
pub fn enc_uint(v: u64) -> Vec<u8> {
    strict::u64_item(v)
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

    #[test]
    fn strict_forms_are_rejected_with_the_name() {
        // A single byte below 0x80 wrapped as a string; a long form for a short payload.
        for bad in [&[0x81u8, 0x05][..], &[0xb8, 0x02, 1, 2][..]] {
            match bytes("field", bad) {
                Err(Devp2pError::Rlp { what, .. }) => assert_eq!(what, "field"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(uint("n", &[0x89, 1, 2, 3, 4, 5, 6, 7, 8, 9]).is_err());
        assert!(big_uint("n", &[0x82, 0, 1]).is_err());
        assert_eq!(
            big_uint("n", &enc_big_uint(&[0, 0, 1, 2])).unwrap(),
            vec![1, 2]
        );
        assert_eq!(fixed::<3>("f", &enc_bytes(b"abc")).unwrap(), *b"abc");
        assert!(fixed::<4>("f", &enc_bytes(b"abc")).is_err());
        assert!(bytes("s", &encode_list(&[enc_uint(1)])).is_err());
        assert!(bytes("s", &[0x83, b'd', b'o', b'g', 0x00]).is_err());
        let (whole, h, payload, rest) = split_item("x", &[0x82, 1, 2, 0xc0]).unwrap();
        assert_eq!(
            (whole, h.list, h.payload_length, payload, rest),
            (&[0x82u8, 1, 2][..], false, 2, &[1u8, 2][..], &[0xc0u8][..])
        );
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            if let Ok((items, _)) = list("r", &data, 64) {
                for i in items {
                    let _ = uint("u", i);
                    let _ = big_uint("b", i);
                    let _ = bytes("s", i);
                    let _ = list("l", i, 64);
                }
            }
            let _ = split_item("s", &data);
            let _ = fixed::<4>("f", &data);
        }
    }
}
