//! Account storage files (AppendVec): zero-copy iteration over entries laid out as
//! StoredMeta (48 B: write_version u64, data_len u64, pubkey) ‖ AccountMeta (56 B: lamports
//! u64, rent_epoch u64, owner, executable u8 + 7 padding bytes) ‖ hash (32 B) ‖ data,
//! each entry starting 8-byte aligned. `accounts_current_len` bounds the valid bytes.

use thiserror::Error;

/// StoredMeta size.
pub const STORED_META_BYTES: usize = 48;
/// AccountMeta size.
pub const ACCOUNT_META_BYTES: usize = 56;
/// Stored hash size.
pub const HASH_BYTES: usize = 32;
/// Fixed part of one entry.
pub const ENTRY_HEADER_BYTES: usize = STORED_META_BYTES + ACCOUNT_META_BYTES + HASH_BYTES;
/// Largest account data accepted (Agave's MAX_PERMITTED_DATA_LENGTH).
pub const MAX_ACCOUNT_DATA_BYTES: u64 = 10 * 1024 * 1024;
/// Largest storage file accepted.
pub const MAX_APPEND_VEC_BYTES: u64 = 16 * 1024 * 1024 * 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AppendVecError {
    #[error("account file: accounts_current_len {current_len} exceeds file size {file_len}")]
    LengthBeyondFile { current_len: u64, file_len: u64 },
    #[error("account file: size {len} exceeds the limit of {max}")]
    FileTooLarge { len: u64, max: u64 },
    #[error("account file: entry at offset {offset}: header runs past accounts_current_len {current_len}")]
    TruncatedHeader { offset: u64, current_len: u64 },
    #[error(
        "account file: entry at offset {offset}: data length {data_len} exceeds the limit of {max}"
    )]
    DataTooLong {
        offset: u64,
        data_len: u64,
        max: u64,
    },
    #[error("account file: entry at offset {offset}: data of {data_len} bytes runs past accounts_current_len {current_len}")]
    TruncatedData {
        offset: u64,
        data_len: u64,
        current_len: u64,
    },
    #[error("account file: entry at offset {offset}: executable byte is {value}, expected 0 or 1")]
    BadExecutable { offset: u64, value: u8 },
}

/// One account entry, borrowing from the mapped file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredAccount<'a> {
    /// Offset of the entry in its file.
    pub offset: u64,
    pub write_version: u64,
    pub pubkey: &'a [u8; 32],
    pub lamports: u64,
    pub rent_epoch: u64,
    pub owner: &'a [u8; 32],
    pub executable: bool,
    pub hash: &'a [u8; 32],
    pub data: &'a [u8],
}

impl StoredAccount<'_> {
    /// Bytes the entry occupies, including alignment padding.
    pub fn stored_size_bytes(&self) -> usize {
        align8(ENTRY_HEADER_BYTES + self.data.len())
    }
    /// This account's LtHash element.
    pub fn lt_hash(&self) -> crate::lthash::LtHash {
        crate::lthash::LtHash::of_account(
            self.lamports,
            self.data,
            self.executable,
            self.owner,
            self.pubkey,
        )
    }
}

fn align8(n: usize) -> usize {
    (n + 7) & !7
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

/// Iterator over the entries of an account file's valid prefix.
pub struct AppendVecIter<'a> {
    bytes: &'a [u8],
    pos: usize,
    failed: bool,
}

/// Iterate the entries of `file` (the whole mapped file) bounded by `accounts_current_len`.
pub fn iter_accounts(
    file: &[u8],
    accounts_current_len: u64,
) -> Result<AppendVecIter<'_>, AppendVecError> {
    let file_len = file.len() as u64;
    if file_len > MAX_APPEND_VEC_BYTES {
        return Err(AppendVecError::FileTooLarge {
            len: file_len,
            max: MAX_APPEND_VEC_BYTES,
        });
    }
    if accounts_current_len > file_len {
        return Err(AppendVecError::LengthBeyondFile {
            current_len: accounts_current_len,
            file_len,
        });
    }
    Ok(AppendVecIter {
        bytes: &file[..accounts_current_len as usize],
        pos: 0,
        failed: false,
    })
}

/// Parse one entry at `offset` (for index lookups).
pub fn account_at(
    file: &[u8],
    accounts_current_len: u64,
    offset: u64,
) -> Result<StoredAccount<'_>, AppendVecError> {
    let end = accounts_current_len.min(file.len() as u64) as usize;
    parse_entry(&file[..end], offset as usize)
}

fn parse_entry(bytes: &[u8], pos: usize) -> Result<StoredAccount<'_>, AppendVecError> {
    let current_len = bytes.len() as u64;
    parse_entry_at(bytes.get(pos..).unwrap_or(&[]), pos as u64, current_len)
}

