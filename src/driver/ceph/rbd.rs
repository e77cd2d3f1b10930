//! The `rbd` driver: a volume is an RBD image holding a filesystem.
//!
//! Attach path on this host: `rbd-fuse` shows the image as a file, a loop
//! device turns the file into a block device, and the filesystem is
//! mounted from it (hosts without the krbd or nbd kernel modules have no
//! other way). One writer at a time: the attaching host takes an RBD
//! advisory lock with cookie `berth:<host>`. Mounting a volume another
//! host holds fails with that host's name, unless `mount.preempt` is set:
//! then every client that has the image open (its watchers: the other
//! host's rbd-fuse) is blocklisted first and Berth waits until every
//! placement group of the pool has the OSD map epoch carrying the entry — fenced, it can never write
//! again — then the lock is broken and taken, and only then is this
//! host's rbd-fuse started (docs/ceph.md, "The hand-over sequence").
//!
//! Snapshots are RBD snapshots; clones are RBD clones flattened at once,
//! so no volume depends on another's snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::index::Index;
use super::scan::RbdScan;
use super::{
    encode, encode_snapshot, remove_dir_quietly, Backend, FENCE_DURATION, META_KEY,
    SNAP_META_PREFIX,
};
use crate::driver::{
    fsops, CreateHow, CreateSource, Driver, DriverError, DriverResult, MountHow, Progress, TakeOver,
};
use crate::state::{CopyMethod, Facts, MountRecord, SnapshotRecord, VolumeRecord};
use crate::sys::ceph::{self as sysceph, RbdPool};
use crate::sys::{blockfs, fsutil, loopdev, mounts, mounts::MountTable};
use crate::volume::VolumeName;

mod adopt;
mod format;
mod hold;

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
    /// Volumes mounted on this host.
    held: Arc<Mutex<BTreeSet<String>>>,
    /// What the sampler's hold checks learnt of them ([`hold`]).
    holds: hold::Holds,
    /// Volumes between taking the lock and being mounted; held while a
    /// start-up release of stale locks looks at a name, so it can never
    /// break a lock a mount just took.
    attaching: Arc<Mutex<BTreeSet<String>>>,
    /// The service's catalog index.
    index: Arc<Index>,
    /// Images of another plugin shown and adopted (`adopt`).
    adopt: Option<adopt::Adopting>,
}

/// How long start-up (and a new attach) waits for a leftover rbd-fuse
/// and its loop devices to go.
const LEFTOVER_WAIT: Duration = Duration::from_secs(5);

