//! Durable file writes and small filesystem helpers.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use super::{cmd, SysError, SysResult};

/// Writes `data` to `path` so that after a crash the file holds either the
/// old or the new content, never a mix: temp file, fsync, rename, fsync of
/// the directory.
pub fn atomic_write(path: &Path, data: &[u8], mode: u32) -> SysResult<()> {
    atomic_write_meta(path, data, mode).map(|_| ())
}

/// [`atomic_write`], returning the metadata of the file written (a file
/// that replaces another always has a new inode).
pub fn atomic_write_meta(path: &Path, data: &[u8], mode: u32) -> SysResult<fs::Metadata> {
    crate::step::enter(format!("write {}", path.display()));
    failpoint!("fsutil.atomic_write");
    let dir = parent(path)?;
    let file_name = path
        .file_name()
        .ok_or_else(|| SysError::io("write", path, std::io::ErrorKind::InvalidInput.into()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| SysError::io("create", &tmp, e))?;
        f.write_all(data)
            .map_err(|e| SysError::io("write", &tmp, e))?;
        failpoint!("fsutil.fsync");
        f.sync_all().map_err(|e| SysError::io("fsync", &tmp, e))?;
        let meta = f.metadata().map_err(|e| SysError::io("stat", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| SysError::io("rename", &tmp, e))?;
        fsync_dir(dir).map(|_| meta)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes `path` (absent is fine) and makes the removal durable.
pub fn remove_durable(path: &Path) -> SysResult<()> {
    crate::step::enter(format!("remove {}", path.display()));
    failpoint!("fsutil.remove");
    match fs::remove_file(path) {
        Ok(()) => fsync_dir(parent(path)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SysError::io("remove", path, e)),
    }
}

/// fsyncs a directory so that entries created, renamed or removed in it
/// survive a crash.
pub fn fsync_dir(dir: &Path) -> SysResult<()> {
    failpoint!("fsutil.fsync_dir");
    let d = File::open(dir).map_err(|e| SysError::io("open directory", dir, e))?;
    d.sync_all()
        .map_err(|e| SysError::io("fsync directory", dir, e))
}

fn parent(path: &Path) -> SysResult<&Path> {
    path.parent().ok_or_else(|| {
        SysError::io(
            "resolve parent of",
            path,
            std::io::ErrorKind::InvalidInput.into(),
        )
    })
}

/// Creates a directory and its parents with `mode` (existing is fine).
pub fn ensure_dir(path: &Path, mode: u32) -> SysResult<()> {
    crate::step::enter(format!("create directory {}", path.display()));
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(SysError::io(
            "use as directory",
            path,
            std::io::Error::other("exists and is not a directory"),
        )),
        Err(_) => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(path)
                .map_err(|e| SysError::io("create directory", path, e))?;
            Ok(())
        }
    }
}

/// Creates a new sparse file of `size` bytes; fails if the file exists.
///
/// Not synced: callers write an intent record first and sync once the
/// file has its content (mkfs syncs its writes), so a crash in between
/// is cleaned up from the record.
pub fn create_sparse(path: &Path, size: u64) -> SysResult<()> {
    crate::step::enter(format!("create image {}", path.display()));
    failpoint!("fsutil.create_sparse");
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| SysError::io("create image", path, e))?;
    f.set_len(size)
        .map_err(|e| SysError::io("set size of image", path, e))
}

/// Sets the length of an existing file (growing leaves a hole) and
/// fsyncs it.
pub fn set_file_len(path: &Path, len: u64) -> SysResult<()> {
    crate::step::enter(format!("set the length of {}", path.display()));
    failpoint!("fsutil.set_file_len");
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| SysError::io("open", path, e))?;
    f.set_len(len)
        .map_err(|e| SysError::io("set size of", path, e))?;
    f.sync_all().map_err(|e| SysError::io("fsync", path, e))
}

/// fsyncs a file's data and metadata.
pub fn fsync_file(path: &Path) -> SysResult<()> {
    crate::step::enter(format!("fsync {}", path.display()));
    failpoint!("fsutil.fsync_file");
    let f = File::open(path).map_err(|e| SysError::io("open", path, e))?;
    f.sync_all().map_err(|e| SysError::io("fsync", path, e))
}

/// Renames `from` to `to` (same directory) and fsyncs the directory.
pub fn rename_durable(from: &Path, to: &Path) -> SysResult<()> {
    crate::step::enter(format!("rename {} to {}", from.display(), to.display()));
    failpoint!("fsutil.rename");
    fs::rename(from, to).map_err(|e| SysError::io("rename", from, e))?;
    fsync_dir(parent(to)?)
}

