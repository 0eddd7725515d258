//! State import: geth state dumps, genesis allocations, and genesis headers from a
//! `genesis.json`. Input is JSON text; output is tries and roots.

use std::collections::BTreeMap;

use alloy_primitives::{keccak256, Address, Bytes, B256, B64, U256};
use serde_json::Value;

use crate::trie::TrieBuilder;
use crate::types::{Account, Header, EMPTY_CODE_HASH, EMPTY_OMMERS_HASH, EMPTY_ROOT};

/// Most accounts accepted from one JSON document.
pub const MAX_ACCOUNTS: usize = 10_000_000;
/// Longest contract code accepted (bytes).
pub const MAX_CODE_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error("bad JSON: {0}")]
    Json(String),
    #[error("account {account}: field {field}: {what}")]
    Field {
        account: String,
        field: &'static str,
        what: String,
    },
    #[error("{what}")]
    Shape { what: &'static str },
    #[error("account {account}: dump says storage root {dump}, storage gives {computed}")]
    StorageRootMismatch {
        account: String,
        dump: B256,
        computed: B256,
    },
    #[error("account {account}: dump says code hash {dump}, code gives {computed}")]
    CodeHashMismatch {
        account: String,
        dump: B256,
        computed: B256,
    },
    #[error("too many accounts (limit {limit})")]
    TooManyAccounts { limit: usize },
}

/// One account with its storage and code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountState {
    pub nonce: u64,
    pub balance: U256,
    /// slot key (raw, unhashed) → value.
    pub storage: BTreeMap<B256, U256>,
    pub code: Bytes,
}

/// A whole state: address → account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub accounts: BTreeMap<Address, AccountState>,
}

/// The tries of a state: the account trie, each storage trie, the code by hash.
#[derive(Debug, Clone)]
pub struct StateTries {
    pub root: B256,
    pub accounts: TrieBuilder,
    /// keccak(address) → storage trie (only accounts with storage).
    pub storage: BTreeMap<B256, TrieBuilder>,
    /// code hash → code.
    pub code: BTreeMap<B256, Bytes>,
    pub storage_slots: usize,
}

/// RLP of a storage value as the storage trie holds it (big-endian, no leading zeros,
/// wrapped as an RLP string).
pub fn storage_value_rlp(v: U256) -> Vec<u8> {
    alloy_rlp::encode(v)
}

impl AccountState {
    /// The storage root of this account.
    pub fn storage_trie(&self) -> TrieBuilder {
        TrieBuilder::new_secure(
            self.storage
                .iter()
                .filter(|(_, v)| !v.is_zero())
                .map(|(k, v)| (k.0, storage_value_rlp(*v))),
        )
    }

    pub fn code_hash(&self) -> B256 {
        if self.code.is_empty() {
            EMPTY_CODE_HASH
        } else {
            keccak256(&self.code)
        }
    }
}

impl State {
    /// Build all tries.
    pub fn build(&self) -> StateTries {
        let mut storage = BTreeMap::new();
        let mut code = BTreeMap::new();
        let mut leaves = Vec::with_capacity(self.accounts.len());
        let mut storage_slots = 0;
        for (addr, a) in &self.accounts {
            let hashed = keccak256(addr);
            let st = a.storage_trie();
            storage_slots += st.leaves().len();
            let code_hash = a.code_hash();
            if !a.code.is_empty() {
                code.insert(code_hash, a.code.clone());
            }
            let acc = Account {
                nonce: a.nonce,
                balance: a.balance,
                storage_root: st.root(),
                code_hash,
            };
            leaves.push((hashed, acc.encode()));
            if st.root() != EMPTY_ROOT {
                storage.insert(hashed, st);
            }
        }
        let accounts = TrieBuilder::new(leaves);
        StateTries {
            root: accounts.root(),
            accounts,
            storage,
            code,
            storage_slots,
        }
    }

    pub fn root(&self) -> B256 {
        self.build().root
    }
}

fn parse_json(text: &str) -> Result<Value, StateError> {
    serde_json::from_str(text).map_err(|e| StateError::Json(e.to_string()))
}

fn strip0x(s: &str) -> &str {
    s.strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s)
}

fn hex_bytes(s: &str) -> Result<Vec<u8>, String> {
    let s = strip0x(s);
    if s.len() % 2 == 1 {
        let padded = format!("0{s}");
        return hex::decode(padded).map_err(|e| e.to_string());
    }
    hex::decode(s).map_err(|e| e.to_string())
}

/// A quantity written as a JSON number, a decimal string, or a 0x-hex string.
fn quantity(v: &Value) -> Result<U256, String> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .map(U256::from)
            .ok_or_else(|| format!("not an unsigned integer: {n}")),
        Value::String(s) => {
            if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                if h.is_empty() {
                    return Ok(U256::ZERO);
                }
                U256::from_str_radix(h, 16).map_err(|e| format!("bad hex quantity {s:?}: {e}"))
            } else {
                U256::from_str_radix(s, 10).map_err(|e| format!("bad decimal quantity {s:?}: {e}"))
            }
        }
        other => Err(format!("expected a number or string, found {other}")),
    }
}

