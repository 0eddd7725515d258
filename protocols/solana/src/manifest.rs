//! Bank snapshot manifest (`snapshots/<slot>/<slot>`): bincode-1 layout, decoded by hand with
//! limits. Reads the bank fields, the accounts-db fields (storages with
//! `accounts_current_len`) and the trailing optional fields (lamports per signature,
//! incremental persistence, epoch accounts hash, versioned epoch stakes, `accounts_lt_hash`,
//! block id), each of which may be absent (end of input) in older formats.

use thiserror::Error;

use crate::lthash::{LtHash, LT_HASH_BYTES};

/// Largest manifest accepted.
pub const MAX_MANIFEST_BYTES: usize = 1 << 30;
/// Largest vote-account data accepted inside the manifest.
pub const MAX_ACCOUNT_DATA_BYTES: u64 = 10 * 1024 * 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest: unexpected end of input at offset {offset} reading `{field}`")]
    Eof { offset: usize, field: &'static str },
    #[error("manifest: invalid {field} tag {tag} at offset {offset}")]
    BadTag {
        offset: usize,
        field: &'static str,
        tag: u32,
    },
    #[error("manifest: length {len} of `{field}` at offset {offset} exceeds the remaining input")]
    BadLength {
        offset: usize,
        field: &'static str,
        len: u64,
    },
    #[error("manifest: {size} bytes exceeds the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("manifest: {len} unexpected trailing bytes at offset {offset}")]
    Trailing { offset: usize, len: usize },
}

/// One account storage file named by the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageInfo {
    pub slot: u64,
    pub id: u64,
    /// Bytes of the file that hold entries; the rest is to be ignored.
    pub accounts_current_len: u64,
}

/// Kept from `BankIncrementalSnapshotPersistence`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncrementalPersistence {
    pub full_slot: u64,
    pub full_hash: [u8; 32],
    pub full_capitalization: u64,
    pub incremental_hash: [u8; 32],
    pub incremental_capitalization: u64,
}

/// The decoded manifest fields this node needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub slot: u64,
    pub parent_slot: u64,
    pub bank_hash: [u8; 32],
    pub parent_hash: [u8; 32],
    pub epoch: u64,
    pub block_height: u64,
    pub capitalization: u64,
    pub transaction_count: u64,
    pub signature_count: u64,
    pub tick_height: u64,
    pub max_tick_height: u64,
    pub ticks_per_slot: u64,
    pub hashes_per_tick: Option<u64>,
    pub ns_per_slot: u128,
    pub genesis_creation_time: i64,
    pub slots_per_year: f64,
    pub accounts_data_len: u64,
    pub is_delta: bool,
    pub collector_id: [u8; 32],
    pub hard_forks: Vec<(u64, u64)>,
    pub ancestors: Vec<(u64, u64)>,
    pub storages: Vec<StorageInfo>,
    pub write_version: u64,
    pub accounts_db_slot: u64,
    pub lamports_per_signature: Option<u64>,
    pub incremental_persistence: Option<IncrementalPersistence>,
    pub epoch_accounts_hash: Option<[u8; 32]>,
    /// Epochs for which versioned epoch stakes are present.
    pub versioned_epoch_stakes_epochs: Vec<u64>,
    pub accounts_lt_hash: Option<Box<LtHash>>,
    pub block_id: Option<[u8; 32]>,
    /// The bank's epoch schedule.
    pub epoch_schedule: EpochSchedule,
    /// Stake per node (identity) of each epoch the bank holds stakes for (the bank's
    /// epoch stakes, then the versioned ones): what the epoch's leader schedule is drawn
    /// from.
    pub epoch_node_stakes: Vec<(u64, NodeStakes)>,
}

/// (node identity, stake) of an epoch's staked nodes.
pub type NodeStakes = Vec<([u8; 32], u64)>;

/// Slots per epoch, with the warm-up epochs of doubling length at the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochSchedule {
    pub slots_per_epoch: u64,
    pub leader_schedule_slot_offset: u64,
    pub warmup: bool,
    pub first_normal_epoch: u64,
    pub first_normal_slot: u64,
}

