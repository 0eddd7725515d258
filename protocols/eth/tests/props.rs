//! Property tests: round-trips of every codec, range proofs against built tries, and
//! random bytes thrown at every decoder.

use catchup_eth::era1::Era1;
use catchup_eth::rlp::Value;
use catchup_eth::*;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

fn b256() -> impl Strategy<Value = B256> {
    any::<[u8; 32]>().prop_map(B256::from)
}
fn address() -> impl Strategy<Value = Address> {
    any::<[u8; 20]>().prop_map(Address::from)
}
fn u256() -> impl Strategy<Value = U256> {
    prop_oneof![
        any::<u64>().prop_map(U256::from),
        any::<[u8; 32]>().prop_map(U256::from_be_bytes)
    ]
}

fn header() -> impl Strategy<Value = Header> {
    (
        (
            b256(),
            b256(),
            address(),
            b256(),
            b256(),
            b256(),
            any::<[u8; 256]>().prop_map(Bloom::from),
        ),
        (
            u256(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            vec(any::<u8>(), 0..40),
            b256(),
            any::<u64>(),
        ),
        0usize..=6,
        (
            any::<u64>(),
            b256(),
            any::<u64>(),
            any::<u64>(),
            b256(),
            b256(),
        ),
    )
        .prop_map(
            |(
                (ph, oh, ben, sr, tr, rr, bloom),
                (d, n, gl, gu, ts, extra, mh, nonce),
                forks,
                opt,
            )| Header {
                parent_hash: ph,
                ommers_hash: oh,
                beneficiary: ben,
                state_root: sr,
                transactions_root: tr,
                receipts_root: rr,
                logs_bloom: bloom,
                difficulty: d,
                number: n,
                gas_limit: gl,
                gas_used: gu,
                timestamp: ts,
                extra_data: extra.into(),
                mix_hash: mh,
                nonce: B64::from(nonce.to_be_bytes()),
                base_fee_per_gas: (forks > 0).then_some(opt.0),
                withdrawals_root: (forks > 1).then_some(opt.1),
                blob_gas_used: (forks > 2).then_some(opt.2),
                excess_blob_gas: (forks > 3).then_some(opt.3),
                parent_beacon_block_root: (forks > 4).then_some(opt.4),
                requests_hash: (forks > 5).then_some(opt.5),
                later_fields: Vec::new(),
            },
        )
}

fn rlp_value() -> impl Strategy<Value = Value> {
    let leaf = vec(any::<u8>(), 0..70).prop_map(Value::Bytes);
    leaf.prop_recursive(4, 64, 8, |inner| vec(inner, 0..8).prop_map(Value::List))
}

/// A transaction envelope of a random type with the right number of fields.
fn tx() -> impl Strategy<Value = TxEnvelope> {
    (0u8..5, vec(vec(any::<u8>(), 0..40), 14)).prop_map(|(t, fields)| {
        let ty = if t == 0 {
            TxType::Legacy
        } else {
            TxType::from_byte(t).unwrap()
        };
        let v = Value::List(
            fields[..ty.field_count()]
                .iter()
                .map(|f| Value::Bytes(f.clone()))
                .collect(),
        );
        let mut enc = Vec::new();
        if ty != TxType::Legacy {
            enc.push(ty.as_byte());
        }
        enc.extend_from_slice(&v.encode());
        TxEnvelope::decode(&enc).unwrap()
    })
}

fn log() -> impl Strategy<Value = Log> {
    (address(), vec(b256(), 0..4), vec(any::<u8>(), 0..64)).prop_map(|(a, t, d)| Log {
        address: a,
        topics: t,
        data: d.into(),
    })
}

fn receipt() -> impl Strategy<Value = Receipt> {
    (0u8..5, any::<bool>(), any::<u64>(), vec(log(), 0..3)).prop_map(|(t, ok, gas, logs)| Receipt {
        tx_type: if t == 0 { None } else { TxType::from_byte(t) },
        outcome: ReceiptOutcome::Status(ok),
        cumulative_gas_used: gas,
        logs_bloom: logs_bloom(&logs),
        logs,
    })
}

fn withdrawal() -> impl Strategy<Value = Withdrawal> {
    (any::<u64>(), any::<u64>(), address(), any::<u64>()).prop_map(|(i, v, a, g)| Withdrawal {
        index: i,
        validator_index: v,
        address: a,
        amount_gwei: g,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn rlp_value_round_trip(v in rlp_value()) {
        let enc = v.encode();
        prop_assert_eq!(Value::decode(&enc).unwrap(), v);
    }

    #[test]
    fn header_round_trip(h in header()) {
        let enc = h.encode();
        let d = Header::decode(&enc).unwrap();
        prop_assert_eq!(&d, &h);
        prop_assert_eq!(d.hash(), keccak256(&enc));
        prop_assert_eq!(alloy_rlp::Encodable::length(&h), enc.len());
        prop_assert_eq!(Header::decode_with_hash(&enc).unwrap(), (h.clone(), keccak256(&enc)));
    }

    #[test]
    fn header_ref_reads_what_the_header_decodes(mut h in header(), later in vec(rlp_value(), 0..3)) {
        // Fields after Prague's follow a header that has all of Prague's.
        if h.requests_hash.is_some() {
            h.later_fields = later.iter().map(|v| Bytes::from(v.encode())).collect();
        }
        let enc = h.encode();
        let r = HeaderRef::decode(&enc).unwrap();
        prop_assert_eq!(&r.to_header().unwrap(), &h);
        prop_assert_eq!(r.extra_data, &h.extra_data[..]);
        prop_assert_eq!(&r.logs_bloom[..], h.logs_bloom.as_slice());
        prop_assert_eq!(Header::decode(&enc).unwrap(), h);
    }

    #[test]
    fn block_round_trip(h in header(), txs in vec(tx(), 0..5), ommers in vec(header(), 0..2),
                        ws in proptest::option::of(vec(withdrawal(), 0..4))) {
        let b = Block { header: h, body: BlockBody { transactions: txs, ommers, withdrawals: ws } };
        let enc = b.encode();
        prop_assert_eq!(Block::decode(&enc).unwrap(), b.clone());
        prop_assert_eq!(BlockBody::decode(&b.body.encode()).unwrap(), b.body.clone());
        if verify_body(&b.header, &b.body).is_ok() {
            prop_assert_eq!(verify_body_encoded(&b.header, &b.body.encode()).unwrap(), b.body.clone());
        }
        let mut h2 = b.header.clone();
        h2.transactions_root = transactions_root(&b.body);
        h2.ommers_hash = ommers_hash(&b.body.ommers);
        h2.withdrawals_root = b.body.withdrawals.as_deref().map(withdrawals_root);
        // a header with withdrawals needs base fee present to stay positional
        if h2.withdrawals_root.is_some() && h2.base_fee_per_gas.is_none() { h2.base_fee_per_gas = Some(7); }
        if h2.withdrawals_root.is_none() { h2.blob_gas_used = None; h2.excess_blob_gas = None;
            h2.parent_beacon_block_root = None; h2.requests_hash = None; }
        prop_assert!(verify_body(&h2, &b.body).is_ok());
    }

    #[test]
    fn receipts_round_trip(rs in vec(receipt(), 0..5)) {
        let enc = encode_receipts(&rs);
        prop_assert_eq!(decode_receipts(&enc).unwrap(), rs.clone());
        let enc69 = encode_receipts_eth69(&rs);
        prop_assert_eq!(decode_receipts_eth69(&enc69).unwrap(), rs.clone());
        for r in &rs {
            prop_assert_eq!(&Receipt::decode_consensus(&r.encode_consensus()).unwrap(), r);
        }
        prop_assert_eq!(catchup_eth::verify::receipts_root_encoded(&enc).unwrap(), receipts_root(&rs));
        let hdr = Header { receipts_root: receipts_root(&rs), number: 5, ..Default::default() };
        prop_assert_eq!(verify_receipts_encoded(&hdr, &enc).unwrap(), rs.clone());
        let wrong = Header { receipts_root: B256::ZERO, number: 5, ..Default::default() };
        let e = verify_receipts_encoded(&wrong, &enc).unwrap_err();
        let mismatch = matches!(e, BlockDataError::Verify(VerifyError::Mismatch { number: 5, field: Field::ReceiptsRoot, .. }));
        prop_assert!(mismatch);
        let truncated = verify_receipts_encoded(&hdr, &enc[..enc.len() - 1]);
        let decode_err = matches!(truncated, Err(BlockDataError::Decode { number: 5, .. }));
        prop_assert!(decode_err);
        let h = Header { receipts_root: receipts_root(&rs), number: 9, ..Default::default() };
        prop_assert!(verify_receipts(&h, &rs).is_ok());
        if !rs.is_empty() {
            let mut bad = rs.clone();
            bad[0].cumulative_gas_used ^= 1;
            let e = verify_receipts(&h, &bad).unwrap_err();
            prop_assert_eq!((e.number(), e.field()), (9, Field::ReceiptsRoot));
        }
    }

    #[test]
    fn account_round_trip(nonce in any::<u64>(), bal in u256(), sr in proptest::option::of(b256()),
                          ch in proptest::option::of(b256())) {
        let a = Account { nonce, balance: bal, storage_root: sr.unwrap_or(EMPTY_ROOT),
                          code_hash: ch.unwrap_or(EMPTY_CODE_HASH) };
        prop_assert_eq!(Account::decode(&a.encode()).unwrap(), a);
        prop_assert_eq!(Account::decode_slim(&a.encode_slim()).unwrap(), a);
        prop_assert_eq!(Account::slim_to_full(&a.encode_slim()).unwrap(), a.encode());
    }

    #[test]
    fn node_round_trip_and_child_refs(pairs in btree_map(vec(any::<u8>(), 1..6), vec(any::<u8>(), 1..40), 1..60)) {
        let t = TrieBuilder::new(pairs.iter());
        prop_assert_eq!(t.root(), trie_root(pairs.iter()));
        let mut found = 0usize;
        for (h, n) in t.nodes() {
            let node = verify_node(*h, n).unwrap();
            prop_assert_eq!(&node.encode(), &n.to_vec());
            for c in child_refs(n, &Nibbles::new()).unwrap() {
                if let Some(ch) = c.hash() { prop_assert!(t.nodes().contains_key(&ch)); }
            }
            found += node_contents(n, &Nibbles::new()).unwrap().leaves.len();
        }
        // Walking from the root with real paths reaches every leaf exactly once.
        let mut stack = vec![(t.root(), Nibbles::new())];
        let mut leaves = Vec::new();
        while let Some((h, p)) = stack.pop() {
            let c = node_contents(&t.nodes()[&h], &p).unwrap();
            stack.extend(c.hashed_children);
            leaves.extend(c.leaves);
        }
        leaves.sort();
        let expected: Vec<(Nibbles, Bytes)> = pairs.iter().map(|(k, v)| (Nibbles::unpack(k), Bytes::from(v.clone()))).collect();
        prop_assert_eq!(leaves, expected);
        prop_assert!(found >= pairs.len());
    }
}

// ------------------------------------------------------------------ range proofs

type RangeCase = (Vec<(Vec<u8>, Vec<u8>)>, usize, usize, bool);

fn range_case() -> impl Strategy<Value = RangeCase> {
    (1usize..5)
        .prop_flat_map(|klen| btree_map(vec(any::<u8>(), klen), vec(any::<u8>(), 1..48), 1..80))
        .prop_flat_map(|m| {
            let n = m.len();
            let pairs: Vec<_> = m.into_iter().collect();
            (Just(pairs), 0..n, 0..n, any::<bool>())
        })
        .prop_map(|(p, a, b, gap)| {
            let (i, j) = if a <= b { (a, b) } else { (b, a) };
            (p, i, j, gap)
        })
}

/// A range `i..=j` of a [`range_case`]: the whole trie, the range's keys and values, the
/// range's first key (a key below the first element when `gap` and one exists) and the
/// edge proof from it to the last key.
struct RangeInput<'a> {
    t: TrieBuilder,
    keys: Vec<&'a [u8]>,
    vals: Vec<&'a [u8]>,
    first: Vec<u8>,
    proof: Vec<Bytes>,
}

fn range_input(pairs: &[(Vec<u8>, Vec<u8>)], i: usize, j: usize, gap: bool) -> RangeInput<'_> {
    let t = TrieBuilder::new(pairs.iter().map(|(k, v)| (k, v)));
    let keys: Vec<&[u8]> = pairs[i..=j].iter().map(|p| p.0.as_slice()).collect();
    let vals: Vec<&[u8]> = pairs[i..=j].iter().map(|p| p.1.as_slice()).collect();
    let first = if gap {
        key_before(i.checked_sub(1).map(|x| pairs[x].0.as_slice()), keys[0])
            .unwrap_or(keys[0].to_vec())
    } else {
        keys[0].to_vec()
    };
    let proof = t.prove_range(&first, keys[keys.len() - 1]);
    RangeInput {
        t,
        keys,
        vals,
        first,
        proof,
    }
}

/// A key strictly between `lo` (exclusive, may be None) and `hi`, if one exists.
fn key_before(lo: Option<&[u8]>, hi: &[u8]) -> Option<Vec<u8>> {
    let mut k = hi.to_vec();
    // decrement big-endian
    for i in (0..k.len()).rev() {
        if k[i] > 0 {
            k[i] -= 1;
            break;
        }
        k[i] = 0xff;
        if i == 0 {
            return None;
        }
    }
    match lo {
        Some(lo) if k.as_slice() <= lo => None,
        _ => Some(k),
    }
}

/// [`verify_range_proof`], checked to agree with [`verify_range_proof_interior`] (which
/// builds the range another way): both accept with the same answer, or both reject.
fn vrp(
    root: B256,
    first: &[u8],
    keys: &[impl AsRef<[u8]>],
    values: &[impl AsRef<[u8]>],
    proof: &[Bytes],
) -> Result<bool, ProofError> {
    let plain = verify_range_proof(root, first, keys, values, proof);
    let interior = verify_range_proof_interior(root, first, keys, values, proof).map(|r| r.0);
    assert_eq!(plain.is_ok(), interior.is_ok(), "{plain:?} / {interior:?}");
    if let (Ok(a), Ok(b)) = (&plain, &interior) {
        assert_eq!(a, b);
    }
    plain
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn range_proofs_verify_and_tampering_fails((pairs, i, j, gap) in range_case()) {
        let RangeInput { t, keys, vals, first, proof } = range_input(&pairs, i, j, gap);
        let root = t.root();
        let n = pairs.len();
        let more = vrp(root, &first, &keys, &vals, &proof);
        prop_assert_eq!(more, Ok(j < n - 1));

        // The whole set without a proof.
        let all_k: Vec<&[u8]> = pairs.iter().map(|p| p.0.as_slice()).collect();
        let all_v: Vec<&[u8]> = pairs.iter().map(|p| p.1.as_slice()).collect();
        prop_assert_eq!(vrp(root, all_k[0], &all_k, &all_v, &[]), Ok(false));
        if n > 1 {
            prop_assert!(vrp(root, all_k[0], &all_k[1..], &all_v[1..], &[]).is_err());
        }

        // A bloated proof (every node of the trie) still verifies: extra nodes are unused.
        let bloated: Vec<Bytes> = t.nodes().values().cloned().collect();
        prop_assert_eq!(vrp(root, &first, &keys, &vals, &bloated), Ok(j < n - 1));
        // Values in the range must not be empty (deletions are not allowed).
        let mut empties = vals.clone();
        empties[0] = b"";
        prop_assert!(vrp(root, &first, &keys, &empties, &proof).is_err());
        // Keys out of order are rejected.
        if keys.len() >= 2 {
            let mut swapped = keys.clone();
            swapped.swap(0, 1);
            prop_assert!(vrp(root, &first, &swapped, &vals, &proof).is_err());
        }
        // Tampered proof node.
        for idx in 0..proof.len() {
            let mut bad = proof.clone();
            let mut node = bad[idx].to_vec();
            let pos = node.len() / 2;
            node[pos] ^= 0x01;
            bad[idx] = node.into();
            prop_assert!(vrp(root, &first, &keys, &vals, &bad).is_err(), "tampered node {}", idx);
        }
        // Altered value.
        let mut vals2: Vec<Vec<u8>> = vals.iter().map(|v| v.to_vec()).collect();
        let m = vals2.len() / 2;
        vals2[m].push(0x42);
        prop_assert!(vrp(root, &first, &keys, &vals2, &proof).is_err());
        // Dropped element in the interior (a gap).
        if keys.len() >= 3 {
            let mut k2 = keys.clone();
            let mut v2 = vals.clone();
            k2.remove(1);
            v2.remove(1);
            prop_assert!(vrp(root, &first, &k2, &v2, &proof).is_err());
        }
        // Dropped first element (inside [first, last] whether or not the proof is for it).
        if keys.len() >= 2 {
            prop_assert!(vrp(root, &first, &keys[1..], &vals[1..], &proof).is_err());
        }
        // An extra element that is not in the trie, inside the range.
        if keys.len() >= 2 {
            if let Some(extra) = key_before(Some(keys[0]), keys[1]) {
                let mut k2: Vec<&[u8]> = keys.clone();
                let mut v2 = vals.clone();
                k2.insert(1, &extra);
                v2.insert(1, b"extra");
                prop_assert!(vrp(root, &first, &k2, &v2, &proof).is_err());
            }
        }
        // Empty range above the last key proves there is nothing more; below, it fails.
        let last_key = &pairs[n - 1].0;
        if let Some(above) = increment(last_key) {
            let p = t.prove(&above);
            prop_assert_eq!(vrp(root, &above, &Vec::<&[u8]>::new(), &Vec::<&[u8]>::new(), &p), Ok(false));
        }
        let p = t.prove(&first);
        prop_assert!(vrp(root, &first, &Vec::<&[u8]>::new(), &Vec::<&[u8]>::new(), &p).is_err());
        // Single-key proofs of every key in the range.
        for (k, v) in keys.iter().zip(&vals) {
            prop_assert_eq!(verify_proof(root, k, &t.prove(k)).unwrap().map(|b| b.to_vec()), Some(v.to_vec()));
        }
    }
}

fn increment(k: &[u8]) -> Option<Vec<u8>> {
    let mut k = k.to_vec();
    for i in (0..k.len()).rev() {
        if k[i] < 0xff {
            k[i] += 1;
            return Some(k);
        }
        k[i] = 0;
    }
    None
}

#[test]
fn range_proof_with_secure_keys_and_large_values() {
    // 32-byte keys, account-sized values: the shape snap serves.
    let pairs: Vec<(B256, Vec<u8>)> = (0u32..2000)
        .map(|i| {
            let a = Account {
                nonce: i as u64,
                balance: U256::from(i) * U256::from(1_000_000_007u64),
                ..Default::default()
            };
            (keccak256(i.to_le_bytes()), a.encode_slim())
        })
        .collect();
    let t = TrieBuilder::new(pairs.iter().map(|(k, v)| (k.0, v)));
    let sorted: Vec<_> = t.leaves().iter().collect();
    for (i, j) in [(0usize, 99usize), (500, 999), (1900, 1999), (1234, 1234)] {
        let keys: Vec<&[u8]> = sorted[i..=j].iter().map(|p| p.0.as_slice()).collect();
        let vals: Vec<&[u8]> = sorted[i..=j].iter().map(|p| p.1.as_slice()).collect();
        let proof = t.prove_range(keys[0], keys[keys.len() - 1]);
        assert_eq!(
            verify_range_proof(t.root(), keys[0], &keys, &vals, &proof),
            Ok(j < 1999)
        );
        let from_zero = [0u8; 32];
        if i == 0 {
            let proof = t.prove_range(&from_zero, keys[keys.len() - 1]);
            assert_eq!(
                verify_range_proof(t.root(), &from_zero, &keys, &vals, &proof),
                Ok(true)
            );
        }
    }
}

// ------------------------------------------------------------------ fuzz-style

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn decoders_never_panic_on_random_bytes(bytes in vec(any::<u8>(), 0..600)) {
        let _ = Value::decode(&bytes);
        let _ = catchup_eth::rlp::validate_canonical(&bytes);
        let _ = Header::decode(&bytes);
        let _ = Block::decode(&bytes);
        let _ = BlockBody::decode(&bytes);
        let _ = TxEnvelope::decode(&bytes);
        let _ = Withdrawal::decode(&bytes);
        let _ = Receipt::decode_consensus(&bytes);
        let _ = decode_receipts(&bytes);
        let _ = decode_receipts_eth69(&bytes);
        let _ = decode_block_sequence(&bytes, 16);
        let _ = decode_header_list(&bytes, 16);
        let _ = Account::decode(&bytes);
        let _ = Account::decode_slim(&bytes);
        let _ = Node::decode(&bytes);
        let _ = child_refs(&bytes, &Nibbles::new());
        let _ = node_contents(&bytes, &Nibbles::new());
        let _ = account_leaves(&bytes, &Nibbles::new());
        let _ = receipts_root_encoded(&bytes);
        let _ = verify_node(keccak256(&bytes), &bytes);
        let _ = catchup_eth::era1::snappy_frame_decompress(&bytes, 1 << 16);
        let _ = Era1::open(&bytes).map(|e| e.blocks().count());
        let _ = catchup_eth::era1::Records::new(&bytes).count();
        let proof = vec![Bytes::from(bytes.clone())];
        let _ = verify_proof(keccak256(&bytes), &bytes, &proof);
        let k: [&[u8]; 1] = [&bytes];
        let _ = verify_range_proof(keccak256(&bytes), &[], &k, &k, &proof);
        let _ = verify_range_proof(keccak256(&bytes), &bytes, &k, &k, &proof);
        let _ = verify_range_proof_interior(keccak256(&bytes), &[], &k, &k, &proof);
        let _ = verify_range_proof_interior(keccak256(&bytes), &bytes, &k, &k, &proof);
        let _ = verify_range_proof_interior(keccak256(&bytes), &bytes, &k, &k, &[]);
        let text = String::from_utf8_lossy(&bytes);
        let _ = catchup_eth::state::parse_geth_dump(&text);
        let _ = catchup_eth::state::parse_alloc(&text);
        let _ = catchup_eth::blocktest::check_blocktest(&text);
    }

    #[test]
    fn decoders_never_panic_on_mutated_valid_input(h in header(), pos in any::<usize>(), byte in any::<u8>(), cut in any::<usize>()) {
        let mut enc = Block { header: h, body: BlockBody::default() }.encode();
        let p = pos % enc.len();
        enc[p] = byte;
        let c = cut % (enc.len() + 1);
        let _ = Block::decode(&enc[..c]);
        let _ = Block::decode(&enc);
        let _ = Header::decode(&enc);
        let _ = Node::decode(&enc);
    }

    #[test]
    fn proof_nodes_from_random_tries_resist_random_proofs(nodes in vec(vec(any::<u8>(), 0..120), 0..6), key in vec(any::<u8>(), 0..40)) {
        let proof: Vec<Bytes> = nodes.into_iter().map(Bytes::from).collect();
        let root = proof.first().map(keccak256).unwrap_or(EMPTY_ROOT);
        let _ = verify_proof(root, &key, &proof);
        let k: [&[u8]; 2] = [&key, &key];
        let _ = verify_range_proof(root, &key, &k[..1], &k[..1], &proof);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, .. ProptestConfig::default() })]

    #[test]
    fn era1_write_read_round_trip(hs in vec(header(), 1..6), rs in vec(receipt(), 0..3), txs in vec(tx(), 0..3)) {
        let mut blocks = Vec::new();
        let mut td = U256::ZERO;
        for (i, mut h) in hs.into_iter().enumerate() {
            h.number = 1000 + i as u64;
            td = td.wrapping_add(U256::from(i as u64 + 1));
            let body = BlockBody { transactions: txs.clone(), ommers: vec![], withdrawals: None };
            blocks.push((h, body, rs.clone(), td));
        }
        let buf = catchup_eth::era1::write_era1(&blocks).unwrap();
        let era = Era1::open(&buf).unwrap();
        prop_assert_eq!(era.index.start_block, 1000);
        let read: Vec<_> = era.blocks().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(read.len(), blocks.len());
        for (r, (h, b, rc, td)) in read.iter().zip(&blocks) {
            prop_assert_eq!(&r.header, h);
            prop_assert_eq!(r.hash, h.hash());
            prop_assert_eq!(&r.body, b);
            prop_assert_eq!(&r.receipts, rc);
            prop_assert_eq!(r.total_difficulty, *td);
        }
        let records: Vec<_> = read.iter().map(|r| (r.hash, r.total_difficulty)).collect();
        prop_assert_eq!(catchup_eth::era1::accumulator_root(&records), era.accumulator);
        // Every truncation is an error, never a panic.
        for cut in [1usize, 7, 9, buf.len() / 2, buf.len() - 1] {
            let r = Era1::open(&buf[..cut]).map(|e| e.blocks().collect::<Result<Vec<_>, _>>());
            prop_assert!(!matches!(r, Ok(Ok(ref v)) if v.len() == blocks.len()));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    #[test]
    fn served_ranges_verify(pairs in btree_map(any::<[u8; 4]>(), vec(any::<u8>(), 1..40), 1..120),
                            origin in any::<[u8; 4]>(), limit in any::<[u8; 4]>(), max_items in 1usize..50) {
        let t = TrieBuilder::new(pairs.iter());
        let r = t.range_with_proof(&origin, &limit, max_items);
        let more = verify_range_proof(t.root(), &origin, &r.keys, &r.values, &r.proof).unwrap();
        let last = r.keys.last().map(|k| k.to_vec()).unwrap_or(origin.to_vec());
        let expected_more = pairs.keys().any(|k| k.as_slice() > last.as_slice());
        prop_assert_eq!(more, expected_more && !r.keys.is_empty());
        prop_assert!(r.keys.len() <= max_items);
        for k in &r.keys {
            prop_assert!(k.as_ref() >= origin.as_slice());
        }
    }
}

/// Well-formed RLP of random shape (lists of the lengths real structures use), so the
/// decoders get past the framing and into their field checks.
fn shaped_rlp() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        vec(any::<u8>(), 0..3).prop_map(Value::Bytes),
        vec(any::<u8>(), 8).prop_map(Value::Bytes),
        vec(any::<u8>(), 20).prop_map(Value::Bytes),
        vec(any::<u8>(), 32).prop_map(Value::Bytes),
        vec(any::<u8>(), 256).prop_map(Value::Bytes),
    ];
    let tree = leaf.prop_recursive(3, 200, 21, |inner| {
        prop_oneof![
            vec(inner.clone(), 2).prop_map(Value::List),
            vec(inner.clone(), 4).prop_map(Value::List),
            vec(inner.clone(), 15..=21).prop_map(Value::List),
            vec(inner, 0..3).prop_map(Value::List),
        ]
    });
    (tree, proptest::option::of(0u8..6)).prop_map(|(v, prefix)| {
        let mut out = Vec::new();
        if let Some(p) = prefix {
            out.push(p);
        }
        out.extend_from_slice(&v.encode());
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, .. ProptestConfig::default() })]

    #[test]
    fn decoders_never_panic_on_shaped_rlp(bytes in shaped_rlp()) {
        let _ = Header::decode(&bytes);
        let _ = Block::decode(&bytes);
        let _ = BlockBody::decode(&bytes);
        let _ = TxEnvelope::decode(&bytes);
        let _ = Withdrawal::decode(&bytes);
        let _ = Receipt::decode_consensus(&bytes);
        let _ = decode_receipts(&bytes);
        let _ = decode_receipts_eth69(&bytes);
        let _ = Account::decode(&bytes);
        let _ = Account::decode_slim(&bytes);
        if let Ok(n) = Node::decode(&bytes) {
            // Whatever decodes re-encodes to the same bytes (canonical).
            prop_assert_eq!(n.encode(), bytes.clone());
        }
        let _ = node_contents(&bytes, &Nibbles::new());
        let _ = account_leaves(&bytes, &Nibbles::new());
        let _ = receipts_root_encoded(&bytes);
        if let Ok(h) = Header::decode(&bytes) {
            prop_assert_eq!(h.encode(), bytes.clone());
        }
        let proof = vec![Bytes::from(bytes.clone())];
        let root = keccak256(&bytes);
        let _ = verify_proof(root, &[0x12, 0x34], &proof);
        let k: [&[u8]; 2] = [&[0x00, 0x01], &[0xff, 0xfe]];
        let _ = verify_range_proof(root, &[0x00, 0x00], &k, &k, &proof);
    }
}

