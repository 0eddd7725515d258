//! Local devnets on loopback: serving peers over one chain and state, each with its own
//! node key, listen port and fault profile, run as tasks of the current glommio executor.
//! Used by `catchup demo` and the end-to-end tests.

use std::rc::Rc;
use std::sync::Arc;

use catchup_devp2p::enode::Enode;
use catchup_devp2p::secp256k1::SecretKey;

use super::chain::Profile;
use super::engine_serve::EngineResponder;
use super::eth_peer::StatusInfo;
use super::server::{accept_loop, resolve_listen, ServeConfig};
use super::{LocalNode, NetConfig};
use crate::eth::serve::ServingPeer;
use crate::eth::sync::chain::{ChainData, StateData};

/// Start one serving peer per profile on `127.0.0.1` (ports picked by the OS), answering
/// from `chain` and `state` with `status` in the handshake. Peers stop accepting once
/// `stopped()` returns true. Returns their enodes in profile order.
pub fn spawn_serving_peers<S: Fn() -> bool + Clone + 'static>(
    chain: &Arc<ChainData>,
    state: Option<&Arc<StateData>>,
    status: &StatusInfo,
    profiles: &[Profile],
    slow_delay_ms: u64,
    stopped: S,
) -> anyhow::Result<Vec<Enode>> {
    let mut enodes = Vec::with_capacity(profiles.len());
    for (i, profile) in profiles.iter().copied().enumerate() {
        let claim = resolve_listen("127.0.0.1:0".parse().expect("loopback address"))?;
        let listen = claim.addr;
        let local = Rc::new(LocalNode::new(SecretKey::new(&mut rand::thread_rng())));
        enodes.push(Enode {
            id: local.id(),
            addr: listen,
        });
        let cfg = Rc::new(ServeConfig {
            listen,
            shards: 1,
            max_peers_per_shard: 8,
            net: NetConfig::default(),
            status: status.clone(),
            receipts_limit_bytes: None,
        });
        let mut responder = EngineResponder::new(
            ServingPeer::new(chain.clone(), state.cloned()),
            profile,
            7 + i as u64,
        );
        responder.slow_delay_ms = slow_delay_ms;
        let stopped = stopped.clone();
        glommio::spawn_local(async move {
            let _claim = claim;
            if let Err(e) = accept_loop(i, listen, local, cfg, Rc::new(responder), stopped).await {
                tracing::warn!(peer = i, "devnet peer stopped: {e}");
            }
        })
        .detach();
    }
    Ok(enodes)
}
