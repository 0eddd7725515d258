//! Solana gossip on the wire: keypair files, the UDP driver of the sans-IO gossip client
//! (`catchup solana gossip-node`), and the trust rules that pick a snapshot from what
//! known validators advertise.

pub mod cmd;
pub mod discover;
pub mod keypair;
pub mod node;
pub mod trust;
