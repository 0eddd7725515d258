//! The Engine API's JSON-RPC methods while the node syncs (execution-apis `common.md`,
//! `paris.md`, `shanghai.md`, `cancun.md`, `prague.md`). Sans-IO: a request body in, the
//! response body and the forkchoice states it carried out.
//!
//! - `engine_exchangeCapabilities`: the methods below.
//! - `engine_forkchoiceUpdatedV1/V2/V3`: the forkchoice state is checked (three 32-byte
//!   hashes, else -32602) and handed out: its head (or finalized block) becomes the sync
//!   target. Answered `{payloadStatus: {status: SYNCING, latestValidHash: null,
//!   validationError: null}, payloadId: null}`, as a node answers for a head it cannot
//!   validate yet; payload attributes are not processed (no payload is built while syncing).
//! - `engine_newPayloadV1..V4`: the parameters are checked (count, payload fields, blob
//!   hashes, beacon root, execution requests; else -32602); a payload with an empty
//!   transaction or with other blob versioned hashes than expected (V3 on) is INVALID and
//!   one whose `blockHash` is not the hash of the header it
//!   stands for is INVALID_BLOCK_HASH (both checked even while syncing); otherwise SYNCING.
//! - `eth_chainId`, `eth_syncing` (a syncing object: no block imported yet, the target as
//!   the highest block) and `eth_blockNumber` (0), which consensus clients call to see
//!   whether the node is up and synced.
//! - anything else: -32601; a body that is not JSON: -32700; not a request object: -32600.

use alloy_primitives::B256;
use serde_json::{json, Value};

use super::payload::data;

/// The methods this node answers (`engine_exchangeCapabilities` itself is not listed, as
/// the spec requires).
pub const CAPABILITIES: &[&str] = &[
    "engine_forkchoiceUpdatedV1",
    "engine_forkchoiceUpdatedV2",
    "engine_forkchoiceUpdatedV3",
    "engine_newPayloadV1",
    "engine_newPayloadV2",
    "engine_newPayloadV3",
    "engine_newPayloadV4",
];

/// Requests in one batch, at most.
pub const MAX_BATCH: usize = 64;

/// A forkchoice state (`ForkchoiceStateV1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forkchoice {
    pub head: B256,
    pub safe: B256,
    pub finalized: B256,
}

impl Forkchoice {
    /// The block to sync: the head, or with `from_finalized` the finalized block (none while
    /// it is the zero hash, as before the first finalization).
    pub fn target(&self, from_finalized: bool) -> Option<B256> {
        let t = if from_finalized {
            self.finalized
        } else {
            self.head
        };
        (t != B256::ZERO).then_some(t)
    }
}

/// What one request body produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The response body (empty only for an empty batch's nothing-to-say, never here).
    pub body: Vec<u8>,
    /// Forkchoice states received, in order.
    pub forkchoices: Vec<Forkchoice>,
    /// Methods called, in order (for the log and the counters).
    pub methods: Vec<String>,
}

struct RpcError {
    code: i64,
    message: String,
}

fn err(code: i64, message: impl Into<String>) -> RpcError {
    RpcError {
        code,
        message: message.into(),
    }
}

fn invalid_params(what: impl Into<String>) -> RpcError {
    err(-32602, format!("Invalid params: {}", what.into()))
}

fn response(id: Value, r: Result<Value, RpcError>) -> Value {
    match r {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(e) => {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": e.code, "message": e.message}})
        }
    }
}

/// What the node tells about itself through the `eth` methods a consensus client calls on
/// the Engine API port (`common.md` asks for a subset of them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeView {
    pub chain_id: u64,
    /// The highest block the sync knows of (its target), 0 before it knows one.
    pub highest_block: u64,
}

/// Handle one HTTP request body.
pub fn handle(body: &[u8], node: &NodeView) -> Outcome {
    let mut out = Outcome::default();
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            out.body = response(Value::Null, Err(err(-32700, format!("Parse error: {e}"))))
                .to_string()
                .into_bytes();
            return out;
        }
    };
    let reply = match v {
        Value::Array(items) if items.is_empty() => response(
            Value::Null,
            Err(err(-32600, "Invalid Request: empty batch")),
        ),
        Value::Array(items) if items.len() > MAX_BATCH => response(
            Value::Null,
            Err(err(
                -32600,
                format!("Invalid Request: batch of more than {MAX_BATCH}"),
            )),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|i| one(i, node, &mut out)).collect()),
        other => one(&other, node, &mut out),
    };
    out.body = reply.to_string().into_bytes();
    out
}

