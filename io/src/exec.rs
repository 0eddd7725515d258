//! How every glommio executor in catchup runs its work.
//!
//! glommio 0.9.0 as published parks an executor that still has runnable tasks: when the
//! preemption timer (or any other completion on the latency ring) fires between the
//! reactor arming it and the scheduler's first look at the task queues, the scheduler
//! returns "nothing ran" and the executor goes to sleep in `io_uring_enter` with its tasks
//! still queued. Nothing of its own wakes it again, so unless a timer, an I/O completion or
//! a foreign wake arrives, it sleeps for ever. The workspace builds glommio from
//! `io/vendor/glommio` with that fixed (the first queue of a round always runs one task;
//! see its `README.catchup.md`); the tests below hold the regression test.
//!
//! [`keep_awake`] arms a timer that never stops, so an executor never sleeps longer than
//! [`HEARTBEAT`] without looking at its task queues. It was the first answer to the stall
//! above and is kept as a backstop, but it could not close it: the heartbeat's timer is
//! spent when it fires and armed again only when the heartbeat task runs, so a stall that
//! left the heartbeat task itself queued left no timer to end it (this hung the snapshot
//! index's shards while the feeding thread waited for their totals). Call it first thing in
//! every executor ([`run`] does), before any other task is spawned.

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
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::mpsc;
    use std::sync::Arc;

    /// An executor whose preemption timer fires before the first task of a round ran still
    /// runs its tasks instead of parking with them queued: a 1 ns preemption timer fires in
    /// nearly every round, so an executor that parks then never finishes. No heartbeat
    /// here: the executor itself must not park with runnable tasks.
    #[test]
    fn an_executor_preempted_before_its_tasks_ran_still_runs_them() {
        const ROUNDS: u32 = 1_000;
        let done = Arc::new(AtomicU32::new(0));
        let d = done.clone();
        let worker = std::thread::spawn(move || {
            let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .preempt_timer(Duration::from_nanos(1))
                .make()
                .expect("executor starts");
            for _ in 0..ROUNDS {
                ex.run(async {
                    // A second task, so the round has queued work besides the main future.
                    glommio::spawn_local(async {}).await;
                });
                d.fetch_add(1, Ordering::Relaxed);
            }
        });
        // A hang is a count that stops moving, not a slow machine.
        let (mut last, mut moved_at) = (0, std::time::Instant::now());
        while !worker.is_finished() {
            std::thread::sleep(Duration::from_millis(100));
            let now = done.load(Ordering::Relaxed);
            if now != last {
                (last, moved_at) = (now, std::time::Instant::now());
            }
            assert!(
                moved_at.elapsed() < Duration::from_secs(30),
                "executor parked with runnable tasks: {last} of {ROUNDS} rounds finished, none for 30 s"
            );
        }
        worker.join().expect("executor thread");
        assert_eq!(done.load(Ordering::Relaxed), ROUNDS);
    }

    /// Many executors, each woken from other threads many times while the machine is
    /// busy, with a 200 µs preemption timer: every one finishes. With the published
    /// glommio and no heartbeat this stalled in about half the runs under load.
    ///
    /// The builder's timer, which only an executor's first scheduling round uses here, is
    /// 10 s: with the published glommio the test's 16 busy threads could take a thread off
    /// the CPU for the default 100 ms in that round, before the heartbeat is armed. The
    /// 200 µs queue exercises the race in every later round.
    #[test]
    fn executors_woken_from_other_threads_finish() {
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
