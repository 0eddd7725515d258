//! The `serve-repair` driver: a repair server on a glommio UDP socket answering from an
//! in-memory ledger, with fault profiles (slow, lossy, wrong shreds) for tests.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use catchup_shred::ed25519_dalek::SigningKey;
use catchup_shred::repair::MAX_REQUESTS_PER_ITERATION;
use catchup_shred::serve::{MemLedger, ServeRepair, ServeStats};
use rand::{rngs::StdRng, Rng, SeedableRng};

use super::driver::unix_ms;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Every response is held back this long.
    pub delay_ms: u64,
    /// Responses dropped, per thousand.
    pub loss_per_mille: u32,
    /// Responses sent with a corrupted shred, per thousand.
    pub wrong_per_mille: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("serve-repair: bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("serve-repair: UDP receive: {0}")]
    Recv(std::io::Error),
}

/// Serve until `stop()` says so. Returns the server's counters.
pub async fn serve(
    sock: glommio::net::UdpSocket,
    ledger: &MemLedger,
    identity: SigningKey,
    faults: Faults,
    seed: u64,
    stop: impl Fn() -> bool,
) -> Result<ServeStats, ServeError> {
    let mut server: ServeRepair<SocketAddr> = ServeRepair::new(identity, seed);
    let mut rng = StdRng::seed_from_u64(seed ^ 0xfa17);
    let mut delayed: VecDeque<(Instant, SocketAddr, Vec<u8>)> = VecDeque::new();
    super::driver::set_socket_buffers(&sock, 8 << 20);
    let poll = Duration::from_millis(if faults.delay_ms > 0 { 1 } else { 20 });
    sock.set_read_timeout(Some(poll))
        .map_err(|e| ServeError::Recv(e.into()))?;
    let mut buf = vec![0u8; 2048];
    let mut handled = 0usize;
    while !stop() {
        match sock.recv_from(&mut buf).await {
            Ok((n, from)) => {
                handled += 1;
                for mut resp in server.handle(ledger, unix_ms(), from, &buf[..n]) {
                    if rng.gen_range(0..1000) < faults.loss_per_mille {
                        continue;
                    }
                    if resp.len() > 200 && rng.gen_range(0..1000) < faults.wrong_per_mille {
                        let pos = rng.gen_range(100..resp.len() - 8);
                        resp[pos] ^= 0xa5;
                    }
                    if faults.delay_ms > 0 {
                        if delayed.len() < 65_536 {
                            delayed.push_back((
                                Instant::now() + Duration::from_millis(faults.delay_ms),
                                from,
                                resp,
                            ));
                        }
                    } else {
                        let _ = sock.send_to(&resp, from).await;
                    }
                }
                if handled % MAX_REQUESTS_PER_ITERATION == 0 {
                    glommio::yield_if_needed().await;
                }
            }
            Err(glommio::GlommioError::TimedOut(_)) => {}
            Err(e) => {
                let e: std::io::Error = e.into();
                if e.kind() != std::io::ErrorKind::TimedOut
                    && e.kind() != std::io::ErrorKind::WouldBlock
                {
                    return Err(ServeError::Recv(e));
                }
            }
        }
        let now = Instant::now();
        while delayed.front().is_some_and(|d| d.0 <= now) {
            let (_, to, p) = delayed.pop_front().expect("front exists");
            let _ = sock.send_to(&p, to).await;
        }
    }
    Ok(server.stats)
}
