//! A filesystem on a block image, at the OS boundary. Two mechanisms,
//! each in this one place for every driver:
//!
//! - [`attach_and_mount`]: attach an image file to a loop device and
//!   mount its filesystem (a loop volume's image, an RBD image seen as a
//!   file through rbd-fuse, the private mount of an offline grow). On
//!   failure nothing stays attached, and the mount point goes if it was
//!   made here.
//! - [`frozen_copy`]: freeze the filesystem mounted at a path, run a copy
//!   step (the loop driver copies the image, the rbd driver takes an RBD
//!   snapshot), thaw. One rollback discipline: a failed thaw is tried
//!   again by the freeze guard ([`reflink::Frozen`]) and fails the
//!   operation, and the copy the step made is undone by the caller's undo
//!   step; an undo that fails is returned with the thaw failure, never
//!   dropped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{fsutil, loopdev, mounts, reflink, SysError, SysResult};
use crate::volume::FsType;

/// A step of [`attach_and_mount`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountStep {
    /// Creating the mount point.
    MakeDir,
    /// Attaching the image to a loop device.
    Attach,
    /// Mounting the filesystem.
    Mount,
}

impl MountStep {
    /// The step's name in errors ("create mount point", …).
    pub fn as_str(self) -> &'static str {
        match self {
            MountStep::MakeDir => "create mount point",
            MountStep::Attach => "attach loop device",
            MountStep::Mount => "mount",
        }
    }
}

/// A failed [`attach_and_mount`]: the step, its error, and the failure
/// of detaching the loop device again, if that failed too.
#[derive(Debug)]
pub struct MountError {
    /// The step that failed.
    pub step: MountStep,
    /// Its error.
    pub source: SysError,
    /// Detaching the loop device after the mount failed, failed too.
    pub rollback: Option<Box<SysError>>,
}

/// The mount data a loop-mounted `fs` needs: xfs copies (clones,
/// snapshots) carry their source's UUID, which xfs refuses twice unless
/// told `nouuid`.
pub fn mount_data(fs: FsType) -> &'static str {
    match fs {
        FsType::Xfs => "nouuid",
        _ => "",
    }
}

/// Attaches `image` to a loop device (with autoclear) and mounts its
/// `fs` filesystem at `target`, made with `dir_mode` if it is not there.
/// Returns the loop device: the mount holds it from now on, and the
/// kernel detaches it when the filesystem is unmounted. On error the
/// device is detached and `target` removed if it was made here.
pub fn attach_and_mount(
    image: &Path,
    target: &Path,
    fs: FsType,
    dir_mode: u32,
) -> Result<PathBuf, MountError> {
    let fail = |step| {
        move |source| MountError {
            step,
            source,
            rollback: None,
        }
    };
    let made = !target.is_dir();
    fsutil::ensure_dir(target, dir_mode).map_err(fail(MountStep::MakeDir))?;
    let remove_made = || {
        if made {
            // Empty (nothing was mounted on it): removing cannot lose data.
            let _ = std::fs::remove_dir(target);
        }
    };
    let attached = loopdev::attach(image).map_err(|e| {
        remove_made();
        fail(MountStep::Attach)(e)
    })?;
    if let Err(source) = mounts::mount(attached.path(), target, fs.as_str(), mount_data(fs)) {
        let rollback = attached.detach().err().map(Box::new);
        remove_made();
        return Err(MountError {
            step: MountStep::Mount,
            source,
            rollback,
        });
    }
    Ok(attached.path().to_path_buf())
    // `attached` drops here; the mount holds the device now.
}

/// A [`frozen_copy`] that worked.
#[derive(Debug)]
pub struct Copied<T> {
    /// What the copy step returned.
    pub value: T,
    /// How long the filesystem's writers were blocked, from the freeze
    /// call to the end of the thaw (`None`: nothing was frozen).
    pub frozen_for: Option<Duration>,
    /// How long the freeze call took.
    pub freeze_took: Duration,
}

/// A failed [`frozen_copy`].
#[derive(Debug)]
pub enum CopyError<E> {
    /// The freeze failed; nothing was copied.
    Freeze(SysError),
    /// The copy step failed (the filesystem was thawed); it left nothing
    /// behind.
    Copy(E),
    /// The thaw failed (the freeze guard tried once more as it went). A
    /// copy the step made was undone; `undo` is the undo's failure.
    Thaw {
        /// The thaw's error.
        source: SysError,
        /// Undoing the copy failed too: what it left is in here.
        undo: Option<E>,
    },
}

