//! A gossip client as a state machine: packets and time in, packets to send out.
//!
//! It advertises its own signed contact info, pulls from entrypoints and from peers whose
//! address it verified by ping/pong, answers pings and pull requests, and keeps what it
//! learns in a bounded table where the newest value per (kind, index, origin) wins.

use crate::bloom::{build_filters, max_bloom_filter_bytes, pull_request_num_items, CrdsFilter};
use crate::contact_info::{
    sanitize_socket, ContactInfo, ContactInfoError, SOCKET_TAG_GOSSIP, SOCKET_TAG_RPC,
    SOCKET_TAG_SERVE_REPAIR,
};
use crate::crds::{
    CrdsData, CrdsLabel, CrdsValue, SnapshotHashes, MAX_INCREMENTAL_SNAPSHOT_HASHES,
};
use crate::ping_pong::{Ping, Pong, PING_TOKEN_SIZE};
use crate::protocol::{self, Protocol};
use crate::{
    check_shred_version, check_wallclock_not_future, GossipError, Hash, Pubkey, PACKET_DATA_SIZE,
};
use ed25519_dalek::SigningKey;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;

/// Pull requests whose caller wallclock is further than this from now are ignored.
pub const PULL_REQUEST_WALLCLOCK_WINDOW_MS: u64 = 15_000;
/// Hashes of received outdated values are kept this long and put in our pull filters,
/// so peers stop sending them.
pub const FAILED_INSERTS_RETENTION_MS: u64 = 20_000;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Our cluster's shred version (entrypoints answer only callers that carry theirs);
    /// 0 accepts values of any shred version.
    pub shred_version: u16,
    pub entrypoints: Vec<SocketAddr>,
    /// Our advertised gossip socket.
    pub gossip_addr: SocketAddr,
    pub rpc_addr: Option<SocketAddr>,
    pub serve_repair_addr: Option<SocketAddr>,
    /// Table bound: values kept at most.
    pub max_entries: usize,
    /// Values stamped further ahead of now than this are rejected.
    pub max_future_ms: u64,
    pub pull_interval_ms: u64,
    /// How often our own values are re-signed and pushed.
    pub push_interval_ms: u64,
    /// How long a verified pong counts.
    pub pong_ttl_ms: u64,
    /// An address is pinged again only after this.
    pub ping_interval_ms: u64,
    /// Peers (besides entrypoints) pulled from per round at most.
    pub pull_fanout: usize,
    /// Peers pushed to per round at most.
    pub push_fanout: usize,
    /// Unverified peers pinged per push round at most.
    pub max_pings_per_round: usize,
    /// Values sent in answer to one pull request at most.
    pub max_pull_response_values: usize,
    /// Values whose wallclock is older than this are purged (the cluster keeps values
    /// of nodes it has no stake for as long as this).
    pub value_timeout_ms: u64,
}

impl ClientConfig {
    pub fn new(gossip_addr: SocketAddr, entrypoints: Vec<SocketAddr>, shred_version: u16) -> Self {
        ClientConfig {
            shred_version,
            entrypoints,
            gossip_addr,
            rpc_addr: None,
            serve_repair_addr: None,
            max_entries: 8192,
            max_future_ms: 15_000,
            pull_interval_ms: 2_000,
            push_interval_ms: 7_500,
            pong_ttl_ms: 1_280_000,
            ping_interval_ms: 1_000,
            pull_fanout: 4,
            push_fanout: 6,
            max_pings_per_round: 32,
            max_pull_response_values: 256,
            value_timeout_ms: 2 * 24 * 60 * 60 * 1000,
        }
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

/// What became of one received value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    Inserted,
    Replaced,
    /// The table already holds this value or a newer one for its label.
    Outdated,
}

/// Counters for observability and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub packets_rejected: u64,
    pub values_inserted: u64,
    pub values_rejected: u64,
    pub values_outdated: u64,
    pub values_evicted: u64,
    pub values_purged: u64,
    pub pings_answered: u64,
    pub pongs_verified: u64,
    pub pull_requests_answered: u64,
    pub pull_requests_pinged: u64,
}

struct Entry {
    value: CrdsValue,
}

