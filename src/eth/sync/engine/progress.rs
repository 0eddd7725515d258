//! Progress reporting: the per-shard counters ([`Progress`]), the sync's `get_status`
//! ([`Status`]) and the progress line printed every 10 s.

use serde::{Deserialize, Serialize};

use super::{Engine, StatePhase};

/// Counters of one shard (summed over shards for the whole sync).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Progress {
    pub headers_downloaded: u64,
    pub headers_total: u64,
    /// The headers of the batches this shard owns (summed over shards: `headers_total`).
    #[serde(default)]
    pub headers_share: u64,
    pub bodies_downloaded: u64,
    pub receipts_downloaded: u64,
    pub state_nodes_downloaded: u64,
    pub state_nodes_queued: u64,
    pub state_nodes_visited: u64,
    pub healed_nodes: u64,
    pub codes_downloaded: u64,
    pub accounts_downloaded: u64,
    pub slots_downloaded: u64,
    /// Verified slots of incomplete storage tries kept in the store before a restart
    /// (not fetched again).
    pub slots_resumed: u64,
    pub requests_sent: u64,
    pub lies_detected: u64,
    pub timeouts: u64,
    /// Header batches asked of a second peer while the held batches were at their cap
    /// and the first answer was late.
    #[serde(default)]
    pub header_hedges: u64,
    /// Verified items received that the store already held (a resume should keep this 0).
    pub refetched_items: u64,
    /// Newer heads the peers announced (eth/69 Status and BlockRangeUpdate, via the
    /// driver's `Event::PeerHead`).
    #[serde(default)]
    pub peer_heads: u64,
    /// Most accounts with storage tries open at once (bounded by the config's
    /// `storage_backlog_accounts` plus one response's worth).
    #[serde(default)]
    pub storage_backlog_peak: u64,
    /// Subtries of the account trie the snap rebuild referenced by the hash their
    /// verified range gave (kept in the store across restarts) instead of hashing their
    /// leaves again.
    #[serde(default)]
    pub rebuild_subtries_reused: u64,
    /// Accounts stored before a restart read again to follow up their storage tries and
    /// codes (those below a range's journaled follow-up mark are not).
    #[serde(default)]
    pub accounts_reread: u64,
    pub elapsed_ms: u64,
}

impl Progress {
    pub fn add(&mut self, o: &Progress) {
        self.headers_downloaded += o.headers_downloaded;
        self.headers_total = self.headers_total.max(o.headers_total);
        self.headers_share += o.headers_share;
        self.bodies_downloaded += o.bodies_downloaded;
        self.receipts_downloaded += o.receipts_downloaded;
        self.state_nodes_downloaded += o.state_nodes_downloaded;
        self.state_nodes_queued += o.state_nodes_queued;
        self.state_nodes_visited += o.state_nodes_visited;
        self.healed_nodes += o.healed_nodes;
        self.codes_downloaded += o.codes_downloaded;
        self.accounts_downloaded += o.accounts_downloaded;
        self.slots_downloaded += o.slots_downloaded;
        self.slots_resumed += o.slots_resumed;
        self.requests_sent += o.requests_sent;
        self.lies_detected += o.lies_detected;
        self.timeouts += o.timeouts;
        self.header_hedges += o.header_hedges;
        self.refetched_items += o.refetched_items;
        self.peer_heads += o.peer_heads;
        self.storage_backlog_peak = self.storage_backlog_peak.max(o.storage_backlog_peak);
        self.rebuild_subtries_reused += o.rebuild_subtries_reused;
        self.accounts_reread += o.accounts_reread;
        self.elapsed_ms = self.elapsed_ms.max(o.elapsed_ms);
    }
}

/// The progress line printed every 10 s: counts, percentages, queue sizes.
pub fn progress_line(status: &Status, p: &Progress) -> String {
    let pct = |a: u64, b: u64| {
        if b == 0 {
            0.0
        } else {
            a as f64 * 100.0 / b as f64
        }
    };
    // A shard counts the headers of its own batches: show them against its share, so that
    // every shard reaches 100% (the summed line shows the whole range).
    let headers_of = if p.headers_share > 0 && p.headers_share < p.headers_total {
        p.headers_share
    } else {
        p.headers_total
    };
    let share_note = if headers_of < p.headers_total {
        format!(" of this shard's share; {} in all", p.headers_total)
    } else if p.headers_share == 0 && p.headers_downloaded == 0 && p.headers_total > 0 {
        // A shard that owns no header batch (more shards than batches).
        "; none of them is this shard's share".to_string()
    } else {
        String::new()
    };
    format!(
        "ethsync {} pivot {} highest {}: headers {}/{} ({:.1}%{}), bodies {}, receipts {}, state nodes {} downloaded {} queued, \
         accounts {}, slots {}, codes {}, healed {}, requests {}, lies {}, timeouts {}, elapsed {:.1} s{}{}",
        status.mode,
        status.pivot_block.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
        status.highest_block.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
        p.headers_downloaded,
        headers_of,
        pct(p.headers_downloaded, headers_of),
        share_note,
        p.bodies_downloaded,
        p.receipts_downloaded,
        p.state_nodes_downloaded,
        p.state_nodes_queued,
        p.accounts_downloaded,
        p.slots_downloaded,
        p.codes_downloaded,
        p.healed_nodes,
        p.requests_sent,
        p.lies_detected,
        p.timeouts,
        p.elapsed_ms as f64 / 1000.0,
        if status.state_complete && status.bodies_complete { ", complete" } else { "" },
        status.waiting_for.as_ref().map(|w| format!("; waiting for {w}")).unwrap_or_default()
    ) + &status
        .waiting
        .as_ref()
        .map(|w| format!(", waiting for {w}"))
        .unwrap_or_default()
}

