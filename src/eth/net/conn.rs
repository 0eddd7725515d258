//! One RLPx connection on a glommio executor: the handshake (with a deadline), the Hello
//! exchange and capability negotiation, then message send/receive with Ping answered,
//! Disconnect surfaced and an idle deadline on every read.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use catchup_devp2p::handshake::{id_to_pubkey, pubkey_to_id, Handshake, WireFormat};
use catchup_devp2p::p2p::{
    negotiate, Capability, DisconnectReason, Hello, MessageConn, SharedCapability, ID_DISCONNECT,
    ID_HELLO, ID_PING, ID_PONG, P2P_VERSION,
};
use catchup_devp2p::secp256k1::{PublicKey, SecretKey};
use catchup_devp2p::{frame::Session, Devp2pError};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

/// Limits and deadlines of a connection.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// From TCP connect to both Hellos exchanged.
    pub handshake_timeout_ms: u64,
    /// Longest wait for any message once connected.
    pub idle_timeout_ms: u64,
    /// Largest frame accepted.
    pub max_frame_bytes: usize,
    /// Largest (decompressed) message accepted.
    pub max_message_bytes: usize,
    pub client_id: String,
    /// Port announced in Hello (0: not listening).
    pub listen_port: u16,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_frame_bytes: catchup_devp2p::frame::MAX_FRAME_BYTES_PROTOCOL,
            max_message_bytes: catchup_devp2p::p2p::MAX_MESSAGE_BYTES,
            client_id: format!("catchup/v{}", env!("CARGO_PKG_VERSION")),
            listen_port: 0,
        }
    }
}

/// This node: its key and the capabilities it offers.
#[derive(Debug, Clone)]
pub struct LocalNode {
    pub key: SecretKey,
    pub capabilities: Vec<Capability>,
}

impl LocalNode {
    pub fn new(key: SecretKey) -> Self {
        LocalNode {
            key,
            capabilities: vec![
                Capability::new("eth", 66),
                Capability::new("eth", 67),
                Capability::new("eth", 68),
                Capability::new("eth", 69),
                Capability::new("eth", 70),
                Capability::new("snap", 1),
            ],
        }
    }

    /// This node offering only `capabilities` (for example geth 1.17's `eth/69`,
    /// `eth/70`, `snap/1`).
    pub fn with_capabilities(key: SecretKey, capabilities: Vec<Capability>) -> Self {
        LocalNode { key, capabilities }
    }

    pub fn id(&self) -> [u8; 64] {
        pubkey_to_id(&PublicKey::from_secret_key_global(&self.key))
    }

    /// `enode://…@addr` of this node.
    pub fn enode(&self, addr: SocketAddr) -> String {
        catchup_devp2p::enode::Enode {
            id: self.id(),
            addr,
        }
        .to_string()
    }
}

/// Why a connection failed or ended.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{what} with {peer}: {source}")]
    Io {
        what: &'static str,
        peer: SocketAddr,
        source: std::io::Error,
    },
    #[error("{what} with {peer}: no progress within {timeout_ms} ms")]
    Timeout {
        what: &'static str,
        peer: SocketAddr,
        timeout_ms: u64,
    },
    #[error("protocol error from {peer}: {source}")]
    Protocol {
        peer: SocketAddr,
        source: Devp2pError,
    },
    #[error("{peer} disconnected: {reason}")]
    Disconnected {
        peer: SocketAddr,
        reason: DisconnectReason,
    },
    #[error("{peer} closed the connection")]
    Closed { peer: SocketAddr },
    #[error("{peer}: {detail}")]
    Useless { peer: SocketAddr, detail: String },
}

impl NetError {
    /// Worth dialing again later: the peer was busy, slow or went away, rather than on
    /// another network or speaking something we refuse.
    pub fn is_transient(&self) -> bool {
        match self {
            NetError::Io { .. } | NetError::Timeout { .. } | NetError::Closed { .. } => true,
            NetError::Disconnected { reason, .. } => matches!(
                reason,
                DisconnectReason::Requested
                    | DisconnectReason::TcpError
                    | DisconnectReason::TooManyPeers
                    | DisconnectReason::AlreadyConnected
                    | DisconnectReason::ClientQuitting
                    | DisconnectReason::Timeout
            ),
            NetError::Protocol { .. } | NetError::Useless { .. } => false,
        }
    }
}

/// An established RLPx connection (Hellos exchanged).
pub struct PeerConn {
    stream: TcpStream,
    conn: MessageConn,
    pub peer: SocketAddr,
    pub remote_id: [u8; 64],
    pub remote_hello: Hello,
    pub shared: Vec<SharedCapability>,
    idle_timeout_ms: u64,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
}

impl std::fmt::Debug for PeerConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PeerConn {{ peer: {}, client: {:?} }}",
            self.peer, self.remote_hello.client_id
        )
    }
}

const READ_CHUNK_BYTES: usize = 64 * 1024;

