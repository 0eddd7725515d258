//! Start N pinned glommio executors joined by a full mesh of bounded channels.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::channels::shared_channel::{self, ConnectedSender, SharedReceiver, SharedSender};
use glommio::{GlommioError, LocalExecutorBuilder, Placement, ResourceType};

use catchup_io::probe::LockedMemoryBudget;

use crate::ShardId;

/// Upper bound on the number of shards one process may start.
pub const MAX_SHARDS: usize = 1024;
/// Upper bound on the per-link channel capacity (messages).
pub const MAX_CHANNEL_CAPACITY: usize = 1 << 20;
/// io_memory each shard asks for when it may lock as much as it likes.
pub const DEFAULT_IO_MEMORY_BYTES: usize = 8 << 20;
/// glommio never uses less than this for its registered I/O buffer.
pub const MIN_IO_MEMORY_BYTES: usize = 64 << 10;
/// glommio refuses to start below this `RLIMIT_MEMLOCK`.
pub const MIN_MEMLOCK_LIMIT_BYTES: u64 = 512 << 10;

/// How to start the shards.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Number of shards (executors), `1..=MAX_SHARDS`.
    pub shards: usize,
    /// CPUs to pin to; shard `i` runs on `cores[i % cores.len()]`. `None`: the CPUs this
    /// process may use (`core_affinity::get_core_ids()`).
    pub cores: Option<Vec<usize>>,
    /// Registered io_uring buffer per shard. `None`: sized from the locked-memory budget
    /// (see [`io_memory_per_shard`]). An explicit value is still capped by that budget.
    pub io_memory_bytes: Option<usize>,
    /// Capacity, in messages, of each directed shard-to-shard channel.
    pub channel_capacity: usize,
    /// Thread name prefix (`<name>-<shard>`).
    pub name: String,
    /// Install SIGINT/SIGTERM handlers that set the shutdown flag while the shards run
    /// (a second signal exits the process with code 130).
    pub handle_signals: bool,
}

impl RuntimeConfig {
    /// `shards` shards on the allowed cores, capacity 64 per link, signal handling on.
    pub fn new(shards: usize) -> Self {
        Self {
            shards,
            cores: None,
            io_memory_bytes: None,
            channel_capacity: 64,
            name: "shard".into(),
            handle_signals: true,
        }
    }
}

/// Why the runtime could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("shard count {shards} is out of range: must be 1..={MAX_SHARDS}")]
    BadShardCount { shards: usize },
    #[error("channel capacity {capacity} is out of range: must be 1..={MAX_CHANNEL_CAPACITY}")]
    BadChannelCapacity { capacity: usize },
    #[error("core list is empty")]
    NoCores,
    #[error("core {core} may not be used by this process (allowed: {allowed:?})")]
    CoreNotAllowed { core: usize, allowed: Vec<usize> },
    #[error("RLIMIT_MEMLOCK is {limit_bytes} bytes; at least {MIN_MEMLOCK_LIMIT_BYTES} are needed (raise it with `ulimit -l` or grant CAP_IPC_LOCK)")]
    MemlockTooLow { limit_bytes: u64 },
    #[error("cannot start shard {shard} on core {core}: {message}")]
    Start {
        shard: usize,
        core: usize,
        message: String,
    },
    #[error("shard {shard} panicked: {message}")]
    ShardPanicked { shard: usize, message: String },
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
}