// ------------------------------------------------------------------ range interiors

/// Every node of the trie `t` with its position (the nibbles from the root to it) and the
/// reference its parent holds (the root: by its hash).
fn nodes_with_positions(t: &TrieBuilder) -> Vec<(Vec<u8>, NodeRef, Vec<u8>)> {
    fn walk(t: &TrieBuilder, r: NodeRef, pos: Vec<u8>, out: &mut Vec<(Vec<u8>, NodeRef, Vec<u8>)>) {
        let rlp = match &r {
            NodeRef::Hash(h) => t.nodes()[h].to_vec(),
            NodeRef::Embedded(b) => b.to_vec(),
        };
        out.push((pos.clone(), r, rlp.clone()));
        match Node::decode(&rlp).expect("a node of the trie") {
            Node::Leaf { .. } => {}
            Node::Extension { path, child } => {
                let mut p = pos.clone();
                p.extend_from_slice(&path.0);
                walk(t, child, p, out);
            }
            Node::Branch { children, .. } => {
                for (i, c) in children.iter().enumerate() {
                    if let Some(c) = c {
                        let mut p = pos.clone();
                        p.push(i as u8);
                        walk(t, c.clone(), p, out);
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    if !t.leaves().is_empty() {
        walk(t, NodeRef::Hash(t.root()), Vec::new(), &mut out);
    }
    out
}

/// Whether every path of `n` nibbles under `pos` lies in [left, right].
fn position_inside(pos: &[u8], n: usize, left: &[u8], right: &[u8]) -> bool {
    let mut lo = pos.to_vec();
    lo.resize(n, 0);
    let mut hi = pos.to_vec();
    hi.resize(n, 15);
    lo.as_slice() >= left && hi.as_slice() <= right
}

/// Check `got` against the nodes of `t` inside [left, right] (paths of `n` nibbles).
fn check_interior(
    t: &TrieBuilder,
    keys: &[&[u8]],
    left: &[u8],
    right: &[u8],
    got: &RangeInterior,
) -> Result<(), TestCaseError> {
    let n = left.len();
    let all = nodes_with_positions(t);
    let inside: Vec<&(Vec<u8>, NodeRef, Vec<u8>)> = all
        .iter()
        .filter(|(p, _, _)| position_inside(p, n, left, right))
        .collect();
    // Every hashed node inside, each once, hashing to what it claims.
    let mut want: Vec<B256> = inside
        .iter()
        .filter_map(|(_, r, _)| match r {
            NodeRef::Hash(h) => Some(*h),
            NodeRef::Embedded(_) => None,
        })
        .collect();
    want.sort();
    let mut have: Vec<B256> = got.nodes.iter().map(|(h, _)| *h).collect();
    have.sort();
    for (h, rlp) in &got.nodes {
        prop_assert_eq!(keccak256(rlp), *h);
        prop_assert_eq!(&t.nodes()[h].to_vec(), rlp);
    }
    prop_assert_eq!(have, want);
    // The maximal subtries: inside, with the parent position outside.
    let maximal: Vec<(Vec<u8>, NodeRef)> = inside
        .iter()
        .filter(|(p, _, _)| {
            !all.iter().any(|(q, _, _)| {
                q.len() < p.len() && p.starts_with(q) && position_inside(q, n, left, right)
            })
        })
        .map(|(p, r, _)| (p.clone(), r.clone()))
        .collect();
    let got_max: Vec<(Vec<u8>, NodeRef)> = got
        .subtries
        .iter()
        .map(|s| (s.path.clone(), s.node.clone()))
        .collect();
    prop_assert_eq!(got_max, maximal);
    // The subtries' runs of nodes cover the nodes without overlap, each run its
    // subtrie's.
    let mut runs: Vec<std::ops::Range<usize>> = got
        .subtries
        .iter()
        .map(|s| s.nodes.clone())
        .filter(|r| !r.is_empty())
        .collect();
    runs.sort_by_key(|r| r.start);
    let mut next = 0;
    for r in &runs {
        prop_assert_eq!(r.start, next);
        next = r.end;
    }
    for s in &got.subtries {
        let mut run: Vec<B256> = got.nodes[s.nodes.clone()].iter().map(|n| n.0).collect();
        run.sort();
        let mut under: Vec<B256> = inside
            .iter()
            .filter(|(p, _, _)| p.starts_with(&s.path))
            .filter_map(|(_, r, _)| match r {
                NodeRef::Hash(h) => Some(*h),
                NodeRef::Embedded(_) => None,
            })
            .collect();
        under.sort();
        prop_assert_eq!(run, under);
    }
    prop_assert_eq!(next, got.nodes.len());
    for s in &got.subtries {
        let under: Vec<usize> = (0..keys.len())
            .filter(|&i| Nibbles::unpack(keys[i]).0.starts_with(&s.path))
            .collect();
        prop_assert!(!under.is_empty());
        prop_assert_eq!(s.leaves.clone(), under[0]..under[under.len() - 1] + 1);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn range_interior_is_the_tries_nodes_inside_the_range((pairs, i, j, gap) in range_case()) {
        let RangeInput { t, keys, vals, first, proof } = range_input(&pairs, i, j, gap);
        let root = t.root();
        let n = pairs.len();
        let (more, interior) = verify_range_proof_interior(root, &first, &keys, &vals, &proof)
            .expect("a range of the trie");
        prop_assert_eq!(more, j < n - 1);
        prop_assert_eq!(Ok(more), verify_range_proof(root, &first, &keys, &vals, &proof));
        let left = Nibbles::unpack(&first).0;
        let right = if more {
            Nibbles::unpack(keys[keys.len() - 1]).0
        } else {
            vec![15; left.len()]
        };
        check_interior(&t, &keys, &left, &right, &interior)?;
        // The whole trie without a proof: every node is inside, the root is the subtrie.
        let all_k: Vec<&[u8]> = pairs.iter().map(|p| p.0.as_slice()).collect();
        let all_v: Vec<&[u8]> = pairs.iter().map(|p| p.1.as_slice()).collect();
        let (more, whole) = verify_range_proof_interior(root, all_k[0], &all_k, &all_v, &[])
            .expect("the whole trie");
        prop_assert!(!more);
        let l = left.len();
        check_interior(&t, &all_k, &vec![0; l], &vec![15; l], &whole)?;
        prop_assert_eq!(whole.subtries.len(), 1);
        // A range that does not verify returns no interior.
        let mut vals2: Vec<Vec<u8>> = vals.iter().map(|v| v.to_vec()).collect();
        vals2[0].push(1);
        prop_assert!(verify_range_proof_interior(root, &first, &keys, &vals2, &proof).is_err());
    }
}

/// A trie given whole: its root, keys and values.
type WholeCase = (B256, Vec<[u8; 32]>, Vec<Vec<u8>>);
type KeysValues<'a> = (Vec<&'a [u8]>, Vec<&'a [u8]>);

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    /// Tries given whole and verified together read as each verified alone: the same
    /// nodes in the same order and the same subtrie, or an error where alone it fails
    /// (a wrong root, an empty value, keys out of order).
    #[test]
    fn whole_tries_verified_together_read_as_each_alone(
        tries in vec((btree_map(any::<[u8; 2]>(), vec(any::<u8>(), 1..70), 0..40), 0u8..6), 1..9),
    ) {
        // 32-byte keys sharing long prefixes: the first two bytes vary, the rest is fixed.
        let cases: Vec<WholeCase> = tries
            .iter()
            .map(|(pairs, damage)| {
                let key = |k: &[u8; 2]| {
                    let mut full = [0x5au8; 32];
                    full[..2].copy_from_slice(k);
                    full
                };
                let mut keys: Vec<[u8; 32]> = pairs.keys().map(key).collect();
                let mut values: Vec<Vec<u8>> = pairs.values().cloned().collect();
                let mut root = TrieBuilder::new(keys.iter().zip(&values)).root();
                match damage {
                    1 => root.0[7] ^= 1,
                    2 if !values.is_empty() => values[0].clear(),
                    3 if keys.len() > 1 => keys.swap(0, 1),
                    _ => {}
                }
                (root, keys, values)
            })
            .collect();
        let slices: Vec<KeysValues<'_>> = cases
            .iter()
            .map(|(_, keys, values)| {
                (keys.iter().map(|k| k.as_slice()).collect(), values.iter().map(|v| v.as_slice()).collect())
            })
            .collect();
        let whole: Vec<WholeTrie<'_>> = cases
            .iter()
            .zip(&slices)
            .map(|((root, _, _), (keys, values))| WholeTrie { root: *root, keys, values })
            .collect();
        let together = verify_whole_tries_interior(&whole);
        prop_assert_eq!(together.len(), cases.len());
        for ((root, keys, values), got) in cases.iter().zip(together) {
            let alone = verify_range_proof_interior(*root, &[0u8; 32], keys, values, &[]);
            match (alone, got) {
                (Ok((more, want)), Ok(got)) => {
                    prop_assert!(!more);
                    prop_assert_eq!(got, want);
                }
                (Err(_), Err(_)) => {}
                (alone, got) => prop_assert!(false, "alone {:?}, together {:?}", alone.map(|a| a.0), got.map(|_| ())),
            }
        }
    }
}
