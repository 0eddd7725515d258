//! Sans-IO Ethereum data layer: RLP, Merkle-Patricia tries, blocks, receipts, era1, snap range proofs, eth/snap messages.
