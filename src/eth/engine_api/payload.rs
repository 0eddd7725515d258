//! The `blockHash` check of `engine_newPayload` (execution-apis `paris.md` point 2, which a
//! node runs even while it syncs): the execution block header is rebuilt from the payload's
//! fields and the constants of EIP-3675 (no ommers, difficulty 0, nonce 0), with
//! `mixHash = prevRandao` (EIP-4399), the transactions and withdrawals roots computed from
//! the payload's lists, and from Cancun the blob gas fields and the parent beacon block
//! root, from Prague the requests hash (EIP-7685) of the execution requests; its keccak
//! must equal `blockHash`.

use alloy_primitives::{keccak256, Address, Bloom, Bytes, B256, B64, U256};
use catchup_eth::{ordered_root, Header, Withdrawal, EMPTY_OMMERS_HASH};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Why a payload could not be turned into a header (its parameters are malformed).
pub type FieldError = String;

fn get<'a>(p: &'a Map<String, Value>, k: &str) -> Result<&'a str, FieldError> {
    p.get(k)
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("{k} missing"))
}

/// `DATA`: `0x` and an even number of hex digits.
pub fn data(s: &str) -> Option<Vec<u8>> {
    let h = s.strip_prefix("0x")?;
    if h.len() % 2 != 0 {
        return None;
    }
    hex::decode(h).ok()
}

fn data_field(p: &Map<String, Value>, k: &str) -> Result<Vec<u8>, FieldError> {
    data(get(p, k)?).ok_or_else(|| format!("{k} is not DATA"))
}

fn fixed<const N: usize>(p: &Map<String, Value>, k: &str) -> Result<[u8; N], FieldError> {
    let b = data_field(p, k)?;
    b.try_into()
        .map_err(|b: Vec<u8>| format!("{k} is {} bytes, not {N}", b.len()))
}

/// `QUANTITY`: `0x` and hex digits without leading zeros (0 is `0x0`).
pub fn quantity(s: &str) -> Option<U256> {
    let h = s.strip_prefix("0x")?;
    if h.is_empty() || h.len() > 64 || (h.len() > 1 && h.starts_with('0')) {
        return None;
    }
    U256::from_str_radix(h, 16).ok()
}

fn q64(p: &Map<String, Value>, k: &str) -> Result<u64, FieldError> {
    let q = quantity(get(p, k)?).ok_or_else(|| format!("{k} is not a QUANTITY"))?;
    u64::try_from(q).map_err(|_| format!("{k} exceeds 64 bits"))
}

/// The withdrawals of a payload (V2 and later), when present.
fn withdrawals(p: &Map<String, Value>) -> Result<Option<Vec<Withdrawal>>, FieldError> {
    let list = match p.get("withdrawals") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(l)) => l,
        Some(_) => return Err("withdrawals is not an array".into()),
    };
    let mut out = Vec::with_capacity(list.len());
    for w in list {
        let w = w
            .as_object()
            .ok_or_else(|| "a withdrawal is not an object".to_string())?;
        out.push(Withdrawal {
            index: q64(w, "index")?,
            validator_index: q64(w, "validatorIndex")?,
            address: Address::from(fixed::<20>(w, "address")?),
            amount_gwei: q64(w, "amount")?,
        });
    }
    Ok(Some(out))
}

/// The blob versioned hashes of a payload's transactions, in order of inclusion: field 10
/// of each EIP-4844 transaction (`0x03 ‖ rlp([chain_id, nonce, …, blob_versioned_hashes,
/// y_parity, r, s])`). A blob transaction that does not decode is an error.
pub fn blob_versioned_hashes(txs: &[Vec<u8>]) -> Result<Vec<B256>, String> {
    let mut out = Vec::new();
    for (i, t) in txs.iter().enumerate() {
        if t.first() != Some(&3) {
            continue;
        }
        let bad = |e: String| format!("blob transaction {i}: {e}");
        let item = catchup_eth::rlp::parse_exact(&t[1..]).map_err(|e| bad(e.to_string()))?;
        let fields = item.items(16).map_err(|e| bad(e.to_string()))?;
        if fields.len() != 14 {
            return Err(bad(format!("{} fields, not 14", fields.len())));
        }
        for h in fields[10].items(4096).map_err(|e| bad(e.to_string()))? {
            let b = h.bytes().map_err(|e| bad(e.to_string()))?;
            if b.len() != 32 {
                return Err(bad(format!("a versioned hash of {} bytes", b.len())));
            }
            out.push(B256::from_slice(b));
        }
    }
    Ok(out)
}