/// Runs `copy` with the filesystem mounted at `freeze_at` frozen
/// (`FIFREEZE`: its dirty data written out, new writes held) and thaws it
/// at once after, so the copy is crash-consistent while writers wait for
/// the copy step only. Without `freeze_at` the step runs as is.
///
/// The rollback discipline: `copy` cleans up after its own failure; if
/// the thaw fails, the freeze guard tries the thaw again, the operation
/// fails, and what `copy` made is handed to `undo`. When the copy step
/// failed as well, the thaw failure is the one returned (the copy's is
/// logged): a filesystem that may still be frozen is what matters.
pub fn frozen_copy<T, E: std::fmt::Display>(
    freeze_at: Option<&Path>,
    copy: impl FnOnce() -> Result<T, E>,
    undo: impl FnOnce(T) -> Result<(), E>,
) -> Result<Copied<T>, CopyError<E>> {
    around(|| freeze_at.map(reflink::freeze).transpose(), copy, undo)
}

/// What [`around`] thaws: [`reflink::Frozen`], or a test's stand-in.
trait Thaw {
    /// Thaws; on failure the thaw is tried once more before this returns.
    fn thaw(self) -> SysResult<()>;
}

impl Thaw for reflink::Frozen {
    fn thaw(self) -> SysResult<()> {
        // On failure the guard drops at the end of `Frozen::thaw`, which
        // tries once more.
        reflink::Frozen::thaw(self)
    }
}

