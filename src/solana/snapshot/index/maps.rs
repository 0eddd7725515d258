//! A shard's open memory maps of storage files, bounded: the least recently used map is
//! dropped when a new one would exceed the cap, and a cold file is mapped again when it is
//! next read. A mainnet archive has far more storage files than Linux's default
//! `vm.max_map_count` (65,530) allows maps in one process.

use std::collections::HashMap;
use std::rc::Rc;

use catchup_io::mmap::MappedFile;

pub(super) struct MapCache {
    cap: usize,
    maps: HashMap<u32, (Rc<MappedFile>, u64)>,
    tick: u64,
    /// Files mapped so far (a file evicted and mapped again counts twice).
    pub(super) opened: u64,
    /// Most maps open at once.
    pub(super) peak: usize,
}

impl MapCache {
    pub(super) fn new(cap: usize) -> Self {
        MapCache {
            cap: cap.max(1),
            maps: HashMap::new(),
            tick: 0,
            opened: 0,
            peak: 0,
        }
    }

    pub(super) fn cap(&self) -> usize {
        self.cap
    }

    pub(super) fn open(&self) -> usize {
        self.maps.len()
    }

    /// The map of `file`, if open (it becomes the most recently used).
    pub(super) fn get(&mut self, file: u32) -> Option<Rc<MappedFile>> {
        self.tick += 1;
        let tick = self.tick;
        self.maps.get_mut(&file).map(|(m, used)| {
            *used = tick;
            m.clone()
        })
    }

    /// Keep `map` for `file`, dropping the least recently used map when at the cap (a
    /// reader still holding it keeps it alive until done).
    pub(super) fn insert(&mut self, file: u32, map: Rc<MappedFile>) {
        if self.maps.len() >= self.cap {
            // O(cap) per eviction; evictions happen once per cold file, not per read.
            if let Some(&victim) = self
                .maps
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(f, _)| f)
            {
                self.maps.remove(&victim);
            }
        }
        self.tick += 1;
        self.maps.insert(file, (map, self.tick));
        self.opened += 1;
        self.peak = self.peak.max(self.maps.len());
        debug_assert!(self.maps.len() <= self.cap);
    }
}
