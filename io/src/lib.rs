//! OS-facing I/O: io_uring DMA files, per-shard store, mmap, sockets, AF_XDP.
pub mod datadir;
pub mod exec;
pub mod files;
pub mod journal;
pub mod mmap;
pub mod probe;
pub mod store;
pub mod xdp;
