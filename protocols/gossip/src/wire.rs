//! Bounded bincode (fixint, little-endian) reading and writing, plus the two compact
//! integer forms the cluster uses: LEB128 varints and `short_vec` lengths.
//!
//! Every read checks the remaining length first; every length prefix is checked
//! against the bytes left (times the smallest size of one element) before anything is
//! allocated, so a hostile prefix cannot make us allocate more than the packet holds.

use crate::{GossipError, Hash, Pubkey, Signature};

pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Bytes consumed since `start` (a previous [`Reader::position`]).
    pub fn since(&self, start: usize) -> &'a [u8] {
        &self.bytes[start..self.pos]
    }

    pub fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], GossipError> {
        if self.remaining() < len {
            return Err(GossipError::Truncated {
                what,
                offset: self.pos,
            });
        }
        let out = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GossipError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, GossipError> {
        Ok(self.take(1, what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, GossipError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, GossipError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, GossipError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    pub fn pubkey(&mut self, what: &'static str) -> Result<Pubkey, GossipError> {
        Ok(Pubkey(self.array(what)?))
    }

    pub fn hash(&mut self, what: &'static str) -> Result<Hash, GossipError> {
        Ok(Hash(self.array(what)?))
    }

    pub fn signature(&mut self, what: &'static str) -> Result<Signature, GossipError> {
        Ok(Signature(self.array(what)?))
    }

    /// A serde `Option` tag: 0 or 1, anything else rejected.
    pub fn option_tag(&mut self, what: &'static str) -> Result<bool, GossipError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(GossipError::UnknownTag {
                what,
                tag: u32::from(tag),
            }),
        }
    }

    /// A bincode `u64` length prefix for elements of at least `min_elem_bytes` each,
    /// bounded by the bytes left and by `max`.
    pub fn len_u64(
        &mut self,
        what: &'static str,
        min_elem_bytes: usize,
        max: usize,
    ) -> Result<usize, GossipError> {
        let count = self.u64(what)?;
        self.check_len(what, count, min_elem_bytes, max)
    }

    /// A `short_vec` length prefix (LEB128, at most 3 bytes, at most `u16::MAX`,
    /// canonical), bounded like [`Reader::len_u64`].
    pub fn len_short(
        &mut self,
        what: &'static str,
        min_elem_bytes: usize,
        max: usize,
    ) -> Result<usize, GossipError> {
        let count = self.short_u16(what)?;
        self.check_len(what, u64::from(count), min_elem_bytes, max)
    }

    fn check_len(
        &self,
        what: &'static str,
        count: u64,
        min_elem_bytes: usize,
        max: usize,
    ) -> Result<usize, GossipError> {
        if count > max as u64 {
            return Err(GossipError::TooMany {
                what,
                count,
                max: max as u64,
            });
        }
        let need = (count as u128) * (min_elem_bytes as u128);
        if need > self.remaining() as u128 {
            return Err(GossipError::Truncated {
                what,
                offset: self.pos,
            });
        }
        Ok(count as usize)
    }

    /// `short_vec` length: LEB128 of a u16 in at most 3 bytes; an alias (a trailing
    /// zero byte) or a value past `u16::MAX` is rejected.
    pub fn short_u16(&mut self, what: &'static str) -> Result<u16, GossipError> {
        let mut value: u32 = 0;
        for index in 0..3 {
            let byte = self.u8(what)?;
            value |= u32::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                if byte == 0 && index > 0 {
                    return Err(GossipError::NonCanonical { what });
                }
                return u16::try_from(value).map_err(|_| GossipError::NonCanonical { what });
            }
        }
        Err(GossipError::NonCanonical { what })
    }

    /// LEB128 varint of a u64 (serde_varint form): at most 10 bytes, no overflow, no
    /// trailing zero byte.
    pub fn varint_u64(&mut self, what: &'static str) -> Result<u64, GossipError> {
        let mut value: u64 = 0;
        for index in 0..10u32 {
            let byte = self.u8(what)?;
            let low = u64::from(byte & 0x7f);
            let shift = 7 * index;
            if shift == 63 && low > 1 {
                return Err(GossipError::NonCanonical { what });
            }
            value |= low << shift;
            if byte & 0x80 == 0 {
                if byte == 0 && index > 0 {
                    return Err(GossipError::NonCanonical { what });
                }
                return Ok(value);
            }
        }
        Err(GossipError::NonCanonical { what })
    }

    /// LEB128 varint of a u16 (serde_varint form).
    pub fn varint_u16(&mut self, what: &'static str) -> Result<u16, GossipError> {
        let value = self.varint_u64(what)?;
        u16::try_from(value).map_err(|_| GossipError::NonCanonical { what })
    }

    /// Skips a bincode `Vec<u8>` (u64 length then bytes).
    pub fn skip_bytes_u64(&mut self, what: &'static str, max: usize) -> Result<(), GossipError> {
        let len = self.len_u64(what, 1, max)?;
        self.take(len, what)?;
        Ok(())
    }

    /// Skips a `short_vec<u8>`.
    pub fn skip_bytes_short(&mut self, what: &'static str) -> Result<(), GossipError> {
        let len = self.len_short(what, 1, usize::from(u16::MAX))?;
        self.take(len, what)?;
        Ok(())
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<(), GossipError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(GossipError::TrailingBytes { count }),
        }
    }
}

