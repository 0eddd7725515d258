//! How every glommio executor in catchup runs its work.
//!
//! glommio 0.9 can park an executor that still has runnable tasks: when the preemption
//! timer (or any other completion on the latency ring) fires between the reactor arming
//! it and the scheduler's first look at the task queues, the scheduler returns "nothing
//! ran" and the executor goes to sleep in `io_uring_enter` with its tasks still queued.
//! Nothing of its own wakes it again, so unless a timer, an I/O completion or a foreign
//! wake arrives, it sleeps for ever; on a loaded machine this stalled whole shard meshes.
//!
//! [`keep_awake`] arms a timer that never stops: the executor then never sleeps longer than
//! [`HEARTBEAT`], so the race costs at most that much instead of the process. Call it
//! first thing in every executor ([`run`] does), before any other task is spawned.
//!
//! The heartbeat cannot cover the executor's very first scheduling round, before its first
//! task has run and armed it. That round uses the builder's preemption timer, so executors
//! keep glommio's default of 100 ms there (a thread would have to lose the CPU for that
//! long between two adjacent steps); shorter latency targets belong to task queues created
//! after the heartbeat is armed (`Latency::Matters`), as the snapshot index does.

use std::future::Future;
use std::time::Duration;

/// Longest an executor sleeps without looking at its task queues again.
pub const HEARTBEAT: Duration = Duration::from_millis(50);

/// Spawn the heartbeat task on the current executor (see the module docs). It is detached
/// and ends with the executor.
pub fn keep_awake() {
    glommio::spawn_local(async {
        loop {
            glommio::timer::sleep(HEARTBEAT).await;
        }
    })
    .detach();
}

/// `ex.run(fut)` with the heartbeat armed first. The future is moved to the heap at once
/// (sync state machines are large; debug builds copy by-value futures on the stack).
pub fn run<T>(ex: &glommio::LocalExecutor, fut: impl Future<Output = T>) -> T {
    let fut = Box::pin(fut);
    ex.run(async move {
        keep_awake();
        fut.await
    })
}

/// Run `fut` to completion on a new unpinned executor on this thread, heartbeat armed
/// first; for tools and tests. Panics if no executor can start here (no io_uring).
pub fn run_unbound<T>(fut: impl Future<Output = T>) -> T {
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .unwrap_or_else(|e| panic!("cannot start a glommio executor: {e}"));
    run(&ex, fut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Many executors, each woken from other threads many times while the machine is
    /// busy, with a 200 µs preemption timer: every one finishes. Without the heartbeat
    /// this stalled in about half the runs under load.
    ///
    /// The test's 16 busy threads on a small machine are themselves the load that can take
    /// a thread off the CPU for glommio's default 100 ms during an executor's first
    /// scheduling round, which the heartbeat cannot cover (see the module docs); so the
    /// builder's timer, which only that round uses here, is set to 10 s. The 200 µs queue
    /// still exercises the race in every later round.
    #[test]
    fn executors_woken_from_other_threads_finish() {
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::sync::Arc;
        let (done_tx, done_rx) = mpsc::channel();
        // Items each executor received so far: a hang is an executor whose count stops
        // moving, not one that is merely slow on a loaded machine.
        let received: Arc<Vec<AtomicU32>> = Arc::new((0..8).map(|_| AtomicU32::new(0)).collect());
        let mut threads = Vec::new();
        for i in 0..8 {
            let done_tx = done_tx.clone();
            let received = received.clone();
            threads.push(std::thread::spawn(move || {
                let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                    .preempt_timer(Duration::from_secs(10))
                    .make()
                    .expect("executor starts");
                let n = run(&ex, async move {
                    // A 200 µs latency queue shortens the preemption timer to 200 µs once
                    // the heartbeat is armed, so the race is hit often.
                    let tq = glommio::executor().create_task_queue(
                        glommio::Shares::default(),
                        glommio::Latency::Matters(Duration::from_micros(200)),
                        "exec-test",
                    );
                    let work = async move {
                        let (tx, rx) = flume::bounded::<u32>(1);
                        let feeder = std::thread::spawn(move || {
                            for k in 0..5_000u32 {
                                tx.send(k).unwrap();
                            }
                        });
                        let mut n = 0u32;
                        while let Ok(k) = rx.recv_async().await {
                            assert_eq!(k, n);
                            n += 1;
                            received[i].store(n, Ordering::Relaxed);
                        }
                        feeder.join().unwrap();
                        n
                    };
                    glommio::spawn_local_into(work, tq)
                        .expect("spawn into the latency queue")
                        .await
                });
                done_tx.send((i, n)).unwrap();
            }));
        }
        drop(done_tx);
        let counts =
            || -> Vec<u32> { received.iter().map(|c| c.load(Ordering::Relaxed)).collect() };
        let (mut finished, mut last, mut moved_at) = (0, counts(), std::time::Instant::now());
        while finished < 8 {
            match done_rx.recv_timeout(Duration::from_secs(1)) {
                Ok((i, n)) => {
                    assert_eq!(n, 5_000, "executor {i}");
                    finished += 1;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let now = counts();
                    if now != last {
                        (last, moved_at) = (now, std::time::Instant::now());
                    }
                    assert!(
                        moved_at.elapsed() < Duration::from_secs(60),
                        "executors stalled: items received {last:?} of 5,000 each, none for 60 s"
                    );
                }
                Err(e) => panic!("an executor thread died: {e}"),
            }
        }
        for t in threads {
            t.join().unwrap();
        }
    }
}
