//! An RLPx connection speaking eth (and snap when shared): the Status exchange, requests
//! with ids and deadlines, and answering the peer's own requests from a [`Responder`].

use std::time::{Duration, Instant};

use catchup_devp2p::eth::{EthMessage, Status};
use catchup_devp2p::p2p::{route, DisconnectReason, Route, SharedCapability};
use catchup_devp2p::snap::SnapMessage;
use catchup_devp2p::Devp2pError;

use super::conn::{NetError, PeerConn};
use super::wire::{self, Wire};

/// Answers requests a peer sends us.
pub trait Responder {
    /// The answer (carrying the request's id) and how long to hold it back (ms); `None`
    /// leaves the request unanswered.
    fn respond(&self, req: &Wire) -> (Option<Wire>, u64);
}

/// Answers every request with an empty list (a node that serves nothing).
pub struct EmptyResponder;

impl Responder for EmptyResponder {
    fn respond(&self, req: &Wire) -> (Option<Wire>, u64) {
        (wire::empty_response(req), 0)
    }
}

/// What our side announces in Status (the default: genesis of an unnamed chain, for
/// syncs from in-process peers, which never read it).
#[derive(Debug, Clone, Default)]
pub struct StatusInfo {
    pub network_id: u64,
    pub total_difficulty: Vec<u8>,
    pub head_hash: [u8; 32],
    pub head_number: u64,
    pub genesis_hash: [u8; 32],
    pub fork_id: catchup_devp2p::forkid::ForkId,
    /// Our fork schedule: with it a peer's fork id is checked by all EIP-2124 rules, without
    /// it only by rule 1.
    pub forks: Option<ForkCheck>,
}

impl StatusInfo {
    /// The Status message in the shape of eth version `version`.
    pub fn status(&self, version: u64) -> Status {
        Status {
            version,
            network_id: self.network_id,
            total_difficulty: self.total_difficulty.clone(),
            head_hash: self.head_hash,
            genesis_hash: self.genesis_hash,
            fork_id: self.fork_id,
            earliest_block: 0,
            latest_block: self.head_number,
        }
    }
}

/// Our fork schedule and head time, to check a peer's fork id by the EIP-2124 rules.
#[derive(Debug, Clone)]
pub struct ForkCheck {
    pub schedule: catchup_devp2p::forkid::ForkSchedule,
    pub head_time: u64,
}

/// Check the remote Status's fork id. With our schedule, all EIP-2124 rules apply. Without
/// it only rule 1 can be decided: a remote on our own fork state must not announce a next
/// fork block we have already passed; a different fork hash is accepted (the schedule is
/// needed to tell a stale or syncing peer from another chain).
pub fn check_fork_id(
    ours: &StatusInfo,
    forks: Option<&ForkCheck>,
    remote: &catchup_devp2p::forkid::ForkId,
) -> Result<(), catchup_devp2p::forkid::ForkIdReject> {
    use catchup_devp2p::forkid::{ForkIdReject, TIMESTAMP_THRESHOLD};
    match forks {
        Some(f) => f.schedule.validate(ours.head_number, f.head_time, remote),
        None => {
            let passed = remote.hash == ours.fork_id.hash
                && remote.next > 0
                && remote.next <= TIMESTAMP_THRESHOLD
                && ours.head_number >= remote.next;
            if passed {
                return Err(ForkIdReject::LocalIncompatibleOrStale {
                    remote: *remote,
                    ours: ours.fork_id,
                });
            }
            Ok(())
        }
    }
}

/// Counters of one peer connection.
#[derive(Debug, Default, Clone)]
pub struct PeerStats {
    pub requests_sent: u64,
    pub responses_received: u64,
    pub requests_served: u64,
    pub ignored_messages: u64,
    pub bytes_received: u64,
}

/// An eth (+snap) peer.
pub struct EthPeer {
    pub conn: PeerConn,
    pub eth: SharedCapability,
    pub snap: Option<SharedCapability>,
    /// The peer's Status.
    pub status: Status,
    next_request_id: u64,
    pub stats: PeerStats,
}

impl std::fmt::Debug for EthPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EthPeer {{ {:?}, eth/{} }}", self.conn, self.eth.version)
    }
}

