//! Which snapshot to trust: the newest full snapshot (and an incremental on it) that at
//! least `min_agree` known validators advertise in gossip, or the one the operator names
//! with `--expected-snapshot-hash`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::node::SnapshotAdvert;

/// A snapshot identified by slot and hash (base58), and who vouches for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrustedSnapshot {
    pub slot: u64,
    pub hash: String,
    /// Known validators advertising exactly this (slot, hash); empty for
    /// `--expected-snapshot-hash`.
    pub trusted_by: Vec<String>,
}

/// The choice made from known validators' adverts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrustChoice {
    pub full: TrustedSnapshot,
    /// The newest incremental on `full` that enough of its vouchers advertise.
    pub incremental: Option<TrustedSnapshot>,
    /// Nodes that advertise snapshots but are not known validators (not trusted).
    pub ignored: Vec<String>,
}

/// Parse `SLOT:HASH` (the hash in base58, 32 bytes).
pub fn parse_expected(text: &str) -> Result<(u64, String), String> {
    let (slot, hash) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not SLOT:HASH"))?;
    let slot: u64 = slot
        .parse()
        .map_err(|_| format!("{slot:?} is not a slot number"))?;
    if catchup_solana::base58_32(hash).is_none() {
        return Err(format!("{hash:?} is not a base58 hash of 32 bytes"));
    }
    Ok((slot, hash.to_string()))
}

fn pick(
    votes: BTreeMap<(u64, String), BTreeSet<String>>,
    min_agree: usize,
) -> Result<Option<TrustedSnapshot>, String> {
    let mut slots: Vec<u64> = votes.keys().map(|(s, _)| *s).collect();
    slots.sort_unstable_by(|a, b| b.cmp(a));
    slots.dedup();
    for slot in slots {
        let mut at: Vec<(&String, &BTreeSet<String>)> = votes
            .iter()
            .filter(|((s, _), v)| *s == slot && v.len() >= min_agree)
            .map(|((_, h), v)| (h, v))
            .collect();
        at.sort_by_key(|x| std::cmp::Reverse(x.1.len()));
        match at.as_slice() {
            [] => continue,
            [(h, v)] => {
                return Ok(Some(TrustedSnapshot {
                    slot,
                    hash: (*h).clone(),
                    trusted_by: v.iter().cloned().collect(),
                }))
            }
            [(h, v), (h2, v2), ..] => {
                if v.len() > v2.len() {
                    return Ok(Some(TrustedSnapshot {
                        slot,
                        hash: (*h).clone(),
                        trusted_by: v.iter().cloned().collect(),
                    }));
                }
                return Err(format!(
                    "known validators disagree on slot {slot}: {h} by {}, {h2} by {}; raise --min-agree or check --known-validator",
                    v.iter().cloned().collect::<Vec<_>>().join(","),
                    v2.iter().cloned().collect::<Vec<_>>().join(",")
                ));
            }
        }
    }
    Ok(None)
}

/// The newest full snapshot advertised by at least `min_agree` of `known`, and the newest
/// incremental on it that at least `min_agree` of those advertise.
pub fn choose(
    adverts: &BTreeMap<String, SnapshotAdvert>,
    known: &[String],
    min_agree: usize,
) -> Result<TrustChoice, String> {
    let min_agree = min_agree.max(1);
    let known: BTreeSet<&String> = known.iter().collect();
    let mut votes: BTreeMap<(u64, String), BTreeSet<String>> = BTreeMap::new();
    let mut ignored = Vec::new();
    for (origin, advert) in adverts {
        if !known.contains(origin) {
            ignored.push(origin.clone());
            continue;
        }
        votes
            .entry((advert.full_slot, advert.full_hash.clone()))
            .or_default()
            .insert(origin.clone());
    }
    let Some(full) = pick(votes, min_agree)? else {
        let seen: Vec<String> = adverts
            .iter()
            .filter(|(o, _)| known.contains(o))
            .map(|(o, a)| format!("{o}: {} {}", a.full_slot, a.full_hash))
            .collect();
        return Err(format!(
            "no full snapshot is advertised by {min_agree} known validator(s) (heard from {} of {}{}); check --known-validator and --min-agree",
            seen.len(),
            known.len(),
            if seen.is_empty() {
                String::new()
            } else {
                format!(": {}", seen.join("; "))
            }
        ));
    };
    let mut inc_votes: BTreeMap<(u64, String), BTreeSet<String>> = BTreeMap::new();
    for origin in &full.trusted_by {
        if let Some(advert) = adverts.get(origin) {
            for (slot, hash) in &advert.incremental {
                if *slot > full.slot {
                    inc_votes
                        .entry((*slot, hash.clone()))
                        .or_default()
                        .insert(origin.clone());
                }
            }
        }
    }
    // Disagreement on an incremental only costs the incremental.
    let incremental = pick(inc_votes, min_agree).unwrap_or(None);
    Ok(TrustChoice {
        full,
        incremental,
        ignored,
    })
}