pub fn put_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A `short_vec` length. Lengths past `u16::MAX` cannot be encoded; callers bound their
/// vectors well below that (a packet is 1232 bytes).
pub fn put_short_len(out: &mut Vec<u8>, len: usize) {
    debug_assert!(len <= usize::from(u16::MAX));
    put_varint(out, len.min(usize::from(u16::MAX)) as u64);
}

/// Number of bytes [`put_varint`] writes.
pub fn varint_len(mut value: u64) -> usize {
    let mut len = 1;
    while value >= 0x80 {
        value >>= 7;
        len += 1;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(bytes: &[u8]) -> Result<u16, GossipError> {
        let mut r = Reader::new(bytes);
        let value = r.short_u16("test")?;
        r.finish()?;
        Ok(value)
    }

    #[test]
    fn short_vec_lengths() {
        let known: [(u16, &[u8]); 8] = [
            (0, &[0x00]),
            (0x7f, &[0x7f]),
            (0x80, &[0x80, 0x01]),
            (0xff, &[0xff, 0x01]),
            (0x100, &[0x80, 0x02]),
            (0x3fff, &[0xff, 0x7f]),
            (0x7fff, &[0xff, 0xff, 0x01]),
            (0xffff, &[0xff, 0xff, 0x03]),
        ];
        for (value, bytes) in known {
            assert_eq!(short(bytes), Ok(value));
            let mut out = Vec::new();
            put_short_len(&mut out, usize::from(value));
            assert_eq!(out, bytes);
        }
        // Aliases, overflow and over-long forms are rejected.
        for bad in [
            &[0x80, 0x00][..],
            &[0xff, 0x80, 0x00],
            &[0xff, 0xff, 0x04],
            &[0x80, 0x80, 0x80, 0x01],
            &[0x80],
        ] {
            assert!(short(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn varints() {
        for value in [0u64, 1, 127, 128, 300, 1_721_060_646_885, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out.len(), varint_len(value));
            let mut r = Reader::new(&out);
            assert_eq!(r.varint_u64("test"), Ok(value));
            r.finish().unwrap();
        }
        let mut max = vec![0xffu8; 9];
        max.push(0x01);
        assert_eq!(Reader::new(&max).varint_u64("test"), Ok(u64::MAX));
        let mut overflow = vec![0xffu8; 9];
        overflow.push(0x02);
        assert!(Reader::new(&overflow).varint_u64("test").is_err());
        assert!(Reader::new(&[0xff; 11]).varint_u64("test").is_err());
        assert!(Reader::new(&[0x81, 0x00]).varint_u64("test").is_err());
        assert!(Reader::new(&[0x80, 0x80, 0x04]).varint_u16("test").is_err());
    }

    #[test]
    fn length_prefixes_are_bounded_by_remaining_bytes() {
        let mut bytes = 3u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0u8; 95]);
        // Three 32-byte elements need 96 bytes: 95 are left.
        assert!(Reader::new(&bytes).len_u64("test", 32, 1000).is_err());
        bytes.push(0);
        assert_eq!(Reader::new(&bytes).len_u64("test", 32, 1000), Ok(3));
        assert!(matches!(
            Reader::new(&bytes).len_u64("test", 32, 2),
            Err(GossipError::TooMany {
                count: 3,
                max: 2,
                ..
            })
        ));
    }
}
