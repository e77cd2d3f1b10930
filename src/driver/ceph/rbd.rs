//! The `rbd` driver: a volume is an RBD image holding a filesystem.
//!
//! Attach path on this host: `rbd-fuse` shows the image as a file, a loop
//! device turns the file into a block device, and the filesystem is
//! mounted from it (hosts without the krbd or nbd kernel modules have no
//! other way). One writer at a time: the attaching host takes an RBD
//! advisory lock with cookie `berth:<host>`. Mounting a volume another
//! host holds fails with that host's name, unless `mount.preempt` is set:
//! then every client that has the image open (its watchers: the other
//! host's rbd-fuse) is blocklisted first — fenced, it can never write
//! again — and the lock is broken and taken.
//!
//! Snapshots are RBD snapshots; clones are RBD clones flattened at once,
//! so no volume depends on another's snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::{
    decode, encode, encode_snapshot, remove_dir_quietly, scan, snapshots_in, Backend,
    FENCE_DURATION, META_KEY, SNAP_META_PREFIX,
};
use crate::driver::{
    fsops, CreateHow, CreateSource, Driver, DriverError, DriverResult, MountHow, Progress,
};
use crate::state::{MountRecord, SnapshotRecord, VolumeRecord};
use crate::sys::ceph::{self as sysceph, CephError, RbdPool};
use crate::sys::{fsutil, loopdev, mounts, mounts::MountTable, reflink};
use crate::volume::{FsType, VolumeName};

/// How volumes are attached on this host (shown by inspect).
pub const ATTACH_METHOD: &str = "rbd-fuse+loop";

/// The rbd driver.
#[derive(Debug)]
pub struct RbdDriver {
    b: Arc<Backend>,
    pool: String,
    /// rbd-fuse mounts: `<fuse_root>/<volume>/<volume>` is the image file.
    fuse_root: PathBuf,
    timeout: Duration,
    /// Volumes mounted on this host: the lock watch checks that this host
    /// still holds them.
    held: Arc<Mutex<BTreeSet<String>>>,
    /// Volumes between taking the lock and being mounted; held while a
    /// start-up release of stale locks looks at a name, so it can never
    /// break a lock a mount just took.
    attaching: Arc<Mutex<BTreeSet<String>>>,
}

/// How long start-up (and a new attach) waits for a leftover rbd-fuse
/// and its loop devices to go.
const LEFTOVER_WAIT: Duration = Duration::from_secs(5);

/// How often a host checks that it still holds the locks of the volumes
/// it has mounted.
pub const LOCK_CHECK: Duration = Duration::from_secs(5);

impl RbdDriver {
    /// A driver for images in `pool`.
    pub fn new(b: Backend, pool: String, fuse_root: PathBuf, timeout: Duration) -> Self {
        let b = Arc::new(b);
        b.warm_up();
        let d = RbdDriver {
            b,
            pool,
            fuse_root,
            timeout,
            held: Arc::default(),
            attaching: Arc::default(),
        };
        d.watch_locks();
        d
    }

    /// Starts the lock watch: a volume mounted here whose lock another
    /// host took (preemption) has its rbd-fuse killed at once. The other
    /// host blocklisted it already; killing it makes sure its pending
    /// writes can never land, even after the blocklisting ends.
    fn watch_locks(&self) {
        let held = Arc::downgrade(&self.held);
        let b = self.b.clone();
        let pool = self.pool.clone();
        let root = self.fuse_root.clone();
        let cookie = self.cookie();
        let timeout = self.timeout;
        let _ = std::thread::Builder::new()
            .name("rbd-lock-watch".into())
            .spawn(move || loop {
                std::thread::sleep(LOCK_CHECK);
                let Some(held) = held.upgrade() else {
                    return;
                };
                let names: Vec<String> = lock(&held).iter().cloned().collect();
                if names.is_empty() {
                    continue;
                }
                let Ok(cluster) = b.cluster("(lock watch)") else {
                    continue;
                };
                let Ok(p) = cluster.rbd(&pool) else {
                    continue;
                };
                for name in names {
                    let Ok(lockers) = p.lockers(&name) else {
                        continue;
                    };
                    if lockers.iter().any(|l| l.cookie == cookie) {
                        continue;
                    }
                    // Still ours to watch? (An unmount may have run.)
                    if !lock(&held).remove(&name) {
                        continue;
                    }
                    let by = lockers
                        .first()
                        .map(|l| l.cookie.trim_start_matches("berth:").to_string())
                        .unwrap_or_else(|| "another host".into());
                    let killed = sysceph::kill_helpers(&root.join(&name), timeout);
                    error!(volume = %name, taken_by = %by, helpers = ?killed,
                        "volume was taken over by host {by}: this host's access is cut (rbd-fuse stopped); unmount it here");
                }
            });
    }

