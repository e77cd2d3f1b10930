//! Point-in-time copies of image files: `FICLONE` reflinks where the
//! filesystem shares extents (xfs with reflink, btrfs), a sparse-aware
//! copy elsewhere, and `FIFREEZE`/`FITHAW` to make a copy of a mounted
//! filesystem's image crash-consistent.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{lseek, Whence};

use super::{SysError, SysResult};

mod ioctls {
    // FICLONE = _IOW(0x94, 9, int): the argument is the source descriptor.
    nix::ioctl_write_int!(ioctl_ficlone, 0x94, 9);
    // FIFREEZE = _IOWR('X', 119, int), FITHAW = _IOWR('X', 120, int): the
    // argument is ignored by the kernel.
    nix::ioctl_readwrite!(ioctl_fifreeze, b'X', 119, libc::c_int);
    nix::ioctl_readwrite!(ioctl_fithaw, b'X', 120, libc::c_int);
}
use ioctls::{ioctl_ficlone, ioctl_fifreeze, ioctl_fithaw};

/// How a copy was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMethod {
    /// `FICLONE`: instant, the two files share extents until written.
    Reflink,
    /// Data ranges copied (`SEEK_DATA`/`SEEK_HOLE` + `copy_file_range`);
    /// holes stay holes.
    SparseCopy,
}

impl CopyMethod {
    /// The name shown in inspect.
    pub fn as_str(self) -> &'static str {
        match self {
            CopyMethod::Reflink => "reflink",
            CopyMethod::SparseCopy => "copy",
        }
    }
}

/// A frozen filesystem; thawed when dropped (also on unwinding), so no
/// error path can leave it frozen.
#[derive(Debug)]
pub struct Frozen {
    dir: File,
    path: PathBuf,
    thawed: bool,
}

impl Frozen {
    /// Thaws now and reports a failure. After a failure the guard tries
    /// once more when dropped, so a passing error does not leave the
    /// filesystem frozen.
    pub fn thaw(mut self) -> SysResult<()> {
        let thawed = thaw_first(&self.dir, &self.path);
        self.thawed = thawed.is_ok();
        thawed
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if !self.thawed {
            if let Err(e) = thaw_fd(&self.dir, &self.path) {
                tracing::error!("could not thaw {}: {e}", self.path.display());
            }
        }
    }
}

/// The first thaw of a guard (the fault-injection point of a thaw).
fn thaw_first(dir: &File, path: &Path) -> SysResult<()> {
    failpoint!("reflink.thaw");
    thaw_fd(dir, path)
}

fn thaw_fd(dir: &File, path: &Path) -> SysResult<()> {
    let mut arg: libc::c_int = 0;
    // SAFETY: `dir` is an open descriptor for the whole call; FITHAW
    // ignores its argument, which points to a live local int.
    match unsafe { ioctl_fithaw(dir.as_raw_fd(), &mut arg) } {
        Ok(_) => Ok(()),
        Err(e) => Err(SysError::io("thaw (FITHAW)", path, e.into())),
    }
}

/// The mount point's directory, opened for the freeze/thaw ioctls.
fn open_mount_point(mount_point: &Path) -> SysResult<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(mount_point)
        .map_err(|e| SysError::io("open mount point", mount_point, e))
}

/// Freezes the filesystem mounted at `mount_point` (`FIFREEZE`): dirty
/// data and metadata are written out and new writes block until the
/// returned guard is dropped or thawed.
pub fn freeze(mount_point: &Path) -> SysResult<Frozen> {
    crate::step::enter(format!("freeze {}", mount_point.display()));
    failpoint!("reflink.freeze");
    let dir = open_mount_point(mount_point)?;
    let mut arg: libc::c_int = 0;
    // SAFETY: `dir` is an open descriptor for the whole call; FIFREEZE
    // ignores its argument, which points to a live local int.
    unsafe { ioctl_fifreeze(dir.as_raw_fd(), &mut arg) }
        .map_err(|e| SysError::io("freeze (FIFREEZE)", mount_point, e.into()))?;
    Ok(Frozen {
        dir,
        path: mount_point.to_path_buf(),
        thawed: false,
    })
}

