//! The DNS messages an EIP-1459 client needs (RFC 1035): a TXT query for one name and the
//! TXT records of its answer, plus the answer a small test server sends. Names in answers
//! may be compressed; every length, count and pointer is bounded.

use crate::error::{DiscError, Result};

/// Largest DNS message accepted (EDNS-sized UDP answers).
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Records read from one answer.
pub const MAX_ANSWERS: usize = 64;
const MAX_NAME_BYTES: usize = 253;
const MAX_POINTERS: usize = 16;
pub const TYPE_TXT: u16 = 16;
const CLASS_IN: u16 = 1;
const HEADER_BYTES: usize = 12;

fn bad(detail: &'static str) -> DiscError {
    DiscError::Malformed {
        what: "dns message",
        detail,
    }
}

fn put_name(out: &mut Vec<u8>, name: &str) -> Result<()> {
    let name = name.trim_end_matches('.');
    if name.len() > MAX_NAME_BYTES {
        return Err(DiscError::TooLarge {
            what: "dns name",
            len_bytes: name.len(),
            limit_bytes: MAX_NAME_BYTES,
        });
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("a label is empty or longer than 63 bytes"));
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    Ok(())
}

/// A standard recursive query for the TXT records of `name`.
pub fn encode_txt_query(id: u16, name: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(HEADER_BYTES + name.len() + 6);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    out.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    out.extend_from_slice(&[0; 6]);
    put_name(&mut out, name)?;
    out.extend_from_slice(&TYPE_TXT.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(out)
}

fn u16_at(msg: &[u8], at: usize) -> Result<u16> {
    msg.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(bad("truncated"))
}

/// Read the (possibly compressed) name at `at`: the name in lower case and the offset
/// after it in the message.
fn read_name(msg: &[u8], mut at: usize) -> Result<(String, usize)> {
    let mut name = String::new();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(at).ok_or(bad("truncated name"))? as usize;
        if len & 0xC0 == 0xC0 {
            let ptr = (u16_at(msg, at)? & 0x3FFF) as usize;
            end.get_or_insert(at + 2);
            jumps += 1;
            if jumps > MAX_POINTERS || ptr >= msg.len() {
                return Err(bad("bad name pointer"));
            }
            at = ptr;
            continue;
        }
        if len & 0xC0 != 0 {
            return Err(bad("unknown label type"));
        }
        at += 1;
        if len == 0 {
            break;
        }
        let label = msg.get(at..at + len).ok_or(bad("truncated label"))?;
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(&String::from_utf8_lossy(label).to_ascii_lowercase());
        if name.len() > MAX_NAME_BYTES {
            return Err(bad("name too long"));
        }
        at += len;
    }
    Ok((name, end.unwrap_or(at)))
}

/// What an answer to a TXT query said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxtAnswer {
    /// The TXT records of the name, each record's strings joined.
    Records(Vec<String>),
    /// The name does not exist (NXDOMAIN) or has no TXT records.
    NoRecords,
    /// The answer did not fit the datagram (TC bit): not usable over UDP.
    Truncated,
    /// The server failed (rcode other than 0 and 3).
    ServerError(u8),
}

/// Read the answer to the query `id` for `name`.
pub fn decode_txt_answer(msg: &[u8], id: u16, name: &str) -> Result<TxtAnswer> {
    if msg.len() > MAX_MESSAGE_BYTES {
        return Err(DiscError::TooLarge {
            what: "dns message",
            len_bytes: msg.len(),
            limit_bytes: MAX_MESSAGE_BYTES,
        });
    }
    if msg.len() < HEADER_BYTES {
        return Err(DiscError::TooShort {
            what: "dns message",
            len_bytes: msg.len(),
            min_bytes: HEADER_BYTES,
        });
    }
    if u16_at(msg, 0)? != id {
        return Err(bad("answer to another query id"));
    }
    let flags = u16_at(msg, 2)?;
    if flags & 0x8000 == 0 {
        return Err(bad("not a response"));
    }
    if flags & 0x0200 != 0 {
        return Ok(TxtAnswer::Truncated);
    }
    match (flags & 0x000F) as u8 {
        0 => {}
        3 => return Ok(TxtAnswer::NoRecords),
        rcode => return Ok(TxtAnswer::ServerError(rcode)),
    }
    let qd = u16_at(msg, 4)? as usize;
    let an = u16_at(msg, 6)? as usize;
    if qd != 1 {
        return Err(bad("answer without our one question"));
    }
    let (qname, mut at) = read_name(msg, HEADER_BYTES)?;
    if qname != name.trim_end_matches('.').to_ascii_lowercase() {
        return Err(bad("answer to another name"));
    }
    at += 4;
    if an > MAX_ANSWERS {
        return Err(DiscError::TooManyItems {
            what: "dns answers",
            count: an,
            limit: MAX_ANSWERS,
        });
    }
    let mut records = Vec::new();
    for _ in 0..an {
        let (_owner, next) = read_name(msg, at)?;
        at = next;
        let rtype = u16_at(msg, at)?;
        let rdlen = u16_at(msg, at + 8)? as usize;
        at += 10;
        let rdata = msg.get(at..at + rdlen).ok_or(bad("truncated record"))?;
        at += rdlen;
        // CNAMEs and other records in the chain are skipped: the resolver follows them.
        if rtype != TYPE_TXT {
            continue;
        }
        let mut text = Vec::with_capacity(rdlen);
        let mut i = 0;
        while i < rdata.len() {
            let n = rdata[i] as usize;
            let s = rdata
                .get(i + 1..i + 1 + n)
                .ok_or(bad("truncated TXT string"))?;
            text.extend_from_slice(s);
            i += 1 + n;
        }
        records.push(String::from_utf8(text).map_err(|_| bad("TXT record is not UTF-8"))?);
    }
    if records.is_empty() {
        return Ok(TxtAnswer::NoRecords);
    }
    Ok(TxtAnswer::Records(records))
}

