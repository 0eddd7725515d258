//! The sync's store on disk: the per-shard `catchup_io` store (append-only segments,
//! checksummed records, write-once content-addressed kinds) and the atomic journal.
//!
//! The engine is synchronous, the disk store is asynchronous: [`DiskStore`] serves reads
//! from memory (everything stored is loaded at open) and queues writes; the driver calls
//! [`DiskStore::commit`] after each batch of events, which writes the queued records,
//! flushes them (group commit), and only then saves the journal, so the journal never
//! names data that is not durable.

use std::path::Path;

use alloy_primitives::B256;
use catchup_io::journal::Journal;
use catchup_io::store::{Store, StoreOptions};

use super::store::{MemStore, SyncStore};
use super::types::{Body, Header, Receipts};

const KIND_NODE: u8 = 1;
const KIND_CODE: u8 = 2;
const KIND_HEADER: u8 = 3;
const KIND_BODY: u8 = 4;
const KIND_RECEIPTS: u8 = 5;
const KIND_ACCOUNT: u8 = 6;
const KIND_STORAGE_DONE: u8 = 7;
const KINDS: [u8; 7] = [
    KIND_NODE,
    KIND_CODE,
    KIND_HEADER,
    KIND_BODY,
    KIND_RECEIPTS,
    KIND_ACCOUNT,
    KIND_STORAGE_DONE,
];

/// Errors of the on-disk sync store, naming the directory and the item.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("sync store in {dir}: {source}")]
    Store {
        dir: String,
        source: catchup_io::store::StoreError,
    },
    #[error("sync journal in {dir}: {source}")]
    Journal {
        dir: String,
        source: catchup_io::journal::JournalError,
    },
    #[error("sync store in {dir}: stored {what} does not decode")]
    Corrupt { dir: String, what: &'static str },
}

/// A shard's sync store on disk, with an in-memory view for the engine.
pub struct DiskStore {
    mem: MemStore,
    disk: Store,
    journal: Journal,
    pending: Vec<(u8, Vec<u8>, Vec<u8>)>,
    journal_pending: Option<Vec<u8>>,
    dir: String,
    /// Records loaded at open (what a restart did not have to fetch).
    pub loaded_records: u64,
}

impl DiskStore {
    /// Open (or create) the store and journal in `dir` and load what they hold.
    pub async fn open(dir: &Path) -> Result<DiskStore, PersistError> {
        let d = dir.display().to_string();
        let opts = StoreOptions::default()
            .content_addressed(KIND_NODE)
            .content_addressed(KIND_CODE);
        let disk = Store::open(dir.join("store"), opts)
            .await
            .map_err(|source| PersistError::Store {
                dir: d.clone(),
                source,
            })?;
        let journal = Journal::open(dir, "ethsync").map_err(|source| PersistError::Journal {
            dir: d.clone(),
            source,
        })?;
        let mut mem = MemStore::default();
        let mut loaded = 0u64;
        // One streaming pass over the segments in large sequential reads; every record's
        // checksums are verified as it is read.
        let mut scan = disk.scan_all();
        while let Some(rec) = scan.next().await {
            let rec = rec.map_err(|source| PersistError::Store {
                dir: d.clone(),
                source,
            })?;
            if !KINDS.contains(&rec.kind) {
                continue;
            }
            let corrupt = |what| PersistError::Corrupt {
                dir: d.clone(),
                what,
            };
            Self::load_one(&mut mem, rec.kind, rec.key, rec.value.to_vec(), corrupt)?;
            loaded += 1;
        }
        mem.journal = journal.load().map_err(|source| PersistError::Journal {
            dir: d.clone(),
            source,
        })?;
        Ok(DiskStore {
            mem,
            disk,
            journal,
            pending: Vec::new(),
            journal_pending: None,
            dir: d,
            loaded_records: loaded,
        })
    }

