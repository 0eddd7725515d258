//! Push-based zstd decompression and the multi-frame marker.
//!
//! [`ZstdStream`] wraps the `zstd` crate's raw streaming decoder: push compressed slices of
//! any size, receive decompressed output in bounded chunks, and learn at the end whether
//! the stream stopped at a frame boundary.
//!
//! Multi-frame archives: the generator writes, before every zstd frame, a skippable frame
//! (magic [`FRAME_MARKER_MAGIC`], 24-byte payload: `b"CUPF"`, version u32 LE = 1, the next
//! frame's compressed size u64 LE, its decompressed size u64 LE). Plain zstd tools skip it;
//! [`FrameSplitter`] uses it to cut the archive into independent frames that can be
//! decompressed in parallel and concatenated in order.

use thiserror::Error;
use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};

/// Agave decompresses with zstd's default window limit (2^27 = 128 MiB).
pub const DEFAULT_WINDOW_LOG_MAX: u32 = 27;
/// Skippable-frame magic of the frame marker.
pub const FRAME_MARKER_MAGIC: u32 = 0x184D_2A5C;
/// Payload size of the frame marker.
pub const FRAME_MARKER_PAYLOAD_BYTES: usize = 24;
/// Whole marker size.
pub const FRAME_MARKER_BYTES: usize = 8 + FRAME_MARKER_PAYLOAD_BYTES;
const MARKER_TAG: &[u8; 4] = b"CUPF";
const MARKER_VERSION: u32 = 1;

#[derive(Debug, Error)]
pub enum ZstdError {
    #[error("zstd: cannot create decoder: {0}")]
    Init(String),
    #[error("zstd: corrupt data after {consumed} compressed bytes: {msg}")]
    Corrupt { consumed: u64, msg: String },
    #[error(
        "incomplete frame: compressed stream ended inside a zstd frame after {consumed} bytes"
    )]
    IncompleteFrame { consumed: u64 },
    #[error("zstd: frame marker at offset {offset}: {reason}")]
    BadMarker { offset: u64, reason: &'static str },
    #[error("zstd: frame at offset {offset} of {size} bytes exceeds the limit of {max}")]
    FrameTooLarge { offset: u64, size: u64, max: u64 },
    #[error("zstd: frame {index} decompressed to {got} bytes, marker says {expected}")]
    FrameSizeMismatch { index: u64, got: u64, expected: u64 },
}

/// Streaming decompressor with bounded output chunks.
pub struct ZstdStream {
    dec: Decoder<'static>,
    out: Vec<u8>,
    in_frame: bool,
    consumed_bytes: u64,
    produced_bytes: u64,
}

impl ZstdStream {
    /// `window_log_max` bounds the decoder's window memory; `chunk_bytes` is the largest
    /// slice handed to the output callback.
    pub fn new(window_log_max: u32, chunk_bytes: usize) -> Result<Self, ZstdError> {
        let mut dec = Decoder::new().map_err(|e| ZstdError::Init(e.to_string()))?;
        dec.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(window_log_max))
            .map_err(|e| ZstdError::Init(e.to_string()))?;
        Ok(ZstdStream {
            dec,
            out: vec![0u8; chunk_bytes.max(4096)],
            in_frame: false,
            consumed_bytes: 0,
            produced_bytes: 0,
        })
    }

    pub fn consumed_bytes(&self) -> u64 {
        self.consumed_bytes
    }
    pub fn produced_bytes(&self) -> u64 {
        self.produced_bytes
    }

    /// Push compressed bytes; every decompressed chunk goes to `emit` in order.
    pub fn push<E: From<ZstdError>>(
        &mut self,
        input: &[u8],
        mut emit: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut inb = InBuffer::around(input);
        loop {
            let before = inb.pos;
            let (written, hint) = {
                let mut outb = OutBuffer::around(&mut self.out[..]);
                let hint = self
                    .dec
                    .run(&mut inb, &mut outb)
                    .map_err(|e| ZstdError::Corrupt {
                        consumed: self.consumed_bytes + before as u64,
                        msg: e.to_string(),
                    })?;
                (outb.pos(), hint)
            };
            let read = inb.pos - before;
            self.consumed_bytes += read as u64;
            if read > 0 || written > 0 {
                self.in_frame = hint != 0;
            }
            if written > 0 {
                self.produced_bytes += written as u64;
                emit(&self.out[..written])?;
            }
            let out_full = written == self.out.len();
            if inb.pos == input.len() && !out_full {
                return Ok(());
            }
            if read == 0 && written == 0 {
                // No progress possible with a non-full output: wait for more input.
                return Ok(());
            }
        }
    }

    /// True when the stream stopped at a frame boundary.
    pub fn at_frame_boundary(&self) -> bool {
        !self.in_frame
    }

    /// Error unless the stream ended at a frame boundary.
    pub fn finish(&self) -> Result<(), ZstdError> {
        if self.in_frame || self.consumed_bytes == 0 {
            return Err(ZstdError::IncompleteFrame {
                consumed: self.consumed_bytes,
            });
        }
        Ok(())
    }
}