fn one(req: &Value, node: &NodeView, out: &mut Outcome) -> Value {
    let Some(obj) = req.as_object() else {
        return response(
            Value::Null,
            Err(err(-32600, "Invalid Request: not an object")),
        );
    };
    let id = obj.get("id").cloned().unwrap_or(Value::Null);
    if !matches!(id, Value::Null | Value::Number(_) | Value::String(_)) {
        return response(Value::Null, Err(err(-32600, "Invalid Request: bad id")));
    }
    if obj.get("jsonrpc").and_then(|v| v.as_str()) != Some("2.0") {
        return response(
            id,
            Err(err(-32600, "Invalid Request: jsonrpc must be \"2.0\"")),
        );
    }
    let Some(method) = obj.get("method").and_then(|m| m.as_str()) else {
        return response(id, Err(err(-32600, "Invalid Request: no method")));
    };
    let params: &[Value] = match obj.get("params") {
        None | Some(Value::Null) => &[],
        Some(Value::Array(p)) => p,
        Some(_) => return response(id, Err(invalid_params("params must be an array"))),
    };
    out.methods.push(method.chars().take(64).collect());
    let r = match method {
        "engine_exchangeCapabilities" => exchange_capabilities(params),
        "engine_forkchoiceUpdatedV1"
        | "engine_forkchoiceUpdatedV2"
        | "engine_forkchoiceUpdatedV3" => forkchoice_updated(params).map(|fc| {
            out.forkchoices.push(fc);
            json!({"payloadStatus": syncing(), "payloadId": null})
        }),
        "engine_newPayloadV1" => new_payload(params, 1),
        "engine_newPayloadV2" => new_payload(params, 2),
        "engine_newPayloadV3" => new_payload(params, 3),
        "engine_newPayloadV4" => new_payload(params, 4),
        // A node that syncs has imported no block yet: its head is genesis (block 0).
        "eth_chainId" => Ok(json!(format!("{:#x}", node.chain_id))),
        "eth_syncing" => Ok(json!({
            "startingBlock": "0x0",
            "currentBlock": "0x0",
            "highestBlock": format!("{:#x}", node.highest_block),
        })),
        "eth_blockNumber" => Ok(json!("0x0")),
        _ => Err(err(-32601, "Method not found")),
    };
    response(id, r)
}

fn syncing() -> Value {
    json!({"status": "SYNCING", "latestValidHash": null, "validationError": null})
}

fn exchange_capabilities(params: &[Value]) -> Result<Value, RpcError> {
    match params {
        [Value::Array(theirs)] if theirs.iter().all(|m| m.is_string()) => Ok(json!(CAPABILITIES)),
        _ => Err(invalid_params("expected one array of method names")),
    }
}

/// `DATA` of exactly `n` bytes: `0x` and 2n hex digits.
fn data_n(v: Option<&Value>, n: usize, what: &str) -> Result<Vec<u8>, RpcError> {
    let s = v
        .and_then(|v| v.as_str())
        .ok_or_else(|| invalid_params(format!("{what} missing")))?;
    let b = data(s).ok_or_else(|| invalid_params(format!("{what} is not 0x-prefixed hex")))?;
    if b.len() != n {
        return Err(invalid_params(format!(
            "{what} is {} bytes, not {n}",
            b.len()
        )));
    }
    Ok(b)
}

fn hash(v: Option<&Value>, what: &str) -> Result<B256, RpcError> {
    data_n(v, 32, what).map(|b| B256::from_slice(&b))
}

fn forkchoice_updated(params: &[Value]) -> Result<Forkchoice, RpcError> {
    let (state, attrs) = match params {
        [s] => (s, &Value::Null),
        [s, a] => (s, a),
        _ => {
            return Err(invalid_params(
                "expected forkchoiceState and payloadAttributes",
            ))
        }
    };
    let Some(s) = state.as_object() else {
        return Err(invalid_params("forkchoiceState is not an object"));
    };
    if !(attrs.is_null() || attrs.is_object()) {
        return Err(invalid_params(
            "payloadAttributes is neither null nor an object",
        ));
    }
    Ok(Forkchoice {
        head: hash(s.get("headBlockHash"), "headBlockHash")?,
        safe: hash(s.get("safeBlockHash"), "safeBlockHash")?,
        finalized: hash(s.get("finalizedBlockHash"), "finalizedBlockHash")?,
    })
}