/// The question of a query: its id and name (for a server answering queries).
pub fn decode_query(msg: &[u8]) -> Result<(u16, String, u16)> {
    if msg.len() < HEADER_BYTES || msg.len() > MAX_MESSAGE_BYTES {
        return Err(bad("query size"));
    }
    if u16_at(msg, 4)? != 1 {
        return Err(bad("query without one question"));
    }
    let (name, at) = read_name(msg, HEADER_BYTES)?;
    Ok((u16_at(msg, 0)?, name, u16_at(msg, at)?))
}

/// An authoritative answer to query `id` for `name`: each of `records` as one TXT record
/// (split into strings of at most 255 bytes); no records gives NXDOMAIN.
pub fn encode_txt_answer(id: u16, name: &str, records: &[String]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    out.extend_from_slice(&id.to_be_bytes());
    let rcode = if records.is_empty() { 3 } else { 0 };
    out.extend_from_slice(&(0x8400u16 | 0x0100 | 0x0080 | rcode).to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    put_name(&mut out, name)?;
    out.extend_from_slice(&TYPE_TXT.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    for r in records {
        out.extend_from_slice(&0xC00Cu16.to_be_bytes()); // the question's name
        out.extend_from_slice(&TYPE_TXT.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&60u32.to_be_bytes());
        let chunks: Vec<&[u8]> = if r.is_empty() {
            vec![&[][..]]
        } else {
            r.as_bytes().chunks(255).collect()
        };
        let rdlen: usize = chunks.iter().map(|c| c.len() + 1).sum();
        if rdlen > u16::MAX as usize {
            return Err(bad("record too long"));
        }
        out.extend_from_slice(&(rdlen as u16).to_be_bytes());
        for c in chunks {
            out.push(c.len() as u8);
            out.extend_from_slice(c);
        }
    }
    if out.len() > MAX_MESSAGE_BYTES {
        return Err(DiscError::TooLarge {
            what: "dns message",
            len_bytes: out.len(),
            limit_bytes: MAX_MESSAGE_BYTES,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_answer_round_trip() {
        let q = encode_txt_query(0x1234, "Nodes.Example.org.").unwrap();
        let (id, name, qtype) = decode_query(&q).unwrap();
        assert_eq!(
            (id, name.as_str(), qtype),
            (0x1234, "nodes.example.org", TYPE_TXT)
        );
        let long = "x".repeat(600);
        let recs = vec![
            "enrtree-root:v1 e=A l=B seq=1 sig=C".to_string(),
            long.clone(),
        ];
        let a = encode_txt_answer(0x1234, "nodes.example.org", &recs).unwrap();
        assert_eq!(
            decode_txt_answer(&a, 0x1234, "nodes.example.org").unwrap(),
            TxtAnswer::Records(recs)
        );
        let nx = encode_txt_answer(7, "nodes.example.org", &[]).unwrap();
        assert_eq!(
            decode_txt_answer(&nx, 7, "nodes.example.org").unwrap(),
            TxtAnswer::NoRecords
        );
    }

    #[test]
    fn bad_answers_are_refused() {
        let a = encode_txt_answer(1, "a.example", &["t".into()]).unwrap();
        assert!(decode_txt_answer(&a, 2, "a.example").is_err(), "other id");
        assert!(decode_txt_answer(&a, 1, "b.example").is_err(), "other name");
        assert!(decode_txt_answer(&a[..a.len() - 1], 1, "a.example").is_err());
        assert!(decode_txt_answer(&a[..5], 1, "a.example").is_err());
        let q = encode_txt_query(1, "a.example").unwrap();
        assert!(decode_txt_answer(&q, 1, "a.example").is_err(), "a query");
        // A pointer loop: the answer's owner name points at itself.
        let mut looped = a.clone();
        let at = encode_txt_query(1, "a.example").unwrap().len();
        assert_eq!(looped[at], 0xC0);
        looped[at + 1] = at as u8;
        assert!(decode_txt_answer(&looped, 1, "a.example").is_err());
        let mut tc = a.clone();
        tc[2] |= 0x02;
        assert_eq!(
            decode_txt_answer(&tc, 1, "a.example").unwrap(),
            TxtAnswer::Truncated
        );
        assert!(encode_txt_query(1, &"a".repeat(64)).is_err());
        assert!(decode_txt_answer(&vec![0u8; 5000], 1, "a.example").is_err());
    }
}