/// What a decoded incoming message is.
enum Incoming {
    Response(u64, Wire),
    Request(Wire),
    Other,
}

impl EthPeer {
    /// Exchange Status on an established connection. The peer must be on the same network
    /// and genesis; its fork id is checked as far as possible without our fork schedule
    /// (see [`check_fork_id`]; [`EthPeer::handshake_with_forks`] checks all rules).
    pub async fn handshake(conn: PeerConn, ours: &StatusInfo) -> Result<EthPeer, NetError> {
        Self::handshake_with_forks(conn, ours, ours.forks.as_ref()).await
    }

    /// Exchange Status; the peer must be on the same network and genesis, and its fork id
    /// compatible with ours by EIP-2124 (all rules when `forks` is given).
    pub async fn handshake_with_forks(
        mut conn: PeerConn,
        ours: &StatusInfo,
        forks: Option<&ForkCheck>,
    ) -> Result<EthPeer, NetError> {
        let peer = conn.peer;
        let Some(eth) = conn.capability("eth").cloned() else {
            let _ = conn.disconnect(DisconnectReason::UselessPeer).await;
            return Err(NetError::Useless {
                peer,
                detail: "eth not shared".into(),
            });
        };
        let snap = conn.capability("snap").cloned();
        conn.send(eth.offset, &ours.status(eth.version).encode())
            .await?;
        let deadline = Instant::now() + Duration::from_millis(10_000);
        // Status must be the first sub-protocol message.
        let (id, payload) = conn.recv_until(deadline).await?;
        if id != eth.offset {
            let _ = conn.disconnect(DisconnectReason::BreachOfProtocol).await;
            let source = match route(&conn.shared, id) {
                Err(e) => e,
                Ok(_) => Devp2pError::rlp("status", format!("message {id:#x} before Status")),
            };
            tracing::debug!(%peer, error = %source, "dropping peer: no Status first");
            return Err(NetError::Protocol { peer, source });
        }
        let status = match Status::decode(&payload) {
            Ok(s) => s,
            Err(source) => {
                tracing::debug!(%peer, error = %source, "dropping peer: bad Status");
                let _ = conn.disconnect(DisconnectReason::BreachOfProtocol).await;
                return Err(NetError::Protocol { peer, source });
            }
        };
        if status.network_id != ours.network_id || status.genesis_hash != ours.genesis_hash {
            let _ = conn.disconnect(DisconnectReason::SubprotocolError).await;
            return Err(NetError::Useless {
                peer,
                detail: format!(
                    "different chain: network {} genesis {} (ours {} {})",
                    status.network_id,
                    hex::encode(status.genesis_hash),
                    ours.network_id,
                    hex::encode(ours.genesis_hash)
                ),
            });
        }
        if let Err(reject) = check_fork_id(ours, forks, &status.fork_id) {
            tracing::debug!(%peer, reason = %reject, "dropping peer: incompatible fork id");
            let _ = conn.disconnect(DisconnectReason::SubprotocolError).await;
            return Err(NetError::Useless {
                peer,
                detail: reject.to_string(),
            });
        }
        Ok(EthPeer {
            conn,
            eth,
            snap,
            status,
            next_request_id: 1,
            stats: PeerStats::default(),
        })
    }

    fn decode(&self, wire_id: u64, payload: &[u8]) -> Result<Incoming, Devp2pError> {
        let shared = [self.eth.clone()]
            .into_iter()
            .chain(self.snap.clone())
            .collect::<Vec<_>>();
        let w = match route(&shared, wire_id)? {
            Route::P2p(_) => return Ok(Incoming::Other),
            Route::Cap { cap: 0, id } => match EthMessage::decode(self.eth.version, id, payload)? {
                EthMessage::Ignored { .. } | EthMessage::Status(_) => return Ok(Incoming::Other),
                EthMessage::Receipts {
                    request_id,
                    receipts,
                } if self.eth.version >= 69 => Wire::Eth(EthMessage::Receipts {
                    request_id,
                    receipts: receipts_from_eth69(&receipts)?,
                }),
                m => Wire::Eth(m),
            },
            Route::Cap { id, .. } => Wire::Snap(SnapMessage::decode(id, payload)?),
        };
        Ok(match wire::request_id(&w) {
            Some((rid, true)) => Incoming::Response(rid, w),
            Some((_, false)) => Incoming::Request(w),
            None => Incoming::Other,
        })
    }

