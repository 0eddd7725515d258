//! Checks of ethereum/tests BlockchainTests documents without execution: every block is
//! decoded, its header hash, parent link, transactions root, ommers hash and withdrawals
//! root are checked; for blocks marked invalid the first check that rejects them is named.

use alloy_primitives::B256;
use serde_json::Value;

use crate::types::{Block, Header};
use crate::verify::{
    verify_header_rules, verify_ommers_hash, verify_parent_link, verify_transactions_root,
    verify_withdrawals, Field,
};

/// Largest block RLP accepted from a test document (hex characters / 2).
pub const MAX_BLOCK_RLP_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlocktestError {
    #[error("bad JSON: {0}")]
    Json(String),
    #[error("test {test}: {what}")]
    Shape { test: String, what: String },
}

type Check<'a> = Box<dyn Fn() -> Result<(), Field> + 'a>;

/// Which check rejected a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The RLP did not decode (message).
    Decode(String),
    /// A header commitment or link failed.
    Check(Field),
}

impl Rejection {
    pub fn name(&self) -> String {
        match self {
            Rejection::Decode(_) => "decode".to_string(),
            Rejection::Check(f) => f.as_str().to_string(),
        }
    }
}

/// The outcome for one block of a test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockOutcome {
    pub index: usize,
    pub number: Option<u64>,
    pub hash: Option<B256>,
    /// The test marks the block invalid (`expectException`).
    pub expected_invalid: bool,
    /// The check that rejected it, if any.
    pub rejected_by: Option<Rejection>,
    /// Checks that passed, by name.
    pub passed: Vec<&'static str>,
}

impl BlockOutcome {
    /// Valid blocks must pass everything; invalid blocks must be rejected. Invalid
    /// blocks whose fault needs execution are reported, not counted as failures.
    pub fn as_expected(&self) -> bool {
        self.expected_invalid || self.rejected_by.is_none()
    }
}

/// The outcome of one named test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOutcome {
    pub name: String,
    pub genesis_hash: B256,
    /// The genesis RLP hashes to `genesisBlockHeader.hash` (`None` when the test has none).
    pub genesis_hash_ok: Option<bool>,
    /// Hash of the last block accepted (valid blocks only; the genesis if none).
    pub last_accepted_hash: B256,
    /// `last_accepted_hash` equals the test's `lastblockhash` (`None` when absent).
    pub last_block_hash_ok: Option<bool>,
    pub blocks: Vec<BlockOutcome>,
}

impl TestOutcome {
    /// Every block as expected, and the genesis and last-block hashes agree with the test.
    pub fn as_expected(&self) -> bool {
        self.blocks.iter().all(|b| b.as_expected())
            && self.genesis_hash_ok != Some(false)
            && self.last_block_hash_ok != Some(false)
    }
}

fn json_hash(v: Option<&Value>) -> Option<B256> {
    let s = v?.as_str()?;
    let b = hex::decode(s.strip_prefix("0x").unwrap_or(s)).ok()?;
    (b.len() == 32).then(|| B256::from_slice(&b))
}

fn hex_field(v: &Value, test: &str, what: &str) -> Result<Vec<u8>, BlocktestError> {
    let s = v.as_str().ok_or_else(|| BlocktestError::Shape {
        test: test.into(),
        what: format!("{what} is not a string"),
    })?;
    let s = s.strip_prefix("0x").unwrap_or(s);
    if s.len() / 2 > MAX_BLOCK_RLP_BYTES {
        return Err(BlocktestError::Shape {
            test: test.into(),
            what: format!("{what} above {MAX_BLOCK_RLP_BYTES} bytes"),
        });
    }
    hex::decode(s).map_err(|e| BlocktestError::Shape {
        test: test.into(),
        what: format!("{what}: {e}"),
    })
}

