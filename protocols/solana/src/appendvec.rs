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
    let offset = pos as u64;
    if bytes.len().saturating_sub(pos) < ENTRY_HEADER_BYTES {
        return Err(AppendVecError::TruncatedHeader {
            offset,
            current_len,
        });
    }
    let h = &bytes[pos..pos + ENTRY_HEADER_BYTES];
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
    let data_start = pos + ENTRY_HEADER_BYTES;
    if (bytes.len() - data_start) < data_len as usize {
        return Err(AppendVecError::TruncatedData {
            offset,
            data_len,
            current_len,
        });
    }
    let data = &bytes[data_start..data_start + data_len as usize];
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