async fn with_deadline<T>(
    timeout_ms: u64,
    what: &'static str,
    peer: SocketAddr,
    fut: impl std::future::Future<Output = Result<T, NetError>>,
) -> Result<T, NetError> {
    match glommio::timer::timeout(Duration::from_millis(timeout_ms), async { Ok(fut.await) }).await
    {
        Ok(r) => r,
        Err(_) => Err(NetError::Timeout {
            what,
            peer,
            timeout_ms,
        }),
    }
}

async fn read_some(
    stream: &mut TcpStream,
    buf: &mut [u8],
    peer: SocketAddr,
    what: &'static str,
) -> Result<usize, NetError> {
    let n = stream
        .read(buf)
        .await
        .map_err(|source| NetError::Io { what, peer, source })?;
    if n == 0 {
        return Err(NetError::Closed { peer });
    }
    Ok(n)
}

impl PeerConn {
    /// Dial `addr`, expecting node `remote_id`.
    pub async fn dial(
        addr: SocketAddr,
        remote_id: [u8; 64],
        local: &LocalNode,
        cfg: &NetConfig,
    ) -> Result<PeerConn, NetError> {
        let remote =
            id_to_pubkey(&remote_id).map_err(|source| NetError::Protocol { peer: addr, source })?;
        with_deadline(cfg.handshake_timeout_ms, "handshake", addr, async {
            let stream = TcpStream::connect(addr).await.map_err(|e| NetError::Io {
                what: "connect",
                peer: addr,
                source: std::io::Error::other(e.to_string()),
            })?;
            // Dialing a local port where nothing listens can connect to itself (TCP
            // simultaneous open, when the kernel picks that very port as the source); the
            // socket would then hold the port the peer is to listen on again.
            if stream.local_addr().ok() == Some(addr) {
                return Err(NetError::Io {
                    what: "connect",
                    peer: addr,
                    source: std::io::Error::new(
                        std::io::ErrorKind::ConnectionRefused,
                        "connected to itself: nothing listens there",
                    ),
                });
            }
            let _ = stream.set_nodelay(true);
            let hs =
                Handshake::initiator(&mut rand::thread_rng(), local.key, remote, WireFormat::Eip8);
            Self::run_handshake(stream, addr, hs, local, cfg).await
        })
        .await
    }

    /// Run the responder side on an accepted stream.
    pub async fn accept(
        stream: TcpStream,
        local: &LocalNode,
        cfg: &NetConfig,
    ) -> Result<PeerConn, NetError> {
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let _ = stream.set_nodelay(true);
        with_deadline(cfg.handshake_timeout_ms, "handshake", peer, async {
            let hs = Handshake::responder(&mut rand::thread_rng(), local.key);
            Self::run_handshake(stream, peer, hs, local, cfg).await
        })
        .await
    }

    async fn run_handshake(
        mut stream: TcpStream,
        peer: SocketAddr,
        mut hs: Handshake,
        local: &LocalNode,
        cfg: &NetConfig,
    ) -> Result<PeerConn, NetError> {
        let proto = |source| NetError::Protocol { peer, source };
        let mut rbuf = vec![0u8; READ_CHUNK_BYTES];
        let out = hs.take_output();
        if !out.is_empty() {
            stream
                .write_all(&out)
                .await
                .map_err(|source| NetError::Io {
                    what: "write auth",
                    peer,
                    source,
                })?;
        }
        let est = loop {
            let n = read_some(&mut stream, &mut rbuf, peer, "read handshake").await?;
            if let Some(est) = hs
                .feed(&mut rand::thread_rng(), &rbuf[..n])
                .map_err(proto)?
            {
                break est;
            }
        };
        let out = hs.take_output();
        if !out.is_empty() {
            stream
                .write_all(&out)
                .await
                .map_err(|source| NetError::Io {
                    what: "write ack",
                    peer,
                    source,
                })?;
        }
        let mut conn = MessageConn::new(
            Session::new(est.secrets, cfg.max_frame_bytes),
            cfg.max_message_bytes,
        );
        conn.feed(&est.leftover);
        let hello = Hello {
            protocol_version: P2P_VERSION,
            client_id: cfg.client_id.clone(),
            capabilities: local.capabilities.clone(),
            listen_port: u64::from(cfg.listen_port),
            node_id: local.id(),
        };
        let mut wbuf = Vec::new();
        conn.write_message(ID_HELLO, &hello.encode(), &mut wbuf)
            .map_err(proto)?;
        stream
            .write_all(&wbuf)
            .await
            .map_err(|source| NetError::Io {
                what: "write hello",
                peer,
                source,
            })?;
        wbuf.clear();
        // First message must be Hello (or Disconnect).
        let (id, payload) = loop {
            if let Some(m) = conn.next_message().map_err(proto)? {
                break m;
            }
            let n = read_some(&mut stream, &mut rbuf, peer, "read hello").await?;
            conn.feed(&rbuf[..n]);
        };
        match id {
            ID_HELLO => {}
            ID_DISCONNECT => {
                return Err(NetError::Disconnected {
                    peer,
                    reason: DisconnectReason::decode(&payload)
                        .unwrap_or(DisconnectReason::Other(0xff)),
                })
            }
            other => {
                return Err(proto(Devp2pError::rlp(
                    "hello",
                    format!("first message has id {other:#x}, expected Hello"),
                )))
            }
        }
        let remote_hello = Hello::decode(&payload).map_err(proto)?;
        let remote_id = pubkey_to_id(&est.remote_id);
        if remote_hello.node_id != remote_id {
            return Err(NetError::Useless {
                peer,
                detail: "Hello node id differs from the handshake identity".into(),
            });
        }
        if remote_hello.protocol_version >= 5 {
            conn.set_snappy(true);
        }
        let shared = negotiate(&local.capabilities, &remote_hello.capabilities);
        let mut pc = PeerConn {
            stream,
            conn,
            peer,
            remote_id,
            remote_hello,
            shared,
            idle_timeout_ms: cfg.idle_timeout_ms,
            rbuf,
            wbuf,
        };
        if pc.shared.is_empty() {
            let _ = pc.disconnect(DisconnectReason::UselessPeer).await;
            return Err(NetError::Useless {
                peer,
                detail: "no shared capability".into(),
            });
        }
        Ok(pc)
    }

