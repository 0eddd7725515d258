//! The check of a verified snapshot against the hash in its archive's name.
//!
//! Since SIMD-0220 an archive is named by its accounts LtHash checksum (blake3 of the
//! 2048-byte LtHash, base58). Archives written before carry the merkle snapshot hash (see
//! [`catchup_solana::accounts_hash`]). The computed LtHash checksum is compared first; when
//! it differs, the merkle hash is computed from the index and compared. Neither matching is
//! a mismatch naming both hashes.

use serde::Serialize;

use catchup_solana::accounts_hash::{
    account_hash, full_accounts_hash, incremental_accounts_hash, snapshot_hash, HashedAccount,
};

use super::{PipelineError, VerifiedSnapshot};

/// Snapshots with more live accounts than this are not merkle-hashed (the merkle hash
/// needs every account in memory, sorted); their name can only match the LtHash.
pub const MAX_MERKLE_ACCOUNTS: u64 = 2_000_000;

/// Which hash the name was compared with.
pub const KIND_LT_HASH: &str = "accounts_lt_hash";
pub const KIND_MERKLE: &str = "merkle_accounts_hash";

/// The outcome of comparing a name's hash with the computed one.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct NameHashCheck {
    /// The archive's file name.
    pub archive: String,
    /// The base58 hash in the name.
    pub name_hash: String,
    /// `accounts_lt_hash` (SIMD-0220) or `merkle_accounts_hash` (older archives).
    pub kind: String,
    /// The computed hash of that kind (on a mismatch: the LtHash checksum).
    pub computed: String,
    /// The computed merkle snapshot hash, when it was computed.
    pub merkle_computed: Option<String>,
    pub ok: bool,
}

impl NameHashCheck {
    /// One line for an error: the name's hash and what was computed.
    pub fn mismatch_line(&self) -> String {
        format!(
            "{}: the accounts hash is not the hash its name gives: the name says {}, computed accounts LtHash checksum {}{}",
            self.archive,
            self.name_hash,
            self.computed,
            match &self.merkle_computed {
                Some(m) => format!(" (merkle snapshot hash {m})"),
                None if self.kind == KIND_LT_HASH => format!(
                    " (the merkle snapshot hash of older archives is not computed for more than {MAX_MERKLE_ACCOUNTS} accounts)"
                ),
                None => String::new(),
            }
        )
    }
}

/// The merkle snapshot hash of `v`: the full accounts hash, or for an incremental (its
/// report has a base slot) the hash of the accounts stored after the base slot; mixed with
/// the manifest's epoch accounts hash when it has one. `None` when the snapshot is too
/// large to hash this way.
pub fn merkle_snapshot_hash(v: &VerifiedSnapshot) -> Result<Option<[u8; 32]>, PipelineError> {
    if v.report.accounts_live > MAX_MERKLE_ACCOUNTS {
        return Ok(None);
    }
    let base = v.report.base_slot;
    let accounts: Vec<HashedAccount> = v
        .accounts()?
        .into_iter()
        .filter(|a| base.is_none_or(|b| a.location.slot > b))
        .map(|a| HashedAccount {
            hash: account_hash(
                a.lamports,
                a.rent_epoch,
                &a.data,
                a.executable,
                &a.owner,
                &a.pubkey,
            ),
            pubkey: a.pubkey,
            lamports: a.lamports,
        })
        .collect();
    let accounts_hash = if base.is_some() {
        incremental_accounts_hash(accounts)
    } else {
        full_accounts_hash(accounts)
    };
    Ok(Some(snapshot_hash(
        &accounts_hash,
        v.manifest.epoch_accounts_hash.as_ref(),
    )))
}

/// Compare `v` with the hash in `archive_name`. `None` when the name is not an Agave
/// archive name (nothing to compare with).
pub fn check_name_hash(
    v: &VerifiedSnapshot,
    archive_name: &str,
) -> Result<Option<NameHashCheck>, PipelineError> {
    let Some(name) = catchup_solana::unpack::parse_archive_name(archive_name) else {
        return Ok(None);
    };
    let lt = v.report.lt_hash_computed.clone();
    let mut check = NameHashCheck {
        archive: archive_name.to_string(),
        name_hash: name.hash.clone(),
        kind: KIND_LT_HASH.into(),
        computed: lt.clone(),
        merkle_computed: None,
        ok: name.hash == lt,
    };
    if check.ok {
        return Ok(Some(check));
    }
    if let Some(m) = merkle_snapshot_hash(v)? {
        let m = catchup_solana::base58(&m);
        if m == name.hash {
            check.kind = KIND_MERKLE.into();
            check.computed = m.clone();
            check.ok = true;
        }
        check.merkle_computed = Some(m);
    }
    Ok(Some(check))
}