/// The newest incremental on the full snapshot (`full_slot`, `full_hash`) that at least
/// `min_agree` known validators still advertise with that very full: after a long full
/// download, the freshest state reachable without fetching a newer full.
pub fn choose_incremental_on(
    adverts: &BTreeMap<String, SnapshotAdvert>,
    known: &[String],
    min_agree: usize,
    full_slot: u64,
    full_hash: &str,
) -> Option<TrustedSnapshot> {
    let mut votes: BTreeMap<(u64, String), BTreeSet<String>> = BTreeMap::new();
    for k in known {
        let Some(a) = adverts.get(k) else { continue };
        if a.full_slot != full_slot || a.full_hash != full_hash {
            continue;
        }
        for (slot, hash) in &a.incremental {
            if *slot > full_slot {
                votes
                    .entry((*slot, hash.clone()))
                    .or_default()
                    .insert(k.clone());
            }
        }
    }
    pick(votes, min_agree.max(1)).unwrap_or(None)
}

/// The newest full slot at least `min_agree` known validators agree on, if any (to tell
/// whether the cluster moved on past a full snapshot).
pub fn newest_agreed_full(
    adverts: &BTreeMap<String, SnapshotAdvert>,
    known: &[String],
    min_agree: usize,
) -> Option<u64> {
    choose(adverts, known, min_agree).ok().map(|c| c.full.slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advert(slot: u64, hash: &str, incs: &[(u64, &str)]) -> SnapshotAdvert {
        SnapshotAdvert {
            full_slot: slot,
            full_hash: hash.into(),
            incremental: incs.iter().map(|(s, h)| (*s, h.to_string())).collect(),
            wallclock_ms: 1,
        }
    }

    #[test]
    fn newest_agreed_full_and_incremental() {
        let mut a = BTreeMap::new();
        a.insert(
            "K1".to_string(),
            advert(100, "H100", &[(110, "I110"), (120, "I120")]),
        );
        a.insert("K2".to_string(), advert(100, "H100", &[(110, "I110")]));
        a.insert("K3".to_string(), advert(90, "H90", &[]));
        a.insert("F".to_string(), advert(500, "FORGED", &[]));
        let known = vec!["K1".to_string(), "K2".to_string(), "K3".to_string()];
        let c = choose(&a, &known, 2).unwrap();
        assert_eq!((c.full.slot, c.full.hash.as_str()), (100, "H100"));
        assert_eq!(c.full.trusted_by, ["K1", "K2"]);
        let inc = c.incremental.unwrap();
        assert_eq!((inc.slot, inc.hash.as_str()), (110, "I110"));
        assert_eq!(c.ignored, ["F"]);
        // One voice is enough with --min-agree 1: the newest incremental of K1.
        let c = choose(&a, &known, 1).unwrap();
        assert_eq!(c.full.slot, 100);
        assert_eq!(c.incremental.unwrap().slot, 120);
        // Three voices: nothing.
        let e = choose(&a, &known, 3).unwrap_err();
        assert!(e.contains("heard from 3 of 3"), "{e}");
    }

    #[test]
    fn a_newer_incremental_on_our_full_even_when_the_cluster_moved_on() {
        let mut a = BTreeMap::new();
        // K1 moved on to a new full; K2 and K3 still build incrementals on ours.
        a.insert("K1".to_string(), advert(200, "H200", &[(210, "I210")]));
        a.insert(
            "K2".to_string(),
            advert(100, "H100", &[(150, "I150"), (190, "I190")]),
        );
        a.insert("K3".to_string(), advert(100, "H100", &[(190, "I190")]));
        a.insert("X".to_string(), advert(100, "H100", &[(199, "FORGED")]));
        let known: Vec<String> = ["K1", "K2", "K3"].iter().map(|k| k.to_string()).collect();
        let inc = choose_incremental_on(&a, &known, 2, 100, "H100").unwrap();
        assert_eq!((inc.slot, inc.hash.as_str()), (190, "I190"));
        assert_eq!(inc.trusted_by, ["K2", "K3"]);
        let inc = choose_incremental_on(&a, &known, 1, 100, "H100").unwrap();
        assert_eq!(inc.slot, 190);
        // Another hash for our full slot is not our full.
        assert_eq!(choose_incremental_on(&a, &known, 1, 100, "OTHER"), None);
        assert_eq!(newest_agreed_full(&a, &known, 1), Some(200));
        assert_eq!(newest_agreed_full(&a, &known, 2), Some(100));
    }

    #[test]
    fn a_tie_at_the_newest_slot_is_an_error_naming_both() {
        let mut a = BTreeMap::new();
        a.insert("K1".to_string(), advert(100, "A", &[]));
        a.insert("K2".to_string(), advert(100, "B", &[]));
        let known = vec!["K1".to_string(), "K2".to_string()];
        let e = choose(&a, &known, 1).unwrap_err();
        assert!(e.contains("A by K1") && e.contains("B by K2"), "{e}");
    }

    #[test]
    fn expected_hash_parsing() {
        let h = catchup_solana::base58(&[5u8; 32]);
        assert_eq!(parse_expected(&format!("7:{h}")).unwrap(), (7, h.clone()));
        assert!(parse_expected("7").is_err());
        assert!(parse_expected("x:abc").is_err());
        assert!(parse_expected("7:abc").is_err());
    }
}
