//! A message of either sub-protocol, with the request/response pairing helpers.

use catchup_devp2p::eth::EthMessage;
use catchup_devp2p::snap::SnapMessage;

/// A wire message of eth or snap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wire {
    Eth(EthMessage),
    Snap(SnapMessage),
}

/// `(request id, is_response)` of a request or response; `None` for other messages.
pub fn request_id(w: &Wire) -> Option<(u64, bool)> {
    use EthMessage as E;
    use SnapMessage as S;
    Some(match w {
        Wire::Eth(E::GetBlockHeaders { request_id, .. })
        | Wire::Eth(E::GetBlockBodies { request_id, .. })
        | Wire::Eth(E::GetReceipts { request_id, .. })
        | Wire::Eth(E::GetReceipts70 { request_id, .. })
        | Wire::Eth(E::GetNodeData { request_id, .. }) => (*request_id, false),
        Wire::Eth(E::BlockHeaders { request_id, .. })
        | Wire::Eth(E::BlockBodies { request_id, .. })
        | Wire::Eth(E::Receipts { request_id, .. })
        | Wire::Eth(E::Receipts70 { request_id, .. })
        | Wire::Eth(E::NodeData { request_id, .. }) => (*request_id, true),
        Wire::Snap(S::GetAccountRange { request_id, .. })
        | Wire::Snap(S::GetStorageRanges { request_id, .. })
        | Wire::Snap(S::GetByteCodes { request_id, .. })
        | Wire::Snap(S::GetTrieNodes { request_id, .. }) => (*request_id, false),
        Wire::Snap(S::AccountRange { request_id, .. })
        | Wire::Snap(S::StorageRanges { request_id, .. })
        | Wire::Snap(S::ByteCodes { request_id, .. })
        | Wire::Snap(S::TrieNodes { request_id, .. }) => (*request_id, true),
        Wire::Eth(E::Status(_))
        | Wire::Eth(E::Ignored { .. })
        | Wire::Eth(E::BlockRangeUpdate { .. }) => return None,
    })
}

/// The empty answer to a request (`None` if `req` is not a request).
pub fn empty_response(req: &Wire) -> Option<Wire> {
    use EthMessage as E;
    use SnapMessage as S;
    Some(match req {
        Wire::Eth(E::GetBlockHeaders { request_id, .. }) => Wire::Eth(E::BlockHeaders {
            request_id: *request_id,
            headers: vec![],
        }),
        Wire::Eth(E::GetBlockBodies { request_id, .. }) => Wire::Eth(E::BlockBodies {
            request_id: *request_id,
            bodies: vec![],
        }),
        Wire::Eth(E::GetReceipts { request_id, .. }) => Wire::Eth(E::Receipts {
            request_id: *request_id,
            receipts: vec![],
        }),
        Wire::Eth(E::GetReceipts70 { request_id, .. }) => Wire::Eth(E::Receipts70 {
            request_id: *request_id,
            last_block_incomplete: false,
            receipts: vec![],
        }),
        Wire::Eth(E::GetNodeData { request_id, .. }) => Wire::Eth(E::NodeData {
            request_id: *request_id,
            nodes: vec![],
        }),
        Wire::Snap(S::GetAccountRange { request_id, .. }) => Wire::Snap(S::AccountRange {
            request_id: *request_id,
            accounts: vec![],
            proof: vec![],
        }),
        Wire::Snap(S::GetStorageRanges { request_id, .. }) => Wire::Snap(S::StorageRanges {
            request_id: *request_id,
            slots: vec![],
            proof: vec![],
        }),
        Wire::Snap(S::GetByteCodes { request_id, .. }) => Wire::Snap(S::ByteCodes {
            request_id: *request_id,
            codes: vec![],
        }),
        Wire::Snap(S::GetTrieNodes { request_id, .. }) => Wire::Snap(S::TrieNodes {
            request_id: *request_id,
            nodes: vec![],
        }),
        _ => return None,
    })
}