fn quantity_u64(v: &Value) -> Result<u64, String> {
    let q = quantity(v)?;
    u64::try_from(q).map_err(|_| format!("{q} does not fit in 64 bits"))
}

/// A 32-byte word written as hex, left-padded with zeros when shorter.
fn word(s: &str) -> Result<B256, String> {
    let b = hex_bytes(s)?;
    if b.len() > 32 {
        return Err(format!("{} bytes, more than 32", b.len()));
    }
    let mut out = [0u8; 32];
    out[32 - b.len()..].copy_from_slice(&b);
    Ok(B256::from(out))
}

fn address(s: &str) -> Result<Address, String> {
    let b = hex_bytes(s)?;
    if b.len() != 20 {
        return Err(format!("address of {} bytes", b.len()));
    }
    Ok(Address::from_slice(&b))
}

fn parse_account(name: &str, v: &Value) -> Result<AccountState, StateError> {
    let ferr = |field: &'static str, what: String| StateError::Field {
        account: name.to_string(),
        field,
        what,
    };
    let obj = v
        .as_object()
        .ok_or_else(|| ferr("account", "not an object".into()))?;
    let mut a = AccountState::default();
    if let Some(b) = obj.get("balance") {
        a.balance = quantity(b).map_err(|e| ferr("balance", e))?;
    }
    if let Some(n) = obj.get("nonce") {
        a.nonce = quantity_u64(n).map_err(|e| ferr("nonce", e))?;
    }
    if let Some(c) = obj.get("code") {
        let s = c
            .as_str()
            .ok_or_else(|| ferr("code", "not a string".into()))?;
        let code = hex_bytes(s).map_err(|e| ferr("code", e))?;
        if code.len() > MAX_CODE_BYTES {
            return Err(ferr(
                "code",
                format!("{} bytes, above the limit of {MAX_CODE_BYTES}", code.len()),
            ));
        }
        a.code = Bytes::from(code);
    }
    if let Some(st) = obj.get("storage") {
        let m = st
            .as_object()
            .ok_or_else(|| ferr("storage", "not an object".into()))?;
        for (k, v) in m {
            let key = word(k).map_err(|e| ferr("storage", format!("key {k}: {e}")))?;
            let vs = v
                .as_str()
                .ok_or_else(|| ferr("storage", format!("value of {k} is not a string")))?;
            let val = word(vs).map_err(|e| ferr("storage", format!("value of {k}: {e}")))?;
            a.storage.insert(key, U256::from_be_bytes(val.0));
        }
    }
    Ok(a)
}

/// A geth state dump (`{"root": …, "accounts": {address: {balance, nonce, root,
/// codeHash, code, storage}}}`). Returns the state and the root the dump claims.
/// Each account's claimed storage root and code hash are checked.
pub fn parse_geth_dump(text: &str) -> Result<(State, Option<B256>), StateError> {
    let v = parse_json(text)?;
    let claimed = match v.get("root").and_then(|r| r.as_str()) {
        Some(s) => Some(word(s).map_err(|e| StateError::Field {
            account: "-".into(),
            field: "root",
            what: e,
        })?),
        None => None,
    };
    let accounts = v
        .get("accounts")
        .and_then(|a| a.as_object())
        .ok_or(StateError::Shape {
            what: "dump has no \"accounts\" object",
        })?;
    if accounts.len() > MAX_ACCOUNTS {
        return Err(StateError::TooManyAccounts {
            limit: MAX_ACCOUNTS,
        });
    }
    let mut state = State::default();
    for (name, acc) in accounts {
        let addr_str = acc.get("address").and_then(|a| a.as_str()).unwrap_or(name);
        let addr = address(addr_str).map_err(|e| StateError::Field {
            account: name.clone(),
            field: "address",
            what: e,
        })?;
        let a = parse_account(name, acc)?;
        if let Some(r) = acc.get("root").and_then(|r| r.as_str()) {
            let dump = word(r).map_err(|e| StateError::Field {
                account: name.clone(),
                field: "root",
                what: e,
            })?;
            let computed = a.storage_trie().root();
            if dump != computed {
                return Err(StateError::StorageRootMismatch {
                    account: name.clone(),
                    dump,
                    computed,
                });
            }
        }
        if let Some(c) = acc.get("codeHash").and_then(|r| r.as_str()) {
            let dump = word(c).map_err(|e| StateError::Field {
                account: name.clone(),
                field: "codeHash",
                what: e,
            })?;
            let computed = a.code_hash();
            if dump != computed {
                return Err(StateError::CodeHashMismatch {
                    account: name.clone(),
                    dump,
                    computed,
                });
            }
        }
        state.accounts.insert(addr, a);
    }
    Ok((state, claimed))
}

