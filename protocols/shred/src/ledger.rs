//! A generator of signed chained merkle shreds: what a leader makes, for tests, benches and
//! `serve-repair` without real data. Deterministic for a given key and seed.

use ed25519_dalek::{Signer, SigningKey};
use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::layout::*;
use crate::merkle::{self, Hash};

pub(crate) fn write_common(
    p: &mut [u8],
    sig: &[u8; 64],
    v: Variant,
    slot: u64,
    index: u32,
    version: u16,
    fec_set_index: u32,
) {
    p[..64].copy_from_slice(sig);
    p[64] = v.encode();
    p[65..73].copy_from_slice(&slot.to_le_bytes());
    p[73..77].copy_from_slice(&index.to_le_bytes());
    p[77..79].copy_from_slice(&version.to_le_bytes());
    p[79..83].copy_from_slice(&fec_set_index.to_le_bytes());
}

fn fill(buf: &mut [u8], mut state: u64) {
    for chunk in buf.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let b = state.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// One FEC set of `num_data` data shreds and as many coding shreds. Returns the payloads
/// (data first, then coding) and the set's Merkle root.
#[allow(clippy::too_many_arguments)]
pub fn make_fec_set(
    key: &SigningKey,
    slot: u64,
    parent_offset: u16,
    version: u16,
    fec_set_index: u32,
    num_data: usize,
    last_in_slot: bool,
    chained_root: &Hash,
    seed: u64,
) -> (Vec<Vec<u8>>, Hash) {
    assert!(
        (1..=128).contains(&num_data),
        "FEC set of 1..=128 data shreds"
    );
    let num_code = num_data;
    let total = num_data + num_code;
    let proof_size = merkle::proof_size(total);
    let dv = Variant {
        shred_type: ShredType::Data,
        proof_size,
        chained: true,
        resigned: false,
    };
    let cv = Variant {
        shred_type: ShredType::Code,
        ..dv
    };
    let cap = dv.capacity().expect("proof size fits");
    let shard_len = dv.erasure_shard_len().expect("proof size fits");
    let zero_sig = [0u8; 64];
    let mut payloads = Vec::with_capacity(total);
    for i in 0..num_data {
        let mut p = vec![0u8; DATA_PAYLOAD_BYTES];
        let index = fec_set_index + i as u32;
        write_common(&mut p, &zero_sig, dv, slot, index, version, fec_set_index);
        let mut flags = (index % 64) as u8 & FLAG_TICK_MASK;
        if i + 1 == num_data {
            flags |= if last_in_slot {
                FLAG_LAST_IN_SLOT
            } else {
                FLAG_DATA_COMPLETE
            };
        }
        p[83..85].copy_from_slice(&parent_offset.to_le_bytes());
        p[85] = flags;
        let size = (SIZE_OF_DATA_SHRED_HEADERS + cap) as u16;
        p[86..88].copy_from_slice(&size.to_le_bytes());
        fill(
            &mut p[88..88 + cap],
            seed ^ slot.rotate_left(20) ^ u64::from(index).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
        );
        let off = dv.chained_root_offset().expect("fits");
        p[off..off + 32].copy_from_slice(chained_root);
        payloads.push(p);
    }
    let mut shards: Vec<Vec<u8>> = payloads
        .iter()
        .map(|p| p[64..64 + shard_len].to_vec())
        .collect();
    shards.extend((0..num_code).map(|_| vec![0u8; shard_len]));
    ReedSolomon::new(num_data, num_code)
        .expect("valid batch")
        .encode(&mut shards)
        .expect("encode");
    for pos in 0..num_code {
        let mut p = vec![0u8; CODE_PAYLOAD_BYTES];
        write_common(
            &mut p,
            &zero_sig,
            cv,
            slot,
            fec_set_index + pos as u32,
            version,
            fec_set_index,
        );
        p[83..85].copy_from_slice(&(num_data as u16).to_le_bytes());
        p[85..87].copy_from_slice(&(num_code as u16).to_le_bytes());
        p[87..89].copy_from_slice(&(pos as u16).to_le_bytes());
        p[89..89 + shard_len].copy_from_slice(&shards[num_data + pos]);
        let off = cv.chained_root_offset().expect("fits");
        p[off..off + 32].copy_from_slice(chained_root);
        payloads.push(p);
    }
    let leaves: Vec<Hash> = payloads
        .iter()
        .map(|p| {
            let v = Variant::decode(p[64], Accept::CURRENT).expect("own variant");
            merkle::leaf(&p[64..v.proof_offset().expect("fits")])
        })
        .collect();
    let tree = merkle::make_tree(&leaves);
    let root = *tree.last().expect("non-empty tree");
    let sig = key.sign(&root).to_bytes();
    for (i, p) in payloads.iter_mut().enumerate() {
        let v = Variant::decode(p[64], Accept::CURRENT).expect("own variant");
        let off = v.proof_offset().expect("fits");
        for (k, e) in merkle::make_proof(i, total, &tree)
            .expect("leaf in tree")
            .iter()
            .enumerate()
        {
            p[off + 20 * k..off + 20 * (k + 1)].copy_from_slice(e);
        }
        p[..64].copy_from_slice(&sig);
    }
    (payloads, root)
}

/// All shreds (data and coding) of one slot of `num_data_shreds` data shreds, in FEC sets
/// of 32 data shreds. Returns the payloads and the last FEC set's Merkle root (the chained
/// root of the next slot's first set).
pub fn generate_slot(
    key: &SigningKey,
    slot: u64,
    parent: u64,
    num_data_shreds: usize,
    prev_root: &Hash,
    seed: u64,
) -> (Vec<Vec<u8>>, Hash) {
    assert!(slot > parent, "slot after its parent");
    let parent_offset = u16::try_from(slot - parent).unwrap_or(u16::MAX);
    let mut out = Vec::new();
    let mut root = *prev_root;
    let mut index = 0usize;
    while index < num_data_shreds.max(1) {
        let n = (num_data_shreds.max(1) - index).min(DATA_SHREDS_PER_FEC_SET);
        let last = index + n >= num_data_shreds.max(1);
        let (p, r) = make_fec_set(
            key,
            slot,
            parent_offset,
            1,
            index as u32,
            n,
            last,
            &root,
            seed,
        );
        out.extend(p);
        root = r;
        index += n;
    }
    (out, root)
}

/// A chain of `num_slots` consecutive slots starting at `first_slot` (the parent of the
/// first is `first_slot - 1`), each of `shreds_per_slot` data shreds plus coding shreds.
pub fn generate_ledger(
    key: &SigningKey,
    first_slot: u64,
    num_slots: u64,
    shreds_per_slot: usize,
    seed: u64,
) -> Vec<Vec<u8>> {
    assert!(first_slot > 0, "slot 0 has no parent");
    let mut root = [0u8; 32];
    let mut out = Vec::new();
    for slot in first_slot..first_slot + num_slots {
        let (p, r) = generate_slot(key, slot, slot - 1, shreds_per_slot, &root, seed);
        out.extend(p);
        root = r;
    }
    out
}