/// The shortest (first) warm-up epoch.
pub const MINIMUM_SLOTS_PER_EPOCH: u64 = 32;

impl Default for EpochSchedule {
    /// Mainnet's: 432 000 slots, with warm-up.
    fn default() -> Self {
        EpochSchedule {
            slots_per_epoch: 432_000,
            leader_schedule_slot_offset: 432_000,
            warmup: true,
            first_normal_epoch: 14,
            first_normal_slot: 524_256,
        }
    }
}

impl EpochSchedule {
    /// (epoch, first slot of the epoch, slots in the epoch) of `slot`.
    pub fn epoch_of(&self, slot: u64) -> (u64, u64, u64) {
        if self.warmup && slot < self.first_normal_slot {
            let min_log = MINIMUM_SLOTS_PER_EPOCH.trailing_zeros();
            let epoch = (slot + MINIMUM_SLOTS_PER_EPOCH + 1)
                .next_power_of_two()
                .trailing_zeros()
                - min_log
                - 1;
            let len = 1u64 << (epoch + min_log);
            (u64::from(epoch), len - MINIMUM_SLOTS_PER_EPOCH, len)
        } else {
            let spe = self.slots_per_epoch.max(1);
            let normal = slot.saturating_sub(self.first_normal_slot) / spe;
            let epoch = self.first_normal_epoch + normal;
            (epoch, self.first_normal_slot + normal * spe, spe)
        }
    }
}

impl Manifest {
    /// A manifest with the given essentials and neutral values elsewhere (generator, tests).
    pub fn new(
        slot: u64,
        bank_hash: [u8; 32],
        capitalization: u64,
        storages: Vec<StorageInfo>,
    ) -> Self {
        Manifest {
            slot,
            parent_slot: slot.saturating_sub(1),
            bank_hash,
            parent_hash: [0; 32],
            epoch: 0,
            block_height: slot,
            capitalization,
            transaction_count: 0,
            signature_count: 0,
            tick_height: slot * 64,
            max_tick_height: slot * 64,
            ticks_per_slot: 64,
            hashes_per_tick: Some(12_500),
            ns_per_slot: 400_000_000,
            genesis_creation_time: 0,
            slots_per_year: 78_892_314.984,
            accounts_data_len: 0,
            is_delta: false,
            collector_id: [0; 32],
            hard_forks: Vec::new(),
            ancestors: Vec::new(),
            storages,
            write_version: 0,
            accounts_db_slot: slot,
            lamports_per_signature: Some(5000),
            incremental_persistence: None,
            epoch_accounts_hash: None,
            versioned_epoch_stakes_epochs: Vec::new(),
            accounts_lt_hash: None,
            block_id: None,
            epoch_schedule: EpochSchedule::default(),
            epoch_node_stakes: Vec::new(),
        }
    }
}

