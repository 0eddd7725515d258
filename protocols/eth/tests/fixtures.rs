//! Conformance on real data (ethereum/tests, mainnet/sepolia era1, the geth devnet).

/// A skip reason shown on the terminal even though libtest hides what passing tests print
/// with `eprintln!`: a skipped test must say why.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

use std::collections::BTreeMap;
use std::path::PathBuf;

use catchup_eth::blocktest::{check_blocktest, Rejection};
use catchup_eth::era1::Era1;
use catchup_eth::rlp::Value;
use catchup_eth::state::{genesis_from_json, parse_alloc, parse_geth_dump};
use catchup_eth::*;
use serde_json::Value as Json;

fn fixtures_dir() -> PathBuf {
    match std::env::var_os("CATCHUP_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"),
    }
}

/// The fixture file, or `None` (test skipped with a reason) when it is missing outside CI.
fn fixture(rel: &str) -> Option<Vec<u8>> {
    let p = fixtures_dir().join(rel);
    match std::fs::read(&p) {
        Ok(b) => Some(b),
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("fixture {} missing under CI=true: {e}", p.display());
            }
            skip_note!("SKIP: fixture {} not readable: {e}", p.display());
            None
        }
    }
}

fn fixture_text(rel: &str) -> Option<String> {
    fixture(rel).map(|b| String::from_utf8(b).expect("fixture is UTF-8"))
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.trim_start_matches("0x")).expect("hex")
}

fn b256(s: &str) -> B256 {
    B256::from_slice(&unhex(s))
}

// ---------------------------------------------------------------- RLPTests