/// The CPUs this process may run on, sorted.
pub fn allowed_cores() -> Vec<usize> {
    let mut v: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The core each shard is pinned to: `cores[i % cores.len()]`, after checking every core
/// is one this process may use (`allowed`).
pub fn placement(
    shards: usize,
    cores: Option<&[usize]>,
    allowed: &[usize],
) -> Result<Vec<usize>, RuntimeError> {
    if shards == 0 || shards > MAX_SHARDS {
        return Err(RuntimeError::BadShardCount { shards });
    }
    let cores: Vec<usize> = match cores {
        Some(c) => c.to_vec(),
        None => allowed.to_vec(),
    };
    if cores.is_empty() {
        return Err(RuntimeError::NoCores);
    }
    if let Some(&bad) = cores.iter().find(|c| !allowed.contains(c)) {
        return Err(RuntimeError::CoreNotAllowed {
            core: bad,
            allowed: allowed.to_vec(),
        });
    }
    Ok((0..shards).map(|i| cores[i % cores.len()]).collect())
}

/// glommio registers each executor's io_memory with each of its 3 rings (main, latency,
/// poll); without `CAP_IPC_LOCK` the kernel charges every registration to the user's
/// `RLIMIT_MEMLOCK`.
pub const IO_MEMORY_REGISTRATIONS_PER_SHARD: u64 = 3;

/// io_memory for each of `shards` executors so that all of them fit the locked-memory
/// budget: with `CAP_IPC_LOCK` or an unlimited rlimit, `requested` (default
/// [`DEFAULT_IO_MEMORY_BYTES`]); otherwise half of `RLIMIT_MEMLOCK` (the other half is
/// left for other locked pages) split evenly over the shards' 3 registrations each, 4 KiB
/// aligned, never below [`MIN_IO_MEMORY_BYTES`]. The limit is per user, so other processes
/// of the same user share it: when a registration does not fit, glommio runs that shard
/// without registered buffers (slower, but it starts).
pub fn io_memory_per_shard(
    shards: usize,
    requested: Option<usize>,
    budget: LockedMemoryBudget,
) -> Result<usize, RuntimeError> {
    let want = requested
        .unwrap_or(DEFAULT_IO_MEMORY_BYTES)
        .max(MIN_IO_MEMORY_BYTES);
    let Some(limit) = budget.limit_bytes else {
        return Ok(want);
    };
    if limit < MIN_MEMLOCK_LIMIT_BYTES {
        return Err(RuntimeError::MemlockTooLow { limit_bytes: limit });
    }
    let share =
        (limit / 2 / (shards.max(1) as u64 * IO_MEMORY_REGISTRATIONS_PER_SHARD)) as usize & !4095;
    Ok(want.min(share).max(MIN_IO_MEMORY_BYTES))
}

/// One shard's handle: its id, the senders to every other shard and its inbox. Cheap to
/// clone inside the shard (it is `Rc` inside, and not `Send`: it stays on its core).
pub struct Shard<M: Send + 'static> {
    inner: Rc<Inner<M>>,
}

impl<M: Send + 'static> Clone for Shard<M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<M: Send + 'static> {
    id: ShardId,
    count: usize,
    core: usize,
    io_memory_bytes: usize,
    senders: Vec<Option<ConnectedSender<M>>>,
    inbox: LocalReceiver<(ShardId, M)>,
    outgoing_closed: Cell<bool>,
    shutdown: Arc<AtomicBool>,
    sent: crate::metrics::Counter,
    received: crate::metrics::Counter,
}

/// A message that could not be sent; the message is handed back.
pub enum SendError<M> {
    /// The channel to `to` is full (only from [`Shard::try_send`]).
    Full { to: ShardId, msg: M },
    /// Shard `to` has stopped receiving, or this shard closed its outgoing channels.
    Closed { to: ShardId, msg: M },
    /// A shard does not send to itself through the mesh: call the local code directly.
    ToSelf { msg: M },
    /// `to` is not a shard of this runtime.
    NoSuchShard { to: ShardId, count: usize, msg: M },
}

impl<M> SendError<M> {
    /// The message that was not sent.
    pub fn into_inner(self) -> M {
        match self {
            SendError::Full { msg, .. }
            | SendError::Closed { msg, .. }
            | SendError::ToSelf { msg }
            | SendError::NoSuchShard { msg, .. } => msg,
        }
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full { to, .. } => write!(f, "channel to shard {} is full", to.0),
            SendError::Closed { to, .. } => write!(f, "channel to shard {} is closed", to.0),
            SendError::ToSelf { .. } => write!(f, "a shard cannot send to itself"),
            SendError::NoSuchShard { to, count, .. } => {
                write!(f, "shard {} does not exist ({} shards)", to.0, count)
            }
        }
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SendError({self})")
    }
}

impl<M> std::error::Error for SendError<M> {}

