//! The node's secp256k1 key, generated on first use and kept in the data directory.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use catchup_devp2p::secp256k1::SecretKey;

/// File name of the node key inside a data directory (hex, one line, mode 0600).
pub const NODE_KEY_FILE: &str = "nodekey";

/// Load the node key from `datadir/nodekey`, or generate and store a new one.
pub fn load_or_create(datadir: &Path) -> anyhow::Result<SecretKey> {
    let path: PathBuf = datadir.join(NODE_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let raw =
                hex::decode(text.trim()).with_context(|| format!("{}: not hex", path.display()))?;
            if raw.len() != 32 {
                bail!(
                    "{}: node key has {} bytes, expected 32",
                    path.display(),
                    raw.len()
                );
            }
            SecretKey::from_slice(&raw)
                .with_context(|| format!("{}: not a valid secp256k1 key", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(datadir)
                .with_context(|| format!("creating data directory {}", datadir.display()))?;
            let key = SecretKey::new(&mut rand::thread_rng());
            let tmp = datadir.join(format!("{NODE_KEY_FILE}.tmp"));
            {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
                    .with_context(|| format!("writing {}", tmp.display()))?;
                writeln!(f, "{}", hex::encode(key.secret_bytes()))?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a, b);
        std::fs::write(dir.path().join(NODE_KEY_FILE), "zz").unwrap();
        assert!(load_or_create(dir.path()).is_err());
    }
}