    async fn send_wire(&mut self, w: &Wire) -> Result<(), NetError> {
        let peer = self.conn.peer;
        let (wire_id, payload) = match w {
            Wire::Eth(EthMessage::Receipts {
                request_id,
                receipts,
            }) if self.eth.version >= 69 => {
                let m = EthMessage::Receipts {
                    request_id: *request_id,
                    receipts: receipts_to_eth69(receipts),
                };
                (self.eth.offset + m.id(), m.encode())
            }
            Wire::Eth(m) => (self.eth.offset + m.id(), m.encode()),
            Wire::Snap(m) => {
                let Some(s) = &self.snap else {
                    return Err(NetError::Useless {
                        peer,
                        detail: "snap not shared".into(),
                    });
                };
                (s.offset + m.id(), m.encode())
            }
        };
        self.conn.send(wire_id, &payload).await
    }

    async fn answer(&mut self, req: &Wire, responder: &dyn Responder) -> Result<(), NetError> {
        let (resp, delay_ms) = responder.respond(req);
        if delay_ms > 0 {
            glommio::timer::sleep(Duration::from_millis(delay_ms)).await;
        }
        if let Some(w) = resp {
            self.send_wire(&w).await?;
            self.stats.requests_served += 1;
        }
        Ok(())
    }

    /// Allocate a request id.
    pub fn next_request_id(&mut self) -> u64 {
        let rid = self.next_request_id;
        self.next_request_id += 1;
        rid
    }

    /// Send the request `make(request_id)` and wait up to `timeout_ms` for its answer,
    /// answering the peer's own requests from `responder` meanwhile. A malformed message
    /// drops the connection.
    pub async fn request(
        &mut self,
        make: impl FnOnce(u64) -> Wire,
        timeout_ms: u64,
        responder: &dyn Responder,
    ) -> Result<Wire, NetError> {
        let peer = self.conn.peer;
        let rid = self.next_request_id();
        let w = make(rid);
        self.send_wire(&w).await?;
        self.stats.requests_sent += 1;
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        loop {
            let (id, payload) = self.conn.recv_until(deadline).await?;
            self.stats.bytes_received += payload.len() as u64;
            match self.decode(id, &payload) {
                Ok(Incoming::Response(r, resp)) if r == rid => {
                    self.stats.responses_received += 1;
                    return Ok(resp);
                }
                Ok(Incoming::Response(..)) | Ok(Incoming::Other) => {
                    self.stats.ignored_messages += 1
                }
                Ok(Incoming::Request(q)) => self.answer(&q, responder).await?,
                Err(source) => {
                    tracing::debug!(%peer, error = %source, "dropping peer: undecodable message");
                    let _ = self
                        .conn
                        .disconnect(DisconnectReason::BreachOfProtocol)
                        .await;
                    return Err(NetError::Protocol { peer, source });
                }
            }
        }
    }