/// Thaws the filesystem mounted at `mount_point` if it is frozen (a
/// freeze outlives the process that made it). `Ok(false)`: it was not
/// frozen.
pub fn thaw_if_frozen(mount_point: &Path) -> SysResult<bool> {
    let dir = open_mount_point(mount_point)?;
    match thaw_fd(&dir, mount_point) {
        Ok(()) => Ok(true),
        Err(e) if e.errno() == Some(libc::EINVAL) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `FICLONE`: makes `dst` share all of `src`'s extents.
pub fn ficlone(dst: &File, src: &File) -> std::io::Result<()> {
    // SAFETY: both descriptors are open for the whole call; FICLONE takes
    // the source descriptor by value and touches no user memory.
    unsafe { ioctl_ficlone(dst.as_raw_fd(), src.as_raw_fd() as libc::c_ulong) }
        .map(|_| ())
        .map_err(std::io::Error::from)
}

/// Whether an error of `FICLONE` means "not possible here" (so a copy is
/// the answer) rather than a real failure.
fn clone_unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::EXDEV) | Some(libc::EINVAL) | Some(libc::ENOTTY)
    )
}

/// Bytes of data (not holes) in `f`, by walking `SEEK_DATA`/`SEEK_HOLE`.
fn data_bytes(f: &File, len: u64, path: &Path) -> SysResult<u64> {
    let mut total = 0u64;
    let mut pos: i64 = 0;
    let len = len as i64;
    while pos < len {
        let start = match lseek(f, pos, Whence::SeekData) {
            Ok(p) => p,
            Err(nix::Error::ENXIO) => break,
            Err(e) => return Err(SysError::io("seek data in", path, e.into())),
        };
        let end = lseek(f, start, Whence::SeekHole)
            .map_err(|e| SysError::io("seek hole in", path, e.into()))?;
        total += (end - start) as u64;
        pos = end;
    }
    Ok(total)
}

/// Chunk of one `copy_file_range` call: small enough for progress to
/// move, large enough to cost nothing.
const CHUNK: usize = 16 << 20;

fn copy_range(
    src: &File,
    dst: &File,
    start: i64,
    end: i64,
    paths: (&Path, &Path),
) -> SysResult<u64> {
    let mut off_in: libc::loff_t = start;
    let mut off_out: libc::loff_t = start;
    failpoint!("reflink.copy");
    let mut copied = 0u64;
    while off_in < end {
        let want = ((end - off_in) as usize).min(CHUNK);
        // SAFETY: both descriptors are open for the whole call, and the
        // offset pointers point to live locals the kernel updates.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                &mut off_out,
                want,
                0,
            )
        };
        match n {
            0 => {
                return Err(SysError::io(
                    "copy from",
                    paths.0,
                    std::io::Error::other("source ended early (was it truncated?)"),
                ))
            }
            n if n > 0 => copied += n as u64,
            _ => {
                let e = std::io::Error::last_os_error();
                // Across filesystems (or where the kernel can't), copy
                // through a buffer instead.
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EXDEV)
                        | Some(libc::EOPNOTSUPP)
                        | Some(libc::ENOSYS)
                        | Some(libc::EINVAL)
                ) {
                    return Ok(copied + copy_buffered(src, dst, off_in, end, paths)?);
                }
                return Err(SysError::io("copy (copy_file_range) to", paths.1, e));
            }
        }
    }
    Ok(copied)
}

fn copy_buffered(
    src: &File,
    dst: &File,
    start: i64,
    end: i64,
    paths: (&Path, &Path),
) -> SysResult<u64> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = start as u64;
    let end = end as u64;
    while at < end {
        let want = ((end - at) as usize).min(buf.len());
        let n = src
            .read_at(&mut buf[..want], at)
            .map_err(|e| SysError::io("read", paths.0, e))?;
        if n == 0 {
            return Err(SysError::io(
                "copy from",
                paths.0,
                std::io::Error::other("source ended early (was it truncated?)"),
            ));
        }
        dst.write_all_at(&buf[..n], at)
            .map_err(|e| SysError::io("write", paths.1, e))?;
        at += n as u64;
    }
    Ok(end - start as u64)
}

