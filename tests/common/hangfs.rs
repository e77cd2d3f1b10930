//! A FUSE filesystem served from the test process that can be made to
//! hang or die on demand: what a wedged (SIGSTOPped) or crashed storage
//! helper such as ceph-fuse looks like to berthd, without Ceph.
//!
//! It passes regular files and directories through to a backing
//! directory, enough for the loop driver to keep sparse image files on it
//! (create, set_len, mkfs through a loop device, fsync, rename, unlink).
//!
//! [`HangFs::hang`] holds every request that reaches the filesystem
//! unanswered until [`HangFs::resume`]; [`HangFs::kill`] aborts the kernel
//! connection, so the mount answers ENOTCONN until it is unmounted. Root
//! only: the mount is made with mount(2) directly, with `allow_other`.
//!
//! Attribute and entry timeouts are zero, so every stat reaches the
//! filesystem; file data read before a hang may still be served from the
//! page cache.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation,
    INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, Session,
    SessionACL, TimeOrNow, WriteFlags,
};
use nix::mount::{MntFlags, MsFlags};

/// Nothing is cached by the kernel: every lookup and stat is a request.
const TTL: Duration = Duration::ZERO;

/// Where the FUSE control filesystem lists the connections.
const FUSECTL: &str = "/sys/fs/fuse/connections";

/// How long [`Drop`] waits for the serving thread after the unmount.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// The gate every request passes first.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    cv: Condvar,
}

#[derive(Default)]
struct GateState {
    hung: bool,
    dead: bool,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks while hung. False once the filesystem is killed: the
    /// request is then answered with an error nobody reads.
    fn pass(&self) -> bool {
        let mut st = self.lock();
        while st.hung && !st.dead {
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        !st.dead
    }

    fn set(&self, f: impl FnOnce(&mut GateState)) {
        f(&mut self.lock());
        self.cv.notify_all();
    }
}

/// Passes the gate or answers `ENOTCONN` and returns from the operation.
macro_rules! gate {
    ($self:ident, $reply:ident) => {
        if !$self.gate.pass() {
            $reply.error(Errno::ENOTCONN);
            return;
        }
    };
}

/// Inode numbers of the paths (relative to the backing directory) looked
/// up so far. The root is inode 1 and the empty path.
struct Inodes {
    paths: HashMap<u64, PathBuf>,
    by_path: HashMap<PathBuf, u64>,
    next: u64,
}

impl Inodes {
    fn new() -> Inodes {
        let mut i = Inodes {
            paths: HashMap::new(),
            by_path: HashMap::new(),
            next: 2,
        };
        i.paths.insert(1, PathBuf::new());
        i.by_path.insert(PathBuf::new(), 1);
        i
    }

    fn ino(&mut self, rel: &Path) -> u64 {
        if let Some(&ino) = self.by_path.get(rel) {
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.paths.insert(ino, rel.to_path_buf());
        self.by_path.insert(rel.to_path_buf(), ino);
        ino
    }

    fn forget_path(&mut self, rel: &Path) {
        if let Some(ino) = self.by_path.remove(rel) {
            self.paths.remove(&ino);
        }
    }

    /// `from` (and everything under it) is now at `to`.
    fn rename(&mut self, from: &Path, to: &Path) {
        self.forget_path(to);
        let moved: Vec<(PathBuf, u64)> = self
            .by_path
            .iter()
            .filter(|(p, _)| p.starts_with(from))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        for (old, ino) in moved {
            let rest = old.strip_prefix(from).unwrap_or(Path::new(""));
            let new = if rest.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(rest)
            };
            self.by_path.remove(&old);
            self.by_path.insert(new.clone(), ino);
            self.paths.insert(ino, new);
        }
    }
}

struct PassFs {
    backing: PathBuf,
    gate: Arc<Gate>,
    inodes: Mutex<Inodes>,
    files: Mutex<HashMap<u64, Arc<File>>>,
    next_fh: AtomicU64,
}

fn errno(e: io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::new(s, u32::try_from(nsecs).unwrap_or(0)),
        Err(_) => UNIX_EPOCH,
    }
}

fn attr(ino: u64, m: &fs::Metadata) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: m.size(),
        blocks: m.blocks(),
        atime: time(m.atime(), m.atime_nsec()),
        mtime: time(m.mtime(), m.mtime_nsec()),
        ctime: time(m.ctime(), m.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: FileType::from_std(m.file_type()).unwrap_or(FileType::RegularFile),
        perm: (m.mode() & 0o7777) as u16,
        nlink: m.nlink() as u32,
        uid: m.uid(),
        gid: m.gid(),
        rdev: m.rdev() as u32,
        blksize: m.blksize() as u32,
        flags: 0,
    }
}