/// Parse the entry that starts at absolute `offset` of a file whose valid length is
/// `current_len`. `entry` holds the file's bytes from `offset` on: at least the whole
/// entry when it lies within `current_len` (it may be shorter when the entry does not
/// fit, which is then an error). Truncation is judged against `current_len`, so the
/// result does not depend on how many bytes past the entry `entry` happens to hold.
fn parse_entry_at(
    entry: &[u8],
    offset: u64,
    current_len: u64,
) -> Result<StoredAccount<'_>, AppendVecError> {
    let room = current_len.saturating_sub(offset);
    if room < ENTRY_HEADER_BYTES as u64 || entry.len() < ENTRY_HEADER_BYTES {
        return Err(AppendVecError::TruncatedHeader {
            offset,
            current_len,
        });
    }
    let h = &entry[..ENTRY_HEADER_BYTES];
    let write_version = le64(&h[0..8]);
    let data_len = le64(&h[8..16]);
    let pubkey: &[u8; 32] = h[16..48].try_into().expect("32 bytes");
    let lamports = le64(&h[48..56]);
    let rent_epoch = le64(&h[56..64]);
    let owner: &[u8; 32] = h[64..96].try_into().expect("32 bytes");
    let exec = h[96];
    let hash: &[u8; 32] = h[104..136].try_into().expect("32 bytes");
    if data_len > MAX_ACCOUNT_DATA_BYTES {
        return Err(AppendVecError::DataTooLong {
            offset,
            data_len,
            max: MAX_ACCOUNT_DATA_BYTES,
        });
    }
    if exec > 1 {
        return Err(AppendVecError::BadExecutable {
            offset,
            value: exec,
        });
    }
    let data_room = room - ENTRY_HEADER_BYTES as u64;
    let data_end = ENTRY_HEADER_BYTES + data_len as usize;
    if data_room < data_len || entry.len() < data_end {
        return Err(AppendVecError::TruncatedData {
            offset,
            data_len,
            current_len,
        });
    }
    let data = &entry[ENTRY_HEADER_BYTES..data_end];
    Ok(StoredAccount {
        offset,
        write_version,
        pubkey,
        lamports,
        rent_epoch,
        owner,
        executable: exec == 1,
        hash,
        data,
    })
}

/// Bytes an entry whose header is complete needs before it can be parsed: its header and
/// data, capped by what is left of the valid length (a shorter entry is an error that
/// needs no more bytes to report).
fn entry_need_bytes(header: &[u8], offset: u64, current_len: u64) -> u64 {
    let data_len = le64(&header[8..16]);
    if data_len > MAX_ACCOUNT_DATA_BYTES || header[96] > 1 {
        // Rejected from the header alone.
        return ENTRY_HEADER_BYTES as u64;
    }
    (ENTRY_HEADER_BYTES as u64 + data_len).min(current_len.saturating_sub(offset))
}

/// Push-based iteration over an account file whose bytes arrive in pieces (as they are
/// unpacked from an archive), yielding the same entries and errors as [`iter_accounts`]
/// over the whole file, whatever the piece boundaries. Entries inside a piece are parsed
/// in place; only an entry that straddles two pieces is copied, so the carried bytes are
/// bounded by one entry ([`ENTRY_HEADER_BYTES`] + [`MAX_ACCOUNT_DATA_BYTES`]).
#[derive(Debug)]
pub struct AppendVecScanner {
    current_len: u64,
    /// Absolute offset of the next entry.
    next_entry: u64,
    /// Bytes pushed so far.
    fed: u64,
    /// Bytes of a straddling entry, starting at `next_entry`.
    carry: Vec<u8>,
    failed: bool,
}

impl AppendVecScanner {
    /// A scanner for a file whose valid length is `accounts_current_len`.
    pub fn new(accounts_current_len: u64) -> Result<Self, AppendVecError> {
        if accounts_current_len > MAX_APPEND_VEC_BYTES {
            return Err(AppendVecError::FileTooLarge {
                len: accounts_current_len,
                max: MAX_APPEND_VEC_BYTES,
            });
        }
        Ok(AppendVecScanner {
            current_len: accounts_current_len,
            next_entry: 0,
            fed: 0,
            carry: Vec::new(),
            failed: false,
        })
    }

    /// Bytes pushed so far.
    pub fn fed_bytes(&self) -> u64 {
        self.fed
    }

    /// True once every entry below `accounts_current_len` was yielded.
    pub fn is_complete(&self) -> bool {
        !self.failed && self.next_entry >= self.current_len
    }

