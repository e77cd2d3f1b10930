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

mod lock;
pub mod options;
pub mod snapshot;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use serde::Serialize;
use tracing::{info, warn};

use crate::config::{Policy, ServiceSettings};
use crate::driver::{self, CreateHow, CreateSource, Driver, DriverError, DEFAULT_POOL};
use crate::state::{
    Phase, RecordStore, SnapshotRecord, SnapshotStore, StateError, VolumeRecord, RECORD_VERSION,
};
use crate::sys::{fsutil, mounts::MountTable};
use crate::volume::{bytes_to_gb, human_bytes, MountId, NameError, Scope, VolumeName};

pub use lock::Namespace;

/// Key the service sets in `driver_data` of an intent record when the
/// driver reported pre-existing storage (keys under `berth.` are the
/// service's, not the driver's).
pub const ADOPTED_KEY: &str = "berth.adopted";
use options::{CreateSpec, OptionError, SourceRef};
pub use snapshot::{OperationView, SnapshotView};

/// Errors the service answers with. Every message names the volume.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A bad name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A bad option.
    #[error("volume {volume}: {source}")]
    Option {
        /// Volume.
        volume: String,
        /// Cause.
        source: OptionError,
    },
    /// Any other bad input.
    #[error("{0}")]
    BadInput(String),
    /// No such volume.
    #[error("volume {0} not found")]
    NotFound(String),
    /// No such snapshot.
    #[error("snapshot {0} not found")]
    SnapshotNotFound(String),
    /// A snapshot request conflicts with the state of things.
    #[error("snapshot {snapshot}: {reason}")]
    Snapshot {
        /// Snapshot.
        snapshot: String,
        /// Why.
        reason: String,
    },
    /// The request conflicts with the volume's state.
    #[error("volume {volume}: {reason}")]
    Conflict {
        /// Volume.
        volume: String,
        /// Why.
        reason: String,
    },
    /// The driver failed.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// A state record could not be written.
    #[error("volume {volume}: {source}")]
    State {
        /// Volume.
        volume: String,
        /// Cause.
        source: StateError,
    },
    /// A blocking task died (a bug).
    #[error("volume {volume}: internal error: {reason}")]
    Internal {
        /// Volume.
        volume: String,
        /// What happened.
        reason: String,
    },
}

/// Result alias.
pub type ServiceResult<T> = Result<T, ServiceError>;

/// A volume as Get/List show it.
#[derive(Debug, Clone)]
pub struct VolumeView {
    /// Record snapshot.
    pub record: VolumeRecord,
    /// Path Docker uses, when mounted.
    pub mountpoint: Option<PathBuf>,
    /// Used/free bytes.
    pub usage: driver::Usage,
    /// Filesystem as inspect shows it.
    pub fs_label: String,
    /// Driver-specific inspect fields.
    pub extra: BTreeMap<String, String>,
}

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
    /// Why the backend cannot serve right now (an unreachable cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

struct Entry {
    rec: VolumeRecord,
    /// Allocated bytes of the backing store when last measured.
    allocated: u64,
    /// When this host last changed or learnt of the entry: a shared
    /// catalog listed before then may not show it yet.
    since: Instant,
}

