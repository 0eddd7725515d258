//! Fuzz-style properties: random bytes and random mutations never panic any decoder.

use catchup_solana::appendvec::{
    append_account, iter_accounts, AppendVecError, AppendVecScanner, ScanError,
};
use catchup_solana::manifest::{decode_manifest, encode_manifest, Manifest, StorageInfo};
use catchup_solana::tar::{
    write_header, EntryHeader, EntryKind, TarError, TarParser, TarSink, END_OF_ARCHIVE,
};
use catchup_solana::unpack::classify;
use catchup_solana::zstd_stream::{FrameSplitter, ZstdError, ZstdStream};
use proptest::prelude::*;

struct Null;
impl TarSink for Null {
    type Error = TarError;
    fn begin_entry(&mut self, h: &EntryHeader) -> Result<(), TarError> {
        let _ = classify(h);
        Ok(())
    }
    fn entry_data(&mut self, _: &[u8]) -> Result<(), TarError> {
        Ok(())
    }
    fn end_entry(&mut self) -> Result<(), TarError> {
        Ok(())
    }
}

fn valid_tar() -> Vec<u8> {
    let mut out = Vec::new();
    for (p, d) in [
        ("version", &b"1.2.0"[..]),
        ("accounts/1.2", &[9u8; 700][..]),
    ] {
        write_header(&mut out, p, d.len() as u64, EntryKind::File);
        out.extend_from_slice(d);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&END_OF_ARCHIVE);
    out
}

fn sample_manifest() -> Vec<u8> {
    let mut m = Manifest::new(
        9,
        [1; 32],
        77,
        vec![StorageInfo {
            slot: 9,
            id: 1,
            accounts_current_len: 136,
        }],
    );
    m.accounts_lt_hash = Some(Box::default());
    encode_manifest(&m)
}

type Seen = (Vec<(u64, [u8; 32], u64, Vec<u8>)>, Option<AppendVecError>);

/// Entries (offset, pubkey, lamports, data) and the first error, from `iter_accounts`.
fn iterate(file: &[u8], len: u64) -> Seen {
    let mut out = Vec::new();
    let it = match iter_accounts(file, len) {
        Ok(it) => it,
        Err(e) => return (out, Some(e)),
    };
    for a in it {
        match a {
            Ok(a) => out.push((a.offset, *a.pubkey, a.lamports, a.data.to_vec())),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

/// The same through `AppendVecScanner`, the file pushed in pieces cut at `cuts`.
fn scan_in_pieces(file: &[u8], len: u64, cuts: &[usize]) -> Seen {
    let mut out = Vec::new();
    let mut s = AppendVecScanner::new(len).unwrap();
    let mut rest = file;
    let mut i = 0;
    while !rest.is_empty() || i == 0 {
        let n = cuts.get(i).copied().unwrap_or(rest.len()).min(rest.len());
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        i += 1;
        let r = s.push::<()>(piece, |a| {
            out.push((a.offset, *a.pubkey, a.lamports, a.data.to_vec()));
            Ok(())
        });
        match r {
            Ok(()) => {}
            Err(ScanError::Entry(e)) => return (out, Some(e)),
            Err(ScanError::Sink(())) => unreachable!("the sink never fails"),
        }
        if n == 0 && rest.is_empty() {
            break;
        }
    }
    assert!(s.finish().is_ok());
    assert!(s.is_complete(), "scanner stopped early at {len}");
    (out, None)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn tar_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096), step in 1usize..600) {
        let mut p = TarParser::new();
        for c in bytes.chunks(step) {
            if p.push(c, &mut Null).is_err() { break; }
        }
        let _ = p.finish();
    }

    #[test]
    fn tar_mutated(pos in 0usize..2560, val in any::<u8>()) {
        let mut t = valid_tar();
        let pos = pos % t.len();
        t[pos] = val;
        let mut p = TarParser::new();
        if p.push(&t, &mut Null).is_ok() { let _ = p.finish(); }
    }

    #[test]
    fn manifest_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = decode_manifest(&bytes);
    }

    #[test]
    fn manifest_mutated(pos in 0usize..5000, val in any::<u8>()) {
        let mut m = sample_manifest();
        let pos = pos % m.len();
        m[pos] = val;
        let _ = decode_manifest(&m);
    }

    #[test]
    fn appendvec_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048), len in 0u64..3000) {
        if let Ok(it) = iter_accounts(&bytes, len) {
            for a in it.take(100) { if a.is_err() { break; } }
        }
    }

    #[test]
    fn appendvec_mutated(pos in 0usize..600, val in any::<u8>()) {
        let mut f = Vec::new();
        append_account(&mut f, &[1; 32], 5, 0, &[2; 32], false, &[3; 100]);
        append_account(&mut f, &[4; 32], 6, 0, &[5; 32], true, &[6; 200]);
        let pos = pos % f.len();
        f[pos] = val;
        let len = f.len() as u64;
        for a in iter_accounts(&f, len).unwrap() { if a.is_err() { break; } }
    }

    #[test]
    fn appendvec_scanner_equals_iter_on_random_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        len in 0u64..2100,
        cuts in proptest::collection::vec(1usize..700, 0..8),
    ) {
        let len = len.min(bytes.len() as u64);
        prop_assert_eq!(scan_in_pieces(&bytes, len, &cuts), iterate(&bytes, len));
    }

    #[test]
    fn appendvec_scanner_equals_iter_on_mutated_files(
        sizes in proptest::collection::vec(0usize..600, 1..6),
        pos in any::<usize>(),
        val in any::<u8>(),
        trim in 0u64..16,
        cuts in proptest::collection::vec(1usize..900, 0..10),
    ) {
        let mut f = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            append_account(&mut f, &[i as u8; 32], i as u64, 0, &[2; 32], i % 2 == 0, &vec![i as u8; *n]);
        }
        let clean_len = f.len() as u64 - trim.min(7);
        prop_assert_eq!(scan_in_pieces(&f, clean_len, &cuts), iterate(&f, clean_len));
        let p = pos % f.len();
        f[p] = val;
        prop_assert_eq!(scan_in_pieces(&f, clean_len, &cuts), iterate(&f, clean_len));
        let cut_len = (pos % (f.len() + 1)) as u64;
        prop_assert_eq!(scan_in_pieces(&f, cut_len, &cuts), iterate(&f, cut_len));
    }

    #[test]
    fn zstd_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut z = ZstdStream::new(27, 4096).unwrap();
        let _ = z.push::<ZstdError>(&bytes, |_| Ok(()));
        let _ = z.finish();
        let mut s = FrameSplitter::new(1 << 20);
        let _ = s.push::<ZstdError>(&bytes, |_, _| Ok(()));
        let _ = s.finish();
    }
}
