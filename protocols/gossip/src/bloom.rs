//! Pull-request bloom filters: the bloom itself (keys, bit vector of u64 blocks, count of
//! set bits), the mask that picks which slice of hash space a filter covers, and the
//! construction of a filter set over a table's hashes.

use crate::wire::{put_u32, put_u64, Reader};
use crate::{GossipError, Hash, PACKET_DATA_SIZE};
use rand::Rng;

/// Target false-positive rate of pull-request filters.
pub const FALSE_RATE: f64 = 0.1;
/// Number of keys the per-filter item capacity is sized for.
pub const KEYS: f64 = 8.0;
/// Pull requests are built for at least this many items (which sets their mask bits).
pub const MIN_NUM_BLOOM_ITEMS: usize = 65_536;
/// One in this many hash-space buckets gets a filter per pull round.
pub const SAMPLE_RATE: usize = 8;
/// Filters per pull round at most.
pub const MAX_NUM_FILTERS: usize = 1024;
/// Bounds on a received bloom: a filter must fit in one packet.
pub const MAX_BLOOM_KEYS: usize = 64;
pub const MAX_BLOOM_BITS: u64 = (PACKET_DATA_SIZE * 8) as u64;
/// Mask bits we build with at most (2^20 buckets covers a billion values).
pub const MAX_BUILD_MASK_BITS: u32 = 20;

