//! Solana CLI keypair files: a JSON array of 64 numbers, the ed25519 secret key followed
//! by its public key.

use std::path::Path;

use catchup_gossip::ed25519_dalek::SigningKey;
use catchup_gossip::Pubkey;

#[derive(Debug, thiserror::Error)]
pub enum KeypairError {
    #[error("keypair file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("keypair file {path}: {why} (expected a Solana CLI keypair: a JSON array of 64 numbers 0-255)")]
    Format { path: String, why: String },
    #[error("{path} already exists; remove it or pick another --out")]
    Exists { path: String },
}

/// Read a keypair file; the public half must belong to the secret half.
pub fn read_keypair(path: &Path) -> Result<SigningKey, KeypairError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| KeypairError::Io {
        path: p.clone(),
        source,
    })?;
    parse_keypair(&text).map_err(|why| KeypairError::Format { path: p, why })
}

/// Parse the JSON text of a keypair.
pub fn parse_keypair(text: &str) -> Result<SigningKey, String> {
    let bytes: Vec<u8> = serde_json::from_str(text.trim()).map_err(|e| e.to_string())?;
    let bytes: [u8; 64] = bytes
        .try_into()
        .map_err(|v: Vec<u8>| format!("{} numbers, not 64", v.len()))?;
    let secret: [u8; 32] = bytes[..32].try_into().expect("32 bytes");
    let key = SigningKey::from_bytes(&secret);
    if key.verifying_key().to_bytes()[..] != bytes[32..] {
        return Err("the public key does not belong to the secret key".into());
    }
    Ok(key)
}

/// The JSON text of a keypair.
pub fn keypair_json(key: &SigningKey) -> String {
    let mut bytes = key.to_bytes().to_vec();
    bytes.extend_from_slice(&key.verifying_key().to_bytes());
    serde_json::to_string(&bytes).expect("bytes serialize")
}

/// A fresh keypair written to `path` (which must not exist), readable by its owner only.
pub fn write_new_keypair(path: &Path) -> Result<(SigningKey, Pubkey), KeypairError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let p = path.display().to_string();
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeypairError::Exists { path: p.clone() }
            } else {
                KeypairError::Io {
                    path: p.clone(),
                    source,
                }
            }
        })?;
    f.write_all(keypair_json(&key).as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|source| KeypairError::Io { path: p, source })?;
    let pubkey = Pubkey::of(&key);
    Ok((key, pubkey))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let text = keypair_json(&key);
        assert!(text.starts_with("[7,7,"));
        assert_eq!(parse_keypair(&text).unwrap().to_bytes(), key.to_bytes());
        assert!(parse_keypair("[1,2,3]").unwrap_err().contains("3 numbers"));
        let mut bad: Vec<u8> = serde_json::from_str(&text).unwrap();
        bad[40] ^= 1;
        let bad = serde_json::to_string(&bad).unwrap();
        assert!(parse_keypair(&bad).unwrap_err().contains("does not belong"));
        assert!(parse_keypair("not json").is_err());
    }
}