fn big_decimal_to_bytes(dec: &str) -> Vec<u8> {
    // Repeated multiply-add on a big-endian byte vector.
    let mut out: Vec<u8> = Vec::new();
    for ch in dec.chars() {
        let mut carry = ch.to_digit(10).expect("decimal digit");
        for b in out.iter_mut().rev() {
            let v = *b as u32 * 10 + carry;
            *b = (v & 0xff) as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            out.insert(0, (carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    while out.first() == Some(&0) {
        out.remove(0);
    }
    out
}

fn json_to_rlp_value(v: &Json) -> Value {
    match v {
        Json::String(s) => match s.strip_prefix('#') {
            Some(dec) => Value::Bytes(big_decimal_to_bytes(dec)),
            None => Value::Bytes(s.as_bytes().to_vec()),
        },
        Json::Number(n) => {
            let x = n.as_u64().expect("u64");
            let b = x.to_be_bytes();
            let skip = b.iter().take_while(|x| **x == 0).count();
            Value::Bytes(b[skip..].to_vec())
        }
        Json::Array(a) => Value::List(a.iter().map(json_to_rlp_value).collect()),
        other => panic!("unexpected RLP test input {other}"),
    }
}

#[test]
fn rlp_tests_valid_round_trip() {
    let Some(text) = fixture_text("ethereum/tests/rlptest.json") else {
        return;
    };
    let doc: BTreeMap<String, Json> = serde_json::from_str(&text).unwrap();
    assert!(doc.len() > 20);
    for (name, case) in &doc {
        let value = json_to_rlp_value(&case["in"]);
        let out = unhex(case["out"].as_str().unwrap());
        assert_eq!(value.encode(), out, "{name}: encoding");
        assert_eq!(
            Value::decode(&out).unwrap_or_else(|e| panic!("{name}: {e}")),
            value,
            "{name}: decoding"
        );
    }
}

#[test]
fn rlp_tests_invalid_rejected() {
    let Some(text) = fixture_text("ethereum/tests/invalidRLPTest.json") else {
        return;
    };
    let doc: BTreeMap<String, Json> = serde_json::from_str(&text).unwrap();
    assert!(doc.len() > 10);
    for (name, case) in &doc {
        let out = unhex(case["out"].as_str().unwrap());
        let r = Value::decode(&out);
        assert!(r.is_err(), "{name}: accepted {:?}", r);
        let e = r.unwrap_err();
        let kind_ok = if name.starts_with("bytesShouldBeSingleByte") {
            matches!(e, RlpError::NonCanonicalSingleByte { .. })
        } else if name.starts_with("leadingZeros") {
            matches!(e, RlpError::LeadingZeroLength { .. })
        } else if name.starts_with("nonOptimal") {
            matches!(e, RlpError::NonCanonicalSize { .. })
        } else if name.starts_with("lessThan") {
            matches!(e, RlpError::Truncated { .. } | RlpError::TooLong { .. })
        } else if name == "emptyEncoding" {
            matches!(e, RlpError::Empty { .. })
        } else {
            true
        };
        assert!(kind_ok, "{name}: rejected for an unexpected reason: {e}");
    }
}

// ---------------------------------------------------------------- TrieTests

fn trie_input_bytes(v: &Json, hex_encoded: bool) -> Option<Vec<u8>> {
    match v {
        Json::Null => None,
        Json::String(s) if hex_encoded || s.starts_with("0x") => Some(unhex(s)),
        Json::String(s) => Some(s.as_bytes().to_vec()),
        other => panic!("unexpected trie input {other}"),
    }
}

fn run_trie_file(rel: &str, secure: bool) {
    let Some(text) = fixture_text(rel) else {
        return;
    };
    let doc: BTreeMap<String, Json> = serde_json::from_str(&text).unwrap();
    assert!(!doc.is_empty());
    for (name, case) in &doc {
        let hex_encoded = case
            .get("hexEncoded")
            .and_then(|h| h.as_bool())
            .unwrap_or(false);
        let pairs: Vec<(Json, Json)> = match &case["in"] {
            Json::Array(a) => a.iter().map(|p| (p[0].clone(), p[1].clone())).collect(),
            Json::Object(m) => m
                .iter()
                .map(|(k, v)| (Json::String(k.clone()), v.clone()))
                .collect(),
            other => panic!("{name}: unexpected input {other}"),
        };
        let mut map: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for (k, v) in pairs {
            let key = trie_input_bytes(&k, hex_encoded).expect("key");
            let key = if secure {
                keccak256(&key).to_vec()
            } else {
                key
            };
            match trie_input_bytes(&v, hex_encoded) {
                Some(v) if !v.is_empty() => {
                    map.insert(key, v);
                }
                _ => {
                    map.remove(&key);
                }
            }
        }
        let expected = b256(case["root"].as_str().unwrap());
        let built = TrieBuilder::new(map.iter());
        assert_eq!(built.root(), expected, "{rel} {name}: TrieBuilder root");
        assert_eq!(
            trie_root(map.iter()),
            expected,
            "{rel} {name}: HashBuilder root"
        );
        for (k, v) in &map {
            let proof = built.prove(k);
            assert_eq!(
                verify_proof(expected, k, &proof)
                    .unwrap()
                    .map(|b| b.to_vec()),
                Some(v.clone()),
                "{rel} {name}"
            );
        }
    }
}

#[test]
fn trie_tests_trietest() {
    run_trie_file("ethereum/tests/trietest.json", false);
}

#[test]
fn trie_tests_trieanyorder() {
    run_trie_file("ethereum/tests/trieanyorder.json", false);
}

#[test]
fn trie_tests_hex_encoded_securetrie() {
    run_trie_file("ethereum/tests/hex_encoded_securetrie_test.json", true);
}

#[test]
fn trie_tests_trietest_secure() {
    run_trie_file("ethereum/tests/trietest_secureTrie.json", true);
}

#[test]
fn trie_tests_trieanyorder_secure() {
    run_trie_file("ethereum/tests/trieanyorder_secureTrie.json", true);
}

// ---------------------------------------------------------------- mainnet genesis

#[test]
fn mainnet_genesis_alloc_and_header() {
    let Some(alloc) = fixture_text("ethereum/chain/mainnet-genesis-alloc.json") else {
        return;
    };
    let Some(g) = fixture_text("ethereum/tests/genesishashestest.json") else {
        return;
    };
    let state = parse_alloc(&alloc).unwrap();
    assert_eq!(state.accounts.len(), 8893);
    let root = state.root();
    assert_eq!(
        root,
        b256("d7f8974fb5ac78d9ac099b9ad5018bedc2ce0a72dad1827a1709da30580f0544")
    );
    let g: Json = serde_json::from_str(&g).unwrap();
    let rlp = unhex(g["genesis_rlp_hex"].as_str().unwrap());
    let block = Block::decode(&rlp).unwrap();
    assert_eq!(block.encode(), rlp);
    assert_eq!(block.header.state_root, root);
    assert_eq!(
        block.hash(),
        b256("d4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3")
    );
    assert_eq!(block.hash(), b256(g["genesis_hash"].as_str().unwrap()));
}

// ---------------------------------------------------------------- era1

#[test]
fn mainnet_era1_hash_chain_and_ommers() {
    let Some(buf) = fixture("ethereum/chain/mainnet-00000-5ec1ffb8.era1") else {
        return;
    };
    let era = Era1::open(&buf).unwrap();
    assert_eq!(era.index.start_block, 0);
    assert_eq!(era.block_count(), 8192);
    let mut headers = Vec::new();
    let mut ommers = 0;
    for b in era.blocks() {
        let b = b.unwrap();
        assert_eq!(
            b.hash,
            b.header.hash(),
            "re-encoding block {}",
            b.header.number
        );
        verify_ommers_hash(&b.header, &b.body).unwrap();
        verify_transactions_root(&b.header, &b.body).unwrap();
        verify_receipts(&b.header, &b.receipts).unwrap();
        assert!(b.body.transactions.is_empty());
        ommers += b.body.ommers.len();
        headers.push(b.header);
    }
    assert_eq!(headers.len(), 8192);
    assert_eq!(ommers, 1410);
    // Total difficulties accumulate the header difficulties, and the accumulator record
    // is the SSZ root over (hash, total difficulty).
    let mut td = U256::ZERO;
    let mut records = Vec::new();
    for (h, b) in headers.iter().zip(era.blocks()) {
        let b = b.unwrap();
        td += h.difficulty;
        assert_eq!(b.total_difficulty, td, "block {}", h.number);
        records.push((b.hash, b.total_difficulty));
    }
    assert_eq!(
        catchup_eth::era1::accumulator_root(&records),
        era.accumulator
    );
    assert!(era.accumulator.is_some());
    assert_eq!(
        headers[0].hash(),
        b256("d4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3"),
        "block 0 is the mainnet genesis"
    );
    verify_header_chain(&headers).unwrap();
    for w in headers.windows(2) {
        verify_header_rules(&w[0], &w[1]).unwrap();
    }
    // The same headers as a BlockHeaders list, hashed from the received bytes.
    let mut payload = Vec::new();
    for h in &headers {
        payload.extend_from_slice(&h.encode());
    }
    let mut list = Vec::new();
    catchup_eth::rlp::list_header(payload.len(), &mut list);
    list.extend_from_slice(&payload);
    let hashed = decode_header_list(&list, 10_000).unwrap();
    assert_eq!(
        verify_hashed_header_chain(&hashed).unwrap(),
        Some(headers[8191].hash())
    );
    assert!(decode_header_list(&list, 100).is_err());
    // A broken link is caught and named.
    let mut broken = headers[..10].to_vec();
    broken[5].parent_hash = B256::ZERO;
    let e = verify_header_chain(&broken).unwrap_err();
    assert_eq!((e.number(), e.field()), (5, Field::ParentHash));
}

#[test]
fn sepolia_era1_tx_and_receipt_roots() {
    let Some(buf) = fixture("ethereum/chain/sepolia-00021-b8814b14.era1") else {
        return;
    };
    let era = Era1::open(&buf).unwrap();
    assert_eq!(era.index.start_block, 172032);
    let (mut blocks, mut txs, mut with_txs) = (0, 0, 0);
    let mut headers = Vec::new();
    for b in era.blocks() {
        let b = b.unwrap();
        verify_body(&b.header, &b.body).unwrap();
        verify_receipts(&b.header, &b.receipts).unwrap();
        assert_eq!(b.receipts.len(), b.body.transactions.len());
        // The eth/69 form drops the bloom; recomputed from the logs it gives the same root.
        let eth69 = decode_receipts_eth69(&encode_receipts_eth69(&b.receipts)).unwrap();
        for r in &b.receipts {
            assert_eq!(
                logs_bloom(&r.logs),
                r.logs_bloom,
                "block {}",
                b.header.number
            );
        }
        verify_receipts(&b.header, &eth69).unwrap();
        assert_eq!(
            receipts_root_encoded(&encode_receipts(&b.receipts)).unwrap(),
            b.header.receipts_root
        );
        // Transaction hashes are keccak of the exact bytes, and re-encoding the body is exact.
        assert_eq!(BlockBody::decode(&b.body.encode()).unwrap(), b.body);
        blocks += 1;
        txs += b.body.transactions.len();
        with_txs += usize::from(!b.body.transactions.is_empty());
        headers.push(b.header);
    }
    assert_eq!((blocks, txs, with_txs), (8192, 93, 74));
    verify_header_chain(&headers).unwrap();
    for w in headers.windows(2) {
        verify_header_rules(&w[0], &w[1]).unwrap();
    }
    // A wrong base fee is caught and named.
    let mut bad = headers[101].clone();
    bad.base_fee_per_gas = bad.base_fee_per_gas.map(|f| f + 1);
    let e = verify_header_rules(&headers[100], &bad).unwrap_err();
    assert_eq!(
        (e.number(), e.field()),
        (headers[101].number, Field::BaseFee)
    );
}

#[test]
fn era1_corruptions_are_typed_errors() {
    use catchup_eth::era1::Era1ErrorKind;
    let Some(buf) = fixture("ethereum/chain/sepolia-00021-b8814b14.era1") else {
        return;
    };
    // Truncated file: the index can no longer be found.
    assert!(Era1::open(&buf[..buf.len() - 3]).is_err());
    // A bad snappy frame in the first header record (offset 8, data from 16).
    let mut bad = buf.clone();
    bad[16] ^= 0xff;
    let era = Era1::open(&bad).unwrap();
    let e = era.blocks().next().unwrap().unwrap_err();
    assert_eq!((e.record, e.offset), (1, 8));
    assert!(matches!(e.kind, Era1ErrorKind::Snappy(_)), "{e}");
    // An oversized length in the second record.
    let mut big = buf.clone();
    let second = 8 + 8 + u32::from_le_bytes(buf[10..14].try_into().unwrap()) as usize;
    big[second + 2..second + 6].copy_from_slice(&u32::MAX.to_le_bytes());
    let era = Era1::open(&big).unwrap();
    let e = era.blocks().next().unwrap().unwrap_err();
    assert_eq!((e.record, e.offset), (2, second));
    assert!(
        matches!(e.kind, Era1ErrorKind::RecordTooLarge { .. }),
        "{e}"
    );
    // A flipped byte in a compressed header: snappy's checksum catches it.
    let mut flipped = buf.clone();
    flipped[8 + 8 + 40] ^= 0x01;
    let era = Era1::open(&flipped).unwrap();
    assert!(era.blocks().next().unwrap().is_err());
}

// ---------------------------------------------------------------- devnet

#[test]
fn devnet_headstate_root() {
    let Some(text) = fixture_text("ethereum/devnet/headstate.json") else {
        return;
    };
    let (state, claimed) = parse_geth_dump(&text).unwrap();
    let tries = state.build();
    let expected = b256("8fcfb02cfca007773bd55bc1c3e50a3c8612a59c87ce057e5957e8bf17c1728b");
    assert_eq!(claimed, Some(expected));
    assert_eq!(tries.root, expected);
    assert_eq!(state.accounts.len(), 194);
    assert_eq!(tries.storage.len(), 60);
    assert_eq!(tries.storage_slots, 2164);
    assert_eq!(
        state
            .accounts
            .values()
            .filter(|a| !a.code.is_empty())
            .count(),
        65
    );
    // Walking the account trie from the root by hash reaches every account, and each
    // account's storage trie and code are reachable from it.
    let mut stack = vec![(tries.root, Nibbles::new())];
    let mut found = 0;
    let mut storage_nodes = 0;
    while let Some((h, path)) = stack.pop() {
        let n = &tries.accounts.nodes()[&h];
        verify_node(h, n).unwrap();
        stack.extend(node_contents(n, &path).unwrap().hashed_children);
        for (hashed, acc) in account_leaves(n, &path).unwrap() {
            found += 1;
            if acc.storage_root != EMPTY_ROOT {
                let st = &tries.storage[&hashed];
                assert_eq!(st.root(), acc.storage_root);
                storage_nodes += st.nodes().len();
            }
            if acc.code_hash != EMPTY_CODE_HASH {
                assert_eq!(keccak256(&tries.code[&acc.code_hash]), acc.code_hash);
            }
        }
    }
    assert_eq!(found, 194);
    assert!(storage_nodes >= 60);
}

#[test]
fn devnet_chain_rlp_and_genesis() {
    let Some(chain) = fixture("ethereum/devnet/chain.rlp") else {
        return;
    };
    let Some(genesis) = fixture_text("ethereum/devnet/genesis.json") else {
        return;
    };
    let blocks = decode_block_sequence(&chain, 10_000).unwrap();
    assert_eq!(blocks.len(), 600);
    assert_eq!(blocks[0].header.number, 1);
    let last = blocks.last().unwrap();
    assert_eq!(last.header.number, 600);
    assert_eq!(
        last.hash(),
        b256("44e3809c9a3cda717f00aea3a9da336d149612c8d5657fbc0028176ef8d94d2a")
    );
    let headers: Vec<Header> = blocks.iter().map(|b| b.header.clone()).collect();
    verify_header_chain(&headers).unwrap();
    for w in headers.windows(2) {
        verify_header_rules(&w[0], &w[1]).unwrap();
    }
    let mut reencoded = Vec::new();
    for b in &blocks {
        verify_block(b).unwrap();
        reencoded.extend_from_slice(&b.encode());
    }
    assert_eq!(reencoded, chain, "chain.rlp re-encodes byte for byte");
    let (gh, _) = genesis_from_json(&genesis).unwrap();
    assert_eq!(
        gh.hash(),
        blocks[0].header.parent_hash,
        "genesis.json gives block 1's parent"
    );
}

// ---------------------------------------------------------------- BlockchainTests

#[test]
fn blockchain_tests_valid_blocks_pass() {
    for name in [
        "SimpleTx",
        "callRevert",
        "dataTx2",
        "eip2930",
        "log1_correct",
    ] {
        let Some(text) = fixture_text(&format!("ethereum/tests/blocks/valid/{name}.json")) else {
            return;
        };
        let outcomes = check_blocktest(&text).unwrap();
        assert!(!outcomes.is_empty());
        for t in outcomes {
            assert!(!t.blocks.is_empty());
            assert_eq!(t.genesis_hash_ok, Some(true), "{}", t.name);
            assert_eq!(t.last_block_hash_ok, Some(true), "{}", t.name);
            assert!(t.as_expected());
            for b in &t.blocks {
                assert!(!b.expected_invalid, "{}", t.name);
                assert_eq!(b.rejected_by, None, "{} block {}", t.name, b.index);
            }
        }
    }
}

#[test]
fn blockchain_tests_invalid_caught_by_right_check() {
    for (name, expected) in [
        ("wrongParentHash", Some(Field::ParentHash)),
        ("wrongTransactionsTrie", Some(Field::TransactionsRoot)),
        ("wrongUncleHash", Some(Field::OmmersHash)),
        ("wrongStateRoot", None),
        ("wrongReceiptTrie", None),
    ] {
        let Some(text) = fixture_text(&format!("ethereum/tests/blocks/invalid/{name}.json")) else {
            return;
        };
        let outcomes = check_blocktest(&text).unwrap();
        assert!(!outcomes.is_empty());
        for t in outcomes {
            // The invalid block is not accepted: the chain stays at the test's last block.
            assert_eq!(t.last_block_hash_ok, Some(true), "{}", t.name);
            assert_eq!(t.genesis_hash_ok, Some(true), "{}", t.name);
            let invalid: Vec<_> = t.blocks.iter().filter(|b| b.expected_invalid).collect();
            assert!(!invalid.is_empty(), "{}", t.name);
            for b in invalid {
                assert!(b.number.is_some(), "{}: decodes", t.name);
                assert_eq!(
                    b.rejected_by,
                    expected.map(Rejection::Check),
                    "{} ({name})",
                    t.name
                );
            }
        }
    }
}
