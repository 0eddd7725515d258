//! Where downloaded archive bytes go: the contiguous prefix of finished chunks is pushed,
//! in order, into an [`ArchiveSink`] running on its own thread (download ─┬→ decompress
//! ─┬→ load). The snapshot pipeline implements it; [`StreamCheckSink`] is a light sink
//! that checks what can be checked without loading accounts: complete zstd frames and a
//! well-formed tar stream whose entries follow the snapshot unpack rules.

use std::sync::{Arc, Mutex};

use catchup_solana::{classify, EntryHeader, TarError, TarParser, TarSink, ZstdError, ZstdStream};

/// A failure found in the archive stream.
#[derive(Debug, Clone, thiserror::Error)]
#[error("archive verification failed near byte {offset_bytes}: {message}")]
pub struct SinkError {
    /// Offset in the archive (compressed bytes) at or before which the problem lies;
    /// `u64::MAX` when only the end result was wrong (e.g. a hash mismatch).
    pub offset_bytes: u64,
    pub message: String,
}

/// A consumer of archive bytes in order.
pub trait ArchiveSink: Send {
    /// The next bytes of the archive.
    fn feed(&mut self, bytes: &[u8]) -> Result<(), SinkError>;
    /// The archive is complete: verify and return a JSON summary of what was verified.
    fn finish(self: Box<Self>) -> Result<serde_json::Value, SinkError>;
}

/// Makes a fresh sink (a download whose verification failed is fed again from byte 0).
pub type SinkFactory = dyn Fn() -> Result<Box<dyn ArchiveSink>, SinkError> + Send + Sync;

/// zstd frames + tar structure + snapshot entry rules.
pub struct StreamCheckSink {
    zstd: ZstdStream,
    tar: TarParser,
    entries: Entries,
    fed_bytes: u64,
    decompressed_bytes: u64,
}

#[derive(Default)]
struct Entries {
    count: u64,
    storages: u64,
    manifest_seen: bool,
}