/// The bounded table: the newest value per label; when full, the value with the oldest
/// wallclock gives way to a newer one.
#[derive(Default)]
pub struct CrdsTable {
    entries: HashMap<CrdsLabel, Entry>,
    by_age: BTreeSet<(u64, CrdsLabel)>,
    max_entries: usize,
}

fn overrides(new: &CrdsValue, old: &CrdsValue) -> bool {
    if let (CrdsData::ContactInfo(new_info), CrdsData::ContactInfo(old_info)) =
        (new.data(), old.data())
    {
        let new_key = (new_info.outset, new_info.wallclock);
        let old_key = (old_info.outset, old_info.wallclock);
        if new_key != old_key {
            return new_key > old_key;
        }
        return old.hash() < new.hash();
    }
    match new.wallclock().cmp(&old.wallclock()) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => old.hash() < new.hash(),
    }
}

impl CrdsTable {
    pub fn new(max_entries: usize) -> Self {
        CrdsTable {
            entries: HashMap::new(),
            by_age: BTreeSet::new(),
            max_entries: max_entries.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, label: &CrdsLabel) -> Option<&CrdsValue> {
        self.entries.get(label).map(|entry| &entry.value)
    }

    pub fn values(&self) -> impl Iterator<Item = &CrdsValue> {
        self.entries.values().map(|entry| &entry.value)
    }

    /// Drops every value whose wallclock is below `cutoff_ms`; returns how many.
    pub fn purge_older_than(&mut self, cutoff_ms: u64) -> usize {
        let mut purged = 0;
        while let Some(&(wallclock, label)) = self.by_age.iter().next() {
            if wallclock >= cutoff_ms {
                break;
            }
            self.by_age.remove(&(wallclock, label));
            self.entries.remove(&label);
            purged += 1;
        }
        purged
    }

    /// Inserts `value` if it is newer than what its label holds; returns the evicted
    /// count alongside.
    pub fn upsert(&mut self, value: CrdsValue) -> (Upsert, usize) {
        let label = value.label();
        if let Some(old) = self.entries.get(&label) {
            if !overrides(&value, &old.value) {
                return (Upsert::Outdated, 0);
            }
            let old_wallclock = old.value.wallclock();
            self.by_age.remove(&(old_wallclock, label));
            self.by_age.insert((value.wallclock(), label));
            self.entries.insert(label, Entry { value });
            return (Upsert::Replaced, 0);
        }
        let mut evicted = 0;
        if self.entries.len() >= self.max_entries {
            let Some(&(oldest_wallclock, oldest_label)) = self.by_age.iter().next() else {
                return (Upsert::Outdated, 0);
            };
            if oldest_wallclock >= value.wallclock() {
                return (Upsert::Outdated, 0);
            }
            self.by_age.remove(&(oldest_wallclock, oldest_label));
            self.entries.remove(&oldest_label);
            evicted = 1;
        }
        self.by_age.insert((value.wallclock(), label));
        self.entries.insert(label, Entry { value });
        (Upsert::Inserted, evicted)
    }
}

struct PendingPing {
    token: [u8; PING_TOKEN_SIZE],
    sent_ms: u64,
    /// The node we expect to answer, when known.
    expected: Option<Pubkey>,
}

pub struct GossipClient {
    key: SigningKey,
    pubkey: Pubkey,
    config: ClientConfig,
    rng: ChaCha20Rng,
    shred_version: u16,
    outset_us: u64,
    own_contact: CrdsValue,
    own_snapshot_hashes: Option<CrdsValue>,
    table: CrdsTable,
    pending_pings: HashMap<SocketAddr, PendingPing>,
    verified: HashMap<(Pubkey, SocketAddr), u64>,
    failed_inserts: VecDeque<(Hash, u64)>,
    next_pull_ms: u64,
    next_push_ms: u64,
    stats: ClientStats,
}

impl GossipClient {
    /// `seed` drives every random choice (ping tokens, bloom keys, peer picks). The
    /// advertised sockets must be usable (IPv4, specified, not multicast, non-zero port).
    pub fn new(
        key: SigningKey,
        config: ClientConfig,
        seed: u64,
        now_ms: u64,
    ) -> Result<Self, ContactInfoError> {
        sanitize_socket(&config.gossip_addr)?;
        for socket in [config.rpc_addr, config.serve_repair_addr]
            .into_iter()
            .flatten()
        {
            sanitize_socket(&socket)?;
        }
        let pubkey = Pubkey::of(&key);
        let shred_version = config.shred_version;
        let outset_us = now_ms.saturating_mul(1000);
        let table = CrdsTable::new(config.max_entries);
        let mut client = GossipClient {
            own_contact: CrdsValue::new_signed(
                CrdsData::ContactInfo(ContactInfo::new(pubkey, now_ms, outset_us, shred_version)),
                &key,
            ),
            key,
            pubkey,
            config,
            rng: ChaCha20Rng::seed_from_u64(seed),
            shred_version,
            outset_us,
            own_snapshot_hashes: None,
            table,
            pending_pings: HashMap::new(),
            verified: HashMap::new(),
            failed_inserts: VecDeque::new(),
            next_pull_ms: now_ms,
            next_push_ms: now_ms,
            stats: ClientStats::default(),
        };
        client.refresh_own_contact(now_ms);
        Ok(client)
    }