impl PassFs {
    fn inodes(&self) -> MutexGuard<'_, Inodes> {
        self.inodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn handles(&self) -> MutexGuard<'_, HashMap<u64, Arc<File>>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn rel(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        self.inodes()
            .paths
            .get(&ino.0)
            .cloned()
            .ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.rel(parent)?.join(name))
    }

    fn full(&self, rel: &Path) -> PathBuf {
        self.backing.join(rel)
    }

    fn handle(&self, fh: FileHandle) -> Result<Arc<File>, Errno> {
        self.handles().get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn add_handle(&self, f: File) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles().insert(fh, Arc::new(f));
        FileHandle(fh)
    }

    /// Stat of `rel`, registering it.
    fn entry(&self, rel: &Path) -> Result<FileAttr, Errno> {
        let m = fs::symlink_metadata(self.full(rel)).map_err(errno)?;
        let ino = self.inodes().ino(rel);
        Ok(attr(ino, &m))
    }

    fn open_options(flags: i32) -> OpenOptions {
        let mut o = OpenOptions::new();
        match flags & libc::O_ACCMODE {
            libc::O_WRONLY => o.write(true),
            libc::O_RDWR => o.read(true).write(true),
            _ => o.read(true),
        };
        // Offsets come from the kernel; O_DIRECT would need aligned
        // buffers here. Only the durability flags are kept.
        o.custom_flags(flags & (libc::O_SYNC | libc::O_DSYNC));
        o
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr_inner(
        &self,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
    ) -> Result<FileAttr, Errno> {
        let rel = self.rel(ino)?;
        let path = self.full(&rel);
        if let Some(mode) = mode {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777)).map_err(errno)?;
        }
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::lchown(&path, uid, gid).map_err(errno)?;
        }
        if let Some(size) = size {
            match fh.map(|fh| self.handle(fh)) {
                Some(Ok(f)) => f.set_len(size),
                _ => OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(size)),
            }
            .map_err(errno)?;
        }
        if atime.is_some() || mtime.is_some() {
            let now = SystemTime::now();
            let t = |t: TimeOrNow| match t {
                TimeOrNow::SpecificTime(t) => t,
                TimeOrNow::Now => now,
            };
            let mut times = fs::FileTimes::new();
            if let Some(a) = atime {
                times = times.set_accessed(t(a));
            }
            if let Some(m) = mtime {
                times = times.set_modified(t(m));
            }
            File::open(&path)
                .and_then(|f| f.set_times(times))
                .map_err(errno)?;
        }
        let m = fs::symlink_metadata(&path).map_err(errno)?;
        Ok(attr(ino.0, &m))
    }
}