/// EIP-7685: `sha256(sha256(r_0) ‖ sha256(r_1) ‖ …)` over the requests (each `type ‖ data`).
pub fn requests_hash(requests: &[Vec<u8>]) -> B256 {
    let mut outer = Sha256::new();
    for r in requests {
        outer.update(Sha256::digest(r));
    }
    B256::from_slice(&outer.finalize())
}

/// The header a payload stands for. `version` is the newPayload version (1–4); the
/// beacon root and the execution requests are the V3 and V4 parameters.
pub fn header_of(
    p: &Map<String, Value>,
    version: u8,
    parent_beacon_block_root: Option<B256>,
    execution_requests: Option<&[Vec<u8>]>,
) -> Result<Header, FieldError> {
    let txs = p
        .get("transactions")
        .and_then(|t| t.as_array())
        .ok_or_else(|| "transactions missing".to_string())?;
    let txs: Vec<Vec<u8>> = txs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            t.as_str()
                .and_then(data)
                .ok_or_else(|| format!("transaction {i} is not DATA"))
        })
        .collect::<Result<_, _>>()?;
    let extra = data_field(p, "extraData")?;
    if extra.len() > 32 {
        return Err(format!("extraData is {} bytes, more than 32", extra.len()));
    }
    let withdrawals = if version >= 2 { withdrawals(p)? } else { None };
    if version >= 3 && withdrawals.is_none() {
        return Err("withdrawals missing".into());
    }
    let (blob_gas_used, excess_blob_gas) = if version >= 3 {
        (Some(q64(p, "blobGasUsed")?), Some(q64(p, "excessBlobGas")?))
    } else {
        (None, None)
    };
    Ok(Header {
        parent_hash: B256::from(fixed::<32>(p, "parentHash")?),
        ommers_hash: EMPTY_OMMERS_HASH,
        beneficiary: Address::from(fixed::<20>(p, "feeRecipient")?),
        state_root: B256::from(fixed::<32>(p, "stateRoot")?),
        transactions_root: ordered_root(&txs),
        receipts_root: B256::from(fixed::<32>(p, "receiptsRoot")?),
        logs_bloom: Bloom::from(fixed::<256>(p, "logsBloom")?),
        difficulty: U256::ZERO,
        number: q64(p, "blockNumber")?,
        gas_limit: q64(p, "gasLimit")?,
        gas_used: q64(p, "gasUsed")?,
        timestamp: q64(p, "timestamp")?,
        extra_data: Bytes::from(extra),
        mix_hash: B256::from(fixed::<32>(p, "prevRandao")?),
        nonce: B64::ZERO,
        base_fee_per_gas: Some(q64(p, "baseFeePerGas")?),
        withdrawals_root: withdrawals
            .as_ref()
            .map(|w| catchup_eth::verify::withdrawals_root(w)),
        blob_gas_used,
        excess_blob_gas,
        parent_beacon_block_root: if version >= 3 {
            parent_beacon_block_root
        } else {
            None
        },
        requests_hash: if version >= 4 {
            execution_requests.map(requests_hash)
        } else {
            None
        },
        later_fields: Vec::new(),
    })
}