/// Space statistics of a mounted filesystem.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Space {
    /// Total bytes.
    pub total: u64,
    /// Bytes in use.
    pub used: u64,
    /// Bytes available to unprivileged users.
    pub available: u64,
}

/// statvfs of the filesystem holding `path`.
pub fn space(path: &Path) -> SysResult<Space> {
    crate::step::enter(format!("statvfs {}", path.display()));
    let st =
        nix::sys::statvfs::statvfs(path).map_err(|e| SysError::io("statvfs", path, e.into()))?;
    let frsize = st.fragment_size();
    let total = st.blocks().saturating_mul(frsize);
    let free = st.blocks_free().saturating_mul(frsize);
    let available = st.blocks_available().saturating_mul(frsize);
    Ok(Space {
        total,
        used: total.saturating_sub(free),
        available,
    })
}

/// Bytes actually allocated on disk for a (sparse) file.
pub fn allocated_bytes(path: &Path) -> SysResult<u64> {
    crate::step::enter(format!("stat {}", path.display()));
    let m = fs::metadata(path).map_err(|e| SysError::io("stat", path, e))?;
    Ok(m.blocks().saturating_mul(512))
}

/// The filesystem type found on a device or image (`None` when blank),
/// probed with `blkid -p` (low-level superblock probing, no cache).
pub fn probe_fs_type(dev: &Path, timeout: Duration) -> SysResult<Option<String>> {
    let dev_str = dev.to_string_lossy();
    match cmd::run(
        "blkid",
        &["-p", "-o", "value", "-s", "TYPE", &dev_str],
        timeout,
    ) {
        Ok(out) => {
            let t = out.stdout.trim();
            Ok(if t.is_empty() {
                None
            } else {
                Some(t.to_string())
            })
        }
        // blkid exits 2 when nothing was found.
        Err(SysError::Command { outcome, .. }) if outcome.contains("exit status: 2") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether the first `len` bytes of `path` (a device or an image file)
/// read as zeros: what a never-written image holds. A shorter file is
/// read to its end.
pub fn reads_as_zeros(path: &Path, len: u64) -> SysResult<bool> {
    use std::io::Read;
    crate::step::enter(format!("read {}", path.display()));
    let f = fs::File::open(path).map_err(|e| SysError::io("open", path, e))?;
    let mut r = f.take(len);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r
            .read(&mut buf)
            .map_err(|e| SysError::io("read", path, e))?;
        if n == 0 {
            return Ok(true);
        }
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
    }
}

/// Creates `dir` with owner and mode if it does not exist yet. An existing
/// directory is left as it is: its owner may have been changed on purpose
/// by a container.
pub fn ensure_owned_dir(dir: &Path, mode: u32, uid: u32, gid: u32) -> SysResult<bool> {
    crate::step::enter(format!("prepare directory {}", dir.display()));
    failpoint!("fsutil.data_dir");
    if dir.is_dir() {
        return Ok(false);
    }
    fs::create_dir(dir).map_err(|e| SysError::io("create directory", dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(|e| SysError::io("chmod", dir, e))?;
    nix::unistd::chown(
        dir,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .map_err(|e| SysError::io("chown", dir, e.into()))?;
    Ok(true)
}

/// Sets owner and mode of an existing directory.
pub fn set_owner_mode(dir: &Path, mode: u32, uid: u32, gid: u32) -> SysResult<()> {
    nix::unistd::chown(
        dir,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .map_err(|e| SysError::io("chown", dir, e.into()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(|e| SysError::io("chmod", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("rec.json");
        atomic_write(&p, b"one", 0o600).expect("write");
        atomic_write(&p, b"two", 0o600).expect("rewrite");
        assert_eq!(fs::read(&p).expect("read"), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let mode = fs::metadata(&p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn atomic_write_into_missing_dir_fails_with_path() {
        let err =
            atomic_write(Path::new("/nonexistent-dir/x.json"), b"x", 0o600).expect_err("must fail");
        assert!(err.to_string().contains("/nonexistent-dir"), "{err}");
    }

    #[test]
    fn sparse_file_is_sparse_and_exclusive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("img");
        create_sparse(&p, 1 << 30).expect("create");
        assert_eq!(fs::metadata(&p).expect("stat").len(), 1 << 30);
        assert!(allocated_bytes(&p).expect("alloc") < 1 << 20);
        assert!(create_sparse(&p, 1 << 20).is_err(), "must not overwrite");
    }

    #[test]
    fn remove_durable_is_idempotent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        fs::write(&p, b"x").expect("write");
        remove_durable(&p).expect("remove");
        remove_durable(&p).expect("remove again");
        assert!(!p.exists());
    }
}
