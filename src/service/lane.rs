//! The service's blocking capacity: a bounded number of workers, each
//! piece of storage work with a deadline.
//!
//! Storage work (a mount, an external tool, a Ceph call) can hang for as
//! long as its backend does. It never runs on the async executor: it
//! runs on a blocking thread that holds one of the service's `workers`
//! permits, so a hung backend can take at most this service's permits,
//! never another service's. Past its deadline the request is answered
//! with [`ServiceError::Stuck`] naming the volume and the step; the work
//! goes on in the background, keeps the volume's locks until it returns,
//! and is listed by [`Lane::stuck`] (`berth status`, `STATUS=`). When it
//! returns, its volume is queued for [`Lane::take_late`] so the service
//! reconciles its in-memory view with what the work left on disk.
//!
//! Work that would make a result durable calls [`Ticket::commit`] first:
//! once the deadline has passed the commit is refused and the work rolls
//! back, so a client told "failed" never finds the operation done.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};
use tracing::{info, warn};

use super::lock::NameGuard;
use super::{ServiceError, ServiceResult};
use crate::config::Limits;
use crate::step;

/// What a piece of storage work is (its name and its deadline class).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Create (including clones and copies from a snapshot).
    Create,
    /// Mount.
    Mount,
    /// Unmount.
    Unmount,
    /// Remove.
    Remove,
    /// Snapshot create.
    Snapshot,
    /// Snapshot remove.
    SnapshotRemove,
    /// Resize.
    Resize,
    /// A read of the shared catalog.
    Catalog,
    /// A write or read of state records.
    Record,
}