struct Cur<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ManifestError> {
        if self.b.len() - self.p < n {
            return Err(ManifestError::Eof {
                offset: self.p,
                field,
            });
        }
        let s = &self.b[self.p..self.p + n];
        self.p += n;
        Ok(s)
    }
    fn at_end(&self) -> bool {
        self.p == self.b.len()
    }
    fn u8(&mut self, f: &'static str) -> Result<u8, ManifestError> {
        Ok(self.take(1, f)?[0])
    }
    fn u32(&mut self, f: &'static str) -> Result<u32, ManifestError> {
        Ok(u32::from_le_bytes(
            self.take(4, f)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self, f: &'static str) -> Result<u64, ManifestError> {
        Ok(u64::from_le_bytes(
            self.take(8, f)?.try_into().expect("8 bytes"),
        ))
    }
    fn f64(&mut self, f: &'static str) -> Result<f64, ManifestError> {
        Ok(f64::from_bits(self.u64(f)?))
    }
    fn h32(&mut self, f: &'static str) -> Result<[u8; 32], ManifestError> {
        Ok(self.take(32, f)?.try_into().expect("32 bytes"))
    }
    fn bool(&mut self, f: &'static str) -> Result<bool, ManifestError> {
        let off = self.p;
        match self.u8(f)? {
            0 => Ok(false),
            1 => Ok(true),
            t => Err(ManifestError::BadTag {
                offset: off,
                field: f,
                tag: t as u32,
            }),
        }
    }
    fn opt_tag(&mut self, f: &'static str) -> Result<bool, ManifestError> {
        self.bool(f)
    }
    /// A sequence length, bounded by what the remaining input could hold.
    fn len(&mut self, f: &'static str, min_elem_bytes: usize) -> Result<usize, ManifestError> {
        let off = self.p;
        let n = self.u64(f)?;
        let remaining = (self.b.len() - self.p) as u64;
        if n.saturating_mul(min_elem_bytes.max(1) as u64) > remaining {
            return Err(ManifestError::BadLength {
                offset: off,
                field: f,
                len: n,
            });
        }
        Ok(n as usize)
    }
    fn skip(&mut self, n: usize, f: &'static str) -> Result<(), ManifestError> {
        self.take(n, f).map(|_| ())
    }
    fn skip_vec(&mut self, f: &'static str, elem_bytes: usize) -> Result<(), ManifestError> {
        let n = self.len(f, elem_bytes)?;
        self.skip(n * elem_bytes, f)
    }
    fn skip_account(&mut self) -> Result<(), ManifestError> {
        self.skip(8, "account.lamports")?;
        let off = self.p;
        let n = self.len("account.data", 1)?;
        if n as u64 > MAX_ACCOUNT_DATA_BYTES {
            return Err(ManifestError::BadLength {
                offset: off,
                field: "account.data",
                len: n as u64,
            });
        }
        self.skip(n, "account.data")?;
        self.skip(32, "account.owner")?;
        self.bool("account.executable")?;
        self.skip(8, "account.rent_epoch")
    }
    /// `Stakes<T>` where a stake delegation entry is `delegation_bytes` long.
    fn skip_stakes(&mut self, delegation_bytes: usize) -> Result<(), ManifestError> {
        let n = self.len("stakes.vote_accounts", 32 + 8 + 8 + 8 + 32 + 1 + 8)?;
        for _ in 0..n {
            self.skip(32 + 8, "stakes.vote_accounts.key")?;
            self.skip_account()?;
        }
        self.skip_vec("stakes.stake_delegations", 32 + delegation_bytes)?;
        self.skip(16, "stakes.unused_epoch")?;
        self.skip_vec("stakes.stake_history", 32)
    }
    /// Walks one epoch's stakes; returns each node's total stake.
    fn epoch_stakes(
        &mut self,
        delegation_bytes: usize,
    ) -> Result<Vec<([u8; 32], u64)>, ManifestError> {
        self.skip_stakes(delegation_bytes)?;
        self.skip(8, "epoch_stakes.total_stake")?;
        let n = self.len("epoch_stakes.node_id_to_vote_accounts", 32 + 8 + 8)?;
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            let node = self.h32("node_id")?;
            self.skip_vec("node_vote_accounts", 32)?;
            nodes.push((node, self.u64("node_total_stake")?));
        }
        self.skip_vec("epoch_stakes.epoch_authorized_voters", 64)?;
        Ok(nodes)
    }
}

const DELEGATION_BYTES: usize = 32 + 8 + 8 + 8 + 8;
const STAKE_BYTES: usize = DELEGATION_BYTES + 8;