    pub fn pubkey(&self) -> Pubkey {
        self.pubkey
    }

    pub fn shred_version(&self) -> u16 {
        self.shred_version
    }

    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    pub fn table(&self) -> &CrdsTable {
        &self.table
    }

    pub fn own_contact_info(&self) -> &CrdsValue {
        &self.own_contact
    }

    fn refresh_own_contact(&mut self, now_ms: u64) {
        let mut info = ContactInfo::new(self.pubkey, now_ms, self.outset_us, self.shred_version);
        let sockets = [
            (SOCKET_TAG_GOSSIP, Some(self.config.gossip_addr)),
            (SOCKET_TAG_RPC, self.config.rpc_addr),
            (SOCKET_TAG_SERVE_REPAIR, self.config.serve_repair_addr),
        ];
        for (key, socket) in sockets {
            if let Some(socket) = socket {
                // Checked in `new`: setting a sanitized socket cannot fail.
                let set = info.set_socket(key, socket);
                debug_assert!(set.is_ok(), "configured socket rejected: {set:?}");
            }
        }
        self.own_contact = CrdsValue::new_signed(CrdsData::ContactInfo(info), &self.key);
    }

    /// Publishes our snapshot hashes (at most [`MAX_INCREMENTAL_SNAPSHOT_HASHES`]
    /// incrementals are kept, the newest).
    pub fn publish_snapshot_hashes(
        &mut self,
        full: (u64, Hash),
        mut incremental: Vec<(u64, Hash)>,
        now_ms: u64,
    ) {
        if incremental.len() > MAX_INCREMENTAL_SNAPSHOT_HASHES {
            incremental.drain(..incremental.len() - MAX_INCREMENTAL_SNAPSHOT_HASHES);
        }
        let data = CrdsData::SnapshotHashes(SnapshotHashes {
            from: self.pubkey,
            full,
            incremental,
            wallclock: now_ms,
        });
        self.own_snapshot_hashes = Some(CrdsValue::new_signed(data, &self.key));
        self.next_push_ms = now_ms;
    }

    fn own_values(&self) -> Vec<CrdsValue> {
        let mut values = vec![self.own_contact.clone()];
        values.extend(self.own_snapshot_hashes.clone());
        values
    }

    fn is_verified(&self, pubkey: &Pubkey, addr: &SocketAddr, now_ms: u64) -> bool {
        self.verified
            .get(&(*pubkey, *addr))
            .is_some_and(|expires_ms| *expires_ms > now_ms)
    }

    /// A ping to `to` (expected to be `expected`'s address) unless one went there
    /// recently.
    fn maybe_ping(
        &mut self,
        to: SocketAddr,
        expected: Option<Pubkey>,
        now_ms: u64,
        out: &mut Vec<Outgoing>,
    ) {
        if let Some(pending) = self.pending_pings.get(&to) {
            if now_ms < pending.sent_ms.saturating_add(self.config.ping_interval_ms) {
                return;
            }
        }
        if self.pending_pings.len() >= self.config.max_entries {
            let expired: Vec<SocketAddr> = self
                .pending_pings
                .iter()
                .filter(|(_, pending)| {
                    now_ms >= pending.sent_ms.saturating_add(self.config.ping_interval_ms)
                })
                .map(|(addr, _)| *addr)
                .collect();
            for addr in expired {
                self.pending_pings.remove(&addr);
            }
            if self.pending_pings.len() >= self.config.max_entries {
                return;
            }
        }
        let token: [u8; PING_TOKEN_SIZE] = self.rng.gen();
        let ping = Ping::new(&self.key, token);
        self.pending_pings.insert(
            to,
            PendingPing {
                token,
                sent_ms: now_ms,
                expected,
            },
        );
        push_packet(out, to, &Protocol::PingMessage(ping));
    }