/// A genesis allocation: either `{"alloc": {addr: balance | {balance, nonce, code,
/// storage}}}` or the map itself.
pub fn parse_alloc(text: &str) -> Result<State, StateError> {
    let v = parse_json(text)?;
    alloc_from_value(v.get("alloc").unwrap_or(&v))
}

fn alloc_from_value(v: &Value) -> Result<State, StateError> {
    let m = v.as_object().ok_or(StateError::Shape {
        what: "alloc is not an object",
    })?;
    if m.len() > MAX_ACCOUNTS {
        return Err(StateError::TooManyAccounts {
            limit: MAX_ACCOUNTS,
        });
    }
    let mut state = State::default();
    for (name, acc) in m {
        let addr = address(name).map_err(|e| StateError::Field {
            account: name.clone(),
            field: "address",
            what: e,
        })?;
        let a = match acc {
            Value::Object(_) => parse_account(name, acc)?,
            other => AccountState {
                balance: quantity(other).map_err(|e| StateError::Field {
                    account: name.clone(),
                    field: "balance",
                    what: e,
                })?,
                ..Default::default()
            },
        };
        state.accounts.insert(addr, a);
    }
    Ok(state)
}

/// Fork activation read from a genesis `config`: which optional header fields the
/// genesis block carries.
fn active_at_genesis(config: &Value, block_key: &str, time_key: &str, timestamp: u64) -> bool {
    if let Some(b) = config.get(block_key).and_then(|x| x.as_u64()) {
        return b == 0;
    }
    if let Some(t) = config.get(time_key).and_then(|x| x.as_u64()) {
        return t <= timestamp;
    }
    false
}

/// Build the genesis header and state from a geth `genesis.json`.
pub fn genesis_from_json(text: &str) -> Result<(Header, StateTries), StateError> {
    let v = parse_json(text)?;
    let state = alloc_from_value(v.get("alloc").ok_or(StateError::Shape {
        what: "genesis has no alloc",
    })?)?;
    let tries = state.build();
    let g = |k: &'static str| v.get(k).filter(|x| !x.is_null());
    let ferr = |field: &'static str, what: String| StateError::Field {
        account: "genesis".into(),
        field,
        what,
    };
    let q64 = |k: &'static str| -> Result<u64, StateError> {
        g(k).map(quantity_u64)
            .transpose()
            .map_err(|e| ferr(k, e))
            .map(|x| x.unwrap_or(0))
    };
    let config = v.get("config").cloned().unwrap_or(Value::Null);
    let timestamp = q64("timestamp")?;
    let nonce = q64("nonce")?;
    let extra = match g("extraData").and_then(|x| x.as_str()) {
        Some(s) => hex_bytes(s).map_err(|e| ferr("extraData", e))?,
        None => Vec::new(),
    };
    let mut h = Header {
        parent_hash: match g("parentHash").and_then(|x| x.as_str()) {
            Some(s) => word(s).map_err(|e| ferr("parentHash", e))?,
            None => B256::ZERO,
        },
        ommers_hash: EMPTY_OMMERS_HASH,
        beneficiary: match g("coinbase").and_then(|x| x.as_str()) {
            Some(s) => address(s).map_err(|e| ferr("coinbase", e))?,
            None => Address::ZERO,
        },
        state_root: tries.root,
        transactions_root: EMPTY_ROOT,
        receipts_root: EMPTY_ROOT,
        difficulty: g("difficulty")
            .map(quantity)
            .transpose()
            .map_err(|e| ferr("difficulty", e))?
            .unwrap_or_default(),
        number: q64("number")?,
        gas_limit: q64("gasLimit")?,
        gas_used: q64("gasUsed")?,
        timestamp,
        extra_data: Bytes::from(extra),
        mix_hash: match g("mixHash").and_then(|x| x.as_str()) {
            Some(s) => word(s).map_err(|e| ferr("mixHash", e))?,
            None => B256::ZERO,
        },
        nonce: B64::from(nonce.to_be_bytes()),
        ..Default::default()
    };
    if active_at_genesis(&config, "londonBlock", "", timestamp) {
        h.base_fee_per_gas = Some(match g("baseFeePerGas") {
            Some(x) => quantity_u64(x).map_err(|e| ferr("baseFeePerGas", e))?,
            None => 1_000_000_000,
        });
    }
    if active_at_genesis(&config, "", "shanghaiTime", timestamp) {
        h.withdrawals_root = Some(EMPTY_ROOT);
    }
    if active_at_genesis(&config, "", "cancunTime", timestamp) {
        h.blob_gas_used = Some(q64("blobGasUsed")?);
        h.excess_blob_gas = Some(q64("excessBlobGas")?);
        h.parent_beacon_block_root = Some(B256::ZERO);
    }
    if active_at_genesis(&config, "", "pragueTime", timestamp) {
        // Empty requests list: sha256 of nothing.
        h.requests_hash = Some(alloy_primitives::b256!(
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        ));
    }
    Ok((h, tries))
}
