//! The volume service: validation, per-volume locks, mount-ID counts,
//! lifecycle and policy. One [`VolumeService`] per configured service; the
//! API layer calls it, and it calls its [`Driver`] on blocking threads.
//!
//! Lifecycle of a volume (the `phase` in its record):
//!
//! ```text
//!  (absent) --create--> Creating --driver ok--> Ready <--mount/unmount--> Ready
//!                          |                      |
//!                     crash/error             remove
//!                          v                      v
//!                      (absent) <--driver ok-- Removing
//! ```
//!
//! A Ready volume is mounted exactly while its mount-ID multiset is
//! non-empty. Reads (Get, List, Path) are answered from memory.
//!
//! Snapshots ([`snapshot`]) follow the same Creating → Ready → Removing
//! lifecycle in their own records. Operations that touch two names (a
//! clone and its source, a snapshot and its volume) take both locks in
//! name order, so two of them can never wait on each other.

mod catalog;
mod create;
mod error;
mod import;
pub mod lane;
mod lock;
mod mount;
pub mod options;
mod provision;
mod reconcile;
mod remove;
mod resize;
pub mod snapshot;
mod startup;
mod takeover;
mod views;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use serde::Serialize;

use crate::config::{Policy, ServiceSettings};
use crate::driver::{self, Driver};
use crate::state::{RecordStore, SnapshotStore, StateError, VolumeRecord};
use crate::volume::{Scope, VolumeName};

pub use create::CreateOutcome;
pub use error::{ServiceError, ServiceResult};
pub use lane::StuckView;
use lane::{Held, Lane, Op};
pub use lock::{LockKey, Namespace};
pub use views::{status_map, StatusFields, VolumeView};

use options::OptionError;
pub use snapshot::{OperationView, SnapshotView};
pub use startup::LoadedFrom;

/// Counts for `STATUS=` and `berth status`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ServiceStatus {
    /// Service name.
    pub name: String,
    /// Driver kind.
    pub driver: String,
    /// Scope.
    pub scope: String,
    /// Number of volumes.
    pub volumes: usize,
    /// Number of mounted volumes.
    pub mounted: usize,
    /// Sum of mount counts.
    pub mount_users: u64,
    /// Number of snapshots.
    pub snapshots: usize,
    /// Long operations in flight, one line each ("snapshot s1 of v1:
    /// 45% of 500.0 MiB"), for `STATUS=`.
    pub busy: Vec<String>,
    /// Storage operations past their deadline.
    pub stuck: usize,
    /// Mounted volumes another host took over, one line each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub taken_over: Vec<String>,
    /// Why the backend cannot serve right now (an unreachable cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Record files (volumes and snapshots) per format found in the
    /// state directory at start-up.
    pub record_formats: BTreeMap<u32, usize>,
    /// Records that could not be read (a damaged file, a newer format):
    /// their names are refused until the file is fixed or removed. One
    /// line each.
    pub unreadable: Vec<String>,
}

struct Entry {
    rec: VolumeRecord,
    /// When this host last changed or learnt of the entry: a shared
    /// catalog listed before then may not show it yet.
    since: Instant,
}

impl Entry {
    fn new(rec: VolumeRecord) -> Self {
        Entry {
            rec,
            since: Instant::now(),
        }
    }
}

/// How long a listing of a shared catalog is reused before List asks the
/// backend again.
const CATALOG_TTL: std::time::Duration = if cfg!(test) {
    std::time::Duration::ZERO
} else {
    std::time::Duration::from_secs(1)
};

