//! A deterministic in-memory network for discovery services: seeded latency and loss,
//! virtual time, bounded run length.

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;

use catchup_discovery::Discovery;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Virtual start time (milliseconds since the UNIX epoch): packet expirations are absolute.
pub const START_MS: u64 = 1_700_000_000_000;

/// A discovery service at its address; the simulator drives it through [`Discovery`] only.
pub struct Node<D> {
    pub addr: SocketAddr,
    pub svc: D,
}

impl<D: Discovery> SimNode for Node<D> {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn recv(&mut self, from: SocketAddr, data: &[u8], now_ms: u64) {
        self.svc.handle_packet(from, data, now_ms);
    }
    fn timeout(&mut self, now_ms: u64) {
        self.svc.handle_timeout(now_ms);
    }
    fn next_timeout(&self) -> Option<u64> {
        self.svc.poll_timeout()
    }
    fn transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.svc.poll_transmit().map(|t| (t.dest, t.packet))
    }
}

/// Every node's peers include every other node with its record.
pub fn all_found_with_records<D: Discovery>(nodes: &[Node<D>]) -> bool {
    nodes.iter().all(|a| {
        let peers = a.svc.peers();
        nodes.iter().all(|b| {
            a.svc.local_id() == b.svc.local_id()
                || peers
                    .iter()
                    .any(|p| p.id == b.svc.local_id() && p.enr.is_some())
        })
    })
}

pub trait SimNode {
    fn addr(&self) -> SocketAddr;
    fn recv(&mut self, from: SocketAddr, data: &[u8], now_ms: u64);
    fn timeout(&mut self, now_ms: u64);
    fn next_timeout(&self) -> Option<u64>;
    fn transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)>;
}

/// (deliver at, sequence, destination index, source, datagram)
type InFlight = (u64, u64, usize, SocketAddr, Vec<u8>);

pub struct Sim<N> {
    pub nodes: Vec<N>,
    pub now_ms: u64,
    queue: BinaryHeap<Reverse<InFlight>>,
    rng: StdRng,
    seq: u64,
    pub loss_percent: u32,
    pub max_latency_ms: u64,
    pub delivered: u64,
    pub lost: u64,
    /// Crashed nodes: they neither send, receive nor run timers.
    pub down: Vec<bool>,
}

impl<N: SimNode> Sim<N> {
    pub fn new(nodes: Vec<N>, seed: u64) -> Self {
        Sim {
            nodes,
            now_ms: START_MS,
            queue: BinaryHeap::new(),
            rng: StdRng::seed_from_u64(seed),
            seq: 0,
            loss_percent: 0,
            max_latency_ms: 40,
            delivered: 0,
            lost: 0,
            down: Vec::new(),
        }
    }

    fn is_down(&self, i: usize) -> bool {
        self.down.get(i).copied().unwrap_or(false)
    }

    fn collect(&mut self) {
        for i in 0..self.nodes.len() {
            let from = self.nodes[i].addr();
            while let Some((dest, data)) = self.nodes[i].transmit() {
                let Some(to) = self.nodes.iter().position(|n| n.addr() == dest) else {
                    continue;
                };
                if self.is_down(i) || self.is_down(to) {
                    continue;
                }
                if self.rng.gen_range(0..100) < self.loss_percent {
                    self.lost += 1;
                    continue;
                }
                let at = self.now_ms + self.rng.gen_range(1..=self.max_latency_ms);
                self.seq += 1;
                self.queue.push(Reverse((at, self.seq, to, from, data)));
            }
        }
    }

    /// Run until `done` holds (true) or virtual time passes `end_ms` (false). Bounded in
    /// steps as well.
    pub fn run_until(&mut self, end_ms: u64, mut done: impl FnMut(&[N]) -> bool) -> bool {
        for _ in 0..5_000_000u32 {
            self.collect();
            if done(&self.nodes) {
                return true;
            }
            let next_packet = self.queue.peek().map(|Reverse((at, ..))| *at);
            let next_timer = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(i, _)| !self.is_down(*i))
                .filter_map(|(_, n)| n.next_timeout())
                .min();
            let Some(next) = [next_packet, next_timer].into_iter().flatten().min() else {
                return false;
            };
            if next > end_ms {
                return false;
            }
            self.now_ms = self.now_ms.max(next);
            while self
                .queue
                .peek()
                .is_some_and(|Reverse((at, ..))| *at <= self.now_ms)
            {
                let Some(Reverse((_, _, to, from, data))) = self.queue.pop() else {
                    break;
                };
                if self.is_down(to) {
                    continue;
                }
                self.delivered += 1;
                self.nodes[to].recv(from, &data, self.now_ms);
            }
            for i in 0..self.nodes.len() {
                if self.is_down(i) {
                    continue;
                }
                let n = &mut self.nodes[i];
                if n.next_timeout().is_some_and(|t| t <= self.now_ms) {
                    n.timeout(self.now_ms);
                }
            }
        }
        false
    }
}
