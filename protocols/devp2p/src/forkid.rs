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
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
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
        let mut b: Vec<u64> = self
            .block_forks
            .iter()
            .copied()
            .filter(|x| *x != 0)
            .collect();
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

/// Fork-block numbers above this are taken as timestamps when a remote announces them as
/// its next fork while our own position is still among block-number forks (EIP-2124 with
/// EIP-6122; the value is mainnet's genesis timestamp).
pub const TIMESTAMP_THRESHOLD: u64 = 1_438_269_973;

/// Why a remote fork id is not compatible with ours (EIP-2124 validation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ForkIdReject {
    /// Rule 1a, or no rule matched: the remote is on another chain, or it announces a fork
    /// we have already passed without knowing it (we are incompatible or stale).
    #[error("fork id {remote}: incompatible with our chain or we are stale (ours {ours})")]
    LocalIncompatibleOrStale { remote: ForkId, ours: ForkId },
    /// Rule 2: the remote is on one of our past forks but does not know the fork that
    /// followed it.
    #[error("fork id {remote}: remote is stale, expected next fork {expected_next} (ours {ours})")]
    RemoteStale {
        remote: ForkId,
        ours: ForkId,
        expected_next: u64,
    },
}

impl ForkSchedule {
    /// Check a remote fork id against ours at head `head_number` / `head_time`, by the
    /// EIP-2124 rules: (1) same hash: compatible unless the remote's next fork is one we have
    /// already passed (1a); (2) the remote hash is one of our past fork states: compatible if
    /// its next equals the fork that followed that state; (3) the remote hash is one of our
    /// future fork states: compatible (we are behind); (4) otherwise incompatible.
    pub fn validate(
        &self,
        head_number: u64,
        head_time: u64,
        remote: &ForkId,
    ) -> Result<(), ForkIdReject> {
        let (blocks, times) = self.normalised();
        let block_count = blocks.len();
        // sums[i]: the checksum after the first i forks (sums[0] is the genesis checksum).
        let mut forks: Vec<u64> = blocks.into_iter().chain(times).collect();
        let mut sums: Vec<[u8; 4]> = Vec::with_capacity(forks.len() + 1);
        let mut crc = crc32_update(0, &self.genesis_hash);
        sums.push(crc.to_be_bytes());
        for f in &forks {
            crc = crc32_update(crc, &f.to_be_bytes());
            sums.push(crc.to_be_bytes());
        }
        // A last fork that is never passed, so the scan below always finds a position. It
        // counts as a block fork when the chain has no timestamp forks.
        let time_from = if forks.len() == block_count {
            block_count + 1
        } else {
            block_count
        };
        forks.push(u64::MAX);
        let ours = self.fork_id(head_number, head_time);
        for (i, &fork) in forks.iter().enumerate() {
            let head = if i >= time_from {
                head_time
            } else {
                head_number
            };
            if head >= fork {
                continue;
            }
            // Our first unpassed fork: sums[i] is our current state.
            if sums[i] == remote.hash {
                let passed = remote.next > 0
                    && (head >= remote.next
                        || (remote.next > TIMESTAMP_THRESHOLD && head_time >= remote.next));
                if passed {
                    return Err(ForkIdReject::LocalIncompatibleOrStale {
                        remote: *remote,
                        ours,
                    });
                }
                return Ok(());
            }
            if let Some(j) = sums[..i].iter().position(|s| *s == remote.hash) {
                if forks[j] != remote.next {
                    return Err(ForkIdReject::RemoteStale {
                        remote: *remote,
                        ours,
                        expected_next: forks[j],
                    });
                }
                return Ok(());
            }
            if sums[i + 1..].contains(&remote.hash) {
                return Ok(());
            }
            return Err(ForkIdReject::LocalIncompatibleOrStale {
                remote: *remote,
                ours,
            });
        }
        // Unreachable: the last fork is u64::MAX and no head reaches it.
        Err(ForkIdReject::LocalIncompatibleOrStale {
            remote: *remote,
            ours,
        })
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
                1_150_000, 1_920_000, 2_463_000, 2_675_000, 2_675_000, 4_370_000, 7_280_000,
                7_280_000,
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

    /// The validation examples of EIP-2124 (mainnet, forks up to Petersburg).
    #[test]
    fn eip2124_validation_rules() {
        let s = mainnet_frontier_to_petersburg();
        let id = |hash: u32, next: u64| ForkId {
            hash: hash.to_be_bytes(),
            next,
        };
        let ok = |head: u64, remote: ForkId| s.validate(head, 0, &remote);
        // Same fork, no future fork announced.
        assert_eq!(ok(7_987_396, id(0x668db0af, 0)), Ok(()));
        // Same fork, remote announces an unknown future fork.
        assert_eq!(ok(7_987_396, id(0x668db0af, u64::MAX)), Ok(()));
        // Both in Byzantium; remote does not know Petersburg yet.
        assert_eq!(ok(7_279_999, id(0xa00bc324, 0)), Ok(()));
        // Both in Byzantium; remote knows Petersburg.
        assert_eq!(ok(7_279_999, id(0xa00bc324, 7_280_000)), Ok(()));
        // Both in Byzantium; remote announces an unknown future fork.
        assert_eq!(ok(7_279_999, id(0xa00bc324, u64::MAX)), Ok(()));
        // We are in Petersburg, remote in Byzantium and aware of Petersburg (rule 2).
        assert_eq!(ok(7_987_396, id(0xa00bc324, 7_280_000)), Ok(()));
        // We are in Petersburg, remote in Spurious Dragon and aware of Byzantium (rule 2).
        assert_eq!(ok(7_987_396, id(0x3edd5b10, 4_370_000)), Ok(()));
        // We are in Byzantium, remote in Petersburg: we are behind (rule 3).
        assert_eq!(ok(7_279_999, id(0x668db0af, 0)), Ok(()));
        // We are in Spurious Dragon, remote in Byzantium, unaware of Petersburg (rule 3).
        assert_eq!(ok(4_369_999, id(0xa00bc324, 0)), Ok(()));
        // We are in Petersburg, remote in Byzantium and unaware of Petersburg: remote stale.
        assert_eq!(
            ok(7_987_396, id(0xa00bc324, 0)),
            Err(ForkIdReject::RemoteStale {
                remote: id(0xa00bc324, 0),
                ours: id(0x668db0af, 0),
                expected_next: 7_280_000,
            })
        );
        // We are in Petersburg, remote is Rinkeby's Petersburg: another chain (rule 4).
        assert!(matches!(
            ok(7_987_396, id(0xafec6b27, 0)),
            Err(ForkIdReject::LocalIncompatibleOrStale { .. })
        ));
        // Far ahead; remote announces a fork at a block we already passed (rule 1a).
        assert!(matches!(
            ok(88_888_888, id(0x668db0af, 88_888_888)),
            Err(ForkIdReject::LocalIncompatibleOrStale { .. })
        ));
        // Both in Byzantium; remote announces a fork before Petersburg we have passed (rule 1a).
        assert!(matches!(
            ok(7_279_999, id(0xa00bc324, 7_279_999)),
            Err(ForkIdReject::LocalIncompatibleOrStale { .. })
        ));
    }

    /// Timestamp forks: the scan switches to the head time after the block forks.
    #[test]
    fn validation_with_timestamp_forks() {
        let mut s = mainnet_frontier_to_petersburg();
        s.time_forks = vec![1_700_000_000];
        let head = 8_000_000;
        let before = s.fork_id(head, 1_600_000_000);
        let after = s.fork_id(head, 1_700_000_000);
        assert_eq!(before.next, 1_700_000_000);
        assert_eq!(after.next, 0);
        assert_ne!(before.hash, after.hash);
        // A remote past the time fork while we are before it: we are behind (rule 3).
        assert_eq!(s.validate(head, 1_600_000_000, &after), Ok(()));
        // A remote before the time fork, knowing it, while we passed it (rule 2).
        assert_eq!(s.validate(head, 1_700_000_001, &before), Ok(()));
        // The same remote unaware of the time fork: remote stale.
        let unaware = ForkId {
            hash: before.hash,
            next: 0,
        };
        assert!(matches!(
            s.validate(head, 1_700_000_001, &unaware),
            Err(ForkIdReject::RemoteStale {
                expected_next: 1_700_000_000,
                ..
            })
        ));
        // Same state; the remote announces a time fork our clock already passed (rule 1a).
        let mut plain = mainnet_frontier_to_petersburg();
        plain.time_forks.clear();
        let announced = ForkId {
            hash: plain.fork_id(head, 0).hash,
            next: 1_650_000_000,
        };
        assert!(plain.validate(head, 1_650_000_000, &announced).is_err());
        assert_eq!(plain.validate(head, 1_640_000_000, &announced), Ok(()));
    }

    proptest::proptest! {
        /// Our own fork id is always compatible with ourselves, at any head.
        #[test]
        fn own_fork_id_is_compatible(head in 0u64..10_000_000, time in 0u64..2_000_000_000) {
            let mut s = mainnet_frontier_to_petersburg();
            s.time_forks = vec![1_681_338_455, 1_710_338_135];
            let ours = s.fork_id(head, time);
            proptest::prop_assert_eq!(s.validate(head, time, &ours), Ok(()));
        }
    }
}
