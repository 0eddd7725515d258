//! Reed-Solomon recovery of missing shreds of one FEC set (GF(2^8), as the leader encodes).

use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::layout::*;
use crate::merkle;
use crate::shred::{Kind, Shred};
use crate::ShredError;

/// Recover the missing data shreds of one FEC set from the shreds at hand (data and
/// coding, any order, at least one coding shred, at least `num_data_shreds` in total).
/// Every recovered shred is rebuilt byte for byte: headers and data from the erasure
/// shard, chained root and retransmitter signature from the set, Merkle proof from the
/// rebuilt tree, whose root must equal the root the given shreds prove.
/// Returns only the data shreds that were missing, in index order.
pub fn recover_data(shreds: &[Shred], accept: Accept) -> Result<Vec<Shred>, ShredError> {
    let template = shreds
        .iter()
        .find(|s| !s.is_data())
        .ok_or(ShredError::Fec {
            reason: "no coding shred in the set",
        })?;
    let Kind::Code(ch) = *template.kind() else {
        unreachable!("filtered on coding shreds")
    };
    let tc = *template.common();
    let root = template.merkle_root()?;
    let (nd, nc) = (
        usize::from(ch.num_data_shreds),
        usize::from(ch.num_coding_shreds),
    );
    let total = nd + nc;
    let chained_root = template.chained_merkle_root();
    let resig = template.retransmitter_signature();
    let shard_len = tc.variant.erasure_shard_len()?;
    let mut present: Vec<Option<&Shred>> = vec![None; total];
    for s in shreds {
        let c = s.common();
        if c.slot != tc.slot || c.fec_set_index != tc.fec_set_index || c.version != tc.version {
            return Err(ShredError::Fec {
                reason: "shred from another FEC set",
            });
        }
        if c.signature != tc.signature {
            return Err(ShredError::Fec {
                reason: "signature differs within the FEC set",
            });
        }
        let v = c.variant;
        if (v.proof_size, v.chained, v.resigned)
            != (
                tc.variant.proof_size,
                tc.variant.chained,
                tc.variant.resigned,
            )
        {
            return Err(ShredError::Fec {
                reason: "variant differs within the FEC set",
            });
        }
        if let Some(h) = s.coding_header() {
            if (h.num_data_shreds, h.num_coding_shreds)
                != (ch.num_data_shreds, ch.num_coding_shreds)
            {
                return Err(ShredError::Fec {
                    reason: "coding headers disagree on the batch size",
                });
            }
        }
        let i = s.erasure_shard_index()?;
        if i >= total {
            return Err(ShredError::Fec {
                reason: "erasure shard index beyond the batch",
            });
        }
        present[i] = Some(s);
    }
    if present[..nd].iter().all(Option::is_some) {
        return Ok(Vec::new());
    }
    if present.iter().filter(|p| p.is_some()).count() < nd {
        return Err(ShredError::Fec {
            reason: "fewer shreds than data shreds in the set",
        });
    }
    let mut shards: Vec<Option<Vec<u8>>> = present
        .iter()
        .map(|p| p.map(|s| s.erasure_shard().map(<[u8]>::to_vec)).transpose())
        .collect::<Result<_, _>>()?;
    if shards.iter().flatten().any(|s| s.len() != shard_len) {
        return Err(ShredError::Fec {
            reason: "erasure shard sizes differ",
        });
    }
    let rs = ReedSolomon::new(nd, nc).map_err(|_| ShredError::Fec {
        reason: "invalid batch size",
    })?;
    rs.reconstruct(&mut shards).map_err(|_| ShredError::Fec {
        reason: "reconstruction failed",
    })?;

    // Rebuild all payloads to get every leaf of the tree.
    let first_code_index = tc.index - u32::from(ch.position);
    let mut payloads: Vec<Vec<u8>> = Vec::with_capacity(total);
    for (i, shard) in shards.into_iter().enumerate() {
        if let Some(s) = present[i] {
            payloads.push(s.payload().to_vec());
            continue;
        }
        let shard = shard.ok_or(ShredError::Fec {
            reason: "reconstruction left a hole",
        })?;
        let mut p;
        if i < nd {
            let v = Variant {
                shred_type: ShredType::Data,
                ..tc.variant
            };
            p = vec![0u8; DATA_PAYLOAD_BYTES];
            p[..64].copy_from_slice(&tc.signature);
            p[64..64 + shard_len].copy_from_slice(&shard);
            finish_payload(&mut p, v, chained_root, resig)?;
        } else {
            let v = tc.variant;
            let pos = (i - nd) as u16;
            p = vec![0u8; CODE_PAYLOAD_BYTES];
            crate::ledger::write_common(
                &mut p,
                &tc.signature,
                v,
                tc.slot,
                first_code_index + u32::from(pos),
                tc.version,
                tc.fec_set_index,
            );
            p[83..85].copy_from_slice(&ch.num_data_shreds.to_le_bytes());
            p[85..87].copy_from_slice(&ch.num_coding_shreds.to_le_bytes());
            p[87..89].copy_from_slice(&pos.to_le_bytes());
            p[89..89 + shard_len].copy_from_slice(&shard);
            finish_payload(&mut p, v, chained_root, resig)?;
        }
        payloads.push(p);
    }
    let leaves: Vec<merkle::Hash> = payloads
        .iter()
        .map(|p| {
            let v = peek_variant(p, accept)?;
            Ok(merkle::leaf(&p[SIZE_OF_SIGNATURE..v.proof_offset()?]))
        })
        .collect::<Result<_, ShredError>>()?;
    let tree = merkle::make_tree(&leaves);
    if tree.last() != Some(&root) {
        return Err(ShredError::Fec {
            reason: "recovered shreds do not rebuild the signed Merkle root",
        });
    }
    let mut out = Vec::new();
    for i in 0..nd {
        if present[i].is_some() {
            continue;
        }
        let proof =
            merkle::make_proof(i, total, &tree).ok_or(ShredError::Fec { reason: "proof" })?;
        let p = &mut payloads[i];
        let v = peek_variant(p, accept)?;
        let off = v.proof_offset()?;
        if proof.len() != usize::from(v.proof_size) {
            return Err(ShredError::Fec {
                reason: "proof size does not match the batch size",
            });
        }
        for (k, e) in proof.iter().enumerate() {
            p[off + 20 * k..off + 20 * (k + 1)].copy_from_slice(e);
        }
        let shred = Shred::from_bytes_with(p, accept)?;
        if shred.index() != tc.fec_set_index + i as u32 || shred.slot() != tc.slot {
            return Err(ShredError::Fec {
                reason: "recovered shred has the wrong slot or index",
            });
        }
        out.push(shred);
    }
    Ok(out)
}

fn finish_payload(
    p: &mut [u8],
    v: Variant,
    chained_root: Option<merkle::Hash>,
    resig: Option<[u8; 64]>,
) -> Result<(), ShredError> {
    if let Some(r) = chained_root {
        let off = v.chained_root_offset()?;
        p[off..off + 32].copy_from_slice(&r);
    }
    if let Some(s) = resig {
        let off = v.retransmitter_signature_offset()?;
        p[off..off + 64].copy_from_slice(&s);
    }
    Ok(())
}