/// Result of [`Shard::recv_timeout`].
#[derive(Debug)]
pub enum Recv<M> {
    /// A message from a peer shard.
    Msg(ShardId, M),
    /// Every peer has closed its channel to this shard and the inbox is empty.
    Closed,
    /// Nothing arrived within the timeout.
    TimedOut,
}

impl<M: Send + 'static> Shard<M> {
    /// This shard's id, `0..count()`.
    pub fn id(&self) -> ShardId {
        self.inner.id
    }
    /// Number of shards in this runtime.
    pub fn count(&self) -> usize {
        self.inner.count
    }
    /// The CPU this shard is pinned to.
    pub fn core(&self) -> usize {
        self.inner.core
    }
    /// The io_memory this shard's executor was started with.
    pub fn io_memory_bytes(&self) -> usize {
        self.inner.io_memory_bytes
    }
    /// Ids of every other shard.
    pub fn peers(&self) -> impl Iterator<Item = ShardId> {
        let me = self.inner.id;
        (0..self.inner.count).map(ShardId).filter(move |s| *s != me)
    }

    fn sender(&self, to: ShardId, msg: M) -> Result<(&ConnectedSender<M>, M), SendError<M>> {
        if to == self.inner.id {
            return Err(SendError::ToSelf { msg });
        }
        if self.inner.outgoing_closed.get() {
            return Err(SendError::Closed { to, msg });
        }
        match self.inner.senders.get(to.0) {
            Some(Some(s)) => Ok((s, msg)),
            _ => Err(SendError::NoSuchShard {
                to,
                count: self.inner.count,
                msg,
            }),
        }
    }

    /// Send `msg` to shard `to`, waiting while its channel is full (back-pressure).
    pub async fn send(&self, to: ShardId, msg: M) -> Result<(), SendError<M>> {
        let (s, msg) = self.sender(to, msg)?;
        s.send(msg).await.map_err(|e| map_err(to, e))?;
        self.inner.sent.inc(self.inner.id);
        Ok(())
    }

    /// Send without waiting; a full channel gives [`SendError::Full`].
    pub fn try_send(&self, to: ShardId, msg: M) -> Result<(), SendError<M>> {
        let (s, msg) = self.sender(to, msg)?;
        s.try_send(msg).map_err(|e| map_err(to, e))?;
        self.inner.sent.inc(self.inner.id);
        Ok(())
    }

    /// The next message from any peer, in per-sender order. `None` once every peer has
    /// closed its outgoing channels (see [`Shard::close_outgoing`]) or finished, and all
    /// their messages were received.
    pub async fn recv(&self) -> Option<(ShardId, M)> {
        let m = self.inner.inbox.recv().await;
        if m.is_some() {
            self.inner.received.inc(self.inner.id);
        }
        m
    }

    /// Like [`Shard::recv`], but gives up after `timeout` (so a loop can check
    /// [`Shard::shutting_down`]).
    pub async fn recv_timeout(&self, timeout: Duration) -> Recv<M> {
        let r = glommio::timer::timeout(timeout, async { Ok(self.inner.inbox.recv().await) }).await;
        match r {
            Ok(Some((from, m))) => {
                self.inner.received.inc(self.inner.id);
                Recv::Msg(from, m)
            }
            Ok(None) => Recv::Closed,
            Err(_) => Recv::TimedOut,
        }
    }

    /// A message that is already waiting, without waiting for one: `None` when none is
    /// (the inbox is empty but open), else like [`Shard::recv_timeout`].
    pub fn try_recv(&self) -> Option<Recv<M>> {
        let fut = std::pin::pin!(self.inner.inbox.recv());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match fut.poll(&mut cx) {
            std::task::Poll::Pending => None,
            std::task::Poll::Ready(Some((from, m))) => {
                self.inner.received.inc(self.inner.id);
                Some(Recv::Msg(from, m))
            }
            std::task::Poll::Ready(None) => Some(Recv::Closed),
        }
    }

    /// Tell every peer this shard will send nothing more; their `recv` ends once all
    /// their peers did so. Idempotent; later sends fail with [`SendError::Closed`].
    pub fn close_outgoing(&self) {
        if !self.inner.outgoing_closed.replace(true) {
            for s in self.inner.senders.iter().flatten() {
                s.close();
            }
        }
    }

    /// True once SIGINT/SIGTERM arrived or any shard called [`Shard::request_shutdown`]:
    /// long-running loops should stop taking new work, flush, and return.
    pub fn shutting_down(&self) -> bool {
        self.inner.shutdown.load(Ordering::Relaxed)
    }

    /// Ask every shard to shut down.
    pub fn request_shutdown(&self) {
        self.inner.shutdown.store(true, Ordering::Relaxed);
    }

    /// The shared shutdown flag (e.g. to hand to a non-shard thread).
    pub fn shutdown_flag(&self) -> Arc<AtomicBool> {
        self.inner.shutdown.clone()
    }
}