impl Entry {
    fn new(rec: VolumeRecord, allocated: u64) -> Self {
        Entry {
            rec,
            allocated,
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
    ops: Mutex<BTreeMap<u64, snapshot::OpEntry>>,
    next_op: AtomicU64,
    /// The driver's catalog is shared between hosts.
    shared: bool,
    /// When this host last removed a volume ("v:NAME") or snapshot
    /// ("s:NAME"): a listing of the shared catalog fetched before then
    /// must not bring it back.
    removed: Mutex<BTreeMap<String, Instant>>,
    /// Serializes listings of the shared catalog; holds when the last
    /// one finished.
    synced: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for VolumeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeService")
            .field("name", &self.name)
            .field("driver", &self.driver.kind())
            .finish()
    }
}

async fn blocking<T, F>(volume: &impl std::fmt::Display, f: F) -> ServiceResult<T>
where
    F: FnOnce() -> ServiceResult<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServiceError::Internal {
            volume: volume.to_string(),
            reason: format!("blocking task failed: {e}"),
        })?
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
    /// Opens the service: loads its records and reconciles them with the
    /// kernel (mount table, loop devices), repairing what is safe to
    /// repair. Snapshot records live in `<records_dir>/snapshots`.
    /// Blocking: call from a blocking context.
    pub fn open(
        settings: &ServiceSettings,
        records_dir: &Path,
        mount_dir: &Path,
        driver: Arc<dyn Driver>,
        ns: Arc<Namespace>,
        changed: Arc<tokio::sync::Notify>,
    ) -> Result<Self, StateError> {
        let store = RecordStore::open(records_dir)?;
        let snap_store = SnapshotStore::open(&records_dir.join("snapshots"))?;
        fsutil::ensure_dir(mount_dir, 0o755)?;
        let pools: BTreeMap<String, String> = settings
            .pools
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string_lossy().into_owned()))
            .collect();
        if let Err(e) = driver.configure_pools(&pools) {
            return Err(StateError::Sys(crate::sys::SysError::io(
                "configure pools of",
                records_dir,
                std::io::Error::other(e.to_string()),
            )));
        }
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
            ops: Mutex::new(BTreeMap::new()),
            next_op: AtomicU64::new(1),
            shared: false,
            synced: tokio::sync::Mutex::new(None),
            removed: Mutex::new(BTreeMap::new()),
        };
        let mut svc = svc;
        svc.shared = svc.driver.shared_catalog();
        svc.reconcile()?;
        Ok(svc)
    }

    fn reconcile(&self) -> Result<(), StateError> {
        let started = Instant::now();
        let (records, bad) = self.store.load_all()?;
        for b in bad {
            warn!(service = %self.name, path = %b.path.display(), reason = %b.reason,
                "state record unreadable; its volume is refused until the file is fixed or removed");
            if let Some(stem) = b.path.file_stem() {
                write(&self.damaged).insert(stem.to_string_lossy().into_owned(), b.reason);
            }
        }
        let table = MountTable::read()?;
        let mut ready = Vec::new();
        let mut repairs = 0usize;
        for mut rec in records {
            let target = self.target_of(&rec.name);
            let in_kernel = table.at(&target).is_some();
            match rec.phase {
                Phase::Creating | Phase::Removing => {
                    let what = if rec.phase == Phase::Creating {
                        "create"
                    } else {
                        "remove"
                    };
                    // An adopted image was there before the create: an
                    // interrupted create gives it back untouched.
                    let adopted = rec.phase == Phase::Creating
                        && rec
                            .driver_data
                            .get(ADOPTED_KEY)
                            .is_some_and(|v| v == "true");
                    let done = self.driver.unmount(&rec, &target).and_then(|_| {
                        if adopted {
                            Ok(())
                        } else {
                            self.driver.remove(&rec)
                        }
                    });
                    match done
                        .map_err(ServiceError::from)
                        .and_then(|_| self.store.delete(&rec.name).map_err(state_err(&rec.name)))
                    {
                        Ok(()) => warn!(service = %self.name, volume = %rec.name,
                            "an interrupted {what} was found; the volume's storage and record were removed"),
                        Err(e) => warn!(service = %self.name, volume = %rec.name,
                            "an interrupted {what} could not be cleaned up: {e}"),
                    }
                    repairs += 1;
                    continue;
                }
                Phase::Ready => {}
            }
            let users = rec.mount_count();
            if users > 0 && !in_kernel {
                warn!(service = %self.name, volume = %rec.name, users,
                    "volume was in use but is not mounted (host rebooted or unmounted by hand); its mount counts are reset");
                rec.mounts.clear();
                rec.mounted = None;
                self.store.save(&rec)?;
                repairs += 1;
            } else if users == 0 && in_kernel {
                match self.driver.unmount(&rec, &target) {
                    Ok(()) => warn!(service = %self.name, volume = %rec.name,
                        "volume was mounted with no user (interrupted mount or unmount); unmounted it"),
                    Err(e) => warn!(service = %self.name, volume = %rec.name,
                        "volume is mounted with no user and could not be unmounted: {e}"),
                }
                rec.mounted = None;
                self.store.save(&rec)?;
                repairs += 1;
            } else if users > 0 && in_kernel {
                let source = table.at(&target).map(|m| PathBuf::from(&m.source));
                if let Some(dev) = source {
                    let fresh = crate::state::MountRecord {
                        device: dev,
                        target: target.clone(),
                    };
                    if rec.mounted.as_ref() != Some(&fresh) {
                        rec.mounted = Some(fresh);
                        self.store.save(&rec)?;
                        repairs += 1;
                    }
                }
            } else if rec.mounted.is_some() {
                rec.mounted = None;
                self.store.save(&rec)?;
            }
            if rec.mount_count() == 0 {
                // An empty mount point left by a kill inside Mount or
                // Unmount (remove_dir refuses non-empty or mounted ones).
                let _ = std::fs::remove_dir(&target);
            }
            ready.push(rec);
        }
        let snaps = self.reconcile_snapshots(&mut repairs)?;
        let table = MountTable::read()?;
        for note in self.driver.reconcile(&ready, &snaps, &table) {
            warn!(service = %self.name, "{note}");
            repairs += 1;
        }
        {
            let mut sc = write(&self.snapshots);
            for rec in snaps {
                let allocated = self.driver.snapshot_allocated(&rec);
                sc.insert(rec.name.clone(), snapshot::SnapEntry::new(rec, allocated));
            }
        }
        let mut cat = write(&self.catalog);
        for rec in ready {
            if let Err(owner) = self.ns.claim(rec.name.as_str(), &self.name) {
                warn!(service = %self.name, volume = %rec.name,
                    "volume name is also used by service {owner}; Docker can reach only one of them");
            }
            let allocated = if rec.mounted.is_some() {
                0
            } else {
                self.driver.allocated(&rec)
            };
            cat.insert(rec.name.clone(), Entry::new(rec, allocated));
        }
        info!(service = %self.name, volumes = cat.len(), repairs,
            duration_ms = started.elapsed().as_millis() as u64, "state loaded and reconciled");
        Ok(())
    }

    /// The other service (possibly served by another berthd process, as
    /// with one systemd instance per service) that has a volume `name`:
    /// its record sits in a sibling of this service's record directory.
    /// Docker keys volumes by name alone, and all services share the
    /// mount directory.
    fn owner_elsewhere(&self, name: &VolumeName) -> Option<String> {
        let mine = self.store.dir();
        let root = mine.parent()?;
        std::fs::read_dir(root)
            .ok()?
            .flatten()
            .filter(|e| e.path() != mine)
            .find(|e| e.path().join(format!("{name}.json")).exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
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

    fn put(&self, rec: VolumeRecord, allocated: u64) {
        write(&self.catalog).insert(rec.name.clone(), Entry::new(rec, allocated));
        self.invalidate();
    }

    /// The volume `name`: from memory, else (shared catalogs) from the
    /// backend, remembering it. Callers hold the name's lock.
    async fn known(&self, name: &VolumeName) -> ServiceResult<Option<VolumeRecord>> {
        if let Some(r) = self.get_record(name) {
            return Ok(Some(r));
        }
        if !self.shared {
            return Ok(None);
        }
        let driver = self.driver.clone();
        let n = name.clone();
        let found = blocking(name, move || Ok(driver.catalog_get(&n)?)).await?;
        if let Some(rec) = &found {
            self.learn(rec.clone());
        }
        Ok(found)
    }

    /// Notes that `key` ("v:NAME" or "s:NAME") was removed just now.
    pub(super) fn note_removed(&self, key: String) {
        if !self.shared {
            return;
        }
        let mut m = self.removed.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, t| t.elapsed() < std::time::Duration::from_secs(300));
        m.insert(key, Instant::now());
    }

    /// Whether `key` was removed here after `fetched` (a listing from
    /// before the removal).
    pub(super) fn removed_after(&self, key: &str, fetched: Instant) -> bool {
        self.removed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .is_some_and(|t| *t >= fetched)
    }

    /// Adds a volume of the shared catalog that this host had no record
    /// of. Nothing is written: a record appears when this host mounts it.
    fn learn(&self, mut rec: VolumeRecord) {
        rec.mounts.clear();
        rec.mounted = None;
        rec.phase = Phase::Ready;
        if let Err(owner) = self.ns.claim(rec.name.as_str(), &self.name) {
            warn!(service = %self.name, volume = %rec.name,
                "volume name is also used by service {owner}; Docker can reach only one of them");
        }
        let allocated = self.driver.allocated(&rec);
        self.put(rec, allocated);
    }

    /// Whether Get/Path of `name` should ask the shared catalog (a
    /// volume created on another host).
    pub fn needs_lookup(&self, name: &str) -> bool {
        self.shared
            && VolumeName::parse(name)
                .map(|n| self.get_record(&n).is_none())
                .unwrap_or(false)
    }

    /// Asks the shared catalog for `name` (see [`Self::needs_lookup`]).
    pub async fn lookup(&self, name: &str) -> ServiceResult<()> {
        let name = VolumeName::parse(name)?;
        let _g = self.ns.lock(name.as_str()).await;
        self.known(&name).await.map(|_| ())
    }

    /// Brings the volume list up to date with a shared catalog: volumes
    /// created on other hosts appear, volumes removed on other hosts (and
    /// not mounted here) disappear. A listing is reused for
    /// [`CATALOG_TTL`]. Nothing to do for host-local drivers.
    pub async fn refresh(&self) -> ServiceResult<()> {
        if !self.shared {
            return Ok(());
        }
        let mut synced = self.synced.lock().await;
        if synced.is_some_and(|t| t.elapsed() < CATALOG_TTL) {
            return Ok(());
        }
        let started = Instant::now();
        let driver = self.driver.clone();
        let label = format!("(catalog of service {})", self.name);
        let remote = blocking(&label, move || Ok(driver.catalog_list()?)).await?;
        let names: std::collections::BTreeSet<VolumeName> =
            remote.iter().map(|r| r.name.clone()).collect();
        let unseen: Vec<VolumeRecord> = {
            let cat = read(&self.catalog);
            remote
                .into_iter()
                .filter(|r| !cat.contains_key(&r.name))
                .collect()
        };
        // A name with a record here but not in memory is a clean-up this
        // host still owes (an interrupted create or remove): not a volume.
        let store = self.store.clone();
        let new: Vec<VolumeRecord> = blocking(&label, move || {
            Ok(unseen
                .into_iter()
                .filter(|r| matches!(store.load(&r.name), Ok(None)))
                .collect())
        })
        .await?;
        for rec in new {
            // Removed here while the listing was under way: not back.
            if !self.removed_after(&format!("v:{}", rec.name), started) {
                self.learn(rec);
            }
        }
        let gone: Vec<VolumeName> = read(&self.catalog)
            .iter()
            .filter(|(n, e)| !names.contains(*n) && e.since < started)
            .map(|(n, _)| n.clone())
            .collect();
        for name in gone {
            let _g = self.ns.lock(name.as_str()).await;
            let drop_it = read(&self.catalog).get(&name).is_some_and(|e| {
                e.since < started && e.rec.mount_count() == 0 && e.rec.phase == Phase::Ready
            });
            if !drop_it {
                continue;
            }
            let store = self.store.clone();
            let n = name.clone();
            let deleted = blocking(&name, move || store.delete(&n).map_err(state_err(&n))).await;
            if let Err(e) = deleted {
                warn!(service = %self.name, volume = %name, "could not remove the record of a volume removed on another host: {e}");
                continue;
            }
            self.note_removed(format!("v:{name}"));
            write(&self.catalog).remove(&name);
            self.ns.release(name.as_str(), &self.name);
            self.invalidate();
            info!(service = %self.name, volume = %name, "volume was removed on another host");
        }
        let remote = self.learn_snapshots().await?;
        let names: std::collections::BTreeSet<VolumeName> =
            remote.iter().map(|r| r.name.clone()).collect();
        let gone: Vec<VolumeName> = read(&self.snapshots)
            .iter()
            .filter(|(n, e)| !names.contains(*n) && e.since < started)
            .map(|(n, _)| n.clone())
            .collect();
        for name in gone {
            let _g = self.ns.lock(&self.snap_key(&name)).await;
            let drop_it = read(&self.snapshots)
                .get(&name)
                .is_some_and(|e| e.since < started && e.rec.phase == Phase::Ready);
            if !drop_it {
                continue;
            }
            let store = self.snap_store.clone();
            let n = name.clone();
            if let Err(e) = blocking(&name, move || store.delete(&n).map_err(state_err(&n))).await {
                warn!(service = %self.name, snapshot = %name, "could not remove the record of a snapshot removed on another host: {e}");
                continue;
            }
            self.note_removed(format!("s:{name}"));
            write(&self.snapshots).remove(&name);
            self.invalidate();
            info!(service = %self.name, snapshot = %name, "snapshot was removed on another host");
        }
        *synced = Some(Instant::now());
        Ok(())
    }

    /// Adds the snapshots of a shared catalog this host has not seen
    /// (taken on other hosts); returns the whole remote list. Takes no
    /// lock, so callers may hold name locks.
    async fn learn_snapshots(&self) -> ServiceResult<Vec<SnapshotRecord>> {
        if !self.shared {
            return Ok(Vec::new());
        }
        let driver = self.driver.clone();
        let label = format!("(snapshot catalog of service {})", self.name);
        let fetched = Instant::now();
        let store = self.snap_store.clone();
        let (remote, pending) = blocking(&label, move || {
            let remote = driver.snapshot_catalog_list()?;
            // Snapshots with an intent record here (an interrupted create
            // or removal this host still has to finish) are not learnt.
            let pending: std::collections::BTreeSet<VolumeName> = remote
                .iter()
                .filter(
                    |r| matches!(store.load(&r.name), Ok(Some(ref l)) if l.phase != Phase::Ready),
                )
                .map(|r| r.name.clone())
                .collect();
            Ok((remote, pending))
        })
        .await?;
        let mut added = false;
        {
            let mut snaps = write(&self.snapshots);
            for rec in &remote {
                if !snaps.contains_key(&rec.name)
                    && !pending.contains(&rec.name)
                    && !self.removed_after(&format!("s:{}", rec.name), fetched)
                {
                    let mut rec = rec.clone();
                    rec.phase = Phase::Ready;
                    snaps.insert(rec.name.clone(), snapshot::SnapEntry::new(rec, 0));
                    added = true;
                }
            }
        }
        if added {
            self.invalidate();
        }
        Ok(remote)
    }

    fn get_record(&self, name: &VolumeName) -> Option<VolumeRecord> {
        read(&self.catalog).get(name).map(|e| e.rec.clone())
    }

    /// Counts for status lines.
    pub fn status(&self) -> ServiceStatus {
        let cat = read(&self.catalog);
        ServiceStatus {
            name: self.name.clone(),
            driver: self.driver.kind().to_string(),
            scope: self.scope.as_str().to_string(),
            volumes: cat.len(),
            mounted: cat.values().filter(|e| e.rec.mounted.is_some()).count(),
            mount_users: cat.values().map(|e| u64::from(e.rec.mount_count())).sum(),
            snapshots: read(&self.snapshots).len(),
            busy: self.operations().iter().map(OperationView::line).collect(),
            problem: self.driver.health(),
        }
    }

    /// `VolumeDriver.Create`. Idempotent: an existing volume is success.
    pub async fn create(&self, name: &str, opts: &BTreeMap<String, String>) -> ServiceResult<()> {
        let name = VolumeName::parse(name)?;
        let policy = self.policy();
        let spec = CreateSpec::parse(
            opts,
            &policy.create_defaults,
            (policy.data_mode, policy.data_uid, policy.data_gid),
        )
        .map_err(|e| ServiceError::Option {
            volume: name.to_string(),
            source: e,
        })?;
        if policy.create_disable {
            info!(service = %self.name, volume = %name, operation = "create",
                "create.disable is set: request acknowledged, nothing created");
            return Ok(());
        }
        let mut keys = vec![name.as_str().to_string()];
        if let Some(src) = &spec.source {
            keys.push(self.source_lock_key(&name, src)?);
        }
        let _g = self.lock_all(keys).await;
        self.create_locked(&name, spec).await
    }

    /// Takes the locks of `keys` in order (duplicates once).
    async fn lock_all(&self, mut keys: Vec<String>) -> Vec<lock::NameGuard<'_>> {
        keys.sort();
        keys.dedup();
        let mut guards = Vec::with_capacity(keys.len());
        for k in keys {
            guards.push(self.ns.lock(&k).await);
        }
        guards
    }

    /// The lock key of a create's source (resolving IDs to names).
    fn source_lock_key(&self, name: &VolumeName, src: &SourceRef) -> ServiceResult<String> {
        Ok(match src {
            SourceRef::VolumeName(n) => n.as_str().to_string(),
            SourceRef::VolumeId(id) => self
                .volume_by_id(id)
                .map(|r| r.name.as_str().to_string())
                .ok_or_else(|| self.missing_source(name, src))?,
            SourceRef::SnapshotName(n) => self.snap_key(n),
            SourceRef::SnapshotId(id) => self
                .snapshot_by_id(id)
                .map(|r| self.snap_key(&r.name))
                .ok_or_else(|| self.missing_source(name, src))?,
        })
    }

    fn missing_source(&self, name: &VolumeName, src: &SourceRef) -> ServiceError {
        let what = match src {
            SourceRef::VolumeName(_) | SourceRef::VolumeId(_) => "volume",
            SourceRef::SnapshotName(_) | SourceRef::SnapshotId(_) => "snapshot",
        };
        ServiceError::Option {
            volume: name.to_string(),
            source: OptionError(format!(
                "option {}: no {what} {:?} in service {}",
                src.option(),
                src.value(),
                self.name
            )),
        }
    }

    fn volume_by_id(&self, id: &str) -> Option<VolumeRecord> {
        read(&self.catalog)
            .values()
            .find(|e| e.rec.id == id)
            .map(|e| e.rec.clone())
    }

    /// Resolves a create's source under its lock.
    fn resolve_source(&self, name: &VolumeName, src: &SourceRef) -> ServiceResult<Resolved> {
        let found = match src {
            SourceRef::VolumeName(n) => self.get_record(n).map(Resolved::Volume),
            SourceRef::VolumeId(id) => self.volume_by_id(id).map(Resolved::Volume),
            SourceRef::SnapshotName(n) => self.get_snapshot(n).map(Resolved::Snapshot),
            SourceRef::SnapshotId(id) => self.snapshot_by_id(id).map(Resolved::Snapshot),
        };
        let found = found.ok_or_else(|| self.missing_source(name, src))?;
        if let Resolved::Volume(v) = &found {
            if &v.name == name {
                return Err(ServiceError::Option {
                    volume: name.to_string(),
                    source: OptionError(format!(
                        "option {}: a volume cannot be a copy of itself",
                        src.option()
                    )),
                });
            }
        }
        Ok(found)
    }

    async fn create_locked(&self, name: &VolumeName, spec: CreateSpec) -> ServiceResult<()> {
        if self.known(name).await?.is_some() {
            return Ok(());
        }
        if let Some(reason) = read(&self.damaged).get(name.as_str()) {
            return Err(ServiceError::Conflict {
                volume: name.to_string(),
                reason: format!(
                    "its state record is unreadable ({reason}); fix or remove it first"
                ),
            });
        }
        let owner = self
            .ns
            .owner(name.as_str())
            .filter(|o| *o != self.name)
            .or_else(|| self.owner_elsewhere(name));
        if let Some(owner) = owner {
            return Err(ServiceError::Conflict {
                volume: name.to_string(),
                reason: format!("the name is already used by service {owner}; volume names are unique across services"),
            });
        }
        let started = Instant::now();
        let opt_err = |msg: String| ServiceError::Option {
            volume: name.to_string(),
            source: OptionError(msg),
        };
        match &spec.source {
            // A source made on another host (shared catalogs).
            Some(SourceRef::VolumeName(n)) => {
                self.known(n).await?;
            }
            Some(SourceRef::SnapshotName(_) | SourceRef::SnapshotId(_)) => {
                self.learn_snapshots().await?;
            }
            _ => {}
        }
        let source = match &spec.source {
            Some(src) => Some((src.clone(), self.resolve_source(name, src)?)),
            None => None,
        };
        // The pool: as asked, else the source's, else the default.
        let pool = if spec.type_given || spec.source.is_none() {
            if spec.volume_type.is_empty() {
                DEFAULT_POOL.to_string()
            } else {
                spec.volume_type.clone()
            }
        } else {
            match &source {
                Some((_, Resolved::Volume(v))) => v.volume_type.clone(),
                Some((_, Resolved::Snapshot(s))) => s.volume_type.clone(),
                None => DEFAULT_POOL.to_string(),
            }
        };
        let pool = if pool.is_empty() {
            DEFAULT_POOL.to_string()
        } else {
            pool
        };
        let pools = self.driver.pools();
        if !pools.contains(&pool) {
            return Err(opt_err(format!(
                "option type: storage pool {pool:?} is not configured for service {} (pools: {})",
                self.name,
                pools.join(", ")
            )));
        }
        let mut rec = VolumeRecord {
            version: RECORD_VERSION,
            name: name.clone(),
            id: new_id(),
            phase: Phase::Creating,
            created_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            size: spec.size,
            fs_type: spec.fs_type,
            volume_type: pool,
            iops: spec.iops,
            availability_zone: spec.availability_zone.clone(),
            uid: spec.uid,
            gid: spec.gid,
            mode: spec.mode,
            owner_pending: false,
            origin: String::new(),
            driver_data: BTreeMap::new(),
            mounts: BTreeMap::new(),
            mounted: None,
        };
        // A copy has its source's filesystem, size (unless grown) and,
        // unless asked otherwise, data-directory owner.
        let mut grow_to = None;
        if let Some((_, found)) = &source {
            let (kind, src_name, src_id, size, fs, owner) = match found {
                Resolved::Volume(v) => (
                    "volume",
                    &v.name,
                    &v.id,
                    v.size,
                    v.fs_type,
                    (v.uid, v.gid, v.mode),
                ),
                Resolved::Snapshot(s) => (
                    "snapshot",
                    &s.name,
                    &s.id,
                    s.size,
                    s.fs_type,
                    (s.uid, s.gid, s.mode),
                ),
            };
            if spec.fs_given && spec.fs_type != fs {
                return Err(opt_err(format!(
                    "option fsType={}: {kind} {src_name} holds {fs}, and a copy keeps its source's filesystem (leave fsType out)",
                    spec.fs_type
                )));
            }
            if spec.size_given && spec.size < size {
                return Err(opt_err(format!(
                    "option size: {} is smaller than {kind} {src_name} ({}); a copy can only be the same size or larger",
                    human_bytes(spec.size),
                    human_bytes(size)
                )));
            }
            if spec.size_given && spec.size > size {
                grow_to = Some(spec.size);
            }
            rec.size = size;
            rec.fs_type = fs;
            if spec.owner_given {
                rec.owner_pending = true;
            } else {
                (rec.uid, rec.gid, rec.mode) = owner;
            }
            rec.origin = format!("{kind} {src_name} ({src_id})");
        }
        let driver = self.driver.clone();
        let store = self.store.clone();
        let target = self.target_of(name);
        let overwrite_fs = spec.overwrite_fs;
        let fs_given = spec.fs_given;
        let n = name.clone();
        let op = source.as_ref().map(|(_, found)| {
            let from = match found {
                Resolved::Volume(v) => format!("volume {}", v.name),
                Resolved::Snapshot(s) => format!("snapshot {}", s.name),
            };
            self.begin_op("clone", name.as_str(), &from)
        });
        let progress = op.as_ref().map(|o| o.progress());
        let rec = blocking(name, move || {
            if source.is_none() {
                if let Some(free) = driver.free_space(&rec.volume_type) {
                    if rec.size > free {
                        return Err(ServiceError::BadInput(format!(
                            "volume {n}: size {} is more than the {} free for images in pool {}",
                            human_bytes(rec.size),
                            human_bytes(free),
                            rec.volume_type
                        )));
                    }
                }
            }
            let how = CreateHow {
                overwrite_fs,
                fs_given,
                source: source.as_ref().map(|(_, found)| match found {
                    Resolved::Volume(v) => CreateSource::Volume(v),
                    Resolved::Snapshot(s) => CreateSource::Snapshot(s),
                }),
                progress: progress.as_deref(),
            };
            // A record left by an interrupted create or remove whose
            // clean-up failed at start-up (a Ceph image still had a
            // watcher): its storage may still be there. Finish that
            // clean-up first; overwriting the record (and deleting it when
            // this create fails) would leak the storage for good.
            if let Some(old) = store.load(&n).map_err(state_err(&n))? {
                if old.phase != Phase::Ready {
                    let adopted = old.phase == Phase::Creating
                        && old.driver_data.get(ADOPTED_KEY).is_some_and(|v| v == "true");
                    driver
                        .unmount(&old, &target)
                        .and_then(|_| if adopted { Ok(()) } else { driver.remove(&old) })
                        .map_err(|e| ServiceError::Conflict {
                            volume: n.to_string(),
                            reason: format!(
                                "an interrupted create or remove of it is not cleaned up yet ({e}); retry later"
                            ),
                        })?;
                    store.delete(&n).map_err(state_err(&n))?;
                    warn!(volume = %n, "an interrupted create or remove was found; its storage and record were removed");
                }
            }
            let mut rec = rec;
            let adopted = driver.storage_exists(&rec);
            if adopted {
                rec.driver_data.insert(ADOPTED_KEY.into(), "true".into());
            }
            store.save(&rec).map_err(state_err(&n))?;
            if let Err(e) = driver.create(&mut rec, &how) {
                if let Err(se) = store.delete(&n) {
                    warn!(volume = %n, "could not remove the record of a failed create: {se}");
                }
                return Err(e.into());
            }
            let undo = |rec: &VolumeRecord| {
                // Storage that was there before (adopted) is never removed.
                if !adopted {
                    if let Err(e) = driver.remove(rec) {
                        warn!(volume = %n, "rollback of a failed create could not remove its storage: {e}");
                        return;
                    }
                }
                let _ = store.delete(&n);
            };
            if let Some(size) = grow_to {
                // The record says Creating until this is done, so a crash
                // here removes the half-made volume at the next start.
                if let Err(e) = store.save(&rec).map_err(state_err(&n)) {
                    undo(&rec);
                    return Err(e);
                }
                if let Err(e) = driver.resize(&rec, size) {
                    undo(&rec);
                    return Err(e.into());
                }
                rec.size = size;
            }
            rec.phase = Phase::Ready;
            if let Err(e) = store.save(&rec) {
                undo(&rec);
                return Err(state_err(&n)(e));
            }
            Ok(rec)
        })
        .await;
        drop(op);
        let rec = rec?;
        let allocated = self.driver.allocated(&rec);
        info!(service = %self.name, volume = %name, operation = "create",
            size = rec.size, fs_type = %rec.fs_type, pool = %rec.volume_type,
            origin = %rec.origin, copy = rec.driver_data.get("copyMethod").map(String::as_str).unwrap_or(""),
            duration_ms = started.elapsed().as_millis() as u64, "volume created");
        let _ = self.ns.claim(name.as_str(), &self.name);
        self.put(rec, allocated);
        Ok(())
    }

    /// `VolumeDriver.Remove`. Removing an unknown volume is success.
    pub async fn remove(&self, name: &str) -> ServiceResult<()> {
        let name = VolumeName::parse(name)?;
        let policy = self.policy();
        if policy.remove_disable {
            info!(service = %self.name, volume = %name, operation = "remove",
                "remove.disable is set: request acknowledged, nothing removed");
            return Ok(());
        }
        let _g = self.ns.lock(name.as_str()).await;
        let Some(mut rec) = self.known(&name).await? else {
            info!(service = %self.name, volume = %name, operation = "remove", "volume already absent");
            return Ok(());
        };
        let users = rec.mount_count();
        if users > 0 && !policy.remove_force {
            let ids: Vec<String> = rec
                .mounts
                .keys()
                .map(|k| {
                    if k.is_empty() {
                        "(anonymous)".into()
                    } else {
                        short(k)
                    }
                })
                .collect();
            return Err(ServiceError::Conflict {
                volume: name.to_string(),
                reason: format!(
                    "it is mounted by {users} user(s) (mount IDs: {}); unmount it first, or set volume.remove.force",
                    ids.join(", ")
                ),
            });
        }
        let started = Instant::now();
        let target = self.target_of(&name);
        let driver = self.driver.clone();
        let store = self.store.clone();
        let n = name.clone();
        rec.phase = Phase::Removing;
        blocking(&name, move || {
            store.save(&rec).map_err(state_err(&n))?;
            driver.unmount(&rec, &target)?;
            driver.remove(&rec)?;
            store.delete(&n).map_err(state_err(&n))?;
            Ok(())
        })
        // On error the record says Removing and the next start finishes
        // the job; until then the volume stays visible.
        .await?;
        self.note_removed(format!("v:{name}"));
        write(&self.catalog).remove(&name);
        self.ns.release(name.as_str(), &self.name);
        self.invalidate();
        let kept = read(&self.snapshots)
            .values()
            .filter(|e| e.rec.volume == name)
            .count();
        info!(service = %self.name, volume = %name, operation = "remove", forced = users > 0,
            snapshots_kept = kept,
            duration_ms = started.elapsed().as_millis() as u64, "volume removed");
        Ok(())
    }

    /// `VolumeDriver.Mount`: returns the path Docker uses.
    pub async fn mount(&self, name: &str, id: Option<&str>) -> ServiceResult<PathBuf> {
        let name = VolumeName::parse(name)?;
        let id = MountId::parse(id)
            .map_err(|r| ServiceError::BadInput(format!("volume {name}: {r}")))?;
        let policy = self.policy();
        let _g = self.ns.lock(name.as_str()).await;
        if self.known(&name).await?.is_none() {
            if !policy.create_implicit {
                return Err(ServiceError::NotFound(name.to_string()));
            }
            let spec = CreateSpec::parse(
                &BTreeMap::new(),
                &policy.create_defaults,
                (policy.data_mode, policy.data_uid, policy.data_gid),
            )
            .map_err(|e| ServiceError::Option {
                volume: name.to_string(),
                source: e,
            })?;
            info!(service = %self.name, volume = %name, operation = "mount", "unknown volume: creating it (volume.create.implicit)");
            self.create_locked(&name, spec).await?;
        }
        let mut rec = self
            .get_record(&name)
            .ok_or_else(|| ServiceError::NotFound(name.to_string()))?;
        let started = Instant::now();
        let target = self.target_of(&name);
        let driver = self.driver.clone();
        let store = self.store.clone();
        let n = name.clone();
        let root_path = policy.root_path.clone();
        let first = rec.mount_count() == 0;
        let how = driver::MountHow {
            preempt: policy.mount_preempt,
        };
        let (rec, data) = blocking(&name, move || {
            let fresh = driver.mount_with(&rec, &target, &how)?;
            let newly_mounted = rec.mounted.is_none();
            let undo = |rec: &VolumeRecord| {
                if newly_mounted {
                    if let Err(e) = driver.unmount(rec, &target) {
                        warn!(volume = %rec.name, "rollback of mount failed: {e}");
                    }
                }
            };
            let data = match driver::prepare_data_dir(&rec, &target, &root_path) {
                Ok(d) => d,
                Err(e) => {
                    undo(&rec);
                    return Err(e.into());
                }
            };
            rec.mounted = Some(fresh);
            rec.owner_pending = false;
            rec.add_mount(&id);
            if let Err(e) = store.save(&rec) {
                undo(&rec);
                return Err(state_err(&n)(e));
            }
            Ok((rec, data))
        })
        .await?;
        info!(service = %self.name, volume = %name, operation = "mount", first,
            users = rec.mount_count(), duration_ms = started.elapsed().as_millis() as u64,
            "volume mounted at {}", data.display());
        self.put(rec, 0);
        Ok(data)
    }

    /// `VolumeDriver.Unmount`. The last user's unmount (or every unmount
    /// with `ignoreusedcount`) really unmounts.
    pub async fn unmount(&self, name: &str, id: Option<&str>) -> ServiceResult<()> {
        let name = VolumeName::parse(name)?;
        let id = MountId::parse(id)
            .map_err(|r| ServiceError::BadInput(format!("volume {name}: {r}")))?;
        let policy = self.policy();
        let _g = self.ns.lock(name.as_str()).await;
        let Some(mut rec) = self.get_record(&name) else {
            warn!(service = %self.name, volume = %name, operation = "unmount", "unmount of an unknown volume: nothing to do");
            return Ok(());
        };
        if policy.ignore_used_count {
            rec.mounts.clear();
        } else if !rec.remove_mount(&id) {
            if rec.mount_count() > 0 {
                warn!(service = %self.name, volume = %name, operation = "unmount", mount_id = %id,
                    users = rec.mount_count(), "mount ID holds no mount of this volume: nothing unmounted");
                return Ok(());
            }
            if rec.mounted.is_none() {
                return Ok(());
            }
        }
        let started = Instant::now();
        if rec.mount_count() == 0 && rec.mounted.is_some() {
            let target = self.target_of(&name);
            let driver = self.driver.clone();
            let store = self.store.clone();
            let n = name.clone();
            let before = self.get_record(&name);
            let rec2 = blocking(&name, move || {
                // Record first: a failed write leaves the volume mounted
                // and counted; a crash right after it is repaired at
                // start-up (mounted with no user: unmounted).
                rec.mounted = None;
                store.save(&rec).map_err(state_err(&n))?;
                if let Err(e) = driver.unmount(&rec, &target) {
                    if let Some(b) = before {
                        if let Err(se) = store.save(&b) {
                            warn!(volume = %n, "could not restore the record of a failed unmount: {se}");
                        }
                    }
                    return Err(e.into());
                }
                Ok(rec)
            })
            .await?;
            let allocated = self.driver.allocated(&rec2);
            info!(service = %self.name, volume = %name, operation = "unmount", mount_id = %id,
                duration_ms = started.elapsed().as_millis() as u64, "volume unmounted");
            self.put(rec2, allocated);
        } else {
            let store = self.store.clone();
            let n = name.clone();
            let rec2 = blocking(&name, move || {
                store.save(&rec).map_err(state_err(&n))?;
                Ok(rec)
            })
            .await?;
            info!(service = %self.name, volume = %name, operation = "unmount", mount_id = %id,
                users = rec2.mount_count(), "mount released; volume stays mounted for its other users");
            self.put(rec2, 0);
        }
        Ok(())
    }

    fn view_of(&self, e: &Entry) -> VolumeView {
        let root = read(&self.policy).root_path.clone();
        let (mountpoint, usage) = match &e.rec.mounted {
            Some(m) => {
                let usage = fsutil::space(&m.target)
                    .map(|s| driver::Usage {
                        used: s.used,
                        free: Some(s.available),
                    })
                    .unwrap_or_default();
                (Some(driver::data_path(&m.target, &root)), usage)
            }
            None => (
                None,
                driver::Usage {
                    used: e.allocated,
                    free: None,
                },
            ),
        };
        VolumeView {
            record: e.rec.clone(),
            mountpoint,
            usage,
            fs_label: self.driver.fs_label(&e.rec),
            extra: self.driver.inspect_fields(&e.rec),
        }
    }

    /// `VolumeDriver.Get`.
    pub fn get(&self, name: &str) -> ServiceResult<VolumeView> {
        let name = VolumeName::parse(name)?;
        let cat = read(&self.catalog);
        let e = cat
            .get(&name)
            .ok_or_else(|| ServiceError::NotFound(name.to_string()))?;
        Ok(self.view_of(e))
    }

    /// `VolumeDriver.Path`: the data path when mounted.
    pub fn path(&self, name: &str) -> ServiceResult<Option<PathBuf>> {
        let name = VolumeName::parse(name)?;
        let root = read(&self.policy).root_path.clone();
        let cat = read(&self.catalog);
        let e = cat
            .get(&name)
            .ok_or_else(|| ServiceError::NotFound(name.to_string()))?;
        Ok(e.rec
            .mounted
            .as_ref()
            .map(|m| driver::data_path(&m.target, &root)))
    }

    /// Every volume (for the CLI).
    pub fn list_views(&self) -> Vec<VolumeView> {
        let cat = read(&self.catalog);
        cat.values().map(|e| self.view_of(e)).collect()
    }

    /// `VolumeDriver.List` response body, cached until the next change.
    pub fn list_body(
        &self,
        render: impl FnOnce(&mut dyn Iterator<Item = (&str, Option<PathBuf>, &str)>) -> Bytes,
    ) -> Bytes {
        if let Ok(c) = self.list_cache.lock() {
            if let Some(b) = c.as_ref() {
                return b.clone();
            }
        }
        let root = read(&self.policy).root_path.clone();
        let body = {
            let cat = read(&self.catalog);
            let mut it = cat.values().map(|e| {
                (
                    e.rec.name.as_str(),
                    e.rec
                        .mounted
                        .as_ref()
                        .map(|m| driver::data_path(&m.target, &root)),
                    e.rec.created_at.as_str(),
                )
            });
            render(&mut it)
        };
        if let Ok(mut c) = self.list_cache.lock() {
            *c = Some(body.clone());
        }
        body
    }
}