    /// Gossip peers: contact infos of other nodes with a gossip socket and our shred
    /// version.
    fn gossip_peers(&self) -> Vec<(Pubkey, SocketAddr)> {
        let mut peers: Vec<(Pubkey, SocketAddr)> = self
            .table
            .values()
            .filter_map(|value| match value.data() {
                CrdsData::ContactInfo(info)
                    if info.pubkey != self.pubkey
                        && check_shred_version(info.shred_version, self.shred_version).is_ok() =>
                {
                    info.gossip().map(|addr| (info.pubkey, addr))
                }
                _ => None,
            })
            .collect();
        peers.sort();
        peers
    }

    /// Time passes: pull requests, pushes of our own values and pings fall due.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let cutoff_ms = now_ms.saturating_sub(self.config.value_timeout_ms);
        self.stats.values_purged += self.table.purge_older_than(cutoff_ms) as u64;
        self.verified.retain(|_, expires_ms| *expires_ms > now_ms);
        if now_ms >= self.next_push_ms {
            self.next_push_ms = now_ms.saturating_add(self.config.push_interval_ms);
            self.refresh_own_contact(now_ms);
            let peers = self.gossip_peers();
            let (mut verified, mut unverified): (Vec<_>, Vec<_>) = peers
                .into_iter()
                .partition(|(pubkey, addr)| self.is_verified(pubkey, addr, now_ms));
            keep_random(&mut self.rng, &mut verified, self.config.push_fanout);
            keep_random(
                &mut self.rng,
                &mut unverified,
                self.config.max_pings_per_round,
            );
            for (pubkey, addr) in unverified {
                self.maybe_ping(addr, Some(pubkey), now_ms, &mut out);
            }
            let messages = protocol::push_messages(self.pubkey, self.own_values());
            for (_, addr) in verified {
                for message in &messages {
                    push_packet(&mut out, addr, message);
                }
            }
        }
        if now_ms >= self.next_pull_ms {
            self.next_pull_ms = now_ms.saturating_add(self.config.pull_interval_ms);
            self.pull_round(now_ms, &mut out);
        }
        out
    }

    fn pull_round(&mut self, now_ms: u64, out: &mut Vec<Outgoing>) {
        let mut targets: Vec<SocketAddr> = self.config.entrypoints.clone();
        let mut verified_peers: Vec<SocketAddr> = Vec::new();
        for (pubkey, addr) in self.gossip_peers() {
            if self.is_verified(&pubkey, &addr, now_ms) {
                verified_peers.push(addr);
            }
        }
        keep_random(&mut self.rng, &mut verified_peers, self.config.pull_fanout);
        for addr in verified_peers {
            if !targets.contains(&addr) {
                targets.push(addr);
            }
        }
        if targets.is_empty() {
            return;
        }
        let caller = self.own_contact.clone();
        let max_bytes = max_bloom_filter_bytes(caller.encoded_len());
        let mut hashes: Vec<Hash> = self.table.values().map(|value| *value.hash()).collect();
        hashes.extend(self.own_values().iter().map(|value| *value.hash()));
        let cutoff_ms = now_ms.saturating_sub(FAILED_INSERTS_RETENTION_MS);
        while self
            .failed_inserts
            .front()
            .is_some_and(|(_, at_ms)| *at_ms < cutoff_ms)
        {
            self.failed_inserts.pop_front();
        }
        hashes.extend(self.failed_inserts.iter().map(|(hash, _)| *hash));
        let num_items = pull_request_num_items(hashes.len());
        let filters = build_filters(&mut self.rng, hashes, num_items, max_bytes);
        for filter in filters {
            let to = targets[self.rng.gen_range(0..targets.len())];
            push_packet(out, to, &Protocol::PullRequest(filter, caller.clone()));
        }
    }