/// FNV-1a over `bytes` starting from `key` instead of the usual offset basis.
pub fn hash_at_index(bytes: &[u8], key: u64) -> u64 {
    let mut hash = key;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bloom {
    pub keys: Vec<u64>,
    blocks: Vec<u64>,
    num_bits: u64,
    num_bits_set: u64,
}

impl Bloom {
    /// An empty bloom of `num_bits` bits (bounded by [`MAX_BLOOM_BITS`]).
    pub fn new(num_bits: u64, keys: Vec<u64>) -> Self {
        let num_bits = num_bits.min(MAX_BLOOM_BITS);
        Bloom {
            keys,
            blocks: vec![0u64; num_bits.div_ceil(64) as usize],
            num_bits,
            num_bits_set: 0,
        }
    }

    /// Bits needed for `num_items` at `false_rate`.
    pub fn num_bits(num_items: f64, false_rate: f64) -> f64 {
        let n = num_items;
        let p = false_rate;
        ((n * p.ln()) / (1f64 / 2f64.powf(2f64.ln())).ln()).ceil()
    }

    /// Keys for `num_bits` bits holding `num_items`.
    pub fn num_keys(num_bits: f64, num_items: f64) -> usize {
        if num_items == 0.0 {
            0
        } else {
            1f64.max(((num_bits / num_items) * 2f64.ln()).round()) as usize
        }
    }

    /// A bloom sized for `num_items` at `false_rate`, at most `max_bits`, random keys.
    pub fn random<R: Rng>(rng: &mut R, num_items: usize, false_rate: f64, max_bits: usize) -> Self {
        let m = Self::num_bits(num_items as f64, false_rate);
        let num_bits = (m as usize).min(max_bits).max(1);
        let num_keys = Self::num_keys(num_bits as f64, num_items as f64).min(MAX_BLOOM_KEYS);
        let keys = (0..num_keys).map(|_| rng.gen::<u64>()).collect();
        Self::new(num_bits as u64, keys)
    }

    pub fn num_bits_len(&self) -> u64 {
        self.num_bits
    }

    pub fn num_bits_set(&self) -> u64 {
        self.num_bits_set
    }

    /// Bit `bit`, if within the bit length.
    pub fn bit(&self, bit: u64) -> Option<bool> {
        (bit < self.num_bits).then(|| self.get(bit))
    }

    fn get(&self, bit: u64) -> bool {
        self.blocks[(bit / 64) as usize] & (1u64 << (bit % 64)) != 0
    }

    pub fn add(&mut self, item: &[u8]) {
        if self.num_bits == 0 {
            return;
        }
        for index in 0..self.keys.len() {
            let bit = hash_at_index(item, self.keys[index]) % self.num_bits;
            if !self.get(bit) {
                self.num_bits_set += 1;
                self.blocks[(bit / 64) as usize] |= 1u64 << (bit % 64);
            }
        }
    }

    /// True when every key's bit is set (vacuously true with no keys). A filter without
    /// bits cannot say anything: it reports every item as present, so nothing is sent
    /// in answer to it.
    pub fn contains(&self, item: &[u8]) -> bool {
        if self.num_bits == 0 {
            return true;
        }
        self.keys
            .iter()
            .all(|key| self.get(hash_at_index(item, *key) % self.num_bits))
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.keys.len() as u64);
        for key in &self.keys {
            put_u64(out, *key);
        }
        if self.blocks.is_empty() {
            out.push(0);
        } else {
            out.push(1);
            put_u64(out, self.blocks.len() as u64);
            for block in &self.blocks {
                put_u64(out, *block);
            }
        }
        put_u64(out, self.num_bits);
        put_u64(out, self.num_bits_set);
    }

    pub fn encoded_len(&self) -> usize {
        let blocks = if self.blocks.is_empty() {
            1
        } else {
            9 + 8 * self.blocks.len()
        };
        8 + 8 * self.keys.len() + blocks + 16
    }

    pub fn decode(r: &mut Reader) -> Result<Self, GossipError> {
        let num_keys = r.len_u64("bloom keys", 8, MAX_BLOOM_KEYS)?;
        let mut keys = Vec::with_capacity(num_keys);
        for _ in 0..num_keys {
            keys.push(r.u64("bloom key")?);
        }
        let blocks = if r.option_tag("bloom bits")? {
            let max_blocks = MAX_BLOOM_BITS.div_ceil(64) as usize;
            let num_blocks = r.len_u64("bloom bit blocks", 8, max_blocks)?;
            if num_blocks == 0 {
                return Err(GossipError::NonCanonical { what: "bloom bits" });
            }
            let mut blocks = Vec::with_capacity(num_blocks);
            for _ in 0..num_blocks {
                blocks.push(r.u64("bloom bit block")?);
            }
            blocks
        } else {
            Vec::new()
        };
        let num_bits = r.u64("bloom bit length")?;
        if num_bits > MAX_BLOOM_BITS {
            return Err(GossipError::TooMany {
                what: "bloom bits",
                count: num_bits,
                max: MAX_BLOOM_BITS,
            });
        }
        if num_bits.div_ceil(64) != blocks.len() as u64 {
            return Err(GossipError::Invalid {
                what: "bloom bits",
                reason: "bit length does not match the block count",
            });
        }
        let num_bits_set = r.u64("bloom bits set")?;
        Ok(Bloom {
            keys,
            blocks,
            num_bits,
            num_bits_set,
        })
    }
}

/// A bloom over the hashes whose first 8 bytes (as a little-endian u64) start with the
/// `mask_bits` high bits of `mask`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrdsFilter {
    pub filter: Bloom,
    pub mask: u64,
    pub mask_bits: u32,
}

impl Default for CrdsFilter {
    fn default() -> Self {
        CrdsFilter {
            filter: Bloom::new(0, Vec::new()),
            mask: !0u64,
            mask_bits: 0,
        }
    }
}

/// Items one filter of `max_bits` holds at `false_rate` with `num_keys` keys.
pub fn max_items(max_bits: f64, false_rate: f64, num_keys: f64) -> f64 {
    let m = max_bits;
    let p = false_rate;
    let k = num_keys;
    (m / (-k / (1f64 - (p.ln() / k).exp()).ln())).ceil()
}

/// Mask bits needed so that `num_items` spread over filters of `max_items` each.
pub fn mask_bits(num_items: f64, max_items: f64) -> u32 {
    ((num_items / max_items).log2().ceil()).max(0.0) as u32
}