/// REX-Ray's inspect `Status` keys plus Berth's own.
pub fn status_map(view: &VolumeView, service: &str) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::{json, Value};
    let r = &view.record;
    let mut m = serde_json::Map::new();
    // REX-Ray's keys, same names and types.
    m.insert("name".into(), json!(r.name.as_str()));
    m.insert("size".into(), json!(bytes_to_gb(r.size)));
    m.insert("iops".into(), json!(r.iops));
    let pool = if r.volume_type.is_empty() {
        DEFAULT_POOL
    } else {
        r.volume_type.as_str()
    };
    m.insert("type".into(), json!(pool));
    m.insert("availabilityZone".into(), json!(r.availability_zone));
    m.insert("service".into(), json!(service));
    m.insert("server".into(), json!(service));
    m.insert("fields".into(), Value::Null);
    // Berth's additions.
    m.insert("id".into(), json!(r.id));
    m.insert("fsType".into(), json!(view.fs_label));
    m.insert("sizeBytes".into(), json!(r.size));
    m.insert("usedBytes".into(), json!(view.usage.used));
    m.insert("freeBytes".into(), json!(view.usage.free));
    m.insert("mounted".into(), json!(r.mounted.is_some()));
    m.insert("mountCount".into(), json!(r.mount_count()));
    m.insert("dataMode".into(), json!(format!("{:04o}", r.mode)));
    m.insert("dataUid".into(), json!(r.uid));
    m.insert("dataGid".into(), json!(r.gid));
    if let Some(mr) = &r.mounted {
        m.insert("device".into(), json!(mr.device.to_string_lossy()));
    }
    if !r.origin.is_empty() {
        m.insert("origin".into(), json!(r.origin));
    }
    if let Some(method) = r.driver_data.get("copyMethod") {
        m.insert("copyMethod".into(), json!(method));
    }
    for (k, v) in &view.extra {
        m.insert(k.clone(), json!(v));
    }
    m
}

/// A create's source, resolved under its lock.
enum Resolved {
    Volume(VolumeRecord),
    Snapshot(SnapshotRecord),
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
mod tests;
