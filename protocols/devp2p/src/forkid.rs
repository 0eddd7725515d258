//! EIP-2124 fork identifier: CRC32 (IEEE) over the genesis hash, updated with every past
//! fork block number (then fork timestamp) as 8 big-endian bytes; `next` is the first future fork.

use crate::error::{Devp2pError, Result};
use crate::rlp;

/// `[hash(4 bytes), next]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ForkId {
    pub hash: [u8; 4],
    pub next: u64,
}

impl ForkId {
    pub fn encode(&self) -> Vec<u8> {
        rlp::encode_list(&[rlp::enc_bytes(&self.hash), rlp::enc_uint(self.next)])
    }

    pub fn decode(item: &[u8]) -> Result<Self> {
        let f = rlp::list_exact("fork id", item, 4)?;
        if f.len() != 2 {
            return Err(Devp2pError::ForkId(format!(
                "{} fields, expected [hash, next]",
                f.len()
            )));
        }
        Ok(ForkId {
            hash: rlp::fixed::<4>("fork id hash", f[0])?,
            next: rlp::uint("fork id next", f[1])?,
        })
    }
}

impl std::fmt::Display for ForkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0x{} (next {})", hex::encode(self.hash), self.next)
    }
}

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC32 (IEEE) continuing from `crc` (0 to start).
pub fn crc32_update(crc: u32, data: &[u8]) -> u32 {
    let mut c = !crc;
    for b in data {
        c = CRC_TABLE[((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// The forks of a chain: block-number forks and timestamp forks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForkSchedule {
    pub genesis_hash: [u8; 32],
    pub genesis_timestamp: u64,
    pub block_forks: Vec<u64>,
    pub time_forks: Vec<u64>,
}

impl ForkSchedule {
    /// Normalise as EIP-2124 does: sorted, deduplicated, block forks at 0 and time forks at or
    /// before genesis dropped.
    fn normalised(&self) -> (Vec<u64>, Vec<u64>) {
        let mut b: Vec<u64> = self.block_forks.iter().copied().filter(|x| *x != 0).collect();
        b.sort_unstable();
        b.dedup();
        let mut t: Vec<u64> = self
            .time_forks
            .iter()
            .copied()
            .filter(|x| *x > self.genesis_timestamp)
            .collect();
        t.sort_unstable();
        t.dedup();
        (b, t)
    }

    /// The fork id at head block `head_number` with timestamp `head_time`.
    pub fn fork_id(&self, head_number: u64, head_time: u64) -> ForkId {
        let (blocks, times) = self.normalised();
        let mut crc = crc32_update(0, &self.genesis_hash);
        for f in blocks {
            if f <= head_number {
                crc = crc32_update(crc, &f.to_be_bytes());
            } else {
                return ForkId {
                    hash: crc.to_be_bytes(),
                    next: f,
                };
            }
        }
        for f in times {
            if f <= head_time {
                crc = crc32_update(crc, &f.to_be_bytes());
            } else {
                return ForkId {
                    hash: crc.to_be_bytes(),
                    next: f,
                };
            }
        }
        ForkId {
            hash: crc.to_be_bytes(),
            next: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mainnet_frontier_to_petersburg() -> ForkSchedule {
        let mut g = [0u8; 32];
        hex::decode_to_slice(
            "d4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3",
            &mut g,
        )
        .unwrap();
        ForkSchedule {
            genesis_hash: g,
            genesis_timestamp: 0,
            block_forks: vec![
                1_150_000, 1_920_000, 2_463_000, 2_675_000, 2_675_000, 4_370_000, 7_280_000, 7_280_000,
            ],
            time_forks: vec![],
        }
    }

    #[test]
    fn eip2124_mainnet_vectors() {
        let s = mainnet_frontier_to_petersburg();
        let cases: [(u64, u32, u64); 13] = [
            (0, 0xfc64ec04, 1_150_000),
            (1_149_999, 0xfc64ec04, 1_150_000),
            (1_150_000, 0x97c2c34c, 1_920_000),
            (1_919_999, 0x97c2c34c, 1_920_000),
            (1_920_000, 0x91d1f948, 2_463_000),
            (2_462_999, 0x91d1f948, 2_463_000),
            (2_463_000, 0x7a64da13, 2_675_000),
            (2_674_999, 0x7a64da13, 2_675_000),
            (2_675_000, 0x3edd5b10, 4_370_000),
            (4_369_999, 0x3edd5b10, 4_370_000),
            (4_370_000, 0xa00bc324, 7_280_000),
            (7_279_999, 0xa00bc324, 7_280_000),
            (7_280_000, 0x668db0af, 0),
        ];
        for (head, hash, next) in cases {
            assert_eq!(
                s.fork_id(head, 0),
                ForkId {
                    hash: hash.to_be_bytes(),
                    next
                },
                "head {head}"
            );
        }
    }

    #[test]
    fn crc32_known_value() {
        assert_eq!(crc32_update(0, b"123456789"), 0xcbf4_3926);
    }
}