    /// A packet arrived from `from`. Returns what to send in answer; a rejected packet
    /// is a typed error and changes nothing but counters.
    pub fn handle_packet(
        &mut self,
        from: SocketAddr,
        bytes: &[u8],
        now_ms: u64,
    ) -> Result<Vec<Outgoing>, GossipError> {
        let message = match protocol::decode_verified(bytes) {
            Ok(message) => message,
            Err(error) => {
                self.stats.packets_rejected += 1;
                return Err(error);
            }
        };
        let mut out = Vec::new();
        match message {
            Protocol::PingMessage(ping) => {
                let pong = Pong::new(&self.key, &ping);
                self.stats.pings_answered += 1;
                push_packet(&mut out, from, &Protocol::PongMessage(pong));
            }
            Protocol::PongMessage(pong) => {
                let Some(pending) = self.pending_pings.get(&from) else {
                    return Err(GossipError::Invalid {
                        what: "pong",
                        reason: "no ping pending for this address",
                    });
                };
                pong.verify_answers(&pending.token)?;
                if pending
                    .expected
                    .is_some_and(|expected| expected != pong.from)
                {
                    return Err(GossipError::Invalid {
                        what: "pong",
                        reason: "answered by another node than the one pinged",
                    });
                }
                self.pending_pings.remove(&from);
                if self.verified.len() >= self.config.max_entries {
                    self.verified.retain(|_, expires_ms| *expires_ms > now_ms);
                }
                if self.verified.len() < self.config.max_entries {
                    self.verified.insert(
                        (pong.from, from),
                        now_ms.saturating_add(self.config.pong_ttl_ms),
                    );
                    self.stats.pongs_verified += 1;
                }
            }
            Protocol::PullRequest(filter, caller) => {
                self.handle_pull_request(from, filter, caller, now_ms, &mut out);
            }
            Protocol::PullResponse(_, mut values) | Protocol::PushMessage(_, mut values) => {
                // Contact infos first: other values are kept only once their origin's
                // contact info (and so its shred version) is known.
                values.sort_by_key(|value| !matches!(value.data(), CrdsData::ContactInfo(_)));
                for value in values {
                    let _ = self.insert_value(value, now_ms);
                }
            }
            Protocol::PruneMessage(_, data) => {
                if data.destination != self.pubkey {
                    return Err(GossipError::Invalid {
                        what: "prune message",
                        reason: "addressed to another node",
                    });
                }
            }
        }
        Ok(out)
    }

    fn handle_pull_request(
        &mut self,
        from: SocketAddr,
        filter: CrdsFilter,
        caller: CrdsValue,
        now_ms: u64,
        out: &mut Vec<Outgoing>,
    ) {
        let caller_pubkey = caller.origin();
        let caller_wallclock = caller.wallclock();
        if caller_pubkey == self.pubkey {
            return;
        }
        if let CrdsData::ContactInfo(info) = caller.data() {
            if check_shred_version(info.shred_version, self.shred_version).is_err() {
                return;
            }
        }
        let _ = self.insert_value(caller, now_ms);
        if caller_wallclock.abs_diff(now_ms) > PULL_REQUEST_WALLCLOCK_WINDOW_MS {
            return;
        }
        if !self.is_verified(&caller_pubkey, &from, now_ms) {
            self.stats.pull_requests_pinged += 1;
            self.maybe_ping(from, Some(caller_pubkey), now_ms, out);
            return;
        }
        self.stats.pull_requests_answered += 1;
        let mut answer: Vec<CrdsValue> = self
            .own_values()
            .into_iter()
            .chain(self.table.values().cloned())
            .filter(|value| value.origin() != caller_pubkey && !filter.contains(value.hash()))
            .take(self.config.max_pull_response_values)
            .collect();
        answer.sort_by_key(|value| *value.hash());
        for message in protocol::pull_responses(self.pubkey, answer) {
            push_packet(out, from, &message);
        }
    }

    /// Checks and stores a received value: signature, kind bounds, wallclock not in the
    /// future, shred version of contact infos (and of the origin for other kinds).
    pub fn insert_value(&mut self, value: CrdsValue, now_ms: u64) -> Result<Upsert, GossipError> {
        let checked = self.check_value(&value, now_ms);
        if let Err(error) = checked {
            self.stats.values_rejected += 1;
            return Err(error);
        }
        let hash = *value.hash();
        let (result, evicted) = self.table.upsert(value);
        self.stats.values_evicted += evicted as u64;
        match result {
            Upsert::Outdated => {
                self.stats.values_outdated += 1;
                if self.failed_inserts.len() >= self.config.max_entries {
                    self.failed_inserts.pop_front();
                }
                self.failed_inserts.push_back((hash, now_ms));
            }
            Upsert::Inserted | Upsert::Replaced => self.stats.values_inserted += 1,
        }
        Ok(result)
    }