    /// Whether another host took this host's lock on `name` (it was
    /// preempted). Unknown (cluster unreachable) counts as no. No lock at
    /// all counts as taken only while the volume is `attached` here (it
    /// had this host's lock): an image being created or removed has none
    /// (the start-up clean-up of an interrupted create unmounts it too),
    /// and its rbd-fuse must be stopped cleanly — a SIGKILLed one leaves
    /// its watch on the image for the OSDs' watch timeout (30 s), and
    /// `rbd remove` refuses the image (EBUSY) until then.
    fn lost_lock(&self, name: &str, attached: bool) -> bool {
        let cookie = self.cookie();
        self.pool(name)
            .and_then(|p| {
                p.lockers(name)
                    .map_err(|e| self.b.fail(name, "list lockers", e))
            })
            .map(|ls| (attached || !ls.is_empty()) && !ls.iter().any(|l| l.cookie == cookie))
            .unwrap_or(false)
    }

    fn cookie(&self) -> String {
        format!("berth:{}", self.b.host())
    }

    fn pool(&self, volume: &str) -> DriverResult<RbdPool> {
        let c = self.b.cluster(volume)?;
        c.rbd(&self.pool)
            .map_err(|e| self.b.fail(volume, "open RBD pool", e))
    }

    fn fuse_dir(&self, name: &str) -> PathBuf {
        self.fuse_root.join(name)
    }

    /// Shows image `name` as a file (a fresh rbd-fuse) and returns its
    /// path. Callers have no mount of the volume, so a running rbd-fuse
    /// of it is a leftover.
    fn expose(&self, name: &str) -> DriverResult<PathBuf> {
        let dir = self.fuse_dir(name);
        let table =
            MountTable::read().map_err(|e| DriverError::sys(&name, "read mount table", e))?;
        if table.at(&dir).is_some() {
            // Left by an attach that did not finish (a crash): it may
            // serve an image removed and made again since. Start afresh.
            self.conceal(name, LEFTOVER_WAIT)?;
        }
        fsutil::ensure_dir(&dir, 0o700)
            .map_err(|e| DriverError::sys(&name, "create rbd-fuse directory", e))?;
        sysceph::rbd_fuse_mount(self.b.config(), &self.pool, name, &dir).map_err(|e| {
            remove_dir_quietly(&dir);
            self.b.fail(name, "expose image with rbd-fuse", e)
        })
    }

