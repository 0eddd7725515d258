//! [`Notify`]: wakes one task of this executor when another task of the same executor has
//! work for it, so that a shard loop can await "a local event, a mesh message or the next
//! deadline, whichever comes first" instead of polling on a timer.
//!
//! ```
//! use std::rc::Rc;
//! use catchup_shards::notify::Notify;
//!
//! glommio::LocalExecutorBuilder::default()
//!     .spawn(|| async {
//!         let n = Rc::new(Notify::default());
//!         let m = n.clone();
//!         glommio::spawn_local(async move { m.notify() }).detach();
//!         n.notified().await; // returns once the task above ran
//!     })
//!     .unwrap()
//!     .join()
//!     .unwrap();
//! ```

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// A wake-up flag with one waiter, for tasks of one executor (not `Send`). A `notify`
/// before the wait is kept: the next [`Notify::notified`] returns at once. Several
/// `notify` calls before a wait count as one.
#[derive(Default)]
pub struct Notify {
    pending: Cell<bool>,
    waiter: RefCell<Option<Waker>>,
}

impl Notify {
    /// Mark work pending and wake the waiting task, if any.
    pub fn notify(&self) {
        self.pending.set(true);
        if let Some(w) = self.waiter.borrow_mut().take() {
            w.wake();
        }
    }

    /// Resolves once [`Notify::notify`] was called since the last wait returned. Safe to
    /// drop before it resolves (a notify meanwhile stays pending).
    pub fn notified(&self) -> Notified<'_> {
        Notified { n: self }
    }
}

/// The future of [`Notify::notified`].
pub struct Notified<'a> {
    n: &'a Notify,
}

impl Future for Notified<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.n.pending.replace(false) {
            return Poll::Ready(());
        }
        *self.n.waiter.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;
    use std::time::Duration;

    #[test]
    fn a_notify_before_the_wait_is_kept_and_several_count_once() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let n = Notify::default();
                n.notify();
                n.notify();
                n.notified().await;
                // The second notify was folded into the first: nothing is pending now.
                let r = glommio::timer::timeout(Duration::from_millis(20), async {
                    n.notified().await;
                    Ok(())
                })
                .await;
                assert!(r.is_err(), "no notify was pending");
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn a_waiting_task_is_woken_by_another_task() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let n = Rc::new(Notify::default());
                let m = n.clone();
                glommio::spawn_local(async move {
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                    m.notify();
                })
                .detach();
                let r = glommio::timer::timeout(Duration::from_secs(5), async {
                    n.notified().await;
                    Ok(())
                })
                .await;
                assert!(r.is_ok(), "the waiter was woken");
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