#[derive(Debug, thiserror::Error)]
enum CheckError {
    #[error(transparent)]
    Tar(#[from] TarError),
    #[error(transparent)]
    Zstd(#[from] ZstdError),
    #[error("{0}")]
    Rule(String),
}

impl TarSink for Entries {
    type Error = CheckError;
    fn begin_entry(&mut self, header: &EntryHeader) -> Result<(), CheckError> {
        self.count += 1;
        match classify(header).map_err(|e| CheckError::Rule(e.to_string()))? {
            catchup_solana::SnapshotEntry::AccountsFile { .. } => self.storages += 1,
            catchup_solana::SnapshotEntry::BankSnapshot { .. } => self.manifest_seen = true,
            _ => {}
        }
        Ok(())
    }
    fn entry_data(&mut self, _data: &[u8]) -> Result<(), CheckError> {
        Ok(())
    }
    fn end_entry(&mut self) -> Result<(), CheckError> {
        Ok(())
    }
}

/// Largest zstd window accepted (Agave archives use up to 2^27 bytes).
const WINDOW_LOG_MAX: u32 = 31;

impl StreamCheckSink {
    pub fn new() -> Result<StreamCheckSink, SinkError> {
        Ok(StreamCheckSink {
            zstd: ZstdStream::new(WINDOW_LOG_MAX, 1 << 20).map_err(|e| SinkError {
                offset_bytes: 0,
                message: e.to_string(),
            })?,
            tar: TarParser::new(),
            entries: Entries::default(),
            fed_bytes: 0,
            decompressed_bytes: 0,
        })
    }
}

impl ArchiveSink for StreamCheckSink {
    fn feed(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        let (tar, entries, produced) = (
            &mut self.tar,
            &mut self.entries,
            &mut self.decompressed_bytes,
        );
        let r = self.zstd.push::<CheckError>(bytes, |out| {
            *produced += out.len() as u64;
            tar.push(out, entries)
        });
        let at = self.fed_bytes;
        self.fed_bytes += bytes.len() as u64;
        r.map_err(|e| {
            let offset_bytes = match &e {
                CheckError::Zstd(ZstdError::Corrupt { consumed, .. }) => *consumed,
                _ => at + bytes.len() as u64,
            };
            SinkError {
                offset_bytes,
                message: e.to_string(),
            }
        })
    }

    fn finish(self: Box<Self>) -> Result<serde_json::Value, SinkError> {
        let end = self.fed_bytes;
        self.zstd.finish().map_err(|e| SinkError {
            offset_bytes: end,
            message: e.to_string(),
        })?;
        self.tar.finish().map_err(|e| SinkError {
            offset_bytes: end,
            message: e.to_string(),
        })?;
        Ok(serde_json::json!({
            "check": "zstd frames and tar structure",
            "compressed_bytes": self.fed_bytes,
            "decompressed_bytes": self.decompressed_bytes,
            "tar_entries": self.entries.count,
            "storages": self.entries.storages,
            "manifest_seen": self.entries.manifest_seen,
        }))
    }
}

/// The words that start a sink error about the accounts hash not matching the archive's
/// name (the download driver names the sources that served such an archive).
pub const HASH_MISMATCH: &str = "snapshot hash mismatch";

/// The full snapshot pipeline as a sink: decompress, unpack into `datadir`, index, and
/// verify the accounts LtHash and capitalization against the manifest; then, when it knows
/// the archive's name, the accounts hash against the hash in the name.
pub struct PipelineSink {
    pipeline: crate::solana::snapshot::Pipeline,
    archive_name: Option<Arc<Mutex<Option<String>>>>,
}

impl PipelineSink {
    pub fn new(
        datadir: &std::path::Path,
        cfg: crate::solana::snapshot::PipelineConfig,
    ) -> Result<PipelineSink, SinkError> {
        let pipeline =
            crate::solana::snapshot::Pipeline::new(datadir, cfg).map_err(|e| SinkError {
                offset_bytes: 0,
                message: format!("cannot start the snapshot pipeline: {e}"),
            })?;
        Ok(PipelineSink {
            pipeline,
            archive_name: None,
        })
    }

    /// A factory making a fresh pipeline into `datadir` for every (re)start.
    pub fn factory(
        datadir: std::path::PathBuf,
        cfg: crate::solana::snapshot::PipelineConfig,
    ) -> std::sync::Arc<SinkFactory> {
        std::sync::Arc::new(move || {
            Ok(Box::new(PipelineSink::new(&datadir, cfg.clone())?) as Box<dyn ArchiveSink>)
        })
    }

    /// [`PipelineSink::factory`], each sink also checking the hash in the archive name
    /// found in `archive_name` at the end (see `SyncConfig::archive_name`).
    pub fn factory_named(
        datadir: std::path::PathBuf,
        cfg: crate::solana::snapshot::PipelineConfig,
        archive_name: Arc<Mutex<Option<String>>>,
    ) -> std::sync::Arc<SinkFactory> {
        std::sync::Arc::new(move || {
            let mut sink = PipelineSink::new(&datadir, cfg.clone())?;
            sink.archive_name = Some(archive_name.clone());
            Ok(Box::new(sink) as Box<dyn ArchiveSink>)
        })
    }
}

impl PipelineSink {
    /// A factory for an incremental archive: each sink first loads and verifies the full
    /// archive at `full_archive` (against its name too), then applies the incremental on
    /// top of it and checks the incremental against its own name at the end.
    pub fn factory_incremental(
        datadir: std::path::PathBuf,
        cfg: crate::solana::snapshot::PipelineConfig,
        full_archive: std::path::PathBuf,
        archive_name: Arc<Mutex<Option<String>>>,
    ) -> std::sync::Arc<SinkFactory> {
        std::sync::Arc::new(move || {
            let fail = |message: String| SinkError {
                offset_bytes: 0,
                message,
            };
            let full_name = full_archive
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut p = crate::solana::snapshot::Pipeline::new(&datadir, cfg.clone())
                .map_err(|e| fail(format!("cannot start the snapshot pipeline: {e}")))?;
            crate::solana::snapshot::feed_file(&mut p, &full_archive)
                .map_err(|e| fail(format!("the full snapshot {full_name}: {e}")))?;
            let full = p
                .finish()
                .map_err(|e| fail(format!("the full snapshot {full_name}: {e}")))?;
            if let Some(c) = crate::solana::snapshot::name_hash::check_name_hash(&full, &full_name)
                .map_err(|e| fail(e.to_string()))?
                .filter(|c| !c.ok)
            {
                return Err(fail(format!("{HASH_MISMATCH}: {}", c.mismatch_line())));
            }
            let pipeline = crate::solana::snapshot::Pipeline::incremental(full, cfg.clone())
                .map_err(|e| fail(format!("cannot start the incremental pipeline: {e}")))?;
            Ok(Box::new(PipelineSink {
                pipeline,
                archive_name: Some(archive_name.clone()),
            }) as Box<dyn ArchiveSink>)
        })
    }
}

impl ArchiveSink for PipelineSink {
    fn feed(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        let before = self.pipeline.progress().compressed_bytes;
        self.pipeline
            .feed(bytes)
            .map(|p| crate::node::stages::record_snapshot_pipeline(&p))
            .map_err(|e| SinkError {
                offset_bytes: before + bytes.len() as u64,
                message: e.to_string(),
            })
    }

    fn finish(self: Box<Self>) -> Result<serde_json::Value, SinkError> {
        let v = self.pipeline.finish().map_err(|e| SinkError {
            offset_bytes: u64::MAX,
            message: e.to_string(),
        })?;
        let name = self
            .archive_name
            .as_ref()
            .and_then(|n| n.lock().unwrap_or_else(|p| p.into_inner()).clone());
        let check =
            match &name {
                None => None,
                Some(name) => crate::solana::snapshot::name_hash::check_name_hash(&v, name)
                    .map_err(|e| SinkError {
                        offset_bytes: u64::MAX,
                        message: e.to_string(),
                    })?,
            };
        if let Some(c) = check.as_ref().filter(|c| !c.ok) {
            // The whole archive is suspect: the audit cross-checks every chunk.
            return Err(SinkError {
                offset_bytes: u64::MAX,
                message: format!("{HASH_MISMATCH}: {}", c.mismatch_line()),
            });
        }
        let mut j = serde_json::to_value(&v.report).unwrap_or(serde_json::Value::Null);
        if let Some(o) = j.as_object_mut() {
            o.insert(
                "check".into(),
                "snapshot pipeline: LtHash and capitalization".into(),
            );
            o.insert("dir".into(), v.dir.display().to_string().into());
            o.insert(
                "name_hash_ok".into(),
                serde_json::json!(check.as_ref().map(|c| c.ok)),
            );
            if let Some(c) = &check {
                o.insert("name_hash".into(), c.name_hash.clone().into());
                o.insert("name_hash_kind".into(), c.kind.clone().into());
            }
        }
        Ok(j)
    }
}