    fn check_value(&self, value: &CrdsValue, now_ms: u64) -> Result<(), GossipError> {
        value.data().sanitize()?;
        value.verify()?;
        check_wallclock_not_future(value.wallclock(), now_ms, self.config.max_future_ms)?;
        if value.origin() == self.pubkey {
            return Err(GossipError::Invalid {
                what: "crds value",
                reason: "our own value echoed back",
            });
        }
        match value.data() {
            CrdsData::ContactInfo(info) => {
                check_shred_version(info.shred_version, self.shred_version)
            }
            CrdsData::LegacyContactInfo(info) => {
                check_shred_version(info.shred_version, self.shred_version)
            }
            _ => {
                if self.shred_version == 0 {
                    return Ok(());
                }
                match self.contact_info(&value.origin()) {
                    Some(info) => check_shred_version(info.shred_version, self.shred_version),
                    None => Err(GossipError::Invalid {
                        what: "crds value",
                        reason: "origin's contact info is unknown",
                    }),
                }
            }
        }
    }

    /// The contact info of `origin`, if known.
    pub fn contact_info(&self, origin: &Pubkey) -> Option<&ContactInfo> {
        let label = CrdsLabel {
            tag: crate::crds::TAG_CONTACT_INFO,
            index: 0,
            origin: *origin,
        };
        match self.table.get(&label)?.data() {
            CrdsData::ContactInfo(info) => Some(info),
            _ => None,
        }
    }

    /// Every known contact info.
    pub fn contact_infos(&self) -> impl Iterator<Item = &ContactInfo> {
        self.table.values().filter_map(|value| match value.data() {
            CrdsData::ContactInfo(info) => Some(info),
            _ => None,
        })
    }

    /// (node, RPC socket) of every node advertising one, sorted by node.
    pub fn rpc_addrs(&self) -> Vec<(Pubkey, SocketAddr)> {
        let mut out: Vec<_> = self
            .contact_infos()
            .filter_map(|info| info.rpc().map(|addr| (info.pubkey, addr)))
            .collect();
        out.sort();
        out
    }

    /// (node, serve-repair socket) of every node advertising one, sorted by node.
    pub fn serve_repair_addrs(&self) -> Vec<(Pubkey, SocketAddr)> {
        let mut out: Vec<_> = self
            .contact_infos()
            .filter_map(|info| info.serve_repair().map(|addr| (info.pubkey, addr)))
            .collect();
        out.sort();
        out
    }

    /// The snapshot hashes `origin` advertises, if known.
    pub fn snapshot_hashes(&self, origin: &Pubkey) -> Option<&SnapshotHashes> {
        let label = CrdsLabel {
            tag: crate::crds::TAG_SNAPSHOT_HASHES,
            index: 0,
            origin: *origin,
        };
        match self.table.get(&label)?.data() {
            CrdsData::SnapshotHashes(hashes) => Some(hashes),
            _ => None,
        }
    }

    /// Whether `pubkey` at `addr` answered our ping and the answer is still fresh.
    pub fn is_verified_peer(&self, pubkey: &Pubkey, addr: &SocketAddr, now_ms: u64) -> bool {
        self.is_verified(pubkey, addr, now_ms)
    }
}

/// Keeps `keep` items of `items` chosen at random (all if there are fewer).
fn keep_random<T>(rng: &mut ChaCha20Rng, items: &mut Vec<T>, keep: usize) {
    while items.len() > keep {
        let drop = rng.gen_range(0..items.len());
        items.swap_remove(drop);
    }
}

fn push_packet(out: &mut Vec<Outgoing>, to: SocketAddr, message: &Protocol) {
    let bytes = message.encode();
    debug_assert!(bytes.len() <= PACKET_DATA_SIZE, "built an oversize packet");
    if bytes.len() <= PACKET_DATA_SIZE {
        out.push(Outgoing { to, bytes });
    }
}