/// Check every test of a BlockchainTests JSON document.
pub fn check_blocktest(text: &str) -> Result<Vec<TestOutcome>, BlocktestError> {
    let doc: Value = serde_json::from_str(text).map_err(|e| BlocktestError::Json(e.to_string()))?;
    let tests = doc
        .as_object()
        .ok_or(BlocktestError::Json("top level is not an object".into()))?;
    let mut out = Vec::new();
    for (name, t) in tests {
        let genesis_rlp = hex_field(
            t.get("genesisRLP").ok_or_else(|| BlocktestError::Shape {
                test: name.clone(),
                what: "no genesisRLP".into(),
            })?,
            name,
            "genesisRLP",
        )?;
        let genesis = Block::decode(&genesis_rlp).map_err(|e| BlocktestError::Shape {
            test: name.clone(),
            what: format!("genesisRLP: {e}"),
        })?;
        let mut parent: Header = genesis.header.clone();
        let blocks =
            t.get("blocks")
                .and_then(|b| b.as_array())
                .ok_or_else(|| BlocktestError::Shape {
                    test: name.clone(),
                    what: "no blocks array".into(),
                })?;
        let mut outcomes = Vec::new();
        for (index, b) in blocks.iter().enumerate() {
            let expected_invalid = b.get("expectException").is_some();
            let rlp = hex_field(
                b.get("rlp").ok_or_else(|| BlocktestError::Shape {
                    test: name.clone(),
                    what: format!("block {index} has no rlp"),
                })?,
                name,
                "rlp",
            )?;
            let mut o = BlockOutcome {
                index,
                number: None,
                hash: None,
                expected_invalid,
                rejected_by: None,
                passed: vec![],
            };
            match Block::decode(&rlp) {
                Err(e) => o.rejected_by = Some(Rejection::Decode(e.to_string())),
                Ok(block) => {
                    o.number = Some(block.header.number);
                    o.hash = Some(block.header.hash());
                    o.passed.push("decode");
                    let expected_hash = b
                        .get("blockHeader")
                        .and_then(|h| h.get("hash"))
                        .and_then(|h| h.as_str())
                        .and_then(|s| hex::decode(s.trim_start_matches("0x")).ok())
                        .filter(|v| v.len() == 32)
                        .map(|v| B256::from_slice(&v));
                    let checks: [(&'static str, Check<'_>); 6] = [
                        (
                            "hash",
                            Box::new(|| match expected_hash {
                                Some(h) if h != block.header.hash() => Err(Field::HeaderHash),
                                _ => Ok(()),
                            }),
                        ),
                        (
                            "parentHash",
                            Box::new(|| {
                                verify_parent_link(&parent, &block.header).map_err(|e| e.field())
                            }),
                        ),
                        (
                            "headerRules",
                            Box::new(|| {
                                verify_header_rules(&parent, &block.header).map_err(|e| e.field())
                            }),
                        ),
                        (
                            "transactionsRoot",
                            Box::new(|| {
                                verify_transactions_root(&block.header, &block.body)
                                    .map_err(|e| e.field())
                            }),
                        ),
                        (
                            "ommersHash",
                            Box::new(|| {
                                verify_ommers_hash(&block.header, &block.body)
                                    .map_err(|e| e.field())
                            }),
                        ),
                        (
                            "withdrawalsRoot",
                            Box::new(|| {
                                verify_withdrawals(&block.header, &block.body)
                                    .map_err(|e| e.field())
                            }),
                        ),
                    ];
                    for (check_name, f) in checks.iter() {
                        match f() {
                            Ok(()) => o.passed.push(check_name),
                            Err(field) => {
                                o.rejected_by = Some(Rejection::Check(field));
                                break;
                            }
                        }
                    }
                    drop(checks);
                    if o.rejected_by.is_none() && !expected_invalid {
                        parent = block.header;
                    }
                }
            }
            outcomes.push(o);
        }
        let genesis_hash = genesis.header.hash();
        let last_accepted_hash = parent.hash();
        let genesis_hash_ok = json_hash(t.get("genesisBlockHeader").and_then(|g| g.get("hash")))
            .map(|h| h == genesis_hash);
        let last_block_hash_ok = json_hash(t.get("lastblockhash")).map(|h| h == last_accepted_hash);
        out.push(TestOutcome {
            name: name.clone(),
            genesis_hash,
            genesis_hash_ok,
            last_accepted_hash,
            last_block_hash_ok,
            blocks: outcomes,
        });
    }
    Ok(out)
}
