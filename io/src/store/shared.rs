//! [`SharedStore`]: one shard's store shared by that shard's tasks, with group commit.
//!
//! Any number of tasks on the shard hold clones of the handle and call
//! [`SharedStore::put_durable`], which resolves only after the `fdatasync` covering its
//! record has returned. At most one commit is in flight: the first writer that finds no
//! commit running becomes the leader, writes out every pending byte and syncs; records
//! put while that sync runs collect in the write buffer and are covered together by the
//! next commit, led by one of their writers. So N concurrent writers cost far fewer than
//! N `fdatasync`s (see [`SharedStoreStats::group_commits`]).
//!
//! Access to the underlying [`Store`] is serialised by an async lock (a one-permit
//! semaphore) held across its I/O; the `fdatasync` itself runs outside the lock.
//! A failed write or sync poisons the store for every handle: no later put is
//! acknowledged on top of it. Futures of this type should not be dropped while they wait
//! on I/O of the store (like the `Store` methods themselves); dropping one that waits for
//! a commit is harmless.

use std::cell::{Cell, RefCell, RefMut};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use glommio::sync::{Permit, Semaphore};

use super::{io_err, Store, StoreError, StoreOptions, StoreStats};

/// A clonable, shard-local handle to one [`Store`] (not `Send`).
#[derive(Clone)]
pub struct SharedStore {
    inner: Rc<Inner>,
}

/// Counters of a [`SharedStore`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedStoreStats {
    /// The store's own counters; `syncs` includes the group commits' `fdatasync`s.
    pub store: StoreStats,
    /// `put_durable` calls that returned `Ok`.
    pub durable_puts: u64,
    /// Group commits that ran an `fdatasync` (each covered one or more waiting puts).
    pub group_commits: u64,
}

struct Inner {
    dir: PathBuf,
    /// `None` once closed. Borrowed only while `lock` is held.
    store: RefCell<Option<Store>>,
    lock: Semaphore,
    /// A leader's commit is in flight.
    committing: Cell<bool>,
    /// Records (in `StoreStats::appended_records` numbering) known durable.
    durable_seq: Cell<u64>,
    group_commits: Cell<u64>,
    durable_puts: Cell<u64>,
    /// First write or sync error seen by a commit; the store refuses writes after it.
    failed: RefCell<Option<String>>,
    /// Bumped at the end of every commit; waiters compare against it.
    commit_gen: Cell<u64>,
    /// Tasks waiting for the end of the commit in flight (at most one entry per poll of a
    /// waiting task; cleared at every commit end).
    waiters: RefCell<Vec<Waker>>,
}

/// Exclusive access to the store while the permit is held.
struct Guard<'a> {
    // Dropped before the permit (fields drop in declaration order).
    store: RefMut<'a, Option<Store>>,
    _permit: Permit<'a>,
}

impl Guard<'_> {
    fn store(&mut self) -> &mut Store {
        self.store
            .as_mut()
            .expect("checked when the guard was taken")
    }
}

/// Resolves once the commit generation differs from `gen`.
struct CommitEnd<'a> {
    inner: &'a Inner,
    gen: u64,
}

impl Future for CommitEnd<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.inner.commit_gen.get() != self.gen {
            return Poll::Ready(());
        }
        self.inner.waiters.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    }
}

/// Ends the leader's commit even if its future is dropped.
struct LeaderGuard<'a>(&'a Inner);

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        self.0.committing.set(false);
        self.0.commit_ended();
    }
}

impl Inner {
    fn commit_ended(&self) {
        self.commit_gen.set(self.commit_gen.get().wrapping_add(1));
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }

    fn failed_error(&self) -> Option<StoreError> {
        self.failed.borrow().as_ref().map(|e| StoreError::Poisoned {
            dir: self.dir.clone(),
            first_error: e.clone(),
        })
    }

    fn fail(&self, e: &StoreError) {
        let mut f = self.failed.borrow_mut();
        if f.is_none() {
            *f = Some(e.to_string());
        }
    }

    async fn lock(&self) -> Result<Guard<'_>, StoreError> {
        let closed = || StoreError::Closed {
            dir: self.dir.clone(),
        };
        let permit = self.lock.acquire_permit(1).await.map_err(|_| closed())?;
        let mut store = self.store.borrow_mut();
        let Some(s) = store.as_mut() else {
            return Err(closed());
        };
        if let Some(e) = self.failed.borrow().as_ref() {
            s.poison_with(e.clone());
        }
        Ok(Guard {
            store,
            _permit: permit,
        })
    }

    /// Wait until every record up to `seq` is durable, leading commits as needed.
    async fn wait_durable(&self, seq: u64) -> Result<(), StoreError> {
        // Bounded: every round either returns, waits for a commit in flight to end, or
        // runs one commit that makes at least `seq` durable (or fails).
        loop {
            if self.durable_seq.get() >= seq {
                return Ok(());
            }
            if let Some(e) = self.failed_error() {
                return Err(e);
            }
            if self.committing.get() {
                let gen = self.commit_gen.get();
                CommitEnd { inner: self, gen }.await;
                continue;
            }
            self.committing.set(true);
            let _leader = LeaderGuard(self);
            // The tasks ready to append run first and join this commit: a write and
            // `fdatasync` that complete at their first poll (an idle, fast disk) would
            // otherwise make every commit hold only its leader's records.
            YieldOnce(false).await;
            let pending = {
                let mut g = self.lock().await?;
                let s = g.store();
                match s.commit_write().await {
                    Ok(Some(p)) => p,
                    // Everything appended is written out already (by a roll, or by a
                    // commit whose leader was dropped before its sync ended): sync it.
                    Ok(None) => s.sync_target(),
                    Err(e) => {
                        self.fail(&e);
                        return Err(e);
                    }
                }
            };
            if pending.seq <= self.durable_seq.get() {
                continue;
            }
            match pending
                .file
                .fdatasync()
                .await
                .map_err(io_err("syncing", &pending.path))
            {
                Ok(()) => {
                    self.durable_seq
                        .set(self.durable_seq.get().max(pending.seq));
                    self.group_commits.set(self.group_commits.get() + 1);
                }
                Err(e) => {
                    tracing::error!(dir = %self.dir.display(), error = %e, "store group commit failed; refusing further writes");
                    self.fail(&e);
                    return Err(e);
                }
            }
        }
    }
}