/// One named service.
pub struct VolumeService {
    name: String,
    scope: Scope,
    policy: RwLock<Policy>,
    driver: Arc<dyn Driver>,
    store: RecordStore,
    mount_dir: PathBuf,
    catalog: RwLock<BTreeMap<VolumeName, Entry>>,
    /// Names whose record could not be read: refused until a human looks.
    damaged: RwLock<BTreeMap<String, String>>,
    list_cache: Mutex<Option<Bytes>>,
    ns: Arc<Namespace>,
    changed: Arc<tokio::sync::Notify>,
    snap_store: SnapshotStore,
    snapshots: RwLock<BTreeMap<VolumeName, snapshot::SnapEntry>>,
    damaged_snapshots: RwLock<BTreeMap<String, String>>,
    /// Record files per format found at start-up.
    formats: RwLock<BTreeMap<u32, usize>>,
    ops: Mutex<BTreeMap<u64, snapshot::OpEntry>>,
    next_op: AtomicU64,
    /// The driver's catalog is shared between hosts.
    shared: bool,
    /// When this host last removed a volume or snapshot: a listing of
    /// the shared catalog fetched before then must not bring it back.
    removed: Mutex<BTreeMap<catalog::Removed, Instant>>,
    /// Serializes listings of the shared catalog; holds when the last
    /// one finished and the catalog version it saw.
    synced: tokio::sync::Mutex<Option<catalog::Synced>>,
    /// Blocking capacity and deadlines of storage work.
    lane: Lane,
    /// Used/free figures, sampled in the background.
    samples: Arc<views::Samples>,
    /// Mounted volumes this host lost to another host.
    takeovers: Arc<takeover::TakeOvers>,
    /// The state is loaded and reconciled.
    loaded: AtomicBool,
    /// Where the volume records came from at start.
    loaded_from: RwLock<Option<LoadedFrom>>,
}

impl std::fmt::Debug for VolumeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeService")
            .field("name", &self.name)
            .field("driver", &self.driver.kind())
            .finish()
    }
}

fn state_err(name: &VolumeName) -> impl Fn(StateError) -> ServiceError + '_ {
    move |e| ServiceError::State {
        volume: name.to_string(),
        source: e,
    }
}