    /// Stops showing image `name` as a file: waits for loop devices on it
    /// to let go, then unmounts rbd-fuse and waits for it to exit.
    fn conceal(&self, name: &str, wait: Duration) -> DriverResult<()> {
        let dir = self.fuse_dir(name);
        let file = dir.join(name);
        let deadline = Instant::now() + wait;
        loop {
            let devs = loopdev::find_by_backing_file(&file);
            if devs.is_empty() {
                break;
            }
            for d in &devs {
                // Autoclear detaches after the unmount; detach is
                // asynchronous, so look again until none is left.
                let _ = loopdev::detach(d);
            }
            if Instant::now() > deadline {
                return Err(DriverError::Conflict {
                    volume: name.to_string(),
                    reason: format!(
                        "loop device(s) {} still use {} after {:?}",
                        devs.iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                        file.display(),
                        wait
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        sysceph::fuse_unmount(&dir, self.timeout)
            .map_err(|e| self.b.fail(name, "stop rbd-fuse", e))?;
        remove_dir_quietly(&dir);
        Ok(())
    }

    /// Takes the image's lock for this host, fencing the holder first when
    /// `preempt` is set.
    fn acquire(&self, pool: &RbdPool, name: &str, preempt: bool) -> DriverResult<()> {
        let cookie = self.cookie();
        let fail = |step, e| self.b.fail(name, step, e);
        match pool.lock_exclusive(name, &cookie) {
            Ok(()) => return Ok(()),
            Err(e) if e.errno() == Some(libc::EEXIST) => return Ok(()),
            Err(e) if e.errno() == Some(libc::EBUSY) => {}
            Err(e) => return Err(fail("lock image", e)),
        }
        let lockers = pool.lockers(name).map_err(|e| fail("list lockers", e))?;
        for l in &lockers {
            if l.cookie == cookie {
                // Ours, from an earlier connection (berthd restarted).
                pool.break_lock(name, &l.client, &l.cookie)
                    .map_err(|e| fail("release this host's old lock", e))?;
                continue;
            }
            let holder = l.cookie.strip_prefix("berth:").unwrap_or(&l.cookie);
            if !preempt {
                return Err(DriverError::Conflict {
                    volume: name.to_string(),
                    reason: format!(
                        "it is attached to host {holder} ({} at {}); unmount it there, or set volume.mount.preempt = true to take it over",
                        l.client, l.address
                    ),
                });
            }
            let fenced = self.fence(pool, name)?;
            pool.break_lock(name, &l.client, &l.cookie)
                .map_err(|e| fail("break the other host's lock", e))?;
            warn!(volume = %name, host = %holder, fenced = %fenced.join(", "),
                "preempted: host {holder}'s clients of the image are blocklisted and its lock broken");
        }
        pool.lock_exclusive(name, &cookie)
            .map_err(|e| fail("lock image", e))
    }

    /// Blocklists every client that has the image open (another host's
    /// rbd-fuse) so it can never write again. Returns their addresses.
    fn fence(&self, pool: &RbdPool, name: &str) -> DriverResult<Vec<String>> {
        let cluster = self.b.cluster(name)?;
        let watchers = pool
            .watchers(name)
            .map_err(|e| self.b.fail(name, "list the image's clients", e))?;
        let mut fenced = Vec::new();
        for w in watchers {
            cluster
                .blocklist_add(&w.addr, FENCE_DURATION)
                .map_err(|e| self.b.fail(name, "blocklist the other host's client", e))?;
            fenced.push(w.addr);
        }
        Ok(fenced)
    }

    /// Releases this host's lock, if it still holds it (a preempted host
    /// does not). Failures are logged: the volume is unmounted already,
    /// and the next mount on this host takes its own lock back.
    fn release(&self, name: &str) {
        let cookie = self.cookie();
        let done = self.pool(name).and_then(|pool| {
            let lockers = pool
                .lockers(name)
                .map_err(|e| self.b.fail(name, "list lockers", e))?;
            for l in lockers.iter().filter(|l| l.cookie == cookie) {
                pool.break_lock(name, &l.client, &l.cookie)
                    .map_err(|e| self.b.fail(name, "unlock image", e))?;
            }
            Ok(())
        });
        if let Err(e) = done {
            warn!(volume = %name, "could not release the image lock (another host will need preempt): {e}");
        }
    }

    /// Start-up: releases this host's locks on `names` (volumes it does
    /// not have mounted), left by a crash between locking and mounting. In
    /// the background, so an unreachable cluster does not hold start-up;
    /// a name a mount is attaching meanwhile is left alone.
    fn release_stale_locks(&self, names: Vec<String>) {
        if names.is_empty() {
            return;
        }
        let b = self.b.clone();
        let pool = self.pool.clone();
        let cookie = self.cookie();
        let held = self.held.clone();
        let attaching = self.attaching.clone();
        let _ = std::thread::Builder::new()
            .name("rbd-stale-locks".into())
            .spawn(move || {
                let Ok(p) = b.cluster("(start-up)").and_then(|c| {
                    c.rbd(&pool)
                        .map_err(|e| b.fail("(start-up)", "open RBD pool", e))
                }) else {
                    return;
                };
                for name in names {
                    let busy = lock(&attaching);
                    if busy.contains(&name) || lock(&held).contains(&name) {
                        continue;
                    }
                    let Ok(lockers) = p.lockers(&name) else {
                        continue;
                    };
                    for l in lockers.iter().filter(|l| l.cookie == cookie) {
                        if p.break_lock(&name, &l.client, &l.cookie).is_ok() {
                            info!(volume = %name,
                                "released this host's lock left by a crash (the volume is not mounted here)");
                        }
                    }
                    drop(busy);
                }
            });
    }

    /// The steps of a mount after the pool is open: lock (fencing with
    /// preempt), expose, loop, mount.
    fn attach(
        &self,
        pool: &RbdPool,
        rec: &VolumeRecord,
        target: &Path,
        how: &MountHow,
    ) -> DriverResult<MountRecord> {
        let name = rec.name.as_str();
        self.acquire(pool, name, how.preempt)?;
        let undo_lock = || self.release(name);
        let file = match self.expose(name) {
            Ok(f) => f,
            Err(e) => {
                undo_lock();
                return Err(e);
            }
        };
        let undo_expose = || {
            if let Err(e) = self.conceal(name, self.timeout) {
                warn!(volume = %name, "rollback: {e}");
            }
            undo_lock();
        };
        if let Err(e) = fsutil::ensure_dir(target, 0o755) {
            undo_expose();
            return Err(DriverError::sys(&rec.name, "create mount point", e));
        }
        let attached = match loopdev::attach(&file) {
            Ok(a) => a,
            Err(e) => {
                remove_dir_quietly(target);
                undo_expose();
                return Err(DriverError::sys(&rec.name, "attach loop device", e));
            }
        };
        let data = match rec.fs_type {
            FsType::Xfs => "nouuid",
            _ => "",
        };
        if let Err(e) = mounts::mount(attached.path(), target, rec.fs_type.as_str(), data) {
            let _ = attached.detach();
            remove_dir_quietly(target);
            undo_expose();
            return Err(DriverError::sys(&rec.name, "mount", e));
        }
        lock(&self.held).insert(name.to_string());
        info!(volume = %name, host = %self.b.host(), via = ATTACH_METHOD, "image attached and locked by this host");
        Ok(MountRecord {
            device: attached.path().to_path_buf(),
            target: target.to_path_buf(),
        })
    }

    /// Unmount, then stop the attach; a fenced host kills its rbd-fuse
    /// first and leaves the other host's lock alone.
    fn detach(&self, rec: &VolumeRecord, target: &Path) -> DriverResult<()> {
        let name = rec.name.as_str();
        lock(&self.held).remove(name);
        let attached = MountTable::read()
            .map(|t| t.at(target).is_some())
            .unwrap_or(true);
        let lost = self.lost_lock(name, attached);
        if lost {
            // Fenced: its rbd-fuse hangs on writes that must never land.
            let killed = sysceph::kill_helpers(&self.fuse_dir(name), self.timeout);
            if !killed.is_empty() {
                warn!(volume = %name, helpers = ?killed,
                    "another host took this volume over: stopped this host's rbd-fuse before unmounting");
            }
        }
        mounts::unmount(target).map_err(|e| DriverError::sys(&rec.name, "unmount", e))?;
        remove_dir_quietly(target);
        let exposed = MountTable::read()
            .map(|t| t.at(&self.fuse_dir(name)).is_some())
            .unwrap_or(true);
        if exposed {
            self.conceal(name, self.timeout)?;
        }
        if !lost {
            self.release(name);
        }
        Ok(())
    }

    /// The record stored with image `img` (none: not a Berth volume).
    fn stored(&self, pool: &RbdPool, img: &str) -> Result<Vec<VolumeRecord>, CephError> {
        Ok(pool
            .meta_get(img, META_KEY)?
            .and_then(|text| decode(&self.pool, &format!("image {img}"), &text))
            .into_iter()
            .collect())
    }

    /// Every image of the pool.
    fn images(&self, pool: &RbdPool) -> DriverResult<Vec<String>> {
        pool.list()
            .map_err(|e| self.b.fail("(catalog)", "list images", e))
    }

    fn save_meta(&self, pool: &RbdPool, rec: &VolumeRecord) -> DriverResult<()> {
        pool.meta_set(rec.name.as_str(), META_KEY, &encode(rec))
            .map_err(|e| self.b.fail(rec.name.as_str(), "store volume metadata", e))
    }

    fn format(&self, rec: &VolumeRecord) -> DriverResult<()> {
        let name = rec.name.as_str();
        let file = self.expose(name)?;
        let made = fsops::mkfs(rec.fs_type, &file, self.timeout)
            .map_err(|e| DriverError::sys(&rec.name, "make filesystem", e));
        let hidden = self.conceal(name, self.timeout);
        made?;
        hidden
    }

    /// A full copy of `src@snap` as image `dst` (clone, then flatten).
    fn copy_from_snapshot(
        &self,
        pool: &RbdPool,
        dst: &str,
        src: &str,
        snap: &str,
        progress: Option<&Progress>,
    ) -> DriverResult<()> {
        pool.clone_image(src, snap, dst)
            .map_err(|e| self.b.fail(dst, "clone image", e))?;
        if let Some(p) = progress {
            p.set(0, 1);
        }
        if let Err(e) = pool.flatten(dst) {
            let _ = pool.remove(dst);
            return Err(self.b.fail(dst, "flatten clone", e));
        }
        if let Some(p) = progress {
            p.set(1, 1);
        }
        Ok(())
    }
}

impl Driver for RbdDriver {
    fn kind(&self) -> &'static str {
        "rbd"
    }

    fn free_space(&self, _pool: &str) -> Option<u64> {
        None
    }

    fn create(&self, rec: &mut VolumeRecord, how: &CreateHow<'_>) -> DriverResult<()> {
        let name = rec.name.to_string();
        if how.overwrite_fs {
            return Err(DriverError::Unsupported {
                driver: "rbd",
                what: "overwritefs (a new rbd volume always gets a new filesystem)".into(),
            });
        }
        let pool = self.pool(&name)?;
        match how.source {
            None => {
                pool.create(&name, rec.size).map_err(|e| {
                    if e.errno() == Some(libc::EEXIST) {
                        DriverError::Conflict {
                            volume: name.clone(),
                            reason: format!("an RBD image {}/{name} already exists", self.pool),
                        }
                    } else {
                        self.b.fail(&name, "create image", e)
                    }
                })?;
                if let Err(e) = self.format(rec) {
                    let _ = pool.remove(&name);
                    return Err(e);
                }
            }
            Some(CreateSource::Snapshot(s)) => {
                let image = s
                    .driver_data
                    .get("image")
                    .cloned()
                    .unwrap_or_else(|| s.volume.to_string());
                self.copy_from_snapshot(&pool, &name, &image, s.name.as_str(), how.progress)?;
                rec.driver_data
                    .insert("copyMethod".into(), "rbd clone".into());
            }
            Some(CreateSource::Volume(v)) => {
                let src = v.name.as_str();
                let tmp = format!("berth-clone-{}", rec.id);
                let frozen = match &v.mounted {
                    Some(m) if m.target.exists() => Some(
                        reflink::freeze(&m.target)
                            .map_err(|e| DriverError::sys(&v.name, "freeze filesystem", e))?,
                    ),
                    _ => None,
                };
                let snapped = pool.snap_create(src, &tmp);
                if let Some(f) = frozen {
                    f.thaw()
                        .map_err(|e| DriverError::sys(&v.name, "thaw filesystem", e))?;
                }
                snapped.map_err(|e| self.b.fail(src, "snapshot for clone", e))?;
                let made = pool
                    .snap_protect(src, &tmp)
                    .map_err(|e| self.b.fail(src, "protect snapshot", e))
                    .and_then(|_| self.copy_from_snapshot(&pool, &name, src, &tmp, how.progress));
                let _ = pool.snap_unprotect(src, &tmp);
                if let Err(e) = pool.snap_remove(src, &tmp) {
                    warn!(volume = %src, "could not remove temporary snapshot {tmp}: {e}");
                }
                made?;
                rec.driver_data
                    .insert("copyMethod".into(), "rbd clone".into());
            }
        }
        rec.driver_data.insert("pool".into(), self.pool.clone());
        if let Err(e) = self.save_meta(&pool, rec) {
            let _ = pool.remove(&name);
            return Err(e);
        }
        Ok(())
    }

    fn remove(&self, rec: &VolumeRecord) -> DriverResult<()> {
        let name = rec.name.as_str();
        let pool = self.pool(name)?;
        match pool.lockers(name) {
            Ok(lockers) => {
                if let Some(l) = lockers.iter().find(|l| l.cookie != self.cookie()) {
                    let holder = l.cookie.strip_prefix("berth:").unwrap_or(&l.cookie);
                    return Err(DriverError::Conflict {
                        volume: name.to_string(),
                        reason: format!("it is attached to host {holder}; unmount it there first"),
                    });
                }
            }
            // Absent or not yet readable: the remove below tells.
            Err(e) if e.errno() == Some(libc::ENOENT) => {}
            Err(e) => return Err(self.b.fail(name, "list lockers", e)),
        }
        match pool.snap_list(name) {
            Ok(snaps) => {
                let (temp, user): (Vec<String>, Vec<String>) = snaps
                    .into_iter()
                    .map(|s| s.name)
                    .partition(|s| s.starts_with("berth-clone-"));
                // Temporary snapshots of clones from this volume that a
                // crash interrupted: nothing else removes them, and the
                // image cannot go while they are there. One a clone still
                // uses (another host copying now) cannot be unprotected
                // and stays; the remove below then fails.
                for t in &temp {
                    let _ = pool.snap_unprotect(name, t);
                    match pool.snap_remove(name, t) {
                        Ok(()) => {
                            warn!(volume = %name, "removed temporary snapshot {t} left by an interrupted clone")
                        }
                        Err(e) => {
                            warn!(volume = %name, "could not remove temporary snapshot {t}: {e}")
                        }
                    }
                }
                if !user.is_empty() {
                    return Err(DriverError::Conflict {
                        volume: name.to_string(),
                        reason: format!(
                            "its RBD image holds snapshots ({}); remove them first (berth snapshot rm)",
                            user.join(", ")
                        ),
                    });
                }
            }
            Err(e) if e.errno() == Some(libc::ENOENT) => {}
            Err(e) => return Err(self.b.fail(name, "list snapshots", e)),
        }
        self.release(name);
        match pool.remove(name) {
            Ok(()) => Ok(()),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
            Err(e) if e.errno() == Some(libc::EBUSY) => {
                // Still open by a client that holds no lock (checked above):
                // what a killed berthd or rbd-fuse of this host left behind,
                // whose watch would linger for 30 s. Fence it and retry.
                let fenced = self.fence(&pool, name)?;
                warn!(volume = %name, fenced = %fenced.join(", "),
                    "image still open by clients without a lock (left by a crash); blocklisted them to remove it");
                match pool.remove(name) {
                    Ok(()) => Ok(()),
                    Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
                    Err(e) => Err(self.b.fail(name, "remove image", e)),
                }
            }
            Err(e) => Err(self.b.fail(name, "remove image", e)),
        }
    }

    fn mount(&self, rec: &VolumeRecord, target: &Path) -> DriverResult<MountRecord> {
        self.mount_with(rec, target, &MountHow::default())
    }

    fn mount_with(
        &self,
        rec: &VolumeRecord,
        target: &Path,
        how: &MountHow,
    ) -> DriverResult<MountRecord> {
        let name = rec.name.as_str();
        let file = self.fuse_dir(name).join(name);
        if let Some(m) = crate::driver::existing_loop_mount(rec, target, &file)? {
            return Ok(m);
        }
        let pool = self.pool(name)?;
        lock(&self.attaching).insert(name.to_string());
        let attached = self.attach(&pool, rec, target, how);
        lock(&self.attaching).remove(name);
        attached
    }

    fn unmount(&self, rec: &VolumeRecord, target: &Path) -> DriverResult<()> {
        self.detach(rec, target)
    }

    fn allocated(&self, _rec: &VolumeRecord) -> u64 {
        0
    }

    fn reconcile(
        &self,
        records: &[VolumeRecord],
        _snapshots: &[SnapshotRecord],
        table: &MountTable,
    ) -> Vec<String> {
        // rbd-fuse mounts of volumes this host does not mount: left by a
        // crash between exposing and mounting.
        let mut notes = Vec::new();
        let in_use: BTreeSet<&str> = records
            .iter()
            .filter(|r| r.mount_count() > 0)
            .map(|r| r.name.as_str())
            .collect();
        lock(&self.held).extend(in_use.iter().map(|n| n.to_string()));
        self.release_stale_locks(
            records
                .iter()
                .filter(|r| r.mount_count() == 0)
                .map(|r| r.name.to_string())
                .collect(),
        );
        let Ok(entries) = std::fs::read_dir(&self.fuse_root) else {
            return notes;
        };
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if in_use.contains(n.as_str()) {
                continue;
            }
            if table.at(&e.path()).is_some() {
                // Start-up must not wait long: a loop device stuck on a
                // dead helper is reported, and retried at the next mount.
                match self.conceal(&n, LEFTOVER_WAIT) {
                    Ok(()) => notes.push(format!(
                        "volume {n}: rbd-fuse was running with no mount using it; stopped it"
                    )),
                    Err(err) => notes.push(format!(
                        "volume {n}: rbd-fuse runs with no mount using it and could not be stopped: {err}"
                    )),
                }
            } else {
                remove_dir_quietly(&e.path());
            }
        }
        notes
    }

    fn shared_catalog(&self) -> bool {
        true
    }

    fn catalog_list(&self) -> DriverResult<Vec<VolumeRecord>> {
        let pool = self.pool("(catalog)")?;
        let images = self.images(&pool)?;
        scan(&self.b, images, |img| self.stored(&pool, img))
    }

    fn catalog_get(&self, name: &VolumeName) -> DriverResult<Option<VolumeRecord>> {
        let pool = self.pool(name.as_str())?;
        Ok(scan(&self.b, vec![name.to_string()], |n| self.stored(&pool, n))?.pop())
    }

    fn snapshot_catalog_list(&self) -> DriverResult<Vec<SnapshotRecord>> {
        let pool = self.pool("(catalog)")?;
        let images = self.images(&pool)?;
        scan(&self.b, images, |img| {
            Ok(snapshots_in(&self.pool, img, &pool.meta_list(img)?))
        })
    }

    fn health(&self) -> Option<String> {
        self.b.problem()
    }

    fn inspect_fields(&self, _rec: &VolumeRecord) -> BTreeMap<String, String> {
        [
            ("attachMethod".to_string(), ATTACH_METHOD.to_string()),
            ("cephPool".to_string(), self.pool.clone()),
            ("host".to_string(), self.b.host().to_string()),
        ]
        .into()
    }

    fn snapshot(
        &self,
        rec: &VolumeRecord,
        snap: &mut SnapshotRecord,
        progress: &Progress,
    ) -> DriverResult<()> {
        let name = rec.name.as_str();
        let pool = self.pool(name)?;
        let frozen = match &rec.mounted {
            Some(m) if m.target.exists() => Some(
                reflink::freeze(&m.target)
                    .map_err(|e| DriverError::sys(&rec.name, "freeze filesystem", e))?,
            ),
            _ => None,
        };
        let made = pool.snap_create(name, snap.name.as_str());
        if let Some(f) = frozen {
            f.thaw()
                .map_err(|e| DriverError::sys(&rec.name, "thaw filesystem", e))?;
        }
        made.map_err(|e| self.b.fail(snap.name.as_str(), "create RBD snapshot", e))?;
        if let Err(e) = pool.snap_protect(name, snap.name.as_str()) {
            let _ = pool.snap_remove(name, snap.name.as_str());
            return Err(self.b.fail(snap.name.as_str(), "protect RBD snapshot", e));
        }
        snap.driver_data.insert("image".into(), name.to_string());
        snap.driver_data.insert("pool".into(), self.pool.clone());
        let key = format!("{SNAP_META_PREFIX}{}", snap.name);
        if let Err(e) = pool.meta_set(name, &key, &encode_snapshot(snap)) {
            let _ = pool.snap_unprotect(name, snap.name.as_str());
            let _ = pool.snap_remove(name, snap.name.as_str());
            return Err(self
                .b
                .fail(snap.name.as_str(), "store snapshot metadata", e));
        }
        progress.set(rec.size, rec.size);
        Ok(())
    }

    fn remove_snapshot(&self, snap: &SnapshotRecord) -> DriverResult<()> {
        let image = snap
            .driver_data
            .get("image")
            .cloned()
            .unwrap_or_else(|| snap.volume.to_string());
        let pool = self.pool(snap.name.as_str())?;
        let _ = pool.snap_unprotect(&image, snap.name.as_str());
        match pool.snap_remove(&image, snap.name.as_str()) {
            Ok(()) => {}
            Err(e) if e.errno() == Some(libc::ENOENT) => {}
            Err(e) => return Err(self.b.fail(snap.name.as_str(), "remove RBD snapshot", e)),
        }
        match pool.meta_remove(&image, &format!("{SNAP_META_PREFIX}{}", snap.name)) {
            Ok(()) => Ok(()),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(self
                .b
                .fail(snap.name.as_str(), "remove snapshot metadata", e)),
        }
    }

    fn resize(&self, rec: &VolumeRecord, new_size: u64) -> DriverResult<()> {
        let name = rec.name.as_str();
        if rec.mounted.is_some() {
            return Err(DriverError::Conflict {
                volume: name.to_string(),
                reason: "rbd volumes grow while unmounted; unmount it first".into(),
            });
        }
        let pool = self.pool(name)?;
        // Another host may have it mounted: hold the lock while growing.
        self.acquire(&pool, name, false)?;
        let grown = (|| {
            pool.resize(name, new_size)
                .map_err(|e| self.b.fail(name, "grow image", e))?;
            let file = self.expose(name)?;
            let scratch = self.fuse_root.join(format!(".grow-{name}"));
            let fs = fsops::grow_offline(rec.fs_type, &file, &scratch, self.timeout)
                .map_err(|e| DriverError::sys(&rec.name, e.step, e.source));
            let hidden = self.conceal(name, self.timeout);
            fs?;
            hidden?;
            let mut updated = rec.clone();
            updated.size = new_size;
            self.save_meta(&pool, &updated)
        })();
        self.release(name);
        grown
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
