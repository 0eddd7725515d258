//! The sans-IO codecs on the real Agave snapshots: decompress, parse the tar, decode the
//! manifests of both formats, iterate the account files, recompute the accounts LtHash.

/// A skip reason shown on the terminal even though libtest hides what passing tests print
/// with `eprintln!`: a skipped test must say why.
macro_rules! skip_note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

use std::collections::HashMap;
use std::path::PathBuf;

use catchup_solana::manifest::decode_manifest;
use catchup_solana::tar::{EntryHeader, TarError, TarParser, TarSink};
use catchup_solana::unpack::{classify, SnapshotEntry};
use catchup_solana::{iter_accounts, LtHash, ZstdError, ZstdStream};

#[derive(Debug)]
#[allow(dead_code)]
enum E {
    Z(ZstdError),
    T(TarError),
}
impl From<ZstdError> for E {
    fn from(e: ZstdError) -> Self {
        E::Z(e)
    }
}
impl From<TarError> for E {
    fn from(e: TarError) -> Self {
        E::T(e)
    }
}

fn fixture(name: &str) -> Option<Vec<u8>> {
    let dir = std::env::var_os("CATCHUP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
        })
        .join("solana/snapshots");
    match std::fs::read(dir.join(name)) {
        Ok(b) => Some(b),
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("fixture {name} missing: {e}")
        }
        Err(e) => {
            skip_note!("skipped: fixture {name}: {e}");
            None
        }
    }
}

#[derive(Default)]
struct Files {
    cur: Option<(SnapshotEntry, Vec<u8>)>,
    done: Vec<(SnapshotEntry, Vec<u8>)>,
}
impl TarSink for Files {
    type Error = E;
    fn begin_entry(&mut self, h: &EntryHeader) -> Result<(), E> {
        let e = classify(h).expect("fixture entries follow Agave's rules");
        self.cur = Some((e, Vec::new()));
        Ok(())
    }
    fn entry_data(&mut self, d: &[u8]) -> Result<(), E> {
        self.cur.as_mut().unwrap().1.extend_from_slice(d);
        Ok(())
    }
    fn end_entry(&mut self) -> Result<(), E> {
        self.done.push(self.cur.take().unwrap());
        Ok(())
    }
}

fn unpack(archive: &[u8]) -> Files {
    let mut z = ZstdStream::new(27, 1000).unwrap();
    let mut t = TarParser::new();
    let mut f = Files::default();
    for c in archive.chunks(333) {
        z.push::<E>(c, |d| t.push(d, &mut f)).unwrap();
    }
    z.finish().unwrap();
    t.finish().unwrap();
    f
}

fn check(name: &str, slot: u64) -> Option<(usize, usize)> {
    let f = unpack(&fixture(name)?);
    let (_, mbytes) = f
        .done
        .iter()
        .find(|(e, _)| *e == SnapshotEntry::BankSnapshot { slot })
        .expect("manifest");
    let m = decode_manifest(mbytes).unwrap();
    assert_eq!(m.slot, slot);
    let mut newest: HashMap<[u8; 32], (u64, u64, LtHash, u64)> = HashMap::new();
    let mut total = 0;
    for (e, bytes) in &f.done {
        if let SnapshotEntry::AccountsFile { slot, id } = e {
            let s = m
                .storages
                .iter()
                .find(|s| s.slot == *slot && s.id == *id)
                .expect("storage in manifest");
            for a in iter_accounts(bytes, s.accounts_current_len).unwrap() {
                let a = a.unwrap();
                total += 1;
                let key = (*slot, a.offset);
                let cur = newest.get(a.pubkey).map(|x| (x.0, x.1));
                if cur.is_none_or(|c| c < key) {
                    newest.insert(*a.pubkey, (*slot, a.offset, a.lt_hash(), a.lamports));
                }
            }
        }
    }
    let mut lt = LtHash::identity();
    let mut cap = 0u64;
    for (_, _, h, l) in newest.values() {
        lt.mix_in(h);
        cap += l;
    }
    assert_eq!(
        Some(&lt),
        m.accounts_lt_hash.as_deref(),
        "{name}: accounts LtHash"
    );
    if m.slot == 100 || m.slot == 1 {
        // Full snapshots: all accounts are present, so capitalization must match too.
        assert_eq!(cap, m.capitalization, "{name}: capitalization");
    }
    Some((total, newest.len()))
}

#[test]
fn v4_2_manifest_and_lt_hash() {
    if let Some((total, live)) = check("test-snapshot-v4.2.0-beta.1.tar.zst", 100) {
        assert_eq!((total, live), (9, 8));
    }
}

#[test]
fn older_full_manifest_and_lt_hash() {
    check(
        "snapshot-1-5pgMpQj4MZYWauD1VnoNfmGAdUQCe6VVCSCQMNbDoxf7.tar.zst",
        1,
    );
}

#[test]
fn older_incremental_manifest_decodes() {
    let Some(a) =
        fixture("incremental-snapshot-1-4-43FT6mnmRW9XbxpCzqH3ogYexHXboG7d8vmf3gBLvLrR.tar.zst")
    else {
        return;
    };
    let f = unpack(&a);
    let (_, mbytes) = f
        .done
        .iter()
        .find(|(e, _)| *e == SnapshotEntry::BankSnapshot { slot: 4 })
        .unwrap();
    let m = decode_manifest(mbytes).unwrap();
    assert_eq!((m.slot, m.parent_slot), (4, 3));
    assert_eq!(m.storages.len(), 1);
    assert_eq!(m.storages[0].accounts_current_len, 158_456);
    assert!(m.accounts_lt_hash.is_some());
}
