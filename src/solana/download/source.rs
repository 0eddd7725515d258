//! Snapshot archive names and source identity.
//!
//! Agave names archives `snapshot-<slot>-<hash>.tar.<ext>` and
//! `incremental-snapshot-<base>-<slot>-<hash>.tar.<ext>`; its RPC answers
//! `/snapshot.tar.bz2` and `/incremental-snapshot.tar.bz2` with a redirect to the real
//! name. Archives of one slot from different nodes need not be byte-identical, so sources
//! are grouped by (archive name, size, ETag / Last-Modified where given) and only the
//! sources of one group serve ranges of one file.

use catchup_http::Url;

/// Redirect paths a Solana RPC node answers.
pub const FULL_REDIRECT_PATH: &str = "/snapshot.tar.bz2";
pub const INCREMENTAL_REDIRECT_PATH: &str = "/incremental-snapshot.tar.bz2";

/// What an archive name says.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ArchiveName {
    /// `Some(base)` for an incremental snapshot.
    pub base_slot: Option<u64>,
    pub slot: u64,
    /// The base58 snapshot hash.
    pub hash: String,
    /// Compression extension after `.tar` (`zst`, `bz2`, `gz`, `lz4`, or empty).
    pub compression: String,
}

const MAX_NAME_BYTES: usize = 255;

/// Parse an Agave archive file name; `None` if it is not one.
pub fn parse_archive_name(name: &str) -> Option<ArchiveName> {
    if name.len() > MAX_NAME_BYTES || name.contains('/') {
        return None;
    }
    let (stem, compression) = match name.rsplit_once(".tar") {
        Some((stem, "")) => (stem, String::new()),
        Some((stem, rest)) => {
            let ext = rest.strip_prefix('.')?;
            if !matches!(ext, "zst" | "bz2" | "gz" | "lz4") {
                return None;
            }
            (stem, ext.to_string())
        }
        None => return None,
    };
    let (base_slot, rest) = if let Some(r) = stem.strip_prefix("incremental-snapshot-") {
        let (b, r) = r.split_once('-')?;
        (Some(b.parse::<u64>().ok()?), r)
    } else {
        (None, stem.strip_prefix("snapshot-")?)
    };
    let (slot, hash) = rest.split_once('-')?;
    let slot = slot.parse::<u64>().ok()?;
    if hash.is_empty() || hash.len() > 64 || !hash.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    if base_slot.is_some_and(|b| b >= slot) {
        return None;
    }
    Some(ArchiveName {
        base_slot,
        slot,
        hash: hash.to_string(),
        compression,
    })
}

/// The identity of the file a source serves: sources with equal identity serve the same bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceIdentity {
    pub archive_name: String,
    pub size_bytes: u64,
    /// ETag if the server sent one (weak validators are kept as sent).
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl SourceIdentity {
    /// Whether two sources may serve ranges of one file. ETag / Last-Modified only split
    /// groups when both sides have them (servers differ in which they send).
    pub fn compatible(&self, other: &SourceIdentity) -> bool {
        let opt_eq = |a: &Option<String>, b: &Option<String>| match (a, b) {
            (Some(x), Some(y)) => x == y,
            _ => true,
        };
        self.archive_name == other.archive_name
            && self.size_bytes == other.size_bytes
            && opt_eq(&self.etag, &other.etag)
            && opt_eq(&self.last_modified, &other.last_modified)
    }
}

/// The result of probing one source with HEAD (after redirects).
#[derive(Clone, Debug)]
pub struct ProbedSource {
    /// The URL the user or discovery gave.
    pub given: Url,
    /// The archive URL after redirects.
    pub archive: Url,
    pub identity: SourceIdentity,
    pub name: Option<ArchiveName>,
    pub ranges: bool,
    pub latency_ms: u64,
}

/// A set of sources serving one identical file.
#[derive(Clone, Debug)]
pub struct SourceGroup {
    pub identity: SourceIdentity,
    pub name: Option<ArchiveName>,
    pub members: Vec<ProbedSource>,
}

/// Group probed sources by identity (see [`SourceIdentity::compatible`]), largest groups of
/// the newest slot first. A group is keyed by its first member; a later source joins the
/// first group it is compatible with.
pub fn group_sources(probes: Vec<ProbedSource>) -> Vec<SourceGroup> {
    let mut groups: Vec<SourceGroup> = Vec::new();
    for p in probes {
        match groups
            .iter_mut()
            .find(|g| g.identity.compatible(&p.identity))
        {
            Some(g) => {
                if g.identity.etag.is_none() {
                    g.identity.etag = p.identity.etag.clone();
                }
                if g.identity.last_modified.is_none() {
                    g.identity.last_modified = p.identity.last_modified.clone();
                }
                g.members.push(p)
            }
            None => groups.push(SourceGroup {
                identity: p.identity.clone(),
                name: p.name.clone(),
                members: vec![p],
            }),
        }
    }
    groups.sort_by(|a, b| {
        let slot = |g: &SourceGroup| g.name.as_ref().map(|n| n.slot).unwrap_or(0);
        let ranged = |g: &SourceGroup| g.members.iter().filter(|m| m.ranges).count();
        slot(b)
            .cmp(&slot(a))
            .then(b.members.len().cmp(&a.members.len()))
            .then(ranged(b).cmp(&ranged(a)))
    });
    groups
}