/// Copies `src` to a new file `dst` (which must not exist): a reflink
/// when the filesystem can share extents (unless `force_copy`), else a
/// sparse copy of the data ranges. `progress(done, total)` is called as
/// data is copied (bytes of data, not apparent size). Nothing is fsynced:
/// the caller makes `dst` durable (with [`super::fsutil::fsync_file`]) when it
/// is ready to, e.g. after thawing a frozen source. On error `dst` is
/// removed.
pub fn clone_or_copy(
    src: &Path,
    dst: &Path,
    force_copy: bool,
    progress: &dyn Fn(u64, u64),
) -> SysResult<CopyMethod> {
    crate::step::enter("copy the image");
    failpoint!("reflink.clone");
    let s = File::open(src).map_err(|e| SysError::io("open", src, e))?;
    let len = s
        .metadata()
        .map_err(|e| SysError::io("stat", src, e))?
        .len();
    let d = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)
        .map_err(|e| SysError::io("create", dst, e))?;
    let result = (|| {
        if !force_copy {
            match ficlone(&d, &s) {
                Ok(()) => {
                    progress(len, len);
                    return Ok(CopyMethod::Reflink);
                }
                Err(e) if clone_unsupported(&e) => {}
                Err(e) => return Err(SysError::io("reflink (FICLONE) to", dst, e)),
            }
        }
        d.set_len(len)
            .map_err(|e| SysError::io("set size of", dst, e))?;
        let total = data_bytes(&s, len, src)?;
        progress(0, total);
        let mut done = 0u64;
        let mut pos: i64 = 0;
        let end_of_file = len as i64;
        while pos < end_of_file {
            let start = match lseek(&s, pos, Whence::SeekData) {
                Ok(p) => p,
                Err(nix::Error::ENXIO) => break,
                Err(e) => return Err(SysError::io("seek data in", src, e.into())),
            };
            let end = lseek(&s, start, Whence::SeekHole)
                .map_err(|e| SysError::io("seek hole in", src, e.into()))?;
            let mut at = start;
            while at < end {
                let stop = (at + CHUNK as i64).min(end);
                done += copy_range(&s, &d, at, stop, (src, dst))?;
                progress(done.min(total), total);
                at = stop;
            }
            pos = end;
        }
        Ok(CopyMethod::SparseCopy)
    })();
    if result.is_err() {
        drop(d);
        let _ = std::fs::remove_file(dst);
    }
    result
}

/// Whether files in `dir` can be reflinked (a `FICLONE` probe on two
/// temporary files, removed afterwards).
pub fn supports_reflink(dir: &Path) -> bool {
    let a = dir.join(".berth-reflink-probe-a");
    let b = dir.join(".berth-reflink-probe-b");
    let probe = || -> std::io::Result<()> {
        let fa = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&a)?;
        std::io::Write::write_all(&mut &fa, &[0u8; 4096])?;
        fa.sync_all()?;
        let fb = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&b)?;
        ficlone(&fb, &fa)
    };
    let ok = probe().is_ok();
    let _ = std::fs::remove_file(&a);
    let _ = std::fs::remove_file(&b);
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fsutil;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn sparse_copy_keeps_content_and_holes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src.img");
        let dst = dir.path().join("dst.img");
        {
            let mut f = File::create(&src).expect("create");
            f.set_len(64 << 20).expect("len");
            f.seek(SeekFrom::Start(1 << 20)).expect("seek");
            f.write_all(&[7u8; 8192]).expect("write");
            f.seek(SeekFrom::Start(40 << 20)).expect("seek");
            f.write_all(b"tail data").expect("write");
            f.sync_all().expect("sync");
        }
        let calls = std::cell::Cell::new(0u32);
        let m = clone_or_copy(&src, &dst, true, &|d, t| {
            assert!(d <= t);
            calls.set(calls.get() + 1);
        })
        .expect("copy");
        assert_eq!(m, CopyMethod::SparseCopy);
        assert!(calls.get() >= 2, "progress reported");
        assert_eq!(
            std::fs::read(&src).expect("read"),
            std::fs::read(&dst).expect("read")
        );
        let alloc = fsutil::allocated_bytes(&dst).expect("alloc");
        assert!(alloc < 4 << 20, "holes stay holes: {alloc} bytes allocated");
        // dst exists now: a second copy must not overwrite it.
        let e = clone_or_copy(&src, &dst, true, &|_, _| {}).expect_err("exists");
        assert!(e.to_string().contains("dst.img"), "{e}");
        assert!(dst.exists(), "an existing file is never removed");
    }

    #[test]
    fn missing_source_names_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = clone_or_copy(
            &dir.path().join("nope"),
            &dir.path().join("dst"),
            false,
            &|_, _| {},
        )
        .expect_err("missing");
        assert!(e.to_string().contains("nope"), "{e}");
        assert!(!dir.path().join("dst").exists());
    }

    #[test]
    fn data_bytes_counts_data_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        let mut f = File::create(&p).expect("create");
        f.set_len(32 << 20).expect("len");
        f.seek(SeekFrom::Start(8 << 20)).expect("seek");
        f.write_all(&[1u8; 4096]).expect("write");
        f.sync_all().expect("sync");
        let n = data_bytes(&File::open(&p).expect("open"), 32 << 20, &p).expect("count");
        assert!((4096..(1 << 20)).contains(&n), "{n}");
    }
}