/// Frame marker contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameMarker {
    pub compressed_bytes: u64,
    pub decompressed_bytes: u64,
}

impl FrameMarker {
    pub fn encode(&self) -> [u8; FRAME_MARKER_BYTES] {
        let mut b = [0u8; FRAME_MARKER_BYTES];
        b[0..4].copy_from_slice(&FRAME_MARKER_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&(FRAME_MARKER_PAYLOAD_BYTES as u32).to_le_bytes());
        b[8..12].copy_from_slice(MARKER_TAG);
        b[12..16].copy_from_slice(&MARKER_VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.compressed_bytes.to_le_bytes());
        b[24..32].copy_from_slice(&self.decompressed_bytes.to_le_bytes());
        b
    }

    /// Decode a marker; `offset` is only for error messages.
    pub fn decode(b: &[u8; FRAME_MARKER_BYTES], offset: u64) -> Result<Self, ZstdError> {
        let le32 =
            |r: std::ops::Range<usize>| u32::from_le_bytes(b[r].try_into().expect("4 bytes"));
        if le32(0..4) != FRAME_MARKER_MAGIC {
            return Err(ZstdError::BadMarker {
                offset,
                reason: "missing frame marker",
            });
        }
        if le32(4..8) as usize != FRAME_MARKER_PAYLOAD_BYTES
            || &b[8..12] != MARKER_TAG
            || le32(12..16) != MARKER_VERSION
        {
            return Err(ZstdError::BadMarker {
                offset,
                reason: "unknown marker payload",
            });
        }
        Ok(FrameMarker {
            compressed_bytes: u64::from_le_bytes(b[16..24].try_into().expect("8 bytes")),
            decompressed_bytes: u64::from_le_bytes(b[24..32].try_into().expect("8 bytes")),
        })
    }
}

/// True if `prefix` (at least 4 bytes) starts with a frame marker.
pub fn starts_with_marker(prefix: &[u8]) -> bool {
    prefix.len() >= 4 && prefix[..4] == FRAME_MARKER_MAGIC.to_le_bytes()
}

/// Cuts a marked multi-frame archive into whole frames. Memory: one frame at a time, each
/// bounded by `max_frame_bytes`.
pub struct FrameSplitter {
    max_frame_bytes: u64,
    marker: [u8; FRAME_MARKER_BYTES],
    marker_fill: usize,
    current: Option<(FrameMarker, Vec<u8>)>,
    offset_bytes: u64,
    frames_emitted: u64,
}

impl FrameSplitter {
    pub fn new(max_frame_bytes: u64) -> Self {
        FrameSplitter {
            max_frame_bytes,
            marker: [0u8; FRAME_MARKER_BYTES],
            marker_fill: 0,
            current: None,
            offset_bytes: 0,
            frames_emitted: 0,
        }
    }

    pub fn frames_emitted(&self) -> u64 {
        self.frames_emitted
    }

