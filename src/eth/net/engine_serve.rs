//! Serving over the wire with the sync's serving peer (`crate::eth::serve::ServingPeer`):
//! eth headers/bodies/receipts/node data and snap/1 from a chain and a state, with the
//! same fault profiles the simulator uses.

use std::cell::{Cell, RefCell};

use crate::eth::serve::{corrupt, ServingPeer};
use crate::eth::sync::chain::SimRng;

use super::chain::Profile;
use super::convert;
use super::eth_peer::Responder;
use super::wire::{empty_response, Wire};

/// A [`Responder`] over a [`ServingPeer`].
pub struct EngineResponder {
    pub serving: ServingPeer,
    pub profile: Profile,
    pub slow_delay_ms: u64,
    rng: RefCell<SimRng>,
    served: Cell<u64>,
}

impl EngineResponder {
    pub fn new(serving: ServingPeer, profile: Profile, seed: u64) -> Self {
        EngineResponder {
            serving,
            profile,
            slow_delay_ms: 200,
            rng: RefCell::new(SimRng::new(seed)),
            served: Cell::new(0),
        }
    }
}

impl Responder for EngineResponder {
    fn respond(&self, req: &Wire) -> (Option<Wire>, u64) {
        let n = self.served.get() + 1;
        self.served.set(n);
        let Some((rid, request)) = convert::wire_to_request(req) else {
            return (empty_response(req), 0);
        };
        let mut resp = self.serving.handle(&request);
        let mut delay_ms = 0;
        match self.profile {
            Profile::Honest => {}
            Profile::Slow => delay_ms = self.slow_delay_ms,
            Profile::Lossy if n % 5 == 0 => return (None, 0),
            Profile::Lossy => {}
            Profile::Lying => resp = corrupt(resp, &mut self.rng.borrow_mut()),
        }
        (
            convert::response_to_wire(&resp, rid).or_else(|| empty_response(req)),
            delay_ms,
        )
    }
}