fn new_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // Fall back to time and pid: unique enough for a display ID.
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b[..16].copy_from_slice(&(t ^ u128::from(std::process::id())).to_le_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl VolumeService {
    /// Opens the service: [`Self::new`], then [`Self::load`].
    /// Blocking: call from a blocking context.
    pub fn open(
        settings: &ServiceSettings,
        records_dir: &Path,
        mount_dir: &Path,
        driver: Arc<dyn Driver>,
        ns: Arc<Namespace>,
        changed: Arc<tokio::sync::Notify>,
    ) -> Result<Self, StateError> {
        let svc = Self::new(settings, records_dir, mount_dir, driver, ns, changed)?;
        svc.load()?;
        Ok(svc)
    }

    /// Loads the records (from the state index when it is valid) and
    /// reconciles them with the kernel (mount table, loop devices),
    /// repairing what is safe to repair. Until it returns, only
    /// [`Self::get_early`] answers. Blocking.
    pub fn load(&self) -> Result<(), StateError> {
        self.reconcile()?;
        self.loaded.store(true, Ordering::Release);
        Ok(())
    }

    /// The service with nothing loaded yet: its directories exist.
    /// Snapshot records live in `<records_dir>/snapshots`. Blocking.
    pub fn new(
        settings: &ServiceSettings,
        records_dir: &Path,
        mount_dir: &Path,
        driver: Arc<dyn Driver>,
        ns: Arc<Namespace>,
        changed: Arc<tokio::sync::Notify>,
    ) -> Result<Self, StateError> {
        let store = RecordStore::open(records_dir)?;
        let snap_store = SnapshotStore::open(&records_dir.join("snapshots"))?;
        driver::ensure_mount_dir(mount_dir)?;
        let svc = VolumeService {
            name: settings.name.clone(),
            scope: settings.scope,
            policy: RwLock::new(settings.policy.clone()),
            driver,
            store,
            mount_dir: mount_dir.to_path_buf(),
            catalog: RwLock::new(BTreeMap::new()),
            damaged: RwLock::new(BTreeMap::new()),
            list_cache: Mutex::new(None),
            ns,
            changed,
            snap_store,
            snapshots: RwLock::new(BTreeMap::new()),
            damaged_snapshots: RwLock::new(BTreeMap::new()),
            formats: RwLock::new(BTreeMap::new()),
            ops: Mutex::new(BTreeMap::new()),
            next_op: AtomicU64::new(1),
            shared: false,
            synced: tokio::sync::Mutex::new(None),
            removed: Mutex::new(BTreeMap::new()),
            lane: Lane::new(&settings.name, settings.limits.clone()),
            samples: Arc::default(),
            takeovers: Arc::default(),
            loaded: AtomicBool::new(false),
            loaded_from: RwLock::new(None),
        };
        let mut svc = svc;
        svc.shared = svc.driver.shared_catalog();
        Ok(svc)
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Scope for Capabilities.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// Current policy.
    pub fn policy(&self) -> Policy {
        read(&self.policy).clone()
    }

    /// Storage work past its deadline.
    pub fn stuck(&self) -> Vec<StuckView> {
        self.lane.stuck()
    }

    /// Replaces the policy (config reload).
    pub fn set_policy(&self, p: Policy) {
        *write(&self.policy) = p;
        self.invalidate();
    }

    fn target_of(&self, name: &VolumeName) -> PathBuf {
        self.mount_dir.join(name.as_str())
    }

    fn invalidate(&self) {
        if let Ok(mut c) = self.list_cache.lock() {
            *c = None;
        }
        self.changed.notify_one();
    }

    fn put(&self, rec: VolumeRecord) {
        write(&self.catalog).insert(rec.name.clone(), Entry::new(rec));
        self.invalidate();
    }

    /// Runs storage work on this service's workers within `op`'s
    /// deadline ([`lane`]).
    async fn run<T, F>(
        &self,
        op: Op,
        volume: &impl std::fmt::Display,
        held: &mut Held,
        work: F,
    ) -> ServiceResult<T>
    where
        F: FnOnce(&lane::Ticket) -> ServiceResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.lane.run(op, volume, held, work).await
    }

    /// Takes the locks of `keys` (volume names, snapshot keys) in name
    /// order, waiting at most `op`'s deadline: a volume held by stuck
    /// work is answered with a clear error, not a hang.
    async fn lock_for(&self, op: Op, mut keys: Vec<LockKey>) -> ServiceResult<Held> {
        keys.sort();
        keys.dedup();
        let deadline = self.lane.deadline(op);
        let started = Instant::now();
        let mut held = Held::default();
        for k in keys {
            let left = deadline.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, self.ns.lock_key(&k)).await {
                Ok(g) => held.0.push(g),
                Err(_) => {
                    let why = match self.lane.stuck_on(k.shown()) {
                        Some(s) => s.line(),
                        None => "another operation on it".to_string(),
                    };
                    return Err(ServiceError::Busy {
                        volume: k.shown().to_string(),
                        reason: format!(
                            "{op}: waited {} s for it: {why} has not finished",
                            deadline.as_secs()
                        ),
                    });
                }
            }
        }
        Ok(held)
    }

    /// The lock of `key` if it is free now (a listing skips busy names).
    async fn try_lock(&self, key: LockKey) -> Option<Held> {
        tokio::time::timeout(std::time::Duration::ZERO, self.ns.lock_key(&key))
            .await
            .ok()
            .map(|g| Held(vec![g]))
    }

    /// The lock key of volume `name`.
    fn vkey(&self, name: &VolumeName) -> LockKey {
        LockKey::Volume(name.clone())
    }

    /// The lock key of snapshot `name` of this service.
    fn skey(&self, name: &VolumeName) -> LockKey {
        LockKey::Snapshot {
            service: self.name.clone(),
            name: name.clone(),
        }
    }

    fn get_record(&self, name: &VolumeName) -> Option<VolumeRecord> {
        read(&self.catalog).get(name).map(|e| e.rec.clone())
    }

    /// The refusal of a volume whose record could not be read (damaged,
    /// or of a newer format), if `name` is one.
    fn refused(&self, name: &VolumeName) -> Option<ServiceError> {
        read(&self.damaged)
            .get(name.as_str())
            .map(|reason| ServiceError::Conflict {
                volume: name.to_string(),
                reason: format!(
                    "its state record is unreadable ({reason}); fix or remove it first"
                ),
            })
    }

    /// The answer for a volume this service does not hold.
    fn missing(&self, name: &VolumeName) -> ServiceError {
        self.refused(name)
            .unwrap_or_else(|| ServiceError::NotFound(name.to_string()))
    }
}

fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // A panic while holding the lock can't leave our maps half-updated
    // (every update is a single insert/remove), so poison is ignored.
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod startup_tests;
#[cfg(test)]
mod stuck_tests;
#[cfg(test)]
mod takeover_tests;
#[cfg(test)]
mod tests;
