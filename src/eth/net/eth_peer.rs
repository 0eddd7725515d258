//! An RLPx connection speaking eth (and snap when shared): the Status exchange, requests
//! with ids and deadlines, and answering the peer's own requests from a [`Responder`].

use std::collections::{BTreeMap, BTreeSet};
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

    /// The blocks served now, `(earliest, latest, latest hash)`, when they move (a live
    /// chain): Status carries them and eth/69+ peers are sent BlockRangeUpdate as they
    /// change. `None` for a chain that does not move.
    fn block_range(&self) -> Option<(u64, u64, [u8; 32])> {
        None
    }

    /// Blocks the head moves before a BlockRangeUpdate is sent (geth: 32); a head that
    /// moves back is announced at once.
    fn block_range_step(&self) -> u64 {
        1
    }
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

/// Default size of the receipts in one eth/70 Receipts answer (a block's receipts past it
/// are continued in the next request, EIP-7975).
pub const RECEIPTS_RESPONSE_BYTES: usize = 2 * 1024 * 1024;
/// Most continuation requests for one block's receipts (eth/70).
pub const MAX_RECEIPT_CONTINUATIONS: usize = 1024;
/// Most bytes of one block's receipts gathered over continuations (eth/70); EIP-7975
/// bounds a block's logs by its gas limit (gas / 8 bytes), far below this.
pub const MAX_BLOCK_RECEIPTS_BYTES: usize = 64 * 1024 * 1024;
/// How often a serving connection looks for a new head to announce (BlockRangeUpdate).
const RANGE_CHECK_MS: u64 = 100;

