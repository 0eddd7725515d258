//! What both chain families share: the admin endpoint (`/metrics`, `/status`) and
//! observability (logging, progress lines and bars, shard spans).

pub mod admin;
pub mod bench_store;
pub mod cpu;
pub mod demo;
pub mod doctor;
pub mod doctor_fix;
pub mod listen;
pub mod obs;
pub mod opts;
pub mod soak;
pub mod stages;
pub mod view;