/// Check `blockHash`: `Ok(None)` when it matches, `Ok(Some(why))` when it does not.
pub fn check_block_hash(
    p: &Map<String, Value>,
    version: u8,
    parent_beacon_block_root: Option<B256>,
    execution_requests: Option<&[Vec<u8>]>,
) -> Result<Option<String>, FieldError> {
    let claimed = B256::from(fixed::<32>(p, "blockHash")?);
    let h = header_of(p, version, parent_beacon_block_root, execution_requests)?;
    let computed = keccak256(h.encode());
    Ok((computed != claimed)
        .then(|| format!("blockHash {claimed} is not the payload's header hash {computed}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hx(b: &[u8]) -> String {
        format!("0x{}", hex::encode(b))
    }

    fn q(v: u64) -> String {
        format!("{v:#x}")
    }

    /// The devnet's head block (Prague: withdrawals, blob gas, beacon root, requests hash)
    /// as a consensus client would send it in engine_newPayloadV4.
    #[test]
    fn the_devnet_head_block_as_a_payload_hashes_to_its_hash() {
        let dir = std::env::var_os("CATCHUP_FIXTURES")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures")
            })
            .join("ethereum/devnet/chain.rlp");
        let Ok(raw) = std::fs::read(&dir) else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("devnet fixture missing at {} (CI=true)", dir.display());
            }
            eprintln!("skipped: devnet fixture missing at {}", dir.display());
            return;
        };
        let blocks = catchup_eth::decode_block_sequence(&raw, 100_000).unwrap();
        let b = blocks.last().unwrap();
        let h = &b.header;
        assert_eq!(
            format!("{}", h.hash()),
            "0x44e3809c9a3cda717f00aea3a9da336d149612c8d5657fbc0028176ef8d94d2a"
        );
        let ws: Vec<Value> = b
            .body
            .withdrawals
            .as_ref()
            .unwrap()
            .iter()
            .map(|w| {
                json!({"index": q(w.index), "validatorIndex": q(w.validator_index),
                       "address": hx(w.address.as_slice()), "amount": q(w.amount_gwei)})
            })
            .collect();
        assert!(!ws.is_empty(), "the head block has withdrawals");
        let txs: Vec<String> = b.body.transactions.iter().map(|t| hx(&t.encoded)).collect();
        let p = json!({
            "parentHash": hx(h.parent_hash.as_slice()), "feeRecipient": hx(h.beneficiary.as_slice()),
            "stateRoot": hx(h.state_root.as_slice()), "receiptsRoot": hx(h.receipts_root.as_slice()),
            "logsBloom": hx(h.logs_bloom.as_slice()), "prevRandao": hx(h.mix_hash.as_slice()),
            "blockNumber": q(h.number), "gasLimit": q(h.gas_limit), "gasUsed": q(h.gas_used),
            "timestamp": q(h.timestamp), "extraData": hx(&h.extra_data),
            "baseFeePerGas": q(h.base_fee_per_gas.unwrap()), "blockHash": hx(h.hash().as_slice()),
            "transactions": txs, "withdrawals": ws,
            "blobGasUsed": q(h.blob_gas_used.unwrap()), "excessBlobGas": q(h.excess_blob_gas.unwrap()),
        });
        let p = p.as_object().unwrap();
        let beacon = h.parent_beacon_block_root;
        assert_eq!(check_block_hash(p, 4, beacon, Some(&[])), Ok(None));
        // A different beacon root, requests, fee recipient or withdrawal: another hash.
        assert!(check_block_hash(p, 4, Some(B256::ZERO), Some(&[]))
            .unwrap()
            .is_some());
        assert!(check_block_hash(p, 4, beacon, Some(&[vec![0, 1]]))
            .unwrap()
            .is_some());
        let mut other = p.clone();
        other.insert("feeRecipient".into(), json!(hx(&[1; 20])));
        assert!(check_block_hash(&other, 4, beacon, Some(&[]))
            .unwrap()
            .is_some());
        let mut other = p.clone();
        other["withdrawals"][0]["amount"] = json!("0x1");
        assert!(check_block_hash(&other, 4, beacon, Some(&[]))
            .unwrap()
            .is_some());
        // Malformed fields are errors, not hashes.
        let mut bad = p.clone();
        bad.insert("gasUsed".into(), json!("0x01"));
        assert!(check_block_hash(&bad, 4, beacon, Some(&[])).is_err());
        let mut bad = p.clone();
        bad.remove("excessBlobGas");
        assert!(check_block_hash(&bad, 4, beacon, Some(&[])).is_err());
    }

    #[test]
    fn blob_hashes_are_read_from_type_3_transactions_only() {
        use catchup_eth::rlp::{bytes_item, encode_list_of_raw, u64_item, wrap_list};
        let hs = [B256::from([1; 32]), B256::from([2; 32])];
        let hash_items: Vec<Vec<u8>> = hs.iter().map(|h| bytes_item(h.as_slice())).collect();
        let mut hash_list = Vec::new();
        encode_list_of_raw(hash_items.iter().map(|v| v.as_slice()), &mut hash_list);
        let mut fields: Vec<Vec<u8>> = (0..10).map(u64_item).collect();
        fields.push(hash_list);
        fields.extend((0..3).map(u64_item));
        let mut blob_tx = vec![3u8];
        blob_tx.extend(wrap_list(&fields.concat()));
        let legacy = wrap_list(&(0..9).map(u64_item).collect::<Vec<_>>().concat());
        assert_eq!(
            blob_versioned_hashes(&[legacy.clone(), blob_tx.clone(), vec![2, 0xc0]]).unwrap(),
            hs.to_vec()
        );
        assert!(blob_versioned_hashes(&[legacy]).unwrap().is_empty());
        assert!(blob_versioned_hashes(&[vec![3, 0xc0]]).is_err());
        assert!(blob_versioned_hashes(&[blob_tx[..blob_tx.len() - 1].to_vec()]).is_err());
    }

    #[test]
    fn requests_hash_of_nothing_is_sha256_of_nothing() {
        assert_eq!(
            format!("{}", requests_hash(&[])),
            "0xe3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn quantities_are_canonical() {
        assert_eq!(quantity("0x0"), Some(U256::ZERO));
        assert_eq!(quantity("0x1f"), Some(U256::from(31)));
        for bad in ["0x", "0x01", "1f", "0xg"] {
            assert_eq!(quantity(bad), None, "{bad}");
        }
    }
}
