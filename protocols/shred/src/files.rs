//! Shred list files: a JSON array of shred byte arrays, optionally gzip-compressed, or the
//! binary form `(u64 LE length ‖ payload)*`. Bytes in, payloads out; limits on everything.

/// Largest decompressed file accepted.
pub const MAX_DECOMPRESSED_BYTES: usize = 512 << 20;
/// Most shreds one file may hold.
pub const MAX_SHREDS_PER_FILE: usize = 4_000_000;

#[derive(Debug, thiserror::Error)]
pub enum ShredFileError {
    #[error("gzip: {0}")]
    Gzip(&'static str),
    #[error("JSON shred list: {0}")]
    Json(String),
    #[error("binary shred list: {0} at byte {1}")]
    Binary(&'static str, usize),
    #[error("shred list holds more than {MAX_SHREDS_PER_FILE} shreds")]
    TooMany,
}

/// Strip a gzip wrapper (RFC 1952) and inflate, up to [`MAX_DECOMPRESSED_BYTES`].
pub fn gunzip(b: &[u8]) -> Result<Vec<u8>, ShredFileError> {
    if b.len() < 18 || b[0] != 0x1f || b[1] != 0x8b || b[2] != 8 {
        return Err(ShredFileError::Gzip("not a gzip member"));
    }
    let flags = b[3];
    let mut pos = 10usize;
    let short = ShredFileError::Gzip("truncated header");
    if flags & 4 != 0 {
        let x = b
            .get(10..12)
            .ok_or(ShredFileError::Gzip("truncated header"))?;
        pos += 2 + usize::from(u16::from_le_bytes([x[0], x[1]]));
    }
    for bit in [8u8, 16] {
        if flags & bit != 0 {
            let rest = b
                .get(pos..)
                .ok_or(ShredFileError::Gzip("truncated header"))?;
            pos += rest
                .iter()
                .position(|&c| c == 0)
                .ok_or(ShredFileError::Gzip("unterminated name"))?
                + 1;
        }
    }
    if flags & 2 != 0 {
        pos += 2;
    }
    let body = b.get(pos..).ok_or(short)?;
    miniz_oxide::inflate::decompress_to_vec_with_limit(body, MAX_DECOMPRESSED_BYTES)
        .map_err(|_| ShredFileError::Gzip("corrupt deflate stream or over the size limit"))
}

/// Decode a shred list file (gzip detected by magic; JSON if it starts with `[`, else binary).
pub fn decode_shred_list(bytes: &[u8]) -> Result<Vec<Vec<u8>>, ShredFileError> {
    let owned;
    let b = if bytes.starts_with(&[0x1f, 0x8b]) {
        owned = gunzip(bytes)?;
        &owned[..]
    } else {
        bytes
    };
    let first = b.iter().find(|c| !c.is_ascii_whitespace());
    if first == Some(&b'[') {
        let v: Vec<Vec<u8>> =
            serde_json::from_slice(b).map_err(|e| ShredFileError::Json(e.to_string()))?;
        if v.len() > MAX_SHREDS_PER_FILE {
            return Err(ShredFileError::TooMany);
        }
        return Ok(v);
    }
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < b.len() {
        let len_bytes = b
            .get(pos..pos + 8)
            .ok_or(ShredFileError::Binary("truncated length", pos))?;
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        if len > crate::layout::PACKET_DATA_SIZE as u64 {
            return Err(ShredFileError::Binary("shred longer than a packet", pos));
        }
        let payload = b
            .get(pos + 8..pos + 8 + len as usize)
            .ok_or(ShredFileError::Binary("truncated shred", pos))?;
        out.push(payload.to_vec());
        if out.len() > MAX_SHREDS_PER_FILE {
            return Err(ShredFileError::TooMany);
        }
        pos += 8 + len as usize;
    }
    Ok(out)
}

/// Encode payloads as the JSON list format.
pub fn encode_json(shreds: &[Vec<u8>]) -> Vec<u8> {
    serde_json::to_vec(shreds).expect("byte arrays serialize")
}
