//! Sans-IO Solana shreds (merkle data and coding), Reed-Solomon recovery, repair protocol messages.