/// What `get_status` reports.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Status {
    pub mode: String,
    pub pivot_block: Option<u64>,
    pub pivot_hash: Option<String>,
    pub state_root: Option<String>,
    pub highest_block: Option<u64>,
    /// The highest head this shard's peers announced (their status, BlockRangeUpdate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers_head: Option<u64>,
    /// Hash of the head the header chain is verified back from (the agreed head or the
    /// trusted target).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_hash: Option<String>,
    pub headers_complete: bool,
    pub bodies_complete: bool,
    pub receipts_complete: bool,
    pub state_complete: bool,
    /// Where the pivot came from: `peer-vote`, `sync-target` or `engine-api`.
    pub target: String,
    /// Whether the head was given by the operator or a consensus client (not by the
    /// peers' vote, which peers can agree on falsely).
    pub head_trusted: bool,
    /// What the sync waits for before it can start (e.g. the consensus client).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// Pivots selected after the first (the head moved on, or the pivot's state went out
    /// of the peers' history).
    pub repivots: u64,
    /// The first pivot of this run (the pivot now is newer when the sync re-pivoted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_pivot_block: Option<u64>,
    /// What the sync waits for while nothing progresses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

impl Engine {
    /// `get_status` of this shard (shard 0's is the whole sync's).
    pub fn status(&self) -> Status {
        let c = self.coord.as_ref();
        let chain = c.map(|c| c.chain_complete).unwrap_or(false);
        Status {
            mode: self.mode.name().to_string(),
            pivot_block: self.pivot.as_ref().map(|p| p.number),
            pivot_hash: self.pivot.as_ref().map(|p| format!("{}", p.hash)),
            state_root: self.pivot.as_ref().map(|p| format!("{}", p.state_root)),
            highest_block: self.head.as_ref().map(|p| p.number),
            peers_head: self.peers.peers.values().filter_map(|p| p.best).max(),
            head_hash: self.head.as_ref().map(|p| format!("{}", p.hash)),
            headers_complete: c
                .map(|c| {
                    self.head
                        .as_ref()
                        .is_some_and(|_| c.joined.len() as u64 == self.batch_count())
                })
                .unwrap_or(false),
            bodies_complete: chain,
            receipts_complete: chain && self.cfg.fetch_receipts,
            state_complete: c
                .map(|c| c.state_complete)
                .unwrap_or(self.phase == StatePhase::Complete),
            target: self.target_report().0.name().to_string(),
            head_trusted: self.target_report().1,
            waiting_for: self.waiting_for(),
            repivots: c.map(|c| c.repivots).unwrap_or(0),
            first_pivot_block: self.first_pivot,
            waiting: self.waiting.clone(),
        }
    }

    /// `get_progress` of this shard.
    pub fn get_progress(&self) -> Progress {
        let mut p = self.progress.clone();
        p.state_nodes_queued = self.node_queue.len() as u64;
        p.elapsed_ms = self
            .started_ms
            .map(|s| self.now_ms.saturating_sub(s))
            .unwrap_or(0);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shards_progress_line_counts_headers_against_its_share_and_the_sum_against_all() {
        let status = Status {
            mode: "snap".into(),
            pivot_block: Some(600),
            highest_block: Some(600),
            ..Status::default()
        };
        let a = Progress {
            headers_downloaded: 216,
            headers_total: 600,
            headers_share: 216,
            ..Progress::default()
        };
        let b = Progress {
            headers_downloaded: 384,
            headers_total: 600,
            headers_share: 384,
            ..Progress::default()
        };
        let la = progress_line(&status, &a);
        assert!(
            la.contains("headers 216/216 (100.0% of this shard's share; 600 in all)"),
            "{la}"
        );
        let mut total = Progress::default();
        total.add(&a);
        total.add(&b);
        let lt = progress_line(&status, &total);
        assert!(lt.contains("headers 600/600 (100.0%)"), "{lt}");
        // One shard owns everything: the plain form.
        let one = Progress {
            headers_share: 600,
            ..b
        };
        assert!(progress_line(&status, &one).contains("headers 384/600 (64.0%)"));
        // A shard that owns no batch says so rather than looking stuck at 0%.
        let none = Progress {
            headers_total: 600,
            ..Progress::default()
        };
        assert!(
            progress_line(&status, &none)
                .contains("headers 0/600 (0.0%; none of them is this shard's share)"),
            "{}",
            progress_line(&status, &none)
        );
    }
}
