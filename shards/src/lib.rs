//! Thread-per-core shard runtime: pinned glommio executors, channel mesh, ownership maps.