/// Decode a manifest.
pub fn decode_manifest(bytes: &[u8]) -> Result<Manifest, ManifestError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge {
            size: bytes.len(),
            max: MAX_MANIFEST_BYTES,
        });
    }
    let mut c = Cur { b: bytes, p: 0 };
    // blockhash_queue
    c.skip(8, "blockhash_queue.last_hash_index")?;
    if c.opt_tag("blockhash_queue.last_hash")? {
        c.skip(32, "blockhash_queue.last_hash")?;
    }
    c.skip_vec("blockhash_queue.ages", 32 + 8 + 8 + 8)?;
    c.skip(8, "blockhash_queue.max_age")?;
    let n = c.len("ancestors", 16)?;
    let mut ancestors = Vec::with_capacity(n);
    for _ in 0..n {
        ancestors.push((c.u64("ancestors.slot")?, c.u64("ancestors.size")?));
    }
    let bank_hash = c.h32("hash")?;
    let parent_hash = c.h32("parent_hash")?;
    let parent_slot = c.u64("parent_slot")?;
    let n = c.len("hard_forks", 16)?;
    let mut hard_forks = Vec::with_capacity(n);
    for _ in 0..n {
        hard_forks.push((c.u64("hard_forks.slot")?, c.u64("hard_forks.count")?));
    }
    let transaction_count = c.u64("transaction_count")?;
    let tick_height = c.u64("tick_height")?;
    let signature_count = c.u64("signature_count")?;
    let capitalization = c.u64("capitalization")?;
    let max_tick_height = c.u64("max_tick_height")?;
    let hashes_per_tick = if c.opt_tag("hashes_per_tick")? {
        Some(c.u64("hashes_per_tick")?)
    } else {
        None
    };
    let ticks_per_slot = c.u64("ticks_per_slot")?;
    let ns_lo = c.u64("ns_per_slot")?;
    let ns_hi = c.u64("ns_per_slot")?;
    let ns_per_slot = (ns_hi as u128) << 64 | ns_lo as u128;
    let genesis_creation_time = c.u64("genesis_creation_time")? as i64;
    let slots_per_year = c.f64("slots_per_year")?;
    let accounts_data_len = c.u64("accounts_data_len")?;
    let slot = c.u64("slot")?;
    let epoch = c.u64("epoch")?;
    let block_height = c.u64("block_height")?;
    let collector_id = c.h32("collector_id")?;
    c.skip(8, "collector_fees")?;
    c.skip(8, "fee_calculator")?;
    // fee_rate_governor (lamports_per_signature is not serialized)
    c.skip(32, "fee_rate_governor")?;
    c.skip(1, "fee_rate_governor.burn_percent")?;
    c.skip(8, "collected_rent")?;
    // rent_collector: epoch, epoch_schedule, slots_per_year, rent
    c.skip(8, "rent_collector.epoch")?;
    decode_epoch_schedule(&mut c)?;
    c.skip(8, "rent_collector.slots_per_year")?;
    c.skip(17, "rent_collector.rent")?;
    let epoch_schedule = decode_epoch_schedule(&mut c)?;
    c.skip(48, "inflation")?;
    c.skip_stakes(DELEGATION_BYTES)?;
    c.skip_vec("unused_accounts.unused1", 32)?;
    c.skip_vec("unused_accounts.unused2", 32)?;
    c.skip_vec("unused_accounts.unused3", 40)?;
    let n = c.len("epoch_stakes", 8)?;
    let mut epoch_node_stakes = Vec::new();
    for _ in 0..n {
        let e = c.u64("epoch_stakes.epoch")?;
        let nodes = c.epoch_stakes(DELEGATION_BYTES)?;
        if !nodes.is_empty() {
            epoch_node_stakes.push((e, nodes));
        }
    }
    let is_delta = c.bool("is_delta")?;
    // accounts-db fields
    let n = c.len("storages", 16)?;
    let mut storages = Vec::new();
    for _ in 0..n {
        let s = c.u64("storages.slot")?;
        let m = c.len("storages.entries", 16)?;
        for _ in 0..m {
            let id = c.u64("storages.id")?;
            let len = c.u64("storages.accounts_current_len")?;
            storages.push(StorageInfo {
                slot: s,
                id,
                accounts_current_len: len,
            });
        }
    }
    let write_version = c.u64("write_version")?;
    let accounts_db_slot = c.u64("accounts_db.slot")?;
    c.skip(32 + 32 + 40, "bank_hash_info")?;
    let mut m = Manifest {
        slot,
        parent_slot,
        bank_hash,
        parent_hash,
        epoch,
        block_height,
        capitalization,
        transaction_count,
        signature_count,
        tick_height,
        max_tick_height,
        ticks_per_slot,
        hashes_per_tick,
        ns_per_slot,
        genesis_creation_time,
        slots_per_year,
        accounts_data_len,
        is_delta,
        collector_id,
        hard_forks,
        ancestors,
        storages,
        write_version,
        accounts_db_slot,
        epoch_schedule,
        epoch_node_stakes,
        lamports_per_signature: None,
        incremental_persistence: None,
        epoch_accounts_hash: None,
        versioned_epoch_stakes_epochs: Vec::new(),
        accounts_lt_hash: None,
        block_id: None,
    };
    // Optional trailing fields: each may be cut at end of input.
    if c.at_end() {
        return Ok(m);
    }
    c.skip_vec("historical_roots", 8)?;
    if c.at_end() {
        return Ok(m);
    }
    c.skip_vec("historical_roots_with_hash", 40)?;
    if c.at_end() {
        return Ok(m);
    }
    m.lamports_per_signature = Some(c.u64("lamports_per_signature")?);
    if c.at_end() {
        return Ok(m);
    }
    if c.opt_tag("incremental_snapshot_persistence")? {
        m.incremental_persistence = Some(IncrementalPersistence {
            full_slot: c.u64("isp.full_slot")?,
            full_hash: c.h32("isp.full_hash")?,
            full_capitalization: c.u64("isp.full_capitalization")?,
            incremental_hash: c.h32("isp.incremental_hash")?,
            incremental_capitalization: c.u64("isp.incremental_capitalization")?,
        });
    }
    if c.at_end() {
        return Ok(m);
    }
    if c.opt_tag("epoch_accounts_hash")? {
        m.epoch_accounts_hash = Some(c.h32("epoch_accounts_hash")?);
    }
    if c.at_end() {
        return Ok(m);
    }
    let n = c.len("versioned_epoch_stakes", 12)?;
    for _ in 0..n {
        m.versioned_epoch_stakes_epochs
            .push(c.u64("versioned_epoch_stakes.epoch")?);
        let off = c.p;
        let tag = c.u32("versioned_epoch_stakes.variant")?;
        if tag != 0 {
            return Err(ManifestError::BadTag {
                offset: off,
                field: "versioned_epoch_stakes.variant",
                tag,
            });
        }
        let e = *m
            .versioned_epoch_stakes_epochs
            .last()
            .expect("pushed above");
        let nodes = c.epoch_stakes(STAKE_BYTES)?;
        if !nodes.is_empty() {
            m.epoch_node_stakes.push((e, nodes));
        }
    }
    if c.at_end() {
        return Ok(m);
    }
    if c.opt_tag("accounts_lt_hash")? {
        let bytes: &[u8; LT_HASH_BYTES] = c
            .take(LT_HASH_BYTES, "accounts_lt_hash")?
            .try_into()
            .expect("2048 bytes");
        m.accounts_lt_hash = Some(Box::new(LtHash::from_bytes(bytes)));
    }
    if c.at_end() {
        return Ok(m);
    }
    if c.opt_tag("block_id")? {
        m.block_id = Some(c.h32("block_id")?);
    }
    if !c.at_end() {
        return Err(ManifestError::Trailing {
            offset: c.p,
            len: bytes.len() - c.p,
        });
    }
    Ok(m)
}