    /// Serve the peer's requests until it leaves, goes idle, or misbehaves.
    pub async fn serve(&mut self, responder: &dyn Responder) -> Result<(), NetError> {
        let peer = self.conn.peer;
        loop {
            let (id, payload) = match self.conn.recv().await {
                Ok(m) => m,
                Err(e @ NetError::Timeout { .. }) => {
                    tracing::debug!(%peer, "dropping idle peer");
                    let _ = self.conn.disconnect(DisconnectReason::Timeout).await;
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            match self.decode(id, &payload) {
                Ok(Incoming::Request(q)) => self.answer(&q, responder).await?,
                Ok(_) => self.stats.ignored_messages += 1,
                Err(source) => {
                    tracing::debug!(%peer, error = %source, "dropping peer: undecodable message");
                    let _ = self
                        .conn
                        .disconnect(DisconnectReason::BreachOfProtocol)
                        .await;
                    return Err(NetError::Protocol { peer, source });
                }
            }
        }
    }
}

/// eth/69 receipts (no bloom) to the consensus encoding the rest of the node uses.
fn receipts_from_eth69(lists: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, Devp2pError> {
    lists
        .iter()
        .map(|raw| {
            catchup_eth::decode_receipts_eth69(raw)
                .map(|r| catchup_eth::encode_receipts(&r))
                .map_err(|e| Devp2pError::rlp("eth/69 receipts", e))
        })
        .collect()
}

/// Consensus-encoded receipt lists to the eth/69 form; lists that do not decode are sent empty.
fn receipts_to_eth69(lists: &[Vec<u8>]) -> Vec<Vec<u8>> {
    lists
        .iter()
        .map(|raw| match catchup_eth::decode_receipts(raw) {
            Ok(r) => catchup_eth::encode_receipts_eth69(&r),
            Err(_) => catchup_eth::encode_receipts_eth69(&[]),
        })
        .collect()
}

#[cfg(test)]
mod fork_tests {
    use super::*;
    use catchup_devp2p::forkid::{ForkId, ForkIdReject, ForkSchedule};

    fn mainnet(head_number: u64) -> (StatusInfo, ForkCheck) {
        let mut genesis_hash = [0u8; 32];
        hex::decode_to_slice(
            "d4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3",
            &mut genesis_hash,
        )
        .unwrap();
        let schedule = ForkSchedule {
            genesis_hash,
            genesis_timestamp: 0,
            block_forks: vec![
                1_150_000, 1_920_000, 2_463_000, 2_675_000, 4_370_000, 7_280_000,
            ],
            time_forks: vec![],
        };
        let ours = StatusInfo {
            network_id: 1,
            total_difficulty: vec![1],
            head_hash: [0; 32],
            head_number,
            genesis_hash,
            fork_id: schedule.fork_id(head_number, 0),
            forks: None,
        };
        (
            ours,
            ForkCheck {
                schedule,
                head_time: 0,
            },
        )
    }

    fn id(hash: u32, next: u64) -> ForkId {
        ForkId {
            hash: hash.to_be_bytes(),
            next,
        }
    }

    #[test]
    fn eip2124_mainnet_examples_with_schedule() {
        let cases: [(u64, ForkId, bool); 13] = [
            (7_987_396, id(0x668db0af, 0), true),
            (7_987_396, id(0x668db0af, u64::MAX), true),
            (7_279_999, id(0xa00bc324, 0), true),
            (7_279_999, id(0xa00bc324, 7_280_000), true),
            (7_279_999, id(0xa00bc324, u64::MAX), true),
            (7_987_396, id(0xa00bc324, 7_280_000), true),
            (7_987_396, id(0x3edd5b10, 4_370_000), true),
            (7_279_999, id(0x668db0af, 0), true),
            (4_369_999, id(0xa00bc324, 0), true),
            (7_987_396, id(0xa00bc324, 0), false),
            (7_987_396, id(0xafec6b27, 0), false),
            (88_888_888, id(0x668db0af, 88_888_888), false),
            (7_279_999, id(0xa00bc324, 7_279_999), false),
        ];
        for (head, remote, compatible) in cases {
            let (ours, forks) = mainnet(head);
            let got = check_fork_id(&ours, Some(&forks), &remote);
            assert_eq!(
                got.is_ok(),
                compatible,
                "head {head} remote {remote}: {got:?}"
            );
        }
        let (ours, forks) = mainnet(7_987_396);
        assert!(matches!(
            check_fork_id(&ours, Some(&forks), &id(0xa00bc324, 0)),
            Err(ForkIdReject::RemoteStale {
                expected_next: 7_280_000,
                ..
            })
        ));
    }

    #[test]
    fn without_schedule_only_rule_one_is_decided() {
        let (ours, _) = mainnet(88_888_888);
        // Same fork state, remote announces a fork block we passed: rejected.
        assert!(check_fork_id(&ours, None, &id(0x668db0af, 88_888_888)).is_err());
        // Same fork state, future or no next fork: accepted.
        assert!(check_fork_id(&ours, None, &id(0x668db0af, 0)).is_ok());
        assert!(check_fork_id(&ours, None, &id(0x668db0af, 88_888_889)).is_ok());
        // Another hash cannot be judged without the schedule: accepted.
        assert!(check_fork_id(&ours, None, &id(0xafec6b27, 0)).is_ok());
    }
}