/// [`frozen_copy`] with the freeze given as a step.
fn around<G: Thaw, T, E: std::fmt::Display>(
    freeze: impl FnOnce() -> SysResult<Option<G>>,
    copy: impl FnOnce() -> Result<T, E>,
    undo: impl FnOnce(T) -> Result<(), E>,
) -> Result<Copied<T>, CopyError<E>> {
    let started = Instant::now();
    let frozen = freeze().map_err(CopyError::Freeze)?;
    let freeze_took = started.elapsed();
    let copied = copy();
    let Some(guard) = frozen else {
        return copied
            .map(|value| Copied {
                value,
                frozen_for: None,
                freeze_took,
            })
            .map_err(CopyError::Copy);
    };
    let thawed = guard.thaw();
    let frozen_for = Some(started.elapsed());
    match (copied, thawed) {
        (Ok(value), Ok(())) => Ok(Copied {
            value,
            frozen_for,
            freeze_took,
        }),
        (Err(e), Ok(())) => Err(CopyError::Copy(e)),
        (Ok(value), Err(source)) => Err(CopyError::Thaw {
            source,
            undo: undo(value).err(),
        }),
        (Err(e), Err(source)) => {
            tracing::warn!("the copy failed while the filesystem was frozen, and the thaw failed too ({source}): {e}");
            Err(CopyError::Thaw { source, undo: None })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A freeze guard whose thaw fails (with EIO) when told to.
    struct FakeFrozen<'a> {
        fail: bool,
        log: &'a RefCell<Vec<&'static str>>,
    }

    impl Thaw for FakeFrozen<'_> {
        fn thaw(self) -> SysResult<()> {
            self.log.borrow_mut().push("thaw");
            if self.fail {
                return Err(SysError::io(
                    "thaw (FITHAW)",
                    "/fake",
                    std::io::Error::from_raw_os_error(libc::EIO),
                ));
            }
            Ok(())
        }
    }

    type Outcome = Result<Copied<u32>, CopyError<String>>;

    /// Runs [`around`] with a fake freeze, a copy that makes "copy" (or
    /// fails) and an undo that removes it (or fails); returns the outcome
    /// and the order of events.
    fn run(
        freeze: Option<bool>,
        copy_ok: bool,
        undo_ok: bool,
    ) -> (Outcome, Vec<&'static str>, bool) {
        let log = RefCell::new(Vec::new());
        let exists = RefCell::new(false);
        let out = around(
            || {
                Ok(freeze.map(|fail| {
                    log.borrow_mut().push("freeze");
                    FakeFrozen { fail, log: &log }
                }))
            },
            || {
                log.borrow_mut().push("copy");
                if copy_ok {
                    *exists.borrow_mut() = true;
                    Ok(7)
                } else {
                    Err("copy failed".to_string())
                }
            },
            |v| {
                assert_eq!(v, 7, "undo gets what the copy made");
                log.borrow_mut().push("undo");
                if undo_ok {
                    *exists.borrow_mut() = false;
                    Ok(())
                } else {
                    Err("undo failed".to_string())
                }
            },
        );
        let left = *exists.borrow();
        (out, log.into_inner(), left)
    }

    #[test]
    fn copy_runs_frozen_and_is_kept() {
        let (out, log, left) = run(Some(false), true, true);
        let c = out.expect("copied");
        assert_eq!(c.value, 7);
        assert!(c.frozen_for.is_some());
        assert_eq!(log, ["freeze", "copy", "thaw"]);
        assert!(left);
    }

    #[test]
    fn without_a_mount_nothing_is_frozen() {
        let (out, log, left) = run(None, true, true);
        assert!(out.expect("copied").frozen_for.is_none());
        assert_eq!(log, ["copy"]);
        assert!(left);
    }

    #[test]
    fn thaw_failure_undoes_the_copy() {
        let (out, log, left) = run(Some(true), true, true);
        match out {
            Err(CopyError::Thaw { source, undo: None }) => {
                assert_eq!(source.errno(), Some(libc::EIO))
            }
            other => panic!("want a thaw failure, undone: {other:?}"),
        }
        assert_eq!(log, ["freeze", "copy", "thaw", "undo"]);
        assert!(!left, "the copy is not left behind");
    }

    #[test]
    fn failed_undo_is_returned() {
        let (out, log, left) = run(Some(true), true, false);
        match out {
            Err(CopyError::Thaw {
                undo: Some(u),
                source,
            }) => {
                assert_eq!(u, "undo failed");
                assert_eq!(source.errno(), Some(libc::EIO));
            }
            other => panic!("want the thaw failure with the undo's: {other:?}"),
        }
        assert_eq!(log, ["freeze", "copy", "thaw", "undo"]);
        assert!(
            left,
            "what the undo could not remove is reported, not hidden"
        );
    }

    #[test]
    fn failed_copy_is_not_undone() {
        let (out, log, _) = run(Some(false), false, true);
        assert!(matches!(out, Err(CopyError::Copy(ref e)) if e == "copy failed"));
        assert_eq!(log, ["freeze", "copy", "thaw"]);
        let (out, log, _) = run(Some(true), false, true);
        assert!(matches!(out, Err(CopyError::Thaw { undo: None, .. })));
        assert_eq!(log, ["freeze", "copy", "thaw"]);
    }

    #[test]
    fn failed_freeze_copies_nothing() {
        let log = RefCell::new(Vec::<&str>::new());
        let out: Outcome = around(
            || -> SysResult<Option<FakeFrozen<'_>>> {
                Err(SysError::io(
                    "freeze (FIFREEZE)",
                    "/fake",
                    std::io::Error::from_raw_os_error(libc::EBUSY),
                ))
            },
            || {
                log.borrow_mut().push("copy");
                Ok(1)
            },
            |_| {
                log.borrow_mut().push("undo");
                Ok(())
            },
        );
        assert!(matches!(out, Err(CopyError::Freeze(_))));
        assert!(log.borrow().is_empty());
    }

    /// Held by the tests that freeze: an armed `reflink.thaw` failpoint
    /// is process-wide, and must fail the thaw of its own test only.
    static FREEZING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn can_loop_mount(test: &str) -> bool {
        if !nix::unistd::geteuid().is_root() || !Path::new("/dev/loop-control").exists() {
            eprintln!("SKIPPED (needs root and /dev/loop-control): {test}");
            return false;
        }
        true
    }

    /// A 16 MiB ext4 image in `dir`.
    fn ext4_image(dir: &Path) -> PathBuf {
        let image = dir.join("v.img");
        fsutil::create_sparse(&image, 16 << 20).expect("image");
        crate::sys::cmd::run(
            "mkfs.ext4",
            &["-q", "-F", &image.to_string_lossy()],
            Duration::from_secs(60),
        )
        .expect("mkfs.ext4");
        image
    }

    #[test]
    fn root_mount_failure_detaches_and_removes_the_mount_point() {
        if !can_loop_mount("root_mount_failure_detaches_and_removes_the_mount_point") {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("blank.img");
        fsutil::create_sparse(&image, 16 << 20).expect("image");
        let target = dir.path().join("mnt");
        let e = attach_and_mount(&image, &target, FsType::Ext4, 0o755)
            .expect_err("a blank image has no filesystem to mount");
        assert_eq!(e.step, MountStep::Mount);
        assert!(e.rollback.is_none(), "{:?}", e.rollback);
        assert!(!target.exists(), "the mount point made here is gone");
        // Autoclear: the device goes with the last reference.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !loopdev::find_by_backing_file(&image).is_empty() {
            assert!(Instant::now() < deadline, "the loop device stays attached");
            std::thread::sleep(Duration::from_millis(20));
        }
        // A mount point that was there before stays.
        std::fs::create_dir(&target).expect("mkdir");
        attach_and_mount(&image, &target, FsType::Ext4, 0o755).expect_err("blank");
        assert!(target.is_dir(), "a mount point not made here is kept");
    }

    /// Unmounts `target`, retrying while it is busy for a moment: a
    /// process another test thread forks holds this thread's open files
    /// until it execs, and the unmount then fails with EBUSY.
    fn unmount_settled(target: &Path) {
        let t = Instant::now();
        loop {
            match mounts::unmount(target) {
                Ok(_) => return,
                Err(e) if t.elapsed() < Duration::from_secs(5) => {
                    eprintln!("unmount {}: {e}; again", target.display());
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("unmount {}: {e}", target.display()),
            }
        }
    }

    #[test]
    fn root_frozen_copy_of_a_mounted_image() {
        if !can_loop_mount("root_frozen_copy_of_a_mounted_image") {
            return;
        }
        let _turn = FREEZING.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().expect("tempdir");
        let image = ext4_image(dir.path());
        let target = dir.path().join("mnt");
        let dev = attach_and_mount(&image, &target, FsType::Ext4, 0o755).expect("mount");
        assert!(dev.to_string_lossy().starts_with("/dev/loop"), "{dev:?}");
        let copy = dir.path().join("copy.img");
        let out = frozen_copy(
            Some(&target),
            || reflink::clone_or_copy(&image, &copy, false, &|_, _| {}),
            |_| std::fs::remove_file(&copy).map_err(|e| SysError::io("remove", &copy, e)),
        );
        let thawed = reflink::thaw_if_frozen(&target);
        let written = std::fs::write(target.join("after"), b"x");
        unmount_settled(&target);
        let c = out.expect("frozen copy");
        assert!(c.frozen_for.is_some());
        assert!(copy.exists());
        assert!(!thawed.expect("thaw probe"), "left frozen");
        written.expect("writes go on after the copy");
    }

    /// The `reflink.thaw` failpoint: a thaw that fails once. The guard
    /// thaws on its second try, the operation fails, and the copy is
    /// undone.
    #[cfg(feature = "failpoints")]
    #[test]
    fn root_injected_thaw_failure_undoes_the_copy() {
        if !can_loop_mount("root_injected_thaw_failure_undoes_the_copy") {
            return;
        }
        let _turn = FREEZING.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().expect("tempdir");
        let image = ext4_image(dir.path());
        let target = dir.path().join("mnt");
        attach_and_mount(&image, &target, FsType::Ext4, 0o755).expect("mount");
        let copy = dir.path().join("copy.img");
        let undone = std::cell::Cell::new(false);
        fail::cfg("reflink.thaw", "1*return(EIO)").expect("failpoint");
        let out = frozen_copy(
            Some(&target),
            || reflink::clone_or_copy(&image, &copy, false, &|_, _| {}),
            |_| {
                undone.set(true);
                std::fs::remove_file(&copy).map_err(|e| SysError::io("remove", &copy, e))
            },
        );
        fail::remove("reflink.thaw");
        let thawed = reflink::thaw_if_frozen(&target);
        unmount_settled(&target);
        match out {
            Err(CopyError::Thaw { source, undo: None }) => {
                assert!(source.to_string().contains("reflink.thaw"), "{source}")
            }
            other => panic!("want an undone thaw failure: {other:?}"),
        }
        assert!(undone.get());
        assert!(!copy.exists(), "the copy is not left behind");
        assert!(!thawed.expect("thaw probe"), "the guard's retry thawed it");
    }
}