impl Op {
    /// The word logs and errors use.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Mount => "mount",
            Op::Unmount => "unmount",
            Op::Remove => "remove",
            Op::Snapshot => "snapshot",
            Op::SnapshotRemove => "snapshot remove",
            Op::Resize => "resize",
            Op::Catalog => "catalog lookup",
            Op::Record => "state record update",
        }
    }

    fn deadline(self, l: &Limits) -> Duration {
        match self {
            Op::Create | Op::Snapshot => l.create_timeout,
            Op::Mount => l.mount_timeout,
            _ => l.timeout,
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Locks a piece of work holds; handed to the work when it outlives its
/// deadline, so nothing else touches the volume until it returns.
#[derive(Debug, Default)]
pub struct Held(pub(super) Vec<NameGuard>);

const RUNNING: u8 = 0;
const COMMITTED: u8 = 1;
const ABANDONED: u8 = 2;

/// Decides, once, whether work that is about to make its result durable
/// may do so (its request is still waiting) or must roll back.
#[derive(Debug, Clone)]
pub struct Ticket(Arc<AtomicU8>);

impl Ticket {
    fn new() -> Self {
        Ticket(Arc::new(AtomicU8::new(RUNNING)))
    }

    /// `Ok` when the request still waits for this work: from now on it
    /// waits for the end whatever the deadline. `Err` when the request
    /// was already answered with an error: roll back.
    pub fn commit(&self, volume: &impl std::fmt::Display) -> ServiceResult<()> {
        match self
            .0
            .compare_exchange(RUNNING, COMMITTED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) | Err(COMMITTED) => Ok(()),
            Err(_) => Err(ServiceError::Abandoned {
                volume: volume.to_string(),
            }),
        }
    }

    /// A ticket for work that has no deadline (start-up).
    pub fn unbounded() -> Self {
        Ticket(Arc::new(AtomicU8::new(COMMITTED)))
    }

    fn abandon(&self) -> bool {
        self.0
            .compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// Work past its deadline, as status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StuckView {
    /// The volume (or snapshot) it works on.
    pub volume: String,
    /// The operation.
    pub op: Op,
    /// The step it is at.
    pub step: String,
    /// Time since it started.
    pub elapsed: Duration,
}

impl StuckView {
    /// One line for `STATUS=` and `berth status`.
    pub fn line(&self) -> String {
        format!(
            "STUCK {} of {} at {} for {} s",
            self.op,
            self.volume,
            quoted(&self.step),
            self.elapsed.as_secs()
        )
    }
}

fn quoted(step: &str) -> String {
    if step.is_empty() {
        "its first step".into()
    } else {
        format!("step \"{step}\"")
    }
}

struct StuckEntry {
    volume: String,
    op: Op,
    slot: step::Slot,
    started: Instant,
}

/// One service's blocking capacity.
pub struct Lane {
    service: String,
    limits: Limits,
    permits: Arc<Semaphore>,
    stuck: Arc<Mutex<BTreeMap<u64, StuckEntry>>>,
    next: AtomicU64,
    late: Arc<Mutex<Vec<String>>>,
    /// Woken when work returns after its deadline.
    pub late_ready: Arc<Notify>,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane")
            .field("service", &self.service)
            .field("workers", &self.limits.workers)
            .finish()
    }
}

impl Lane {
    /// A lane with `limits.workers` workers.
    pub fn new(service: &str, limits: Limits) -> Self {
        Lane {
            service: service.to_string(),
            permits: Arc::new(Semaphore::new(limits.workers)),
            limits,
            stuck: Arc::default(),
            next: AtomicU64::new(1),
            late: Arc::default(),
            late_ready: Arc::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The deadline of `op`.
    pub fn deadline(&self, op: Op) -> Duration {
        op.deadline(&self.limits)
    }

    /// Runs `work` on a worker of this service within `op`'s deadline.
    /// Past it, `held` (the volume's locks) goes with the work and the
    /// caller gets [`ServiceError::Stuck`].
    pub async fn run<T, F>(
        &self,
        op: Op,
        volume: &impl std::fmt::Display,
        held: &mut Held,
        work: F,
    ) -> ServiceResult<T>
    where
        F: FnOnce(&Ticket) -> ServiceResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let started = Instant::now();
        let deadline = self.deadline(op);
        let permit =
            match tokio::time::timeout(deadline, self.permits.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                _ => return Err(self.no_worker(&volume.to_string(), op, deadline)),
            };
        self.run_on(permit, started, op, volume, held, work).await
    }

    /// Like [`Lane::run`] when a worker is free right now; `None`, at
    /// once, when all are busy (a read that can answer from memory
    /// instead of queueing behind stuck work).
    pub async fn run_if_free<T, F>(
        &self,
        op: Op,
        volume: &impl std::fmt::Display,
        held: &mut Held,
        work: F,
    ) -> Option<ServiceResult<T>>
    where
        F: FnOnce(&Ticket) -> ServiceResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        Some(
            self.run_on(permit, Instant::now(), op, volume, held, work)
                .await,
        )
    }

    async fn run_on<T, F>(
        &self,
        permit: tokio::sync::OwnedSemaphorePermit,
        started: Instant,
        op: Op,
        volume: &impl std::fmt::Display,
        held: &mut Held,
        work: F,
    ) -> ServiceResult<T>
    where
        F: FnOnce(&Ticket) -> ServiceResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let deadline = self.deadline(op);
        let volume = volume.to_string();
        let ticket = Ticket::new();
        let slot = step::Slot::default();
        let (t2, s2) = (ticket.clone(), slot.clone());
        let mut handle = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _installed = step::install(s2);
            work(&t2)
        });
        let left = deadline.saturating_sub(started.elapsed());
        let joined = match tokio::time::timeout(left, &mut handle).await {
            Ok(j) => j,
            Err(_) if !ticket.abandon() => handle.await, // committing: wait
            Err(_) => {
                let step = slot.get();
                self.outlive(handle, op, &volume, slot, started, std::mem::take(held));
                return Err(ServiceError::Stuck {
                    volume,
                    op: op.as_str(),
                    step,
                    after: deadline,
                });
            }
        };
        joined.map_err(|e| ServiceError::Internal {
            volume,
            reason: format!("blocking task failed: {e}"),
        })?
    }

    /// Keeps watching work past its deadline: lists it as stuck, then
    /// releases its locks and queues its volume for reconciliation.
    fn outlive<T: Send + 'static>(
        &self,
        handle: tokio::task::JoinHandle<ServiceResult<T>>,
        op: Op,
        volume: &str,
        slot: step::Slot,
        started: Instant,
        held: Held,
    ) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = StuckEntry {
            volume: volume.to_string(),
            op,
            slot,
            started,
        };
        warn!(service = %self.service, volume = %volume, operation = op.as_str(),
            step = %entry.slot.get(),
            "{op} of {volume} passed its deadline; it goes on in the background and is reconciled when it returns");
        lock(&self.stuck).insert(id, entry);
        let (stuck, late, ready) = (
            self.stuck.clone(),
            self.late.clone(),
            self.late_ready.clone(),
        );
        let (service, volume) = (self.service.clone(), volume.to_string());
        tokio::spawn(async move {
            let outcome = handle.await;
            drop(held);
            lock(&stuck).remove(&id);
            let secs = started.elapsed().as_secs();
            match outcome {
                Ok(Ok(_)) => info!(service = %service, volume = %volume, operation = op.as_str(),
                    "{op} of {volume} returned after {secs} s; reconciling"),
                Ok(Err(e)) => info!(service = %service, volume = %volume, operation = op.as_str(),
                    "{op} of {volume} returned after {secs} s with: {e}; reconciling"),
                Err(e) => warn!(service = %service, volume = %volume, operation = op.as_str(),
                    "{op} of {volume} ended after {secs} s: {e}; reconciling"),
            }
            lock(&late).push(volume);
            ready.notify_one();
        });
    }

    fn no_worker(&self, volume: &str, op: Op, deadline: Duration) -> ServiceError {
        let all = self.stuck();
        let mut stuck: Vec<String> = all.iter().take(3).map(StuckView::line).collect();
        if all.len() > 3 {
            stuck.push(format!("{} more", all.len() - 3));
        }
        ServiceError::Busy {
            volume: volume.to_string(),
            reason: format!(
                "{op}: all {} storage workers of service {} stayed busy for {} s{}",
                self.limits.workers,
                self.service,
                deadline.as_secs(),
                if stuck.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", stuck.join("; "))
                }
            ),
        }
    }

    /// Work past its deadline, oldest first.
    pub fn stuck(&self) -> Vec<StuckView> {
        lock(&self.stuck)
            .values()
            .map(|e| StuckView {
                volume: e.volume.clone(),
                op: e.op,
                step: e.slot.get(),
                elapsed: e.started.elapsed(),
            })
            .collect()
    }

    /// The stuck work holding `volume`, for a request that waits for it.
    pub fn stuck_on(&self, volume: &str) -> Option<StuckView> {
        self.stuck().into_iter().find(|s| s.volume == volume)
    }

    /// Volumes whose work returned after its deadline since last asked.
    pub fn take_late(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.late))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
#[path = "lane_tests.rs"]
mod tests;