fn map_err<M>(to: ShardId, e: GlommioError<M>) -> SendError<M> {
    match e {
        GlommioError::WouldBlock(ResourceType::Channel(msg)) => SendError::Full { to, msg },
        GlommioError::Closed(ResourceType::Channel(msg)) => SendError::Closed { to, msg },
        // The shared channel only ever returns the two above with the message inside;
        // anything else has lost the message, which the channel API never does.
        other => panic!(
            "unexpected channel error sending to shard {}: {other}",
            to.0
        ),
    }
}

#[derive(Default)]
struct GateState {
    ready: usize,
    failed: Vec<RuntimeError>,
    go: Option<bool>,
}

struct Gate {
    state: Mutex<GateState>,
    cv: Condvar,
}

impl Gate {
    fn report(&self, res: Result<(), RuntimeError>) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match res {
            Ok(()) => st.ready += 1,
            Err(e) => st.failed.push(e),
        }
        self.cv.notify_all();
        loop {
            if let Some(go) = st.go {
                return go;
            }
            st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

type ChannelEnds<M> = (Vec<Option<SharedSender<M>>>, Vec<Option<SharedReceiver<M>>>);

fn build_mesh<M: Send + 'static>(n: usize, capacity: usize) -> Vec<ChannelEnds<M>> {
    let mut ends: Vec<ChannelEnds<M>> = (0..n)
        .map(|_| {
            (
                (0..n).map(|_| None).collect(),
                (0..n).map(|_| None).collect(),
            )
        })
        .collect();
    for from in 0..n {
        for to in 0..n {
            if from != to {
                let (tx, rx) = shared_channel::new_bounded(capacity);
                ends[from].0[to] = Some(tx);
                ends[to].1[from] = Some(rx);
            }
        }
    }
    ends
}

struct SignalGuard(Vec<signal_hook::SigId>);

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for id in self.0.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

fn install_signals(flag: &Arc<AtomicBool>) -> Result<SignalGuard, RuntimeError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut ids = Vec::new();
    for sig in [SIGINT, SIGTERM] {
        // The conditional exit is registered first so the first signal only sets the flag.
        ids.push(
            signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone())
                .map_err(RuntimeError::Signal)?,
        );
        ids.push(signal_hook::flag::register(sig, flag.clone()).map_err(RuntimeError::Signal)?);
    }
    Ok(SignalGuard(ids))
}