impl RbdDriver {
    /// A driver for images in `pool`.
    pub fn new(b: Backend, pool: String, fuse_root: PathBuf, timeout: Duration) -> Self {
        let b = Arc::new(b);
        b.warm_up();
        let index = Index::new(
            b.clone(),
            Arc::new(RbdScan {
                b: b.clone(),
                pool: pool.clone(),
            }),
        );
        RbdDriver {
            b,
            index,
            pool,
            fuse_root,
            timeout,
            held: Arc::default(),
            holds: hold::Holds::default(),
            attaching: Arc::default(),
            adopt: None,
        }
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
            // The hand-over: fence (blocklist, then wait until every
            // placement group has the epoch carrying it), break the lock,
            // take ours; only
            // then does attach start this host's rbd-fuse, whose first
            // write the OSDs order after everything the old owner got in.
            let fenced = self.fence(pool, name)?;
            pool.break_lock(name, &l.client, &l.cookie)
                .map_err(|e| fail("break the other host's lock", e))?;
            warn!(volume = %name, host = %holder, fenced = %fenced.join(", "),
                "preempted: host {holder}'s clients of the image are blocklisted and its lock broken");
        }
        pool.lock_exclusive(name, &cookie)
            .map_err(|e| fail("lock image", e))
    }

    /// Fences every client that has the image open (another host's
    /// rbd-fuse): blocklists it and waits until every placement group of
    /// the pool works with the OSD map epoch carrying the entry
    /// ([`RbdPool::fence`]). From then on the OSDs refuse its writes; any
    /// it got in earlier are ordered before the first write this host's
    /// rbd-fuse (started later) sends. Returns their addresses.
    fn fence(&self, pool: &RbdPool, name: &str) -> DriverResult<Vec<String>> {
        let watchers = pool
            .watchers(name)
            .map_err(|e| self.b.fail(name, "list the image's clients", e))?;
        let mut fenced = Vec::new();
        for w in watchers {
            let t = Instant::now();
            let epoch = pool
                .fence(&w.addr, FENCE_DURATION)
                .map_err(|e| self.b.fail(name, "fence the other host's client", e))?;
            info!(volume = %name, client = %w.addr, epoch, took = ?t.elapsed(),
                "client blocklisted; every placement group of the pool has the OSD map epoch that carries it");
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
        rec: &mut VolumeRecord,
        target: &Path,
        how: &MountHow,
    ) -> DriverResult<MountRecord> {
        let owned = rec.name.to_string();
        let name = owned.as_str();
        self.acquire(pool, name, how.preempt)?;
        let undo_lock = || self.release(name);
        if rec.adoption_pending() {
            if let Err(e) = self.adopt_locked(pool, rec) {
                undo_lock();
                return Err(e);
            }
        }
        let file = match self.expose(name) {
            Ok(f) => f,
            Err(e) => {
                undo_lock();
                return Err(e);
            }
        };
        // The lock goes whatever happens; a failed conceal is the
        // rollback failure.
        let undo_expose = || {
            let hidden = self.conceal(name, self.timeout);
            undo_lock();
            hidden
        };
        if rec.adoption_pending() {
            if let Err(e) = self.adopt_filesystem(rec, &file) {
                return Err(e.undone(undo_expose()));
            }
        }
        let device = match blockfs::attach_and_mount(&file, target, rec.fs_type, 0o755) {
            Ok(d) => d,
            Err(e) => {
                let cause = DriverError::mount_failed(&rec.name, e);
                return Err(cause.undone(undo_expose()));
            }
        };
        lock(&self.held).insert(name.to_string());
        self.holds.forget(name);
        info!(volume = %name, host = %self.b.host(), via = ATTACH_METHOD, "image attached and locked by this host");
        if let Err(e) = self.adopt_record(pool, rec) {
            return Err(e.undone(self.detach(rec, target)));
        }
        Ok(MountRecord {
            device,
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
        let known = self.holds.forget(name);
        let lost = self.lost_lock(name, attached);
        if lost || known.is_some() {
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

    /// Stores the record in the image's metadata, then in the index.
    fn save_meta(&self, pool: &RbdPool, rec: &VolumeRecord) -> DriverResult<()> {
        pool.meta_set(rec.name.as_str(), META_KEY, &encode(rec))
            .map_err(|e| self.b.fail(rec.name.as_str(), "store volume metadata", e))?;
        self.index.put_volume(rec)
    }

    /// Makes the filesystem on a new image through rbd-fuse: what
    /// [`RbdDriver::format`] falls back to when the local scratch file
    /// cannot be made.
    fn format_through_fuse(&self, rec: &VolumeRecord) -> DriverResult<()> {
        let name = rec.name.as_str();
        let file = self.expose(name)?;
        let made = fsops::mkfs(rec.fs_type, &file, self.timeout)
            .map_err(|e| DriverError::sys(&rec.name, "make filesystem", e));
        let hidden = self.conceal(name, self.timeout);
        made?;
        hidden
    }

    /// A full copy of `src@snap` as the image of `rec` (clone, then
    /// flatten).
    fn copy_from_snapshot(
        &self,
        pool: &RbdPool,
        rec: &VolumeRecord,
        src: &str,
        snap: &str,
        progress: Option<&Progress>,
    ) -> DriverResult<()> {
        let dst = rec.name.as_str();
        pool.clone_image(src, snap, dst)
            .map_err(|e| self.b.fail(dst, "clone image", e))?;
        if let Err(e) = self.mark_creating(pool, rec) {
            return Err(e.undone(self.remove_image(pool, dst)));
        }
        if let Some(p) = progress {
            p.set(0, 1);
        }
        if let Err(e) = pool.flatten(dst) {
            let cause = self.b.fail(dst, "flatten clone", e);
            return Err(cause.undone(self.remove_image(pool, dst)));
        }
        if let Some(p) = progress {
            p.set(1, 1);
        }
        Ok(())
    }

    /// Removes image `name` (absent is fine); one still open by clients
    /// without a lock (left by a crash) is fenced first.
    fn remove_locked_out(&self, pool: &RbdPool, name: &str) -> DriverResult<()> {
        match pool.remove(name) {
            Ok(()) => Ok(()),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
            Err(e) if e.errno() == Some(libc::EBUSY) => {
                // Still open by a client that holds no lock (checked above):
                // what a killed berthd or rbd-fuse of this host left behind,
                // whose watch would linger for 30 s. Fence it and retry.
                let fenced = self.fence(pool, name)?;
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

    /// Undoes the creation of image `name` (absent is fine).
    fn remove_image(&self, pool: &RbdPool, name: &str) -> DriverResult<()> {
        match pool.remove(name) {
            Ok(()) => Ok(()),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(self.b.fail(name, "remove image", e)),
        }
    }

    /// Undoes snapshot `snap` of `image` made by this call: unprotects
    /// it when it was `protected` here, then removes it (absent is fine).
    fn drop_snapshot(
        &self,
        pool: &RbdPool,
        image: &str,
        snap: &str,
        protected: bool,
    ) -> DriverResult<()> {
        if protected {
            pool.snap_unprotect(image, snap)
                .map_err(|e| self.b.fail(snap, "unprotect RBD snapshot", e))?;
        }
        match pool.snap_remove(image, snap) {
            Ok(()) => Ok(()),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(self.b.fail(snap, "remove RBD snapshot", e)),
        }
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
                if let Err(e) = self.mark_creating(&pool, rec) {
                    return Err(e.undone(self.remove_image(&pool, &name)));
                }
                if let Err(e) = self.format(&pool, rec) {
                    return Err(e.undone(self.remove_image(&pool, &name)));
                }
            }
            Some(CreateSource::Snapshot(s)) => {
                let image = s
                    .driver_data
                    .get("image")
                    .cloned()
                    .unwrap_or_else(|| s.volume.to_string());
                self.copy_from_snapshot(&pool, rec, &image, s.name.as_str(), how.progress)?;
                rec.set_copy_method(CopyMethod::RbdClone);
            }
            Some(CreateSource::Volume(v)) => {
                self.refuse_pending(v, "a clone")?;
                let src = v.name.as_str();
                let tmp = format!("berth-clone-{}", rec.id);
                let freeze_at = v
                    .mounted
                    .as_ref()
                    .map(|m| m.target.as_path())
                    .filter(|t| t.exists());
                blockfs::frozen_copy(
                    freeze_at,
                    || {
                        pool.snap_create(src, &tmp)
                            .map_err(|e| self.b.fail(src, "snapshot for clone", e))
                    },
                    |()| self.drop_snapshot(&pool, src, &tmp, false),
                )
                .map_err(|e| DriverError::frozen_copy_failed(&v.name, e))?;
                let protected = pool
                    .snap_protect(src, &tmp)
                    .map_err(|e| self.b.fail(src, "protect snapshot", e));
                let was_protected = protected.is_ok();
                let made = protected
                    .and_then(|_| self.copy_from_snapshot(&pool, rec, src, &tmp, how.progress));
                let dropped = self.drop_snapshot(&pool, src, &tmp, was_protected);
                match (made, dropped) {
                    (Err(cause), dropped) => return Err(cause.undone(dropped)),
                    // The clone stands on its own; the temporary snapshot
                    // goes with its volume at the latest (remove).
                    (Ok(()), Err(e)) => {
                        warn!(volume = %src, "could not remove temporary snapshot {tmp}: {e}")
                    }
                    (Ok(()), Ok(())) => {}
                }
                rec.set_copy_method(CopyMethod::RbdClone);
            }
        }
        rec.driver_data.insert("pool".into(), self.pool.clone());
        if let Err(e) = self.save_meta(&pool, rec) {
            return Err(e.undone(self.remove_image(&pool, &name)));
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
        super::remove_unindexed(&self.index, rec, || self.remove_locked_out(&pool, name))
    }

    fn mount(&self, rec: &VolumeRecord, target: &Path) -> DriverResult<MountRecord> {
        self.mount_with(&mut rec.clone(), target, &MountHow::default())
    }

    fn mount_with(
        &self,
        rec: &mut VolumeRecord,
        target: &Path,
        how: &MountHow,
    ) -> DriverResult<MountRecord> {
        let name = rec.name.to_string();
        let file = self.fuse_dir(&name).join(&name);
        if let Some(m) = crate::driver::existing_loop_mount(rec, target, &file)? {
            return Ok(m);
        }
        let pool = self.pool(&name)?;
        lock(&self.attaching).insert(name.clone());
        let attached = self.attach(&pool, rec, target, how);
        lock(&self.attaching).remove(&name);
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
        let mut notes = fsops::thaw_interrupted_freezes(records, table);
        // rbd-fuse mounts of volumes this host does not mount: left by a
        // crash between exposing and mounting.
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
            if n.starts_with(".mkfs-") {
                // The scratch file of a create a crash interrupted.
                let _ = std::fs::remove_file(e.path());
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
        let mut volumes = self.index.volumes()?;
        let adoptable = self.adoptable(&volumes)?;
        volumes.extend(adoptable);
        Ok(volumes)
    }

    fn catalog_version(&self) -> DriverResult<Option<u64>> {
        let index = self.index.built_version()?;
        self.with_adoptable_version(index)
    }

    fn catalog_get(&self, name: &VolumeName) -> DriverResult<Option<VolumeRecord>> {
        match self.index.volume(name.as_str())? {
            Some(rec) => Ok(Some(rec)),
            None => self.adoptable_one(name),
        }
    }

    fn fs_label(&self, rec: &VolumeRecord) -> String {
        if rec.adoption_pending() {
            return "(found at the first mount)".into();
        }
        rec.fs_type.as_str().to_string()
    }

    fn snapshot_catalog_list(&self) -> DriverResult<Vec<SnapshotRecord>> {
        self.index.snapshots()
    }

    fn health(&self) -> Option<String> {
        self.b.problem()
    }

    fn check_hold(&self, rec: &VolumeRecord) -> DriverResult<Option<TakeOver>> {
        self.check_hold_of(rec.name.as_str())
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
        self.refuse_pending(rec, "a snapshot")?;
        let name = rec.name.as_str();
        let pool = self.pool(name)?;
        let sname = snap.name.as_str();
        let freeze_at = rec
            .mounted
            .as_ref()
            .map(|m| m.target.as_path())
            .filter(|t| t.exists());
        blockfs::frozen_copy(
            freeze_at,
            || {
                pool.snap_create(name, sname)
                    .map_err(|e| self.b.fail(sname, "create RBD snapshot", e))
            },
            |()| self.drop_snapshot(&pool, name, sname, false),
        )
        .map_err(|e| DriverError::frozen_copy_failed(&rec.name, e))?;
        if let Err(e) = pool.snap_protect(name, sname) {
            let cause = self.b.fail(sname, "protect RBD snapshot", e);
            return Err(cause.undone(self.drop_snapshot(&pool, name, sname, false)));
        }
        snap.driver_data.insert("image".into(), name.to_string());
        snap.driver_data.insert("pool".into(), self.pool.clone());
        let key = format!("{SNAP_META_PREFIX}{}", snap.name);
        if let Err(e) = pool.meta_set(name, &key, &encode_snapshot(snap)) {
            let cause = self.b.fail(sname, "store snapshot metadata", e);
            return Err(cause.undone(self.drop_snapshot(&pool, name, sname, true)));
        }
        super::unindex(&self.index.put_snapshot(snap), &self.index, sname);
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
        let name = snap.name.as_str();
        super::gone_ok(pool.snap_remove(&image, name))
            .map_err(|e| self.b.fail(name, "remove RBD snapshot", e))?;
        super::gone_ok(pool.meta_remove(&image, &format!("{SNAP_META_PREFIX}{name}")))
            .map_err(|e| self.b.fail(name, "remove snapshot metadata", e))?;
        super::unindex(&self.index.drop_snapshot(snap), &self.index, name);
        Ok(())
    }

    fn resize(&self, rec: &VolumeRecord, new_size: u64) -> DriverResult<()> {
        self.refuse_pending(rec, "a resize")?;
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
                .map_err(|e| e.into_driver(&rec.name));
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