fn decode_epoch_schedule(c: &mut Cur<'_>) -> Result<EpochSchedule, ManifestError> {
    Ok(EpochSchedule {
        slots_per_epoch: c.u64("epoch_schedule.slots_per_epoch")?,
        leader_schedule_slot_offset: c.u64("epoch_schedule.leader_schedule_slot_offset")?,
        warmup: c.bool("epoch_schedule.warmup")?,
        first_normal_epoch: c.u64("epoch_schedule.first_normal_epoch")?,
        first_normal_slot: c.u64("epoch_schedule.first_normal_slot")?,
    })
}

/// Encode a manifest in the same layout (fields not kept by [`Manifest`] are written as
/// empty or neutral values). `decode_manifest(&encode_manifest(m)) == m`.
pub fn encode_manifest(m: &Manifest) -> Vec<u8> {
    let mut o = Vec::with_capacity(4096 + m.storages.len() * 24);
    let u64 = |o: &mut Vec<u8>, v: u64| o.extend_from_slice(&v.to_le_bytes());
    // blockhash_queue: last_hash_index, last_hash None, ages empty, max_age
    u64(&mut o, 0);
    o.push(0);
    u64(&mut o, 0);
    u64(&mut o, 300);
    u64(&mut o, m.ancestors.len() as u64);
    for &(a, b) in &m.ancestors {
        u64(&mut o, a);
        u64(&mut o, b);
    }
    o.extend_from_slice(&m.bank_hash);
    o.extend_from_slice(&m.parent_hash);
    u64(&mut o, m.parent_slot);
    u64(&mut o, m.hard_forks.len() as u64);
    for &(a, b) in &m.hard_forks {
        u64(&mut o, a);
        u64(&mut o, b);
    }
    u64(&mut o, m.transaction_count);
    u64(&mut o, m.tick_height);
    u64(&mut o, m.signature_count);
    u64(&mut o, m.capitalization);
    u64(&mut o, m.max_tick_height);
    match m.hashes_per_tick {
        Some(h) => {
            o.push(1);
            u64(&mut o, h);
        }
        None => o.push(0),
    }
    u64(&mut o, m.ticks_per_slot);
    o.extend_from_slice(&m.ns_per_slot.to_le_bytes());
    u64(&mut o, m.genesis_creation_time as u64);
    u64(&mut o, m.slots_per_year.to_bits());
    u64(&mut o, m.accounts_data_len);
    u64(&mut o, m.slot);
    u64(&mut o, m.epoch);
    u64(&mut o, m.block_height);
    o.extend_from_slice(&m.collector_id);
    u64(&mut o, 0); // collector_fees
    u64(&mut o, 0); // fee_calculator
    for v in [10_000u64, 20_000, 5_000, 100_000] {
        u64(&mut o, v);
    }
    o.push(50); // burn percent
    u64(&mut o, 0); // collected_rent
    u64(&mut o, m.epoch); // rent_collector.epoch
    let es = m.epoch_schedule;
    let schedule = |o: &mut Vec<u8>| {
        o.extend_from_slice(&es.slots_per_epoch.to_le_bytes());
        o.extend_from_slice(&es.leader_schedule_slot_offset.to_le_bytes());
        o.push(es.warmup as u8);
        o.extend_from_slice(&es.first_normal_epoch.to_le_bytes());
        o.extend_from_slice(&es.first_normal_slot.to_le_bytes());
    };
    schedule(&mut o);
    u64(&mut o, m.slots_per_year.to_bits());
    u64(&mut o, 3480);
    u64(&mut o, 2.0f64.to_bits());
    o.push(50);
    schedule(&mut o);
    for v in [0.08f64, 0.015, 0.15, 0.05, 7.0, 0.0] {
        u64(&mut o, v.to_bits());
    }
    // stakes: no vote accounts, no delegations, unused, epoch, no history
    u64(&mut o, 0);
    u64(&mut o, 0);
    u64(&mut o, 0);
    u64(&mut o, m.epoch);
    u64(&mut o, 0);
    // unused accounts x3, epoch_stakes
    for _ in 0..4 {
        u64(&mut o, 0);
    }
    o.push(m.is_delta as u8);
    // storages grouped by slot, in first-appearance order
    let mut slots: Vec<u64> = Vec::new();
    for s in &m.storages {
        if !slots.contains(&s.slot) {
            slots.push(s.slot);
        }
    }
    u64(&mut o, slots.len() as u64);
    for slot in slots {
        let group: Vec<&StorageInfo> = m.storages.iter().filter(|s| s.slot == slot).collect();
        u64(&mut o, slot);
        u64(&mut o, group.len() as u64);
        for s in group {
            u64(&mut o, s.id);
            u64(&mut o, s.accounts_current_len);
        }
    }
    u64(&mut o, m.write_version);
    u64(&mut o, m.accounts_db_slot);
    o.extend_from_slice(&[0u8; 32 + 32 + 40]);
    u64(&mut o, 0); // historical_roots
    u64(&mut o, 0); // historical_roots_with_hash
    u64(&mut o, m.lamports_per_signature.unwrap_or(0));
    match &m.incremental_persistence {
        Some(p) => {
            o.push(1);
            u64(&mut o, p.full_slot);
            o.extend_from_slice(&p.full_hash);
            u64(&mut o, p.full_capitalization);
            o.extend_from_slice(&p.incremental_hash);
            u64(&mut o, p.incremental_capitalization);
        }
        None => o.push(0),
    }
    match &m.epoch_accounts_hash {
        Some(h) => {
            o.push(1);
            o.extend_from_slice(h);
        }
        None => o.push(0),
    }
    u64(&mut o, m.versioned_epoch_stakes_epochs.len() as u64);
    for &e in &m.versioned_epoch_stakes_epochs {
        u64(&mut o, e);
        o.extend_from_slice(&0u32.to_le_bytes());
        for _ in 0..3 {
            u64(&mut o, 0);
        }
        u64(&mut o, e);
        u64(&mut o, 0); // history
        let nodes: &[([u8; 32], u64)] = m
            .epoch_node_stakes
            .iter()
            .find(|(x, _)| *x == e)
            .map(|(_, n)| n.as_slice())
            .unwrap_or(&[]);
        u64(&mut o, nodes.iter().map(|(_, s)| *s).sum()); // total stake
        u64(&mut o, nodes.len() as u64);
        for (node, stake) in nodes {
            o.extend_from_slice(node);
            u64(&mut o, 0); // vote accounts
            u64(&mut o, *stake);
        }
        u64(&mut o, 0); // authorized voters
    }
    match &m.accounts_lt_hash {
        Some(h) => {
            o.push(1);
            o.extend_from_slice(&h.to_bytes());
        }
        None => o.push(0),
    }
    match &m.block_id {
        Some(h) => {
            o.push(1);
            o.extend_from_slice(h);
        }
        None => o.push(0),
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let mut m = Manifest::new(
            42,
            [7; 32],
            1234,
            vec![
                StorageInfo {
                    slot: 40,
                    id: 1,
                    accounts_current_len: 100,
                },
                StorageInfo {
                    slot: 42,
                    id: 2,
                    accounts_current_len: 200,
                },
                StorageInfo {
                    slot: 42,
                    id: 3,
                    accounts_current_len: 300,
                },
            ],
        );
        m.accounts_lt_hash = Some(Box::new(LtHash::of_account(
            1, b"", false, &[0; 32], &[1; 32],
        )));
        m.versioned_epoch_stakes_epochs = vec![3];
        m.epoch_node_stakes = vec![(3, vec![([4; 32], 10), ([5; 32], 30)])];
        m.epoch_schedule = EpochSchedule {
            slots_per_epoch: 8192,
            leader_schedule_slot_offset: 8192,
            warmup: false,
            first_normal_epoch: 0,
            first_normal_slot: 0,
        };
        m.block_id = Some([9; 32]);
        m
    }

    #[test]
    fn epochs_of_slots_with_and_without_warmup() {
        let w = EpochSchedule::default();
        assert_eq!(w.epoch_of(0), (0, 0, 32));
        assert_eq!(w.epoch_of(31), (0, 0, 32));
        assert_eq!(w.epoch_of(32), (1, 32, 64));
        assert_eq!(w.epoch_of(100), (2, 96, 128));
        assert_eq!(w.epoch_of(524_255), (13, 262_112, 262_144));
        assert_eq!(w.epoch_of(524_256), (14, 524_256, 432_000));
        assert_eq!(w.epoch_of(524_256 + 432_000), (15, 956_256, 432_000));
        let n = EpochSchedule {
            warmup: false,
            first_normal_epoch: 0,
            first_normal_slot: 0,
            ..w
        };
        assert_eq!(n.epoch_of(432_001), (1, 432_000, 432_000));
    }

    #[test]
    fn encode_decode_round_trip() {
        let m = sample();
        assert_eq!(decode_manifest(&encode_manifest(&m)).unwrap(), m);
    }

    #[test]
    fn every_truncation_is_an_error_or_shorter() {
        let bytes = encode_manifest(&sample());
        for cut in 0..bytes.len() {
            // Cuts inside the mandatory part must fail; cuts at optional-field boundaries may
            // decode with those fields absent; none may panic.
            let _ = decode_manifest(&bytes[..cut]);
        }
        assert!(decode_manifest(&bytes[..100]).is_err());
    }
}