fn new_payload(params: &[Value], version: u8) -> Result<Value, RpcError> {
    let want = match version {
        1 | 2 => 1,
        3 => 3,
        _ => 4,
    };
    if params.len() != want {
        return Err(invalid_params(format!(
            "engine_newPayloadV{version} takes {want} parameter(s), not {}",
            params.len()
        )));
    }
    let Some(p) = params[0].as_object() else {
        return Err(invalid_params("executionPayload is not an object"));
    };
    hash(p.get("blockHash"), "blockHash")?;
    hash(p.get("parentHash"), "parentHash")?;
    let Some(txs) = p.get("transactions").and_then(|t| t.as_array()) else {
        return Err(invalid_params("transactions missing"));
    };
    let mut empty_tx = None;
    for (i, t) in txs.iter().enumerate() {
        let b = t
            .as_str()
            .and_then(data)
            .ok_or_else(|| invalid_params(format!("transaction {i} is not DATA")))?;
        if b.is_empty() && empty_tx.is_none() {
            empty_tx = Some(i);
        }
    }
    let mut beacon = None;
    let mut expected_blobs = None;
    if version >= 3 {
        let Some(hashes) = params[1].as_array() else {
            return Err(invalid_params(
                "expectedBlobVersionedHashes is not an array",
            ));
        };
        let mut list = Vec::with_capacity(hashes.len());
        for h in hashes {
            list.push(hash(Some(h), "a blob versioned hash")?);
        }
        expected_blobs = Some(list);
        beacon = Some(hash(params.get(2), "parentBeaconBlockRoot")?);
    }
    let mut requests = None;
    if version >= 4 {
        let Some(reqs) = params[3].as_array() else {
            return Err(invalid_params("executionRequests is not an array"));
        };
        let mut list = Vec::with_capacity(reqs.len());
        let mut last_type: Option<u8> = None;
        for r in reqs {
            let b = r
                .as_str()
                .and_then(data)
                .ok_or_else(|| invalid_params("an execution request is not DATA"))?;
            if b.len() <= 1 {
                return Err(invalid_params("an execution request has no request_data"));
            }
            if last_type.is_some_and(|t| b[0] <= t) {
                return Err(invalid_params(
                    "execution requests are not in strictly ascending type order",
                ));
            }
            last_type = Some(b[0]);
            list.push(b);
        }
        requests = Some(list);
    }
    if let Some(i) = empty_tx {
        return Ok(
            json!({"status": "INVALID", "latestValidHash": null, "validationError": format!("transaction {i} is empty")}),
        );
    }
    // The blob hashes (V3 on) and the blockHash are checked even while syncing.
    if let Some(expected) = expected_blobs {
        let txs: Vec<Vec<u8>> = txs
            .iter()
            .filter_map(|t| t.as_str().and_then(data))
            .collect();
        let actual = super::payload::blob_versioned_hashes(&txs);
        if actual.as_ref() != Ok(&expected) {
            let why = match actual {
                Err(e) => e,
                Ok(a) => format!(
                    "the payload's {} blob versioned hash(es) are not the {} expected",
                    a.len(),
                    expected.len()
                ),
            };
            return Ok(
                json!({"status": "INVALID", "latestValidHash": null, "validationError": why}),
            );
        }
    }
    // The blockHash check.
    match super::payload::check_block_hash(p, version, beacon, requests.as_deref()) {
        Err(why) => Err(invalid_params(why)),
        Ok(Some(why)) => Ok(
            json!({"status": "INVALID_BLOCK_HASH", "latestValidHash": null, "validationError": why}),
        ),
        Ok(None) => Ok(syncing()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(body: &str) -> (Value, Outcome) {
        let o = handle(body.as_bytes(), &VIEW);
        let v: Value = serde_json::from_slice(&o.body).expect("the response is JSON");
        (v, o)
    }

    const VIEW: NodeView = NodeView {
        chain_id: 4242,
        highest_block: 600,
    };

    #[test]
    fn eth_methods_say_the_node_is_syncing() {
        let (r, _) = call(r#"{"jsonrpc":"2.0","id":1,"method":"eth_syncing","params":[]}"#);
        assert_eq!(
            r["result"],
            json!({"startingBlock": "0x0", "currentBlock": "0x0", "highestBlock": "0x258"})
        );
        let (r, _) = call(r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}"#);
        assert_eq!(r["result"], "0x1092");
        let (r, _) = call(r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#);
        assert_eq!(r["result"], "0x0");
    }

    fn h(b: u8) -> String {
        format!("0x{}", hex::encode([b; 32]))
    }

    fn fcu(version: u8, head: &str) -> String {
        json!({"jsonrpc": "2.0", "id": 7, "method": format!("engine_forkchoiceUpdatedV{version}"),
               "params": [{"headBlockHash": head, "safeBlockHash": h(2), "finalizedBlockHash": h(3)}, null]})
        .to_string()
    }

    #[test]
    fn forkchoice_updated_answers_syncing_and_hands_out_the_state() {
        for v in 1..=3 {
            let (r, o) = call(&fcu(v, &h(1)));
            assert_eq!(r["id"], 7);
            assert_eq!(
                r["result"],
                json!({"payloadStatus": {"status": "SYNCING", "latestValidHash": null, "validationError": null}, "payloadId": null})
            );
            let fc = o.forkchoices[0];
            assert_eq!(fc.target(false), Some(B256::from([1; 32])));
            assert_eq!(fc.target(true), Some(B256::from([3; 32])));
        }
        let zero = Forkchoice {
            head: B256::from([1; 32]),
            safe: B256::ZERO,
            finalized: B256::ZERO,
        };
        assert_eq!(zero.target(true), None);
    }

    #[test]
    fn a_malformed_forkchoice_state_is_invalid_params() {
        for bad in ["0x01", "nothex", "0x"] {
            let (r, o) = call(&fcu(3, bad));
            assert_eq!(r["error"]["code"], -32602, "{bad}");
            assert!(o.forkchoices.is_empty());
        }
        let (r, _) =
            call(r#"{"jsonrpc":"2.0","id":1,"method":"engine_forkchoiceUpdatedV3","params":[]}"#);
        assert_eq!(r["error"]["code"], -32602);
    }

    #[test]
    fn capabilities_unknown_methods_and_bad_json() {
        let (r, _) = call(
            r#"{"jsonrpc":"2.0","id":"a","method":"engine_exchangeCapabilities","params":[["engine_newPayloadV4"]]}"#,
        );
        assert_eq!(r["id"], "a");
        let caps: Vec<&str> = r["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(caps, CAPABILITIES);
        assert!(!caps.contains(&"engine_exchangeCapabilities"));
        let (r, _) =
            call(r#"{"jsonrpc":"2.0","id":2,"method":"engine_getPayloadV4","params":["0x01"]}"#);
        assert_eq!(r["error"]["code"], -32601);
        let (r, _) = call(r#"{"jsonrpc":"2.0","id":2,"meth"#);
        assert_eq!(r["error"]["code"], -32700);
        assert_eq!(r["id"], Value::Null);
        let (r, _) = call(r#"[1]"#);
        assert_eq!(r[0]["error"]["code"], -32600);
        let (r, _) = call(r#"{"id":3,"method":"engine_exchangeCapabilities","params":[[]]}"#);
        assert_eq!(r["error"]["code"], -32600);
    }

    /// A complete payload of `version` whose blockHash is right for the beacon root h(7)
    /// and `requests`.
    fn payload_for(txs: &[&str], version: u8, requests: Option<&[Vec<u8>]>) -> Value {
        let mut p = json!({"parentHash": h(4), "feeRecipient": format!("0x{}", "11".repeat(20)),
            "stateRoot": h(5), "receiptsRoot": h(6), "logsBloom": format!("0x{}", "00".repeat(256)),
            "prevRandao": h(7), "blockNumber": "0x10", "gasLimit": "0x1c9c380", "gasUsed": "0x0",
            "timestamp": "0x6553f100", "extraData": "0x", "baseFeePerGas": "0x7",
            "blockHash": h(0), "transactions": txs});
        if version >= 2 {
            p["withdrawals"] = json!([{"index": "0x0", "validatorIndex": "0x1",
                "address": format!("0x{}", "22".repeat(20)), "amount": "0x64"}]);
        }
        if version >= 3 {
            p["blobGasUsed"] = json!("0x0");
            p["excessBlobGas"] = json!("0x0");
        }
        let beacon = (version >= 3).then(|| B256::from([7; 32]));
        let hd =
            super::super::payload::header_of(p.as_object().unwrap(), version, beacon, requests)
                .unwrap();
        p["blockHash"] = json!(format!("{}", alloy_primitives::keccak256(hd.encode())));
        p
    }

    fn payload(txs: &[&str]) -> Value {
        payload_for(txs, 1, None)
    }

    #[test]
    fn new_payload_checks_its_parameters_then_answers_syncing() {
        let p = payload(&["0x02f8"]);
        let reqs = [vec![0u8, 1], vec![1u8, 0xff]];
        let cases = [
            (1, json!([p])),
            (2, json!([payload_for(&["0x02f8"], 2, None)])),
            (3, json!([payload_for(&["0x02f8"], 3, None), [], h(7)])),
            (
                4,
                json!([
                    payload_for(&["0x02f8"], 4, Some(&reqs)),
                    [],
                    h(7),
                    ["0x0001", "0x01ff"]
                ]),
            ),
        ];
        for (v, params) in cases {
            let body = json!({"jsonrpc":"2.0","id":v,"method":format!("engine_newPayloadV{v}"),"params":params});
            let (r, _) = call(&body.to_string());
            assert_eq!(r["result"]["status"], "SYNCING", "V{v}: {r}");
            assert_eq!(r["result"]["latestValidHash"], Value::Null);
        }
        let bad = [
            (3, json!([p])),
            (3, json!([p, [h(6)], "0x01"])),
            (4, json!([p, [], h(7), ["0x01ff", "0x0001"]])),
            (4, json!([p, [], h(7), ["0x00"]])),
            (4, json!([p, [], h(7), null])),
            (1, json!([{"blockHash": h(5)}])),
        ];
        for (v, params) in bad {
            let body = json!({"jsonrpc":"2.0","id":1,"method":format!("engine_newPayloadV{v}"),"params":params});
            let (r, _) = call(&body.to_string());
            assert_eq!(r["error"]["code"], -32602, "V{v} {params}: {r}");
        }
        let body = json!({"jsonrpc":"2.0","id":1,"method":"engine_newPayloadV1","params":[payload(&["0x01", "0x"])]});
        let (r, _) = call(&body.to_string());
        assert_eq!(r["result"]["status"], "INVALID");
        assert_eq!(r["result"]["latestValidHash"], Value::Null);
        // Blob hashes expected that the payload does not carry: INVALID.
        let body = json!({"jsonrpc":"2.0","id":1,"method":"engine_newPayloadV3","params":[payload_for(&["0x02f8"], 3, None), [h(6)], h(7)]});
        let (r, _) = call(&body.to_string());
        assert_eq!(r["result"]["status"], "INVALID", "{r}");
        // The claimed hash is not the payload's: INVALID_BLOCK_HASH, even while syncing.
        let mut wrong = payload(&["0x02f8"]);
        wrong["blockHash"] = json!(h(9));
        let body = json!({"jsonrpc":"2.0","id":1,"method":"engine_newPayloadV1","params":[wrong]});
        let (r, _) = call(&body.to_string());
        assert_eq!(r["result"]["status"], "INVALID_BLOCK_HASH", "{r}");
        assert_eq!(r["result"]["latestValidHash"], Value::Null);
        // V4 with other requests than the hash was made for.
        let p4 = payload_for(&[], 4, Some(&reqs));
        let body = json!({"jsonrpc":"2.0","id":1,"method":"engine_newPayloadV4","params":[p4, [], h(7), ["0x0001"]]});
        let (r, _) = call(&body.to_string());
        assert_eq!(r["result"]["status"], "INVALID_BLOCK_HASH", "{r}");
    }

    #[test]
    fn never_panics_on_junk() {
        for body in [
            "",
            "null",
            "{}",
            "[]",
            "\"x\"",
            "{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":1}",
        ] {
            let o = handle(body.as_bytes(), &VIEW);
            let _: Value = serde_json::from_slice(&o.body).unwrap();
        }
    }
}