    /// Push archive bytes; each complete frame (with its marker) goes to `on_frame`.
    pub fn push<E: From<ZstdError>>(
        &mut self,
        mut input: &[u8],
        mut on_frame: impl FnMut(FrameMarker, Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        while !input.is_empty() {
            match &mut self.current {
                None => {
                    let take = (FRAME_MARKER_BYTES - self.marker_fill).min(input.len());
                    self.marker[self.marker_fill..self.marker_fill + take]
                        .copy_from_slice(&input[..take]);
                    self.marker_fill += take;
                    input = &input[take..];
                    self.offset_bytes += take as u64;
                    if self.marker_fill == FRAME_MARKER_BYTES {
                        self.marker_fill = 0;
                        let at = self.offset_bytes - FRAME_MARKER_BYTES as u64;
                        let m = FrameMarker::decode(&self.marker, at)?;
                        if m.compressed_bytes > self.max_frame_bytes || m.compressed_bytes == 0 {
                            return Err(ZstdError::FrameTooLarge {
                                offset: at,
                                size: m.compressed_bytes,
                                max: self.max_frame_bytes,
                            }
                            .into());
                        }
                        self.current = Some((m, Vec::with_capacity(m.compressed_bytes as usize)));
                    }
                }
                Some((m, buf)) => {
                    let need = m.compressed_bytes as usize - buf.len();
                    let take = need.min(input.len());
                    buf.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    self.offset_bytes += take as u64;
                    if buf.len() == m.compressed_bytes as usize {
                        let (m, buf) = self.current.take().expect("current frame");
                        self.frames_emitted += 1;
                        on_frame(m, buf)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Error unless the input ended between frames.
    pub fn finish(&self) -> Result<(), ZstdError> {
        if self.current.is_some() || self.marker_fill != 0 || self.frames_emitted == 0 {
            return Err(ZstdError::IncompleteFrame {
                consumed: self.offset_bytes,
            });
        }
        Ok(())
    }
}

/// Largest frame decompressed in one call into a buffer of the announced size; larger
/// ones stream.
const ONE_SHOT_MAX_BYTES: u64 = 1 << 30;

/// Decompress one whole frame (from [`FrameSplitter`]) into `out`, checking the size the
/// marker announced. `out` is cleared first; a buffer from an earlier frame keeps its
/// pages, so they are not faulted in again.
///
/// A frame whose marker announces at most 1 GiB is decompressed in one call straight
/// into `out`, sized to the announced length. Any failure there (corrupt data, a size
/// other than announced) is decoded again by the streaming decoder, which names the
/// exact error: bad input costs a second pass, good input one copy fewer.
pub fn decompress_frame_into(
    index: u64,
    marker: &FrameMarker,
    frame: &[u8],
    window_log_max: u32,
    mut out: Vec<u8>,
) -> Result<Vec<u8>, ZstdError> {
    out.clear();
    let want = marker.decompressed_bytes;
    if want <= ONE_SHOT_MAX_BYTES {
        out.reserve_exact(want as usize);
        let mut dctx = zstd::zstd_safe::DCtx::try_create()
            .ok_or_else(|| ZstdError::Init("cannot allocate a decompression context".into()))?;
        dctx.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(window_log_max))
            .map_err(|c| ZstdError::Init(zstd::zstd_safe::get_error_name(c).into()))?;
        // The buffer holds at least the announced size (more when reused): a frame that
        // decodes to another size fails the check and is measured by the streaming pass.
        if matches!(dctx.decompress(&mut out, frame), Ok(n) if n as u64 == want) {
            return Ok(out);
        }
        out.clear();
    }
    let mut z = ZstdStream::new(window_log_max, 1 << 20)?;
    z.push::<ZstdError>(frame, |chunk| {
        if out.len() as u64 + chunk.len() as u64 > want {
            return Err(ZstdError::FrameSizeMismatch {
                index,
                got: out.len() as u64 + chunk.len() as u64,
                expected: want,
            });
        }
        out.extend_from_slice(chunk);
        Ok(())
    })?;
    z.finish()?;
    if out.len() as u64 != want {
        return Err(ZstdError::FrameSizeMismatch {
            index,
            got: out.len() as u64,
            expected: want,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_any_split_and_truncation() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let c = zstd::bulk::compress(&data, 3).unwrap();
        for step in [1usize, 13, 4096, c.len()] {
            let mut z = ZstdStream::new(DEFAULT_WINDOW_LOG_MAX, 4096).unwrap();
            let mut out = Vec::new();
            for ch in c.chunks(step) {
                z.push::<ZstdError>(ch, |o| {
                    out.extend_from_slice(o);
                    Ok(())
                })
                .unwrap();
            }
            z.finish().unwrap();
            assert_eq!(out, data);
        }
        let mut z = ZstdStream::new(DEFAULT_WINDOW_LOG_MAX, 4096).unwrap();
        z.push::<ZstdError>(&c[..c.len() / 2], |_| Ok(())).unwrap();
        let e = z.finish().unwrap_err();
        assert!(e.to_string().contains("incomplete frame"), "{e}");
    }

    #[test]
    fn a_frame_decodes_in_one_call_into_a_reused_buffer_and_bad_frames_name_their_error() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        // With the content checksum, so that damage is caught whichever byte it hits.
        let mut c = zstd::bulk::Compressor::new(1).unwrap();
        c.include_checksum(true).unwrap();
        let frame = c.compress(&data).unwrap();
        let marker = |n: u64| FrameMarker {
            compressed_bytes: frame.len() as u64,
            decompressed_bytes: n,
        };
        let n = data.len() as u64;
        // A fresh buffer, then a larger one from an earlier frame, keeping its allocation.
        let out = decompress_frame_into(0, &marker(n), &frame, 27, Vec::new()).unwrap();
        assert_eq!(out, data);
        let big = vec![7u8; 1 << 20];
        let ptr = big.as_ptr();
        let out = decompress_frame_into(1, &marker(n), &frame, 27, big).unwrap();
        assert_eq!(out, data);
        assert_eq!(out.as_ptr(), ptr, "the buffer was reused");
        // The marker announces fewer or more bytes than the frame holds: the exact sizes.
        for (announced, got) in [(n - 1, n), (n + 5, n)] {
            match decompress_frame_into(2, &marker(announced), &frame, 27, vec![0; 1 << 20]) {
                Err(ZstdError::FrameSizeMismatch {
                    index: 2,
                    got: g,
                    expected,
                }) => {
                    assert_eq!(expected, announced);
                    // Past the announced size, the count stops at the chunk that passed it.
                    assert!(if announced < n {
                        g > announced && g <= got
                    } else {
                        g == got
                    });
                }
                other => panic!("announced {announced}: {other:?}"),
            }
        }
        // A damaged frame and a cut one: errors, not output.
        let mut bad = frame.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        bad[mid + 1] ^= 0x55;
        let r = decompress_frame_into(3, &marker(n), &bad, 27, Vec::new());
        assert!(
            matches!(r, Err(ZstdError::Corrupt { .. })),
            "{:?}",
            r.as_ref().map(|v| v.len())
        );
        let cut = &frame[..frame.len() - 3];
        assert!(decompress_frame_into(4, &marker(n), cut, 27, Vec::new()).is_err());
    }

    #[test]
    fn splitter_cuts_frames() {
        let mut archive = Vec::new();
        let parts: Vec<Vec<u8>> = (0..3).map(|i| vec![i as u8; 10_000 + i]).collect();
        for p in &parts {
            let c = zstd::bulk::compress(p, 1).unwrap();
            archive.extend_from_slice(
                &FrameMarker {
                    compressed_bytes: c.len() as u64,
                    decompressed_bytes: p.len() as u64,
                }
                .encode(),
            );
            archive.extend_from_slice(&c);
        }
        assert!(starts_with_marker(&archive));
        let mut s = FrameSplitter::new(1 << 20);
        let mut got = Vec::new();
        for ch in archive.chunks(7) {
            s.push::<ZstdError>(ch, |m, f| {
                got.push(decompress_frame_into(
                    got.len() as u64,
                    &m,
                    &f,
                    DEFAULT_WINDOW_LOG_MAX,
                    Vec::new(),
                )?);
                Ok(())
            })
            .unwrap();
        }
        s.finish().unwrap();
        assert_eq!(got, parts);
        // The whole marked archive is also a valid zstd stream for plain tools.
        let plain = zstd::stream::decode_all(&archive[..]).unwrap();
        assert_eq!(plain, parts.concat());
        let mut s = FrameSplitter::new(1 << 20);
        s.push::<ZstdError>(&archive[..archive.len() - 3], |_, _| Ok(()))
            .unwrap();
        assert!(s.finish().is_err());
    }
}