    /// Push the next piece of the file; `f` is called for each entry completed by it.
    /// After an error nothing more is yielded.
    pub fn push<E>(
        &mut self,
        piece: &[u8],
        mut f: impl FnMut(StoredAccount<'_>) -> Result<(), E>,
    ) -> Result<(), ScanError<E>> {
        let start = self.fed;
        self.fed += piece.len() as u64;
        if self.failed {
            return Ok(());
        }
        // Only the valid prefix of the file matters.
        let valid_end = self.fed.min(self.current_len);
        if valid_end <= start {
            return Ok(());
        }
        let piece = &piece[..(valid_end - start) as usize];
        let mut pos = self.next_entry.max(start); // absolute
        if !self.carry.is_empty() {
            let mut rel = 0usize;
            let need_header =
                (ENTRY_HEADER_BYTES as u64).min(self.current_len - self.next_entry) as usize;
            if self.carry.len() < need_header {
                let take = (need_header - self.carry.len()).min(piece.len());
                self.carry.extend_from_slice(&piece[..take]);
                rel += take;
            }
            if self.carry.len() < need_header {
                return Ok(());
            }
            let need = if need_header < ENTRY_HEADER_BYTES {
                need_header
            } else {
                entry_need_bytes(&self.carry, self.next_entry, self.current_len) as usize
            };
            if self.carry.len() < need {
                let take = (need - self.carry.len()).min(piece.len() - rel);
                self.carry.extend_from_slice(&piece[rel..rel + take]);
            }
            if self.carry.len() < need {
                return Ok(());
            }
            let carry = std::mem::take(&mut self.carry);
            let r = self.emit(&carry, self.next_entry, &mut f);
            self.carry = carry;
            self.carry.clear();
            r?;
            pos = self.next_entry;
        }
        // Entries that start inside this piece.
        while !self.failed && pos < valid_end {
            let rel = (pos - start) as usize;
            let avail = &piece[rel..];
            let need_header = (ENTRY_HEADER_BYTES as u64).min(self.current_len - pos) as usize;
            let complete = avail.len() >= need_header
                && (need_header < ENTRY_HEADER_BYTES
                    || avail.len() as u64 >= entry_need_bytes(avail, pos, self.current_len));
            if !complete {
                self.carry.extend_from_slice(avail);
                return Ok(());
            }
            self.emit(avail, pos, &mut f)?;
            pos = self.next_entry;
        }
        Ok(())
    }

    fn emit<E>(
        &mut self,
        entry: &[u8],
        offset: u64,
        f: &mut impl FnMut(StoredAccount<'_>) -> Result<(), E>,
    ) -> Result<(), ScanError<E>> {
        match parse_entry_at(entry, offset, self.current_len) {
            Ok(a) => {
                self.next_entry = (offset + a.stored_size_bytes() as u64).min(self.current_len);
                f(a).map_err(ScanError::Sink)
            }
            Err(e) => {
                self.failed = true;
                Err(ScanError::Entry(e))
            }
        }
    }

    /// End of the file: every byte below `accounts_current_len` must have been pushed.
    pub fn finish(&self) -> Result<(), AppendVecError> {
        if self.fed < self.current_len {
            return Err(AppendVecError::LengthBeyondFile {
                current_len: self.current_len,
                file_len: self.fed,
            });
        }
        Ok(())
    }
}

/// Error of [`AppendVecScanner::push`]: a bad entry, or the callback's own error.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ScanError<E> {
    #[error(transparent)]
    Entry(AppendVecError),
    #[error("account sink: {0}")]
    Sink(E),
}

impl<'a> Iterator for AppendVecIter<'a> {
    type Item = Result<StoredAccount<'a>, AppendVecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.bytes.len() {
            return None;
        }
        match parse_entry(self.bytes, self.pos) {
            Ok(a) => {
                // The last entry need not be padded: clamp to the valid length.
                self.pos = (self.pos + a.stored_size_bytes()).min(self.bytes.len());
                Some(Ok(a))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Append one entry in the AppendVec layout (write version and hash zero, padding zero).
pub fn append_account(
    out: &mut Vec<u8>,
    pubkey: &[u8; 32],
    lamports: u64,
    rent_epoch: u64,
    owner: &[u8; 32],
    executable: bool,
    data: &[u8],
) {
    let start = out.len();
    debug_assert_eq!(start % 8, 0);
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(pubkey);
    out.extend_from_slice(&lamports.to_le_bytes());
    out.extend_from_slice(&rent_epoch.to_le_bytes());
    out.extend_from_slice(owner);
    out.push(executable as u8);
    out.extend_from_slice(&[0u8; 7]);
    out.extend_from_slice(&[0u8; 32]);
    out.extend_from_slice(data);
    out.resize(start + align8(ENTRY_HEADER_BYTES + data.len()), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_iterate_unpadded_tail() {
        let mut f = Vec::new();
        append_account(&mut f, &[1; 32], 10, 5, &[2; 32], false, b"abc");
        append_account(&mut f, &[3; 32], 0, u64::MAX, &[4; 32], true, b"hello");
        // The last entry's padding is not counted.
        let current_len = (f.len() - 3) as u64;
        let v: Vec<_> = iter_accounts(&f, current_len)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].data, b"abc");
        assert_eq!(v[1].pubkey, &[3; 32]);
        assert!(v[1].executable);
        assert_eq!(v[1].rent_epoch, u64::MAX);
        assert_eq!(account_at(&f, current_len, v[1].offset).unwrap(), v[1]);
    }

    #[test]
    fn bad_executable_rejected() {
        let mut f = Vec::new();
        append_account(&mut f, &[1; 32], 10, 5, &[2; 32], false, b"abc");
        f[96] = 2;
        let e = iter_accounts(&f, f.len() as u64)
            .unwrap()
            .next()
            .unwrap()
            .unwrap_err();
        assert_eq!(
            e,
            AppendVecError::BadExecutable {
                offset: 0,
                value: 2
            }
        );
    }

    #[test]
    fn current_len_beyond_file_rejected() {
        assert!(iter_accounts(&[0u8; 10], 11).is_err());
    }
}
