//! OS-facing I/O: io_uring DMA files, per-shard store, mmap, sockets, AF_XDP.
pub mod probe;
pub mod datadir;
pub mod journal;
pub mod mmap;
pub mod files;
pub mod store;
pub mod xdp;