impl SharedStore {
    /// Share an open store among this shard's tasks.
    pub fn new(store: Store) -> SharedStore {
        let durable = store.synced_seq;
        SharedStore {
            inner: Rc::new(Inner {
                dir: store.dir.clone(),
                store: RefCell::new(Some(store)),
                lock: Semaphore::new(1),
                committing: Cell::new(false),
                durable_seq: Cell::new(durable),
                group_commits: Cell::new(0),
                durable_puts: Cell::new(0),
                failed: RefCell::new(None),
                commit_gen: Cell::new(0),
                waiters: RefCell::new(Vec::new()),
            }),
        }
    }

    /// [`Store::open`], shared.
    pub async fn open(
        dir: impl AsRef<Path>,
        opts: StoreOptions,
    ) -> Result<SharedStore, StoreError> {
        Ok(SharedStore::new(Store::open(dir, opts).await?))
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Append a record and resolve once it is durable: after the `fdatasync` of a group
    /// commit covering it has returned. Returns `false` when `kind` is content-addressed
    /// and `key` was present already (then it resolves once that earlier record, and
    /// everything put before this call, is durable).
    pub async fn put_durable(
        &self,
        kind: u8,
        key: &[u8],
        value: &[u8],
    ) -> Result<bool, StoreError> {
        let (added, seq) = {
            let mut g = self.inner.lock().await?;
            let s = g.store();
            let r = s.put(kind, key, value).await;
            if let Err(e) = &r {
                if s.poisoned.is_some() {
                    self.inner.fail(e);
                }
            }
            (r?, s.stats.appended_records)
        };
        self.inner.wait_durable(seq).await?;
        self.inner
            .durable_puts
            .set(self.inner.durable_puts.get() + 1);
        Ok(added)
    }

    /// Append a record without waiting for durability (see [`Store::put`]); a later
    /// [`SharedStore::flush`] or `put_durable` of any handle makes it durable.
    pub async fn put(&self, kind: u8, key: &[u8], value: &[u8]) -> Result<bool, StoreError> {
        let mut g = self.inner.lock().await?;
        let s = g.store();
        let r = s.put(kind, key, value).await;
        if let Err(e) = &r {
            if s.poisoned.is_some() {
                self.inner.fail(e);
            }
        }
        r
    }

    /// Durability barrier through the group commit: every record put (by any handle)
    /// before this call is durable when it returns `Ok`.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let seq = {
            let mut g = self.inner.lock().await?;
            g.store().stats.appended_records
        };
        self.inner.wait_durable(seq).await
    }

    /// [`Store::get`].
    pub async fn get(&self, kind: u8, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let mut g = self.inner.lock().await?;
        g.store().get(kind, key).await
    }

    /// [`Store::try_contains`].
    pub async fn contains(&self, kind: u8, key: &[u8]) -> Result<bool, StoreError> {
        let mut g = self.inner.lock().await?;
        g.store().try_contains(kind, key)
    }

    /// [`Store::len_of_kind`].
    pub async fn len_of_kind(&self, kind: u8) -> Result<usize, StoreError> {
        let mut g = self.inner.lock().await?;
        Ok(g.store().len_of_kind(kind))
    }

    /// Counters since open.
    pub async fn stats(&self) -> Result<SharedStoreStats, StoreError> {
        let mut g = self.inner.lock().await?;
        let mut store = g.store().stats();
        store.syncs += self.inner.group_commits.get();
        Ok(SharedStoreStats {
            store,
            durable_puts: self.inner.durable_puts.get(),
            group_commits: self.inner.group_commits.get(),
        })
    }

    /// Wait for the commit in flight, then close the store ([`Store::close`]: flush and
    /// checkpoint). Other handles get [`StoreError::Closed`] afterwards; their
    /// `put_durable` calls waiting at this point resolve `Ok` once the close has flushed.
    pub async fn close(self) -> Result<(), StoreError> {
        let inner = &*self.inner;
        // Bounded: waits out at most the commits that start while it waits for the lock.
        let store = loop {
            if inner.committing.get() {
                let gen = inner.commit_gen.get();
                CommitEnd { inner, gen }.await;
                continue;
            }
            let mut g = inner.lock().await?;
            if inner.committing.get() {
                continue;
            }
            break g.store.take().expect("checked by lock");
        };
        let appended = store.stats.appended_records;
        store.close().await?;
        inner.durable_seq.set(inner.durable_seq.get().max(appended));
        inner.commit_ended();
        Ok(())
    }
}

/// Ready at its second poll: the executor's other ready tasks run in between.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