impl fuser::Filesystem for PassFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        gate!(self, reply);
        match self.child(parent, name).and_then(|rel| self.entry(&rel)) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        gate!(self, reply);
        // An open file still answers after it was unlinked.
        let m = match fh.map(|fh| self.handle(fh)) {
            Some(Ok(f)) => f.metadata().map_err(errno),
            _ => self
                .rel(ino)
                .and_then(|rel| fs::symlink_metadata(self.full(&rel)).map_err(errno)),
        };
        match m {
            Ok(m) => reply.attr(&TTL, &attr(ino.0, &m)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        gate!(self, reply);
        match self.setattr_inner(ino, mode, uid, gid, size, atime, mtime, fh) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        gate!(self, reply);
        match self
            .rel(ino)
            .and_then(|rel| fs::read_link(self.full(&rel)).map_err(errno))
        {
            Ok(t) => reply.data(t.as_os_str().as_encoded_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        gate!(self, reply);
        let r = self.child(parent, name).and_then(|rel| {
            fs::DirBuilder::new()
                .mode(mode & !umask & 0o7777)
                .create(self.full(&rel))
                .map_err(errno)?;
            self.entry(&rel)
        });
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        gate!(self, reply);
        let r = self.child(parent, name).and_then(|rel| {
            fs::remove_file(self.full(&rel)).map_err(errno)?;
            self.inodes().forget_path(&rel);
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        gate!(self, reply);
        let r = self.child(parent, name).and_then(|rel| {
            fs::remove_dir(self.full(&rel)).map_err(errno)?;
            self.inodes().forget_path(&rel);
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        gate!(self, reply);
        let r = (|| {
            let from = self.child(parent, name)?;
            let to = self.child(newparent, newname)?;
            if flags.contains(RenameFlags::RENAME_EXCHANGE)
                || flags.contains(RenameFlags::RENAME_WHITEOUT)
            {
                return Err(Errno::EINVAL);
            }
            if flags.contains(RenameFlags::RENAME_NOREPLACE)
                && fs::symlink_metadata(self.full(&to)).is_ok()
            {
                return Err(Errno::EEXIST);
            }
            fs::rename(self.full(&from), self.full(&to)).map_err(errno)?;
            self.inodes().rename(&from, &to);
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        gate!(self, reply);
        let r = self.rel(ino).and_then(|rel| {
            Self::open_options(flags.0)
                .open(self.full(&rel))
                .map_err(errno)
        });
        match r {
            Ok(f) => reply.opened(self.add_handle(f), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        gate!(self, reply);
        let r = self.handle(fh).and_then(|f| {
            let mut buf = vec![0u8; size as usize];
            let mut got = 0;
            while got < buf.len() {
                match f.read_at(&mut buf[got..], offset + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(errno(e)),
                }
            }
            buf.truncate(got);
            Ok(buf)
        });
        match r {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        gate!(self, reply);
        let r = self
            .handle(fh)
            .and_then(|f| f.write_all_at(data, offset).map_err(errno));
        match r {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        gate!(self, reply);
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        gate!(self, reply);
        self.handles().remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        gate!(self, reply);
        let r = self.handle(fh).and_then(|f| {
            if datasync {
                f.sync_data()
            } else {
                f.sync_all()
            }
            .map_err(errno)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        gate!(self, reply);
        match self.rel(ino) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        gate!(self, reply);
        let r = (|| {
            let rel = self.rel(ino)?;
            let parent_ino = match rel.parent() {
                Some(p) => self.inodes().ino(p),
                None => 1,
            };
            let mut entries = vec![
                (ino.0, FileType::Directory, ".".into()),
                (parent_ino, FileType::Directory, "..".into()),
            ];
            let mut names: Vec<_> = fs::read_dir(self.full(&rel))
                .map_err(errno)?
                .filter_map(Result::ok)
                .collect();
            names.sort_by_key(|e| e.file_name());
            for e in names {
                let kind = e
                    .file_type()
                    .ok()
                    .and_then(FileType::from_std)
                    .unwrap_or(FileType::RegularFile);
                let ino = self.inodes().ino(&rel.join(e.file_name()));
                entries.push((ino, kind, e.file_name()));
            }
            Ok::<_, Errno>(entries)
        })();
        match r {
            Ok(entries) => {
                for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize)
                {
                    if reply.add(INodeNo(ino), i as u64 + 1, kind, &name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        gate!(self, reply);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        gate!(self, reply);
        let r = self.rel(ino).and_then(|rel| {
            File::open(self.full(&rel))
                .and_then(|d| d.sync_all())
                .map_err(errno)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        gate!(self, reply);
        match nix::sys::statvfs::statvfs(&self.backing) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                s.name_max() as u32,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(Errno::from_i32(e as i32)),
        }
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        gate!(self, reply);
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        gate!(self, reply);
        reply.error(Errno::ENOSYS);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        gate!(self, reply);
        match self.rel(ino) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        gate!(self, reply);
        let r = self.child(parent, name).and_then(|rel| {
            let mut o = Self::open_options(flags);
            o.create(true).mode(mode & !umask & 0o7777);
            if flags & libc::O_ACCMODE == libc::O_RDONLY {
                // create(true) needs write access; the kernel checks the
                // caller's mode on its side.
                o.write(true);
            }
            if flags & libc::O_EXCL != 0 {
                o.create_new(true);
            }
            if flags & libc::O_TRUNC != 0 {
                o.truncate(true);
            }
            let f = o.open(self.full(&rel)).map_err(errno)?;
            let a = self.entry(&rel)?;
            Ok((f, a))
        });
        match r {
            Ok((f, a)) => reply.created(
                &TTL,
                &a,
                Generation(0),
                self.add_handle(f),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        gate!(self, reply);
        let r = self.handle(fh).and_then(|f| {
            nix::fcntl::fallocate(
                f.as_fd(),
                nix::fcntl::FallocateFlags::from_bits_truncate(mode),
                offset as i64,
                length as i64,
            )
            .map_err(|e| Errno::from_i32(e as i32))
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

/// A FUSE mount served by this process; see the module documentation.
pub struct HangFs {
    mountpoint: PathBuf,
    gate: Arc<Gate>,
    /// `/sys/fs/fuse/connections/<this>`: the connection's device number.
    conn: u64,
    session: Option<BackgroundSession>,
}

impl HangFs {
    /// Mounts at `mountpoint` (must exist, empty), passing files through
    /// to `backing`, and serves it from a background thread.
    pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<HangFs> {
        let backing = fs::canonicalize(backing)?;
        let mountpoint = fs::canonicalize(mountpoint)?;
        let dev: OwnedFd = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")?
            .into();
        let root_mode = fs::metadata(&backing)?.mode() & libc::S_IFMT;
        let data = format!(
            "fd={},rootmode={root_mode:o},user_id=0,group_id=0,allow_other",
            dev.as_raw_fd()
        );
        nix::mount::mount(
            Some("hangfs"),
            &mountpoint,
            Some("fuse.hangfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(data.as_str()),
        )
        .map_err(io::Error::from)?;
        let detach = |e: io::Error| {
            let _ = nix::mount::umount2(&mountpoint, MntFlags::MNT_DETACH);
            e
        };
        let conn = connection_of(&mountpoint).map_err(detach)?;
        let gate = Arc::new(Gate::default());
        let fs = PassFs {
            backing,
            gate: gate.clone(),
            inodes: Mutex::new(Inodes::new()),
            files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        };
        let mut config = Config::default();
        // One worker, like a stopped helper: while hung, one request is
        // held and the rest wait in the kernel's queue.
        config.n_threads = Some(1);
        config.acl = SessionACL::All;
        let session = Session::from_fd(fs, dev, SessionACL::All, config)
            .and_then(Session::spawn)
            .map_err(detach)?;
        Ok(HangFs {
            mountpoint,
            gate,
            conn,
            session: Some(session),
        })
    }

    /// From now on every request is held unanswered until [`Self::resume`].
    pub fn hang(&self) {
        self.gate.set(|s| s.hung = true);
    }

    /// Answers the held requests and serves normally again.
    pub fn resume(&self) {
        self.gate.set(|s| s.hung = false);
    }

    /// The helper dies: the kernel connection is aborted, so every request
    /// (held ones included) fails with ENOTCONN until the mount point,
    /// which stays, is unmounted.
    pub fn kill(&self) {
        self.gate.set(|s| s.dead = true);
        if let Err(e) = abort_connection(self.conn) {
            // MNT_FORCE aborts a FUSE connection too (and unmounts when
            // not busy).
            eprintln!(
                "hangfs: fusectl abort of connection {} failed ({e}), forcing an unmount",
                self.conn
            );
            let _ = nix::mount::umount2(&self.mountpoint, MntFlags::MNT_FORCE);
        }
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }
}

impl Drop for HangFs {
    fn drop(&mut self) {
        self.resume();
        let _ = nix::mount::umount2(&self.mountpoint, MntFlags::MNT_DETACH);
        let Some(session) = self.session.take() else {
            return;
        };
        // The serving thread ends when the last user of the detached mount
        // is gone; one still busy (a loop device on an image here) is cut
        // off so that nothing waits on this filesystem after the test.
        let mut deadline = Instant::now() + STOP_WAIT;
        let mut aborted = false;
        while !session.guard.is_finished() {
            if Instant::now() >= deadline {
                if aborted {
                    eprintln!("hangfs: serving thread still running; leaving it");
                    return;
                }
                self.gate.set(|s| s.dead = true);
                let _ = abort_connection(self.conn);
                aborted = true;
                deadline = Instant::now() + STOP_WAIT;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = session.join();
    }
}

/// The device number of the FUSE mount at `mountpoint`, read from
/// mountinfo (a stat would be a request to the filesystem).
fn connection_of(mountpoint: &Path) -> io::Result<u64> {
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    let want = mountpoint.to_string_lossy();
    info.lines()
        .filter(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|t| t.starts_with("fuse.hangfs "))
        })
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.get(4) == Some(&want.as_ref())).then(|| f.get(2).map(|d| d.to_string()))?
        })
        .next_back()
        .and_then(|d| {
            let (maj, min) = d.split_once(':')?;
            Some((maj.parse::<u64>().ok()? << 20) | min.parse::<u64>().ok()?)
        })
        .ok_or_else(|| io::Error::other(format!("{want}: no fuse.hangfs mount in mountinfo")))
}

/// Aborts FUSE connection `conn` through the fuse control filesystem,
/// mounting it first when needed.
fn abort_connection(conn: u64) -> io::Result<()> {
    let ctl = Path::new(FUSECTL);
    let mounted = fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .any(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|t| t.starts_with("fusectl "))
        });
    if !mounted {
        nix::mount::mount(
            Some("fusectl"),
            ctl,
            Some("fusectl"),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(io::Error::from)?;
    }
    fs::write(ctl.join(conn.to_string()).join("abort"), "1")
}