    /// Put one stored record into the in-memory view.
    fn load_one(
        mem: &mut MemStore,
        kind: u8,
        k: &[u8],
        v: Vec<u8>,
        corrupt: impl Fn(&'static str) -> PersistError,
    ) -> Result<(), PersistError> {
        let key32 = || (k.len() == 32).then(|| B256::from_slice(k));
        let num = || <[u8; 8]>::try_from(k).ok().map(u64::from_be_bytes);
        match kind {
            KIND_NODE => {
                mem.nodes.insert(key32().ok_or(corrupt("node key"))?, v);
            }
            KIND_CODE => {
                mem.codes.insert(key32().ok_or(corrupt("code key"))?, v);
            }
            KIND_HEADER => {
                let h = Header::decode(&v).map_err(|_| corrupt("header"))?;
                mem.headers.insert(num().ok_or(corrupt("header key"))?, h);
            }
            KIND_BODY => {
                mem.bodies
                    .insert(num().ok_or(corrupt("body key"))?, Body { raw: v });
            }
            KIND_RECEIPTS => {
                mem.receipts
                    .insert(num().ok_or(corrupt("receipts key"))?, Receipts { raw: v });
            }
            KIND_ACCOUNT => {
                mem.accounts
                    .insert(key32().ok_or(corrupt("account key"))?, v);
            }
            _ => {
                mem.storage_done
                    .insert(key32().ok_or(corrupt("storage key"))?);
            }
        }
        Ok(())
    }

    /// Write and flush what the engine stored since the last commit, then save the journal.
    pub async fn commit(&mut self) -> Result<(), PersistError> {
        if self.pending.is_empty() && self.journal_pending.is_none() {
            return Ok(());
        }
        let d = self.dir.clone();
        for (kind, k, v) in self.pending.drain(..) {
            self.disk
                .put(kind, &k, &v)
                .await
                .map_err(|source| PersistError::Store {
                    dir: d.clone(),
                    source,
                })?;
        }
        self.disk
            .flush()
            .await
            .map_err(|source| PersistError::Store {
                dir: d.clone(),
                source,
            })?;
        if let Some(j) = self.journal_pending.take() {
            self.journal
                .save_off_executor(j)
                .await
                .map_err(|source| PersistError::Journal {
                    dir: d.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Commit and close the store cleanly (writes its index checkpoint).
    pub async fn close(mut self) -> Result<MemStore, PersistError> {
        self.commit().await?;
        let d = self.dir.clone();
        self.disk
            .close()
            .await
            .map_err(|source| PersistError::Store { dir: d, source })?;
        Ok(self.mem)
    }

    /// The in-memory view (everything stored).
    pub fn view(&self) -> &MemStore {
        &self.mem
    }
}

impl SyncStore for DiskStore {
    fn has_node(&self, hash: &B256) -> bool {
        self.mem.has_node(hash)
    }
    fn get_node(&self, hash: &B256) -> Option<Vec<u8>> {
        self.mem.get_node(hash)
    }
    fn put_node(&mut self, hash: B256, rlp: &[u8]) {
        self.mem.put_node(hash, rlp);
        self.pending.push((KIND_NODE, hash.to_vec(), rlp.to_vec()));
    }
    fn has_code(&self, hash: &B256) -> bool {
        self.mem.has_code(hash)
    }
    fn put_code(&mut self, hash: B256, code: &[u8]) {
        self.mem.put_code(hash, code);
        self.pending.push((KIND_CODE, hash.to_vec(), code.to_vec()));
    }
    fn put_header(&mut self, header: &Header) {
        self.mem.put_header(header);
        self.pending.push((
            KIND_HEADER,
            header.number.to_be_bytes().to_vec(),
            header.raw.clone(),
        ));
    }
    fn header(&self, number: u64) -> Option<Header> {
        self.mem.header(number)
    }
    fn put_body(&mut self, number: u64, body: &Body) {
        self.mem.put_body(number, body);
        self.pending
            .push((KIND_BODY, number.to_be_bytes().to_vec(), body.raw.clone()));
    }
    fn has_body(&self, number: u64) -> bool {
        self.mem.has_body(number)
    }
    fn put_receipts(&mut self, number: u64, receipts: &Receipts) {
        self.mem.put_receipts(number, receipts);
        self.pending.push((
            KIND_RECEIPTS,
            number.to_be_bytes().to_vec(),
            receipts.raw.clone(),
        ));
    }
    fn has_receipts(&self, number: u64) -> bool {
        self.mem.has_receipts(number)
    }
    fn put_account(&mut self, hash: B256, rlp: &[u8]) {
        self.mem.put_account(hash, rlp);
        self.pending
            .push((KIND_ACCOUNT, hash.to_vec(), rlp.to_vec()));
    }
    fn accounts_in(&self, lo: &B256, hi: &B256) -> Vec<(B256, Vec<u8>)> {
        self.mem.accounts_in(lo, hi)
    }
    fn put_storage_done(&mut self, account: B256) {
        self.mem.put_storage_done(account);
        self.pending
            .push((KIND_STORAGE_DONE, account.to_vec(), vec![1]));
    }
    fn storage_done(&self, account: &B256) -> bool {
        self.mem.storage_done(account)
    }
    fn write_journal(&mut self, bytes: &[u8]) {
        self.mem.write_journal(bytes);
        self.journal_pending = Some(bytes.to_vec());
    }
    fn read_journal(&self) -> Option<Vec<u8>> {
        self.mem.read_journal()
    }
}

#[cfg(test)]
mod load_tests {
    use super::*;

    use catchup_io::exec::run_unbound as run;

    fn h(i: u64, salt: u8) -> B256 {
        let mut b = [salt; 32];
        b[..8].copy_from_slice(&i.to_be_bytes());
        B256::from(b)
    }

    fn blob(i: u64, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i as usize * 13 + j) as u8).collect()
    }

    /// Fill a store over several commits (accounts overwritten later), close, reopen.
    async fn fill(dir: &Path) -> MemStore {
        let mut s = DiskStore::open(dir).await.unwrap();
        for i in 0..3000u64 {
            s.put_node(h(i, 1), &blob(i, 100 + (i as usize % 500)));
            s.put_account(h(i % 700, 2), &blob(i, 70 + (i as usize % 40)));
            if i % 5 == 0 {
                s.put_code(h(i, 3), &blob(i, 600));
                s.put_storage_done(h(i, 4));
                s.put_body(i, &Body { raw: blob(i, 300) });
                s.put_receipts(i, &Receipts { raw: blob(i, 200) });
            }
            if i % 250 == 249 {
                s.write_journal(&i.to_le_bytes());
                s.commit().await.unwrap();
            }
        }
        s.close().await.unwrap()
    }

    #[test]
    fn reopen_loads_exactly_what_was_stored() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        run(async move {
            let want = fill(&dir).await;
            let s = DiskStore::open(&dir).await.unwrap();
            let got = s.view();
            assert_eq!(got.nodes, want.nodes);
            assert_eq!(got.codes, want.codes);
            assert_eq!(got.accounts, want.accounts);
            assert_eq!(got.storage_done, want.storage_done);
            let raw = |m: &std::collections::BTreeMap<u64, Body>| {
                m.iter()
                    .map(|(k, v)| (*k, v.raw.clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(raw(&got.bodies), raw(&want.bodies));
            let rraw = |m: &std::collections::BTreeMap<u64, Receipts>| {
                m.iter()
                    .map(|(k, v)| (*k, v.raw.clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(rraw(&got.receipts), rraw(&want.receipts));
            assert_eq!(got.journal, Some(2999u64.to_le_bytes().to_vec()));
            // Overwritten accounts count once: the latest value is loaded.
            assert_eq!(got.accounts.len(), 700);
            let expect = (want.nodes.len()
                + want.codes.len()
                + want.accounts.len()
                + want.storage_done.len()
                + want.bodies.len()
                + want.receipts.len()) as u64;
            assert_eq!(s.loaded_records, expect);
            s.close().await.unwrap();
        });
    }

    #[test]
    fn a_damaged_record_stops_the_load_with_segment_and_offset() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        run(async move {
            fill(&dir).await;
            // Under the index checkpoint of the clean close the open does not read the
            // records: the load's scan finds the damage.
            let seg = dir.join("store").join("seg-00000001.dat");
            let mut bytes = std::fs::read(&seg).unwrap();
            let at = bytes.len() / 2;
            bytes[at] ^= 0x40;
            std::fs::write(&seg, &bytes).unwrap();
            match DiskStore::open(&dir).await {
                Err(e @ PersistError::Store { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains("corrupt store segment"), "{msg}");
                    assert!(msg.contains("seg-00000001.dat at offset"), "{msg}");
                }
                Err(e) => panic!("expected a store error, got {e}"),
                Ok(_) => panic!("a damaged store loaded"),
            }
        });
    }
}