/// Run `f` on every shard and return the results in shard order.
///
/// Each shard is a glommio `LocalExecutor` on its own thread pinned with
/// `Placement::Fixed(core)`. All executors are created first; if any fails, none runs `f`
/// and the first error is returned. SIGINT/SIGTERM (when `cfg.handle_signals`) set the
/// flag seen by [`Shard::shutting_down`]; `f` decides how to wind down.
pub fn run<M, R, F, Fut>(cfg: &RuntimeConfig, f: F) -> Result<Vec<R>, RuntimeError>
where
    M: Send + 'static,
    R: Send + 'static,
    F: Fn(Shard<M>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = R> + 'static,
{
    run_with_flag(cfg, Arc::new(AtomicBool::new(false)), f)
}

/// [`run`] with a caller-provided shutdown flag (set it from another thread to stop the
/// shards).
pub fn run_with_flag<M, R, F, Fut>(
    cfg: &RuntimeConfig,
    shutdown: Arc<AtomicBool>,
    f: F,
) -> Result<Vec<R>, RuntimeError>
where
    M: Send + 'static,
    R: Send + 'static,
    F: Fn(Shard<M>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = R> + 'static,
{
    let n = cfg.shards;
    if cfg.channel_capacity == 0 || cfg.channel_capacity > MAX_CHANNEL_CAPACITY {
        return Err(RuntimeError::BadChannelCapacity {
            capacity: cfg.channel_capacity,
        });
    }
    let cores = placement(n, cfg.cores.as_deref(), &allowed_cores())?;
    let budget = LockedMemoryBudget::current().map_err(|e| RuntimeError::Start {
        shard: 0,
        core: cores[0],
        message: format!("cannot read the locked-memory budget: {e}"),
    })?;
    let io_memory = io_memory_per_shard(n, cfg.io_memory_bytes, budget)?;
    tracing::debug!(
        shards = n,
        ?cores,
        io_memory_bytes = io_memory,
        ?budget,
        "starting shards"
    );
    crate::metrics::set_shard_count(n);

    let _signals = if cfg.handle_signals {
        Some(install_signals(&shutdown)?)
    } else {
        None
    };

    let gate = Arc::new(Gate {
        state: Mutex::new(GateState::default()),
        cv: Condvar::new(),
    });
    let mut handles = Vec::with_capacity(n);
    let mut spawn_error = None;
    for (i, (senders, receivers)) in build_mesh::<M>(n, cfg.channel_capacity)
        .into_iter()
        .enumerate()
    {
        let core = cores[i];
        let gate = gate.clone();
        let f = f.clone();
        let shutdown = shutdown.clone();
        let capacity = cfg.channel_capacity;
        let thread_name = format!("{}-{i}", cfg.name);
        let spawned =
            std::thread::Builder::new()
                .name(thread_name.clone())
                .spawn(move || -> Option<R> {
                    let made = LocalExecutorBuilder::new(Placement::Fixed(core))
                        .name(&thread_name)
                        .io_memory(io_memory)
                        .make();
                    let ex = match made {
                        Ok(ex) => {
                            if !gate.report(Ok(())) {
                                return None;
                            }
                            ex
                        }
                        Err(e) => {
                            gate.report(Err(RuntimeError::Start {
                                shard: i,
                                core,
                                message: e.to_string(),
                            }));
                            return None;
                        }
                    };
                    // The heartbeat goes first, before any other task: see
                    // `catchup_io::exec` for the glommio stall it bounds.
                    Some(catchup_io::exec::run(
                        &ex,
                        shard_main(
                            i, n, core, io_memory, capacity, senders, receivers, shutdown, f,
                        ),
                    ))
                });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                spawn_error = Some(RuntimeError::Start {
                    shard: i,
                    core,
                    message: format!("cannot spawn thread: {e}"),
                });
                break;
            }
        }
    }

    // Wait until every started thread has made its executor (or failed), then let them
    // all run, or none.
    let first_error = {
        let mut st = gate.state.lock().unwrap_or_else(|p| p.into_inner());
        while st.ready + st.failed.len() < handles.len() {
            st = gate.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        let go = st.failed.is_empty() && spawn_error.is_none();
        st.go = Some(go);
        gate.cv.notify_all();
        if st.failed.is_empty() {
            spawn_error
        } else {
            Some(st.failed.remove(0))
        }
    };

    let mut results = Vec::with_capacity(n);
    let mut panic_error = None;
    for (i, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Some(r)) => results.push(r),
            Ok(None) => {}
            Err(p) => {
                let message = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic".into());
                panic_error.get_or_insert(RuntimeError::ShardPanicked { shard: i, message });
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    if let Some(e) = panic_error {
        return Err(e);
    }
    Ok(results)
}

#[allow(clippy::too_many_arguments)]
async fn shard_main<M, R, F, Fut>(
    id: usize,
    count: usize,
    core: usize,
    io_memory_bytes: usize,
    capacity: usize,
    senders: Vec<Option<SharedSender<M>>>,
    receivers: Vec<Option<SharedReceiver<M>>>,
    shutdown: Arc<AtomicBool>,
    f: F,
) -> R
where
    M: Send + 'static,
    F: Fn(Shard<M>) -> Fut,
    Fut: Future<Output = R>,
{
    // Every connect waits for the other end to connect too, so all of them run at once.
    let tx_tasks: Vec<_> = senders
        .into_iter()
        .map(|s| s.map(|s| glommio::spawn_local(s.connect())))
        .collect();
    let rx_tasks: Vec<_> = receivers
        .into_iter()
        .map(|r| r.map(|r| glommio::spawn_local(r.connect())))
        .collect();
    let mut connected_tx = Vec::with_capacity(count);
    for t in tx_tasks {
        connected_tx.push(match t {
            Some(t) => Some(t.await),
            None => None,
        });
    }
    let (inbox_tx, inbox) = local_channel::new_bounded::<(ShardId, M)>(capacity);
    let inbox_tx: Rc<LocalSender<(ShardId, M)>> = Rc::new(inbox_tx);
    for (from, t) in rx_tasks.into_iter().enumerate() {
        let Some(t) = t else { continue };
        let rx = t.await;
        let inbox_tx = inbox_tx.clone();
        // One forwarder per peer keeps that peer's order and passes back-pressure on:
        // while the inbox is full it stops draining the peer's channel.
        glommio::spawn_local(async move {
            while let Some(m) = rx.recv().await {
                if inbox_tx.send((ShardId(from), m)).await.is_err() {
                    break;
                }
            }
        })
        .detach();
    }
    drop(inbox_tx);
    let shard = Shard {
        inner: Rc::new(Inner {
            id: ShardId(id),
            count,
            core,
            io_memory_bytes,
            senders: connected_tx,
            inbox,
            outgoing_closed: Cell::new(false),
            shutdown,
            sent: crate::metrics::counter(
                "catchup_shard_messages_sent_total",
                "Messages this shard sent to other shards over the mesh.",
            ),
            received: crate::metrics::counter(
                "catchup_shard_messages_received_total",
                "Messages this shard received from other shards over the mesh.",
            ),
        }),
    };
    // Every event the shard logs carries `shard = id`.
    let span = tracing::info_span!("shard", shard = id, core = core);
    let out = tracing::Instrument::instrument(f(shard.clone()), span).await;
    shard.close_outgoing();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_wraps_and_checks() {
        assert_eq!(
            placement(5, Some(&[0, 1]), &[0, 1]).unwrap(),
            vec![0, 1, 0, 1, 0]
        );
        assert_eq!(placement(2, None, &[3, 7]).unwrap(), vec![3, 7]);
        assert!(matches!(
            placement(2, Some(&[0, 9]), &[0, 1]),
            Err(RuntimeError::CoreNotAllowed { core: 9, .. })
        ));
        assert!(matches!(
            placement(0, None, &[0]),
            Err(RuntimeError::BadShardCount { shards: 0 })
        ));
        assert!(matches!(
            placement(1, Some(&[]), &[0]),
            Err(RuntimeError::NoCores)
        ));
    }

    #[test]
    fn io_memory_fits_the_budget() {
        let capped = LockedMemoryBudget {
            limit_bytes: Some(8 << 20),
            cap_ipc_lock: false,
        };
        let free = LockedMemoryBudget {
            limit_bytes: None,
            cap_ipc_lock: true,
        };
        assert_eq!(
            io_memory_per_shard(4, None, free).unwrap(),
            DEFAULT_IO_MEMORY_BYTES
        );
        for shards in 1..=64 {
            let m = io_memory_per_shard(shards, None, capped).unwrap();
            assert_eq!(m % 4096, 0);
            assert!(m >= MIN_IO_MEMORY_BYTES);
            if shards <= 64 {
                assert!(m * shards * 3 <= (8 << 20) / 2 || m == MIN_IO_MEMORY_BYTES);
            }
        }
        let low = LockedMemoryBudget {
            limit_bytes: Some(64 << 10),
            cap_ipc_lock: false,
        };
        assert!(matches!(
            io_memory_per_shard(1, None, low),
            Err(RuntimeError::MemlockTooLow { .. })
        ));
    }
}