/// The mask of bucket `seed` when hash space is cut into `2^mask_bits` buckets.
pub fn compute_mask(seed: u64, mask_bits: u32) -> u64 {
    let high = seed
        .checked_shl(64u32.saturating_sub(mask_bits))
        .unwrap_or(0);
    high | (!0u64).checked_shr(mask_bits).unwrap_or(0)
}

/// The first 8 bytes of a hash as a little-endian u64.
pub fn hash_as_u64(hash: &Hash) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.0[..8]);
    u64::from_le_bytes(first)
}

/// Smallest mask bits a pull request may carry (what a filter built for
/// [`MIN_NUM_BLOOM_ITEMS`] over a full packet has): 6.
pub fn min_pull_request_mask_bits() -> u32 {
    let max_bits = (PACKET_DATA_SIZE * 8) as f64;
    mask_bits(
        MIN_NUM_BLOOM_ITEMS as f64,
        max_items(max_bits, FALSE_RATE, KEYS),
    )
}

impl CrdsFilter {
    fn low_ones(&self) -> u64 {
        (!0u64).checked_shr(self.mask_bits).unwrap_or(0)
    }

    /// Whether `hash` falls in the slice of hash space this filter covers.
    pub fn test_mask(&self, hash: &Hash) -> bool {
        let ones = self.low_ones();
        (hash_as_u64(hash) | ones) == (self.mask | ones)
    }

    /// Whether the requester has `hash` (or it is outside this filter's slice).
    pub fn contains(&self, hash: &Hash) -> bool {
        if !self.test_mask(hash) {
            return true;
        }
        self.filter.contains(&hash.0)
    }