/// The blocks a peer says it serves (eth/69 Status and BlockRangeUpdate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRange {
    pub earliest: u64,
    pub latest: u64,
    pub latest_hash: [u8; 32],
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
    /// The peer's served range: from its eth/69+ Status, then its BlockRangeUpdates.
    range: Option<BlockRange>,
    /// The range last announced to the peer (serving side).
    announced: Option<(u64, [u8; 32])>,
    /// Receipts bytes per eth/70 Receipts answer.
    pub receipts_limit_bytes: usize,
    /// Ids of our requests sent and not yet answered (pipelined requests: see
    /// [`EthPeer::send_request`]); bounded by the caller's per-connection limit.
    outstanding: BTreeSet<u64>,
    /// Answers to outstanding requests that arrived while another one was awaited.
    stash: BTreeMap<u64, Wire>,
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
            let theirs: Vec<String> = conn
                .remote_hello
                .capabilities
                .iter()
                .filter(|c| c.name == "eth")
                .map(|c| c.to_string())
                .collect();
            let detail = if theirs.is_empty() {
                "eth not shared: it offers no eth version".to_string()
            } else if !theirs.iter().any(|c| c == "eth/66") {
                format!(
                    "eth not shared: it offers {} and no eth/66 (GetNodeData, which --mode fast needs); use --mode snap",
                    theirs.join(", ")
                )
            } else {
                format!("eth not shared: it offers {}", theirs.join(", "))
            };
            let _ = conn.disconnect(DisconnectReason::UselessPeer).await;
            return Err(NetError::Useless { peer, detail });
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
        let range = (eth.version >= 69).then_some(BlockRange {
            earliest: status.earliest_block,
            latest: status.latest_block,
            latest_hash: status.head_hash,
        });
        let announced = Some((ours.head_number, ours.head_hash));
        Ok(EthPeer {
            conn,
            eth,
            snap,
            status,
            next_request_id: 1,
            stats: PeerStats::default(),
            range,
            announced,
            receipts_limit_bytes: RECEIPTS_RESPONSE_BYTES,
            outstanding: BTreeSet::new(),
            stash: BTreeMap::new(),
        })
    }

    /// The blocks the peer serves, `(earliest, latest)`, as its eth/69+ Status and latest
    /// BlockRangeUpdate say (`None` before eth/69). A request for blocks outside it, or
    /// for a state older than its head's history, is better sent to another peer.
    pub fn block_range(&self) -> Option<(u64, u64)> {
        self.range.map(|r| (r.earliest, r.latest))
    }

    /// The peer's range with its latest block's hash.
    pub fn block_range_full(&self) -> Option<BlockRange> {
        self.range
    }

    fn decode(&mut self, wire_id: u64, payload: &[u8]) -> Result<Incoming, Devp2pError> {
        let shared = [self.eth.clone()]
            .into_iter()
            .chain(self.snap.clone())
            .collect::<Vec<_>>();
        let w = match route(&shared, wire_id)? {
            Route::P2p(_) => return Ok(Incoming::Other),
            Route::Cap { cap: 0, id } => match EthMessage::decode(self.eth.version, id, payload)? {
                EthMessage::Ignored { .. } | EthMessage::Status(_) => return Ok(Incoming::Other),
                EthMessage::BlockRangeUpdate {
                    earliest,
                    latest,
                    latest_hash,
                } => {
                    // A range that goes backwards or is empty is ignored, not punished.
                    if earliest <= latest {
                        self.range = Some(BlockRange {
                            earliest,
                            latest,
                            latest_hash,
                        });
                    }
                    return Ok(Incoming::Other);
                }
                EthMessage::Receipts70 {
                    request_id,
                    last_block_incomplete,
                    receipts,
                } => Wire::Eth(EthMessage::Receipts70 {
                    request_id,
                    last_block_incomplete,
                    receipts: receipts_from_eth69(&receipts)?,
                }),
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
            }) if self.eth.version >= 70 => {
                let m = EthMessage::Receipts70 {
                    request_id: *request_id,
                    last_block_incomplete: false,
                    receipts: receipts_to_eth69(receipts),
                };
                (self.eth.offset + m.id(), m.encode())
            }
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
            Wire::Eth(EthMessage::GetReceipts { request_id, hashes }) if self.eth.version >= 70 => {
                let m = EthMessage::GetReceipts70 {
                    request_id: *request_id,
                    first_block_receipt_index: 0,
                    hashes: hashes.clone(),
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
        if let Wire::Eth(EthMessage::GetReceipts70 {
            request_id,
            first_block_receipt_index,
            hashes,
        }) = req
        {
            return self
                .answer_receipts70(*request_id, *first_block_receipt_index, hashes, responder)
                .await;
        }
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

    /// eth/70 GetReceipts: the responder's whole lists, the first block's from the asked
    /// index on, cut at `receipts_limit_bytes` (EIP-7975).
    async fn answer_receipts70(
        &mut self,
        request_id: u64,
        first_index: u64,
        hashes: &[[u8; 32]],
        responder: &dyn Responder,
    ) -> Result<(), NetError> {
        let whole = Wire::Eth(EthMessage::GetReceipts {
            request_id,
            hashes: hashes.to_vec(),
        });
        let (resp, delay_ms) = responder.respond(&whole);
        if delay_ms > 0 {
            glommio::timer::sleep(Duration::from_millis(delay_ms)).await;
        }
        let lists = match resp {
            Some(Wire::Eth(EthMessage::Receipts { receipts, .. })) => receipts_to_eth69(&receipts),
            Some(_) => Vec::new(),
            None => return Ok(()),
        };
        let (receipts, last_block_incomplete) = catchup_devp2p::eth::split_receipts_eth70(
            &lists,
            first_index,
            self.receipts_limit_bytes,
        )
        .unwrap_or_default();
        let m = EthMessage::Receipts70 {
            request_id,
            last_block_incomplete,
            receipts,
        };
        self.conn
            .send(self.eth.offset + m.id(), &m.encode())
            .await?;
        self.stats.requests_served += 1;
        Ok(())
    }

    /// Announce our served range to an eth/69+ peer when it moved since the last time.
    async fn announce_range(&mut self, responder: &dyn Responder) -> Result<(), NetError> {
        let Some((earliest, latest, latest_hash)) = responder.block_range() else {
            return Ok(());
        };
        if self.eth.version < 69 || self.announced == Some((latest, latest_hash)) {
            return Ok(());
        }
        if let Some((was, _)) = self.announced {
            if latest >= was && latest - was < responder.block_range_step().max(1) {
                return Ok(());
            }
        }
        self.announced = Some((latest, latest_hash));
        let m = EthMessage::BlockRangeUpdate {
            earliest,
            latest,
            latest_hash,
        };
        self.conn.send(self.eth.offset + m.id(), &m.encode()).await
    }

    /// Read for up to `ms` while no request of ours is pending: Pings are answered, the
    /// peer's requests served from `responder`, its BlockRangeUpdates kept. A quiet peer is
    /// not an error here.
    pub async fn idle(&mut self, ms: u64, responder: &dyn Responder) -> Result<(), NetError> {
        let peer = self.conn.peer;
        let deadline = Instant::now() + Duration::from_millis(ms);
        loop {
            let (id, payload) = match self.conn.recv_until(deadline).await {
                Ok(m) => m,
                Err(NetError::Timeout { .. }) => return Ok(()),
                Err(e) => return Err(e),
            };
            match self.decode(id, &payload) {
                Ok(Incoming::Request(q)) => self.answer(&q, responder).await?,
                Ok(_) => self.stats.ignored_messages += 1,
                Err(source) => {
                    let _ = self
                        .conn
                        .disconnect(DisconnectReason::BreachOfProtocol)
                        .await;
                    return Err(NetError::Protocol { peer, source });
                }
            }
        }
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
        let (rid, w) = self.send_request(make).await?;
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let resp = self.wait_response(rid, deadline, responder).await?;
        self.complete(&w, resp, deadline, responder).await
    }

    /// Send the request `make(request_id)` without waiting for its answer (several may be
    /// outstanding on the connection: pipelining); its id and the request sent. The answer
    /// comes from [`EthPeer::next_response`] (or [`EthPeer::wait_response`]), then
    /// [`EthPeer::complete`]; a request given up on is [`EthPeer::forget`]-ten.
    pub async fn send_request(
        &mut self,
        make: impl FnOnce(u64) -> Wire,
    ) -> Result<(u64, Wire), NetError> {
        let rid = self.next_request_id();
        let w = make(rid);
        if matches!(w, Wire::Eth(EthMessage::GetNodeData { .. })) && self.eth.version != 66 {
            // Not a message of the negotiated version: sending it would cost the connection.
            return Err(NetError::Useless {
                peer: self.conn.peer,
                detail: format!(
                    "speaks eth/{}, which has no GetNodeData: --mode fast needs eth/66 peers; use --mode snap",
                    self.eth.version
                ),
            });
        }
        self.send_wire(&w).await?;
        self.stats.requests_sent += 1;
        self.outstanding.insert(rid);
        Ok((rid, w))
    }

    /// Stop waiting for the answer to request `rid` (it timed out): an answer that comes
    /// later is ignored.
    pub fn forget(&mut self, rid: u64) {
        self.outstanding.remove(&rid);
        self.stash.remove(&rid);
    }

    /// The next answer to any outstanding request, by the `deadline`, serving the peer's
    /// own requests meanwhile: its request id and the message.
    pub async fn next_response(
        &mut self,
        deadline: Instant,
        responder: &dyn Responder,
    ) -> Result<(u64, Wire), NetError> {
        if let Some((rid, w)) = self.stash.pop_first() {
            self.outstanding.remove(&rid);
            return Ok((rid, w));
        }
        let peer = self.conn.peer;
        loop {
            let (id, payload) = self.conn.recv_until(deadline).await?;
            self.stats.bytes_received += payload.len() as u64;
            match self.decode(id, &payload) {
                Ok(Incoming::Response(r, resp)) if self.outstanding.remove(&r) => {
                    self.stats.responses_received += 1;
                    return Ok((r, resp));
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

    /// Finish the answer `resp` to request `w`: an eth/70 receipts list cut short is
    /// continued (by the `deadline`) and the lists are returned as a whole Receipts.
    pub async fn complete(
        &mut self,
        w: &Wire,
        resp: Wire,
        deadline: Instant,
        responder: &dyn Responder,
    ) -> Result<Wire, NetError> {
        let Wire::Eth(EthMessage::Receipts70 {
            request_id,
            last_block_incomplete,
            mut receipts,
        }) = resp
        else {
            return Ok(resp);
        };
        if last_block_incomplete {
            let hashes = match w {
                Wire::Eth(EthMessage::GetReceipts { hashes, .. }) => hashes.as_slice(),
                _ => &[],
            };
            match receipts.len().checked_sub(1).and_then(|i| hashes.get(i)) {
                Some(hash) => {
                    let hash = *hash;
                    let last = receipts.pop().unwrap_or_default();
                    if let Some(whole) = self
                        .continue_receipts(hash, last, deadline, responder)
                        .await?
                    {
                        receipts.push(whole);
                    }
                }
                // More lists than blocks asked for: the surplus is for no block.
                None => receipts.truncate(hashes.len()),
            }
        }
        Ok(Wire::Eth(EthMessage::Receipts {
            request_id,
            receipts,
        }))
    }

    /// The rest of one block's receipts after `first` (consensus encoding), asked for from
    /// where each answer stopped (eth/70). `None` when the peer stops making progress or
    /// the deadline passes: the caller then has the blocks before it and asks again later.
    async fn continue_receipts(
        &mut self,
        hash: [u8; 32],
        first: Vec<u8>,
        deadline: Instant,
        responder: &dyn Responder,
    ) -> Result<Option<Vec<u8>>, NetError> {
        let count = |raw: &[u8]| {
            catchup_devp2p::rlp::list("receipt list", raw, usize::MAX)
                .map(|(items, _)| items.len())
                .unwrap_or(0)
        };
        let mut parts = vec![first];
        let mut have = count(&parts[0]);
        for _ in 0..MAX_RECEIPT_CONTINUATIONS {
            let rid = self.next_request_id();
            let m = EthMessage::GetReceipts70 {
                request_id: rid,
                first_block_receipt_index: have as u64,
                hashes: vec![hash],
            };
            self.conn
                .send(self.eth.offset + m.id(), &m.encode())
                .await?;
            self.stats.requests_sent += 1;
            let resp = match self.wait_response(rid, deadline, responder).await {
                Ok(r) => r,
                Err(NetError::Timeout { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            let Wire::Eth(EthMessage::Receipts70 {
                last_block_incomplete,
                mut receipts,
                ..
            }) = resp
            else {
                return Ok(None);
            };
            let Some(more) = receipts.drain(..).next() else {
                return Ok(None);
            };
            let n = count(&more);
            if n == 0 && last_block_incomplete {
                return Ok(None);
            }
            have += n;
            parts.push(more);
            if parts.iter().map(|p| p.len()).sum::<usize>() > MAX_BLOCK_RECEIPTS_BYTES {
                tracing::debug!(peer = %self.conn.peer, "one block's receipts past {MAX_BLOCK_RECEIPTS_BYTES} bytes: not continued");
                return Ok(None);
            }
            if !last_block_incomplete {
                return Ok(catchup_devp2p::eth::join_receipt_lists(&parts).ok());
            }
        }
        Ok(None)
    }

    /// Wait for the answer to request `rid`, serving the peer's own requests meanwhile. A
    /// malformed message drops the connection.
    pub async fn wait_response(
        &mut self,
        rid: u64,
        deadline: Instant,
        responder: &dyn Responder,
    ) -> Result<Wire, NetError> {
        if let Some(w) = self.stash.remove(&rid) {
            self.outstanding.remove(&rid);
            return Ok(w);
        }
        let peer = self.conn.peer;
        loop {
            let (id, payload) = match self.conn.recv_until(deadline).await {
                Ok(m) => m,
                Err(e) => {
                    self.outstanding.remove(&rid);
                    return Err(e);
                }
            };
            self.stats.bytes_received += payload.len() as u64;
            match self.decode(id, &payload) {
                Ok(Incoming::Response(r, resp)) if r == rid => {
                    self.stats.responses_received += 1;
                    self.outstanding.remove(&rid);
                    return Ok(resp);
                }
                Ok(Incoming::Response(r, resp)) if self.outstanding.contains(&r) => {
                    // Another pipelined request's answer: kept for its own wait.
                    self.stats.responses_received += 1;
                    self.stash.insert(r, resp);
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
    /// When the responder's chain moves, eth/69+ peers are sent BlockRangeUpdate.
    pub async fn serve(&mut self, responder: &dyn Responder) -> Result<(), NetError> {
        let peer = self.conn.peer;
        let idle = Duration::from_millis(self.conn.idle_timeout_ms());
        let live = responder.block_range().is_some() && self.eth.version >= 69;
        let mut idle_deadline = Instant::now() + idle;
        loop {
            self.announce_range(responder).await?;
            let deadline = if live {
                idle_deadline.min(Instant::now() + Duration::from_millis(RANGE_CHECK_MS))
            } else {
                idle_deadline
            };
            let (id, payload) = match self.conn.recv_until(deadline).await {
                Ok(m) => {
                    idle_deadline = Instant::now() + idle;
                    m
                }
                Err(NetError::Timeout { .. }) if Instant::now() < idle_deadline => continue,
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