    /// The longest wait for a message once connected.
    pub fn idle_timeout_ms(&self) -> u64 {
        self.idle_timeout_ms
    }

    /// The negotiated capability with this name.
    pub fn capability(&self, name: &str) -> Option<&SharedCapability> {
        self.shared.iter().find(|c| c.name == name)
    }

    /// Send one message (wire id).
    pub async fn send(&mut self, wire_id: u64, payload: &[u8]) -> Result<(), NetError> {
        let peer = self.peer;
        self.wbuf.clear();
        self.conn
            .write_message(wire_id, payload, &mut self.wbuf)
            .map_err(|source| NetError::Protocol { peer, source })?;
        self.stream
            .write_all(&self.wbuf)
            .await
            .map_err(|source| NetError::Io {
                what: "write",
                peer,
                source,
            })
    }

    /// Receive the next sub-protocol message (wire id, payload) within the idle timeout.
    pub async fn recv(&mut self) -> Result<(u64, Vec<u8>), NetError> {
        let deadline = Instant::now() + Duration::from_millis(self.idle_timeout_ms);
        self.recv_until(deadline).await
    }

    /// Receive the next sub-protocol message before `deadline`. Pings are answered here; a
    /// Disconnect ends the connection with [`NetError::Disconnected`]; a bad frame sends
    /// Disconnect(BreachOfProtocol) and ends it with [`NetError::Protocol`]. The deadline is a
    /// socket read timeout, so expiring it loses no bytes and the connection stays usable.
    pub async fn recv_until(&mut self, deadline: Instant) -> Result<(u64, Vec<u8>), NetError> {
        let peer = self.peer;
        loop {
            let msg = match self.conn.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(NetError::Timeout {
                            what: "read",
                            peer,
                            timeout_ms: 0,
                        });
                    }
                    let left = deadline - now;
                    let _ = self
                        .stream
                        .set_read_timeout(Some(left.max(Duration::from_millis(1))));
                    match self.stream.read(&mut self.rbuf).await {
                        Ok(0) => return Err(NetError::Closed { peer }),
                        Ok(n) => {
                            let (conn, rbuf) = (&mut self.conn, &self.rbuf);
                            conn.feed(&rbuf[..n]);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                            return Err(NetError::Timeout {
                                what: "read",
                                peer,
                                timeout_ms: left.as_millis() as u64,
                            })
                        }
                        Err(source) => {
                            return Err(NetError::Io {
                                what: "read",
                                peer,
                                source,
                            })
                        }
                    }
                    continue;
                }
                Err(source) => {
                    tracing::debug!(%peer, error = %source, "dropping peer: bad frame or message");
                    let _ = self.disconnect(DisconnectReason::BreachOfProtocol).await;
                    return Err(NetError::Protocol { peer, source });
                }
            };
            match msg.0 {
                ID_PING => self.send(ID_PONG, &[0xc0]).await?,
                ID_PONG => {}
                ID_DISCONNECT => {
                    let reason =
                        DisconnectReason::decode(&msg.1).unwrap_or(DisconnectReason::Other(0xff));
                    return Err(NetError::Disconnected { peer, reason });
                }
                ID_HELLO => {
                    return Err(NetError::Protocol {
                        peer,
                        source: Devp2pError::rlp("hello", "second Hello"),
                    })
                }
                id if id < catchup_devp2p::p2p::BASE_PROTOCOL_LENGTH => {
                    // Unassigned base-protocol ids are ignored.
                }
                _ => return Ok(msg),
            }
        }
    }

    /// Send a Ping.
    pub async fn ping(&mut self) -> Result<(), NetError> {
        self.send(ID_PING, &[0xc0]).await
    }

    /// Send Disconnect and close the stream.
    pub async fn disconnect(&mut self, reason: DisconnectReason) -> Result<(), NetError> {
        let r = self.send(ID_DISCONNECT, &reason.encode()).await;
        let _ = self.stream.close().await;
        r
    }
}