    pub fn add(&mut self, hash: &Hash) {
        if self.test_mask(hash) {
            self.filter.add(&hash.0);
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        self.filter.encode(out);
        put_u64(out, self.mask);
        put_u32(out, self.mask_bits);
    }

    pub fn encoded_len(&self) -> usize {
        self.filter.encoded_len() + 12
    }

    pub fn decode(r: &mut Reader) -> Result<Self, GossipError> {
        let filter = Bloom::decode(r)?;
        let mask = r.u64("filter mask")?;
        let mask_bits = r.u32("filter mask bits")?;
        if mask_bits > 64 {
            return Err(GossipError::Invalid {
                what: "filter mask bits",
                reason: "more than 64",
            });
        }
        Ok(CrdsFilter {
            filter,
            mask,
            mask_bits,
        })
    }

    /// Pull requests must cut hash space at least [`min_pull_request_mask_bits`] ways.
    pub fn sanitize(&self) -> Result<(), GossipError> {
        if self.mask_bits < min_pull_request_mask_bits() {
            return Err(GossipError::Invalid {
                what: "filter mask bits",
                reason: "below the pull-request minimum",
            });
        }
        Ok(())
    }
}

/// Builds one pull round's filters over `hashes`: hash space is cut into `2^mask_bits`
/// buckets sized for `num_items` (pull requests use at least [`MIN_NUM_BLOOM_ITEMS`],
/// see [`pull_request_num_items`]), one bucket in
/// [`SAMPLE_RATE`] (at most [`MAX_NUM_FILTERS`]) is picked at random, and each picked
/// bucket's bloom of at most `max_bytes` gets the hashes that fall in it.
pub fn build_filters<R: Rng>(
    rng: &mut R,
    hashes: impl IntoIterator<Item = Hash>,
    num_items: usize,
    max_bytes: usize,
) -> Vec<CrdsFilter> {
    if max_bytes == 0 {
        return Vec::new();
    }
    let max_bits = (max_bytes * 8) as f64;
    let items = max_items(max_bits, FALSE_RATE, KEYS);
    let mask_bits = mask_bits(num_items as f64, items).min(MAX_BUILD_MASK_BITS);
    let num_buckets = 1usize << mask_bits;
    let mut slots: Vec<Option<Bloom>> = (0..num_buckets).map(|_| None).collect();
    let mut indices: Vec<usize> = (0..num_buckets).collect();
    let picks = MAX_NUM_FILTERS.min(num_buckets.div_ceil(SAMPLE_RATE));
    for _ in 0..picks {
        let k = rng.gen_range(0..indices.len());
        let bucket = indices.swap_remove(k);
        slots[bucket] = Some(Bloom::random(
            rng,
            items as usize,
            FALSE_RATE,
            max_bits as usize,
        ));
    }
    let shift = 64 - mask_bits;
    for hash in hashes {
        let bucket = hash_as_u64(&hash).checked_shr(shift).unwrap_or(0) as usize;
        if let Some(Some(bloom)) = slots.get_mut(bucket) {
            bloom.add(&hash.0);
        }
    }
    slots
        .into_iter()
        .enumerate()
        .filter_map(|(bucket, bloom)| {
            Some(CrdsFilter {
                filter: bloom?,
                mask: compute_mask(bucket as u64, mask_bits),
                mask_bits,
            })
        })
        .collect()
}

/// Items a pull request's filters are sized for: the table's, at least
/// [`MIN_NUM_BLOOM_ITEMS`] (so their mask bits pass [`CrdsFilter::sanitize`]).
pub fn pull_request_num_items(table_items: usize) -> usize {
    table_items.max(MIN_NUM_BLOOM_ITEMS)
}

/// Serialized size of one filter built with `max_bytes` (keys and bit count are fixed by
/// the sizing rules, only their values are random).
fn filter_len_for(max_bytes: usize) -> usize {
    let max_bits = (max_bytes * 8) as f64;
    let items = max_items(max_bits, FALSE_RATE, KEYS) as usize;
    let m = Bloom::num_bits(items as f64, FALSE_RATE);
    let num_bits = (m as usize).min(max_bits as usize).max(1);
    let num_keys = Bloom::num_keys(num_bits as f64, items as f64).min(MAX_BLOOM_KEYS);
    8 + 8 * num_keys + 9 + 8 * num_bits.div_ceil(64) + 16 + 12
}

/// The largest bloom `max_bytes` such that a pull request carrying a caller value of
/// `caller_len` bytes still fits in a packet. Where several `max_bytes` give filters of
/// the same size, the largest of them is taken.
pub fn max_bloom_filter_bytes(caller_len: usize) -> usize {
    let Some(room) = PACKET_DATA_SIZE.checked_sub(4 + caller_len) else {
        return 0;
    };
    let mut best_len = 0usize;
    let mut best_bytes = 0usize;
    for max_bytes in 1..=PACKET_DATA_SIZE {
        let len = filter_len_for(max_bytes);
        if len <= room && len >= best_len {
            best_len = len;
            best_bytes = max_bytes;
        }
    }
    best_bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn predicted_filter_sizes_match_built_ones() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
        for max_bytes in 1..=PACKET_DATA_SIZE {
            let filters = build_filters(&mut rng, std::iter::empty(), 1, max_bytes);
            assert_eq!(filters.len(), 1);
            assert_eq!(
                filters[0].encoded_len(),
                filter_len_for(max_bytes),
                "{max_bytes}"
            );
            let mut bytes = Vec::new();
            filters[0].encode(&mut bytes);
            assert_eq!(bytes.len(), filters[0].encoded_len());
        }
    }

    #[test]
    fn pull_request_filters_fill_the_packet() {
        for caller_len in [60usize, 127, 200, 333, 512, 900, 1100] {
            let room = PACKET_DATA_SIZE - 4 - caller_len;
            let max_bytes = max_bloom_filter_bytes(caller_len);
            let len = filter_len_for(max_bytes);
            assert!(
                len <= room,
                "caller {caller_len}: filter {len} > room {room}"
            );
            // No larger max_bytes gives a larger filter that still fits.
            for larger in max_bytes + 1..=PACKET_DATA_SIZE {
                let other = filter_len_for(larger);
                assert!(other > room || other < len, "caller {caller_len}: {larger}");
            }
        }
        assert_eq!(max_bloom_filter_bytes(PACKET_DATA_SIZE), 0);
    }
}