/// Keep the newest slot that at least `min_agree` sources serve (any group of that slot),
/// dropping sources more than `max_slots_behind` behind the newest slot seen and sources
/// slower to answer than `max_latency_ms`. Returns the chosen group.
pub fn choose_group(
    probes: Vec<ProbedSource>,
    min_agree: usize,
    max_slots_behind: u64,
    max_latency_ms: u64,
) -> Option<SourceGroup> {
    let newest = probes
        .iter()
        .filter_map(|p| p.name.as_ref().map(|n| n.slot))
        .max();
    let probes: Vec<ProbedSource> = probes
        .into_iter()
        .filter(|p| p.latency_ms <= max_latency_ms)
        .filter(|p| match (newest, &p.name) {
            (Some(top), Some(n)) => top - n.slot <= max_slots_behind,
            _ => true,
        })
        .collect();
    let groups = group_sources(probes);
    // Slots in descending order; the first one with enough agreeing sources wins.
    let mut slots: Vec<u64> = groups
        .iter()
        .filter_map(|g| g.name.as_ref().map(|n| n.slot))
        .collect();
    slots.dedup();
    for slot in slots {
        let agree: usize = groups
            .iter()
            .filter(|g| g.name.as_ref().map(|n| n.slot) == Some(slot))
            .map(|g| g.members.len())
            .sum();
        if agree >= min_agree {
            return groups
                .into_iter()
                .find(|g| g.name.as_ref().map(|n| n.slot) == Some(slot));
        }
    }
    // No slot with enough agreement: the largest group, if any source at all.
    groups.into_iter().next().filter(|_| min_agree <= 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn probe(
        url: &str,
        name: &str,
        size: u64,
        etag: Option<&str>,
        latency_ms: u64,
    ) -> ProbedSource {
        let given = Url::parse(url).unwrap();
        ProbedSource {
            archive: given.join(&format!("/{name}")).unwrap(),
            given,
            identity: SourceIdentity {
                archive_name: name.into(),
                size_bytes: size,
                etag: etag.map(Into::into),
                last_modified: None,
            },
            name: parse_archive_name(name),
            ranges: true,
            latency_ms,
        }
    }

    #[test]
    fn archive_names() {
        let n = parse_archive_name("snapshot-100-5pgMabc.tar.zst").unwrap();
        assert_eq!(
            (n.base_slot, n.slot, n.hash.as_str(), n.compression.as_str()),
            (None, 100, "5pgMabc", "zst")
        );
        let n = parse_archive_name("incremental-snapshot-1-4-43FTxyz.tar.zst").unwrap();
        assert_eq!((n.base_slot, n.slot), (Some(1), 4));
        assert!(parse_archive_name("incremental-snapshot-4-4-h.tar.zst").is_none());
        assert!(parse_archive_name("snapshot-x-h.tar.zst").is_none());
        assert!(parse_archive_name("snapshot-1-h.tar.xz").is_none());
        assert!(parse_archive_name("snapshot-1-h.zip").is_none());
        assert!(parse_archive_name("snapshot-1-h/x.tar.zst").is_none());
        assert!(parse_archive_name("snapshot-1-.tar.zst").is_none());
        assert_eq!(
            parse_archive_name("snapshot-1-h.tar").unwrap().compression,
            ""
        );
    }

    #[test]
    fn grouping_splits_different_archives_of_one_slot() {
        let ps = vec![
            probe("http://a/", "snapshot-100-H.tar.zst", 1000, Some("e1"), 5),
            probe("http://b/", "snapshot-100-H.tar.zst", 1000, Some("e1"), 5),
            probe("http://c/", "snapshot-100-H.tar.zst", 1001, Some("e1"), 5),
            probe("http://d/", "snapshot-100-H.tar.zst", 1000, None, 5),
            probe("http://e/", "snapshot-100-H.tar.zst", 1000, Some("e2"), 5),
        ];
        let g = group_sources(ps);
        assert_eq!(g.len(), 3);
        assert_eq!(g[0].members.len(), 3, "a, b and d (no etag) share a group");
        assert_eq!(g[0].identity.size_bytes, 1000);
    }

    #[test]
    fn choose_newest_slot_with_agreement_and_filters() {
        let ps = vec![
            probe("http://a/", "snapshot-200-H2.tar.zst", 10, None, 5),
            probe("http://b/", "snapshot-100-H.tar.zst", 10, None, 5),
            probe("http://c/", "snapshot-100-H.tar.zst", 10, None, 5),
            probe("http://d/", "snapshot-200-H2.tar.zst", 10, None, 5000),
        ];
        // Slot 200 has one fast source only (d is too slow): slot 100 wins with two.
        let g = choose_group(ps.clone(), 2, 1000, 100).unwrap();
        assert_eq!(g.name.unwrap().slot, 100);
        // With slow sources allowed slot 200 has two.
        let g = choose_group(ps.clone(), 2, 1000, 10_000).unwrap();
        assert_eq!(g.name.unwrap().slot, 200);
        // Slot 100 is too far behind: nothing has two fast agreeing sources.
        assert!(choose_group(ps.clone(), 2, 50, 100).is_none());
        assert_eq!(
            choose_group(ps, 1, 50, 100).unwrap().name.unwrap().slot,
            200
        );
    }

    proptest! {
        #[test]
        fn archive_name_parser_never_panics(s in "\\PC{0,80}") {
            let _ = parse_archive_name(&s);
        }

        #[test]
        fn archive_name_roundtrip(base in 0u64..1000, d in 1u64..1000, hash in "[1-9A-HJ-NP-Za-km-z]{1,44}") {
            let full = format!("snapshot-{base}-{hash}.tar.zst");
            prop_assert_eq!(parse_archive_name(&full).unwrap().slot, base);
            let inc = format!("incremental-snapshot-{base}-{}-{hash}.tar.zst", base + d);
            let n = parse_archive_name(&inc).unwrap();
            prop_assert_eq!((n.base_slot, n.slot), (Some(base), base + d));
        }
    }
}
