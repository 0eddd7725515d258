//! Download and verify a block range from one eth peer: headers by number in batches
//! (each hash-linked to its parent, the first to the known genesis/anchor), then bodies by
//! hash in batches (each checked against its header's transactions root, ommers hash and
//! withdrawals root). Nothing unverified is returned.

use catchup_devp2p::eth::{EthMessage, HashOrNumber};
use catchup_eth::{verify_body, BlockBody, Header, B256};

use super::eth_peer::{EthPeer, Responder};
use super::wire::Wire;

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("network: {0}")]
    Net(#[from] super::conn::NetError),
    #[error("peer answered {what} with an unexpected message")]
    WrongMessage { what: &'static str },
    #[error("block {number}: {detail}")]
    Invalid { number: u64, detail: String },
    #[error("peer returned no {what} for block {number}")]
    Missing { what: &'static str, number: u64 },
}

/// Verified blocks `1..=target`.
#[derive(Debug, Default)]
pub struct Downloaded {
    pub headers: Vec<Header>,
    pub bodies: Vec<BlockBody>,
    pub requests: u64,
    pub bytes: u64,
}

/// Fetch and verify headers `from..=to` whose first parent hash must be `anchor`.
#[allow(clippy::too_many_arguments)]
pub async fn fetch_headers(
    peer: &mut EthPeer,
    anchor: B256,
    from: u64,
    to: u64,
    batch: u64,
    timeout_ms: u64,
    responder: &dyn Responder,
    out: &mut Downloaded,
) -> Result<(), DownloadError> {
    let mut next = from;
    let mut parent = out.headers.last().map(|h| h.hash()).unwrap_or(anchor);
    while next <= to {
        let amount = batch.min(to - next + 1);
        let resp = peer
            .request(
                |request_id| {
                    Wire::Eth(EthMessage::GetBlockHeaders {
                        request_id,
                        origin: HashOrNumber::Number(next),
                        amount,
                        skip: 0,
                        reverse: false,
                    })
                },
                timeout_ms,
                responder,
            )
            .await?;
        out.requests += 1;
        let Wire::Eth(EthMessage::BlockHeaders { headers, .. }) = resp else {
            return Err(DownloadError::WrongMessage {
                what: "GetBlockHeaders",
            });
        };
        if headers.is_empty() {
            return Err(DownloadError::Missing {
                what: "headers",
                number: next,
            });
        }
        for raw in headers.iter().take(amount as usize) {
            out.bytes += raw.len() as u64;
            let h = Header::decode(raw).map_err(|e| DownloadError::Invalid {
                number: next,
                detail: format!("header: {e}"),
            })?;
            if h.number() != next {
                return Err(DownloadError::Invalid {
                    number: next,
                    detail: format!("got header number {}", h.number()),
                });
            }
            if h.parent_hash() != parent {
                return Err(DownloadError::Invalid {
                    number: next,
                    detail: "parent hash does not link".into(),
                });
            }
            parent = h.hash();
            out.headers.push(h);
            next += 1;
        }
    }
    Ok(())
}

/// Fetch and verify the bodies of every downloaded header.
pub async fn fetch_bodies(
    peer: &mut EthPeer,
    batch: usize,
    timeout_ms: u64,
    responder: &dyn Responder,
    out: &mut Downloaded,
) -> Result<(), DownloadError> {
    while out.bodies.len() < out.headers.len() {
        let start = out.bodies.len();
        let end = (start + batch).min(out.headers.len());
        let hashes: Vec<[u8; 32]> = out.headers[start..end].iter().map(|h| h.hash().0).collect();
        let resp = peer
            .request(
                |request_id| Wire::Eth(EthMessage::GetBlockBodies { request_id, hashes }),
                timeout_ms,
                responder,
            )
            .await?;
        out.requests += 1;
        let Wire::Eth(EthMessage::BlockBodies { bodies, .. }) = resp else {
            return Err(DownloadError::WrongMessage {
                what: "GetBlockBodies",
            });
        };
        if bodies.is_empty() {
            return Err(DownloadError::Missing {
                what: "bodies",
                number: out.headers[start].number(),
            });
        }
        for raw in bodies.iter().take(end - start) {
            let h = &out.headers[out.bodies.len()];
            out.bytes += raw.len() as u64;
            let body = BlockBody::decode(raw).map_err(|e| DownloadError::Invalid {
                number: h.number(),
                detail: format!("body: {e}"),
            })?;
            verify_body(h, &body).map_err(|e| DownloadError::Invalid {
                number: h.number(),
                detail: e.to_string(),
            })?;
            out.bodies.push(body);
        }
    }
    Ok(())
}

/// Fetch the receipts of every downloaded header and check each block's list against its
/// header's receipts root. Returns the number of receipts verified.
pub async fn fetch_receipts(
    peer: &mut EthPeer,
    batch: usize,
    timeout_ms: u64,
    responder: &dyn Responder,
    out: &Downloaded,
) -> Result<u64, DownloadError> {
    let mut done = 0usize;
    let mut receipts_total = 0u64;
    while done < out.headers.len() {
        let end = (done + batch).min(out.headers.len());
        let hashes: Vec<[u8; 32]> = out.headers[done..end].iter().map(|h| h.hash().0).collect();
        let resp = peer
            .request(
                |request_id| Wire::Eth(EthMessage::GetReceipts { request_id, hashes }),
                timeout_ms,
                responder,
            )
            .await?;
        let Wire::Eth(EthMessage::Receipts { receipts, .. }) = resp else {
            return Err(DownloadError::WrongMessage {
                what: "GetReceipts",
            });
        };
        if receipts.is_empty() {
            return Err(DownloadError::Missing {
                what: "receipts",
                number: out.headers[done].number(),
            });
        }
        for raw in receipts.iter().take(end - done) {
            let h = &out.headers[done];
            // EthPeer hands receipts over in the consensus shape whatever the eth version.
            let list = catchup_eth::decode_receipts(raw).map_err(|e| DownloadError::Invalid {
                number: h.number(),
                detail: format!("receipts: {e}"),
            })?;
            catchup_eth::verify_receipts(h, &list).map_err(|e| DownloadError::Invalid {
                number: h.number(),
                detail: e.to_string(),
            })?;
            receipts_total += list.len() as u64;
            done += 1;
        }
    }
    Ok(receipts_total)
}
