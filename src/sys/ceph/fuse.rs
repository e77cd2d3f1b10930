//! The FUSE data path: `ceph-fuse` for CephFS subvolumes and `rbd-fuse`
//! for RBD images (one helper process per mount).
//!
//! The helpers daemonize: the process we start exits once the mount is
//! up, its child serves the mount and outlives us (and Berth's restarts).
//! So their stdout/stderr go to a log file, never to a pipe someone keeps
//! open; the file is read for the error message and deleted. Arguments are
//! a vector, never a shell line.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wait_timeout::ChildExt;

use super::{CephConfig, CephError, Result};
use crate::sys::mounts::{self, MountTable};

/// How often mount and unmount progress is polled.
const POLL: Duration = Duration::from_millis(10);

/// How long an unmount retries while the mount is busy.
const BUSY_RETRY: Duration = Duration::from_secs(1);

/// Mounts `path_in_fs` of CephFS filesystem `fs` on `target` with
/// `ceph-fuse` (e.g. a subvolume's [`super::CephFs::getpath`]).
///
/// Returns once `/proc/self/mountinfo` shows `target` as `fuse.ceph-fuse`,
/// at most [`CephConfig::timeout`] later. Fails with `EBUSY` when
/// something is already mounted on `target`. The mount allows other
/// users (`allow_other`, ceph-fuse's default), as containers need.
pub fn ceph_fuse_mount(cfg: &CephConfig, fs: &str, path_in_fs: &str, target: &Path) -> Result<()> {
    const OP: &str = "ceph-fuse mount";
    let target = prepare_target(OP, target)?;
    let mut args = common_args(cfg);
    args.extend([
        format!("--client_fs={fs}"),
        "--client_mountpoint".into(),
        path_in_fs.into(),
        path_arg(OP, &target)?,
    ]);
    run_helper(
        OP,
        "ceph-fuse",
        &args,
        &target,
        "fuse.ceph-fuse",
        cfg.timeout,
        |_| Ok(true),
    )
}

/// Exposes RBD image `pool/image` as the file `dir/<image>` with one
/// `rbd-fuse` process (`-p pool -r image`), and returns that file's path
/// (attach it to a loop device to use it as a disk).
///
/// Returns once the file is there, at most [`CephConfig::timeout`] later;
/// `ENOENT` (after the timeout) when the image does not exist. The
/// rbd-fuse client opens the image, so it shows in
/// [`super::RbdPool::watchers`] while mounted.
pub fn rbd_fuse_mount(cfg: &CephConfig, pool: &str, image: &str, dir: &Path) -> Result<PathBuf> {
    const OP: &str = "rbd-fuse mount";
    let dir = prepare_target(OP, dir)?;
    let file = dir.join(image);
    let mut args = common_args(cfg);
    // rbd-fuse's fsync calls rbd_flush and ignores its result, so with
    // librbd's writeback cache a write that never reaches the OSDs (a
    // fenced client, a failing cluster) is still reported durable. Without
    // the cache every write(2) returns only once the OSDs have it. Cost,
    // measured on one node: 128 MiB in 1 MiB writes at the same 36 MB/s
    // either way, 4 KiB writes 1.6 MB/s instead of 24 MB/s.
    args.push("--rbd_cache=false".into());
    args.extend([
        "-p".into(),
        pool.into(),
        "-r".into(),
        image.into(),
        path_arg(OP, &dir)?,
    ]);
    run_helper(
        OP,
        "rbd-fuse",
        &args,
        &dir,
        "fuse.rbd-fuse",
        cfg.timeout,
        |_| {
            // rbd-fuse connects to the cluster after the mount is up: the
            // image file appears once it has opened the image.
            match fs::symlink_metadata(&file) {
                Ok(_) => Ok(true),
                Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Err(e),
                Err(_) => Ok(false),
            }
        },
    )?;
    Ok(file)
}

/// Unmounts a `ceph-fuse`/`rbd-fuse` mount and waits (at most `timeout`)
/// until the helper process that served it has exited, so its client
/// session is closed (for rbd-fuse: its watch is gone and its cache
/// flushed). Nothing mounted on `target` (or no such path) is `Ok`; a
/// mount that is not FUSE is refused (`EINVAL`).
///
/// The helper is found before unmounting, by its command line naming
/// `target`, as [`ceph_fuse_mount`] and [`rbd_fuse_mount`] start them. A
/// mount whose helper died is just unmounted.
pub fn fuse_unmount(target: &Path, timeout: Duration) -> Result<()> {
    match detach(target)? {
        Some((target, helpers)) => wait_exit(&target, &helpers, timeout),
        None => Ok(()),
    }
}

/// Unmounts the FUSE mount on `target` (as [`fuse_unmount`]) without
/// waiting for its helper: returns the canonical target and the PIDs of
/// the helpers that served it; `None` when nothing was mounted there.
pub(super) fn detach(target: &Path) -> Result<Option<(PathBuf, Vec<i32>)>> {
    const OP: &str = "unmount";
    crate::step::enter(format!("resolve {}", target.display()));
    let target = match fs::canonicalize(target) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(OP, target, "resolve", &e)),
    };
    let table = MountTable::read().map_err(|e| sys_error(OP, &target, e))?;
    match table.at(&target) {
        None => return Ok(None),
        Some(m) if !m.fs_type.starts_with("fuse.") => {
            return Err(CephError::Fuse {
                op: OP,
                detail: format!("not a FUSE mount ({} from {})", m.fs_type, m.source),
                target,
                errno: Some(libc::EINVAL),
            })
        }
        Some(_) => {}
    }
    let helpers = helpers_serving(&target);
    // A statvfs or lookup that was waiting on a stopped helper holds the
    // mount for a moment after the helper resumes: retry EBUSY briefly.
    let busy_until = Instant::now() + BUSY_RETRY;
    loop {
        match mounts::unmount(&target) {
            Err(e) if e.errno() == Some(libc::EBUSY) && Instant::now() < busy_until => {
                std::thread::sleep(POLL)
            }
            Err(e) => return Err(sys_error(OP, &target, e)),
            Ok(_) => return Ok(Some((target, helpers))),
        }
    }
}

/// Waits (at most `timeout` in all) until the `helpers` that served
/// `target` have exited.
pub(super) fn wait_exit(target: &Path, helpers: &[i32], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    for &pid in helpers {
        crate::step::enter(format!(
            "wait for the FUSE helper (pid {pid}) of {} to exit",
            target.display()
        ));
        while alive(pid) {
            if Instant::now() >= deadline {
                return Err(CephError::Fuse {
                    op: "unmount",
                    target: target.to_path_buf(),
                    detail: format!(
                        "unmounted, but its FUSE helper (pid {pid}) still runs after {:?}",
                        timeout
                    ),
                    errno: Some(libc::ETIMEDOUT),
                });
            }
            std::thread::sleep(POLL);
        }
    }
    Ok(())
}

/// `--conf`, `--id`, `--keyring` and the mount timeout.
fn common_args(cfg: &CephConfig) -> Vec<String> {
    let mut args = vec![
        "--conf".to_string(),
        cfg.conf.display().to_string(),
        "--id".into(),
        cfg.client.clone(),
    ];
    if let Some(k) = &cfg.keyring {
        args.extend(["--keyring".into(), k.display().to_string()]);
    }
    args.push(format!("--client_mount_timeout={}", cfg.timeout_secs()));
    args
}

fn path_arg(op: &'static str, p: &Path) -> Result<String> {
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| CephError::Fuse {
            op,
            target: p.to_path_buf(),
            detail: "path is not UTF-8".into(),
            errno: Some(libc::EINVAL),
        })
}

/// The canonical mount point; `EBUSY` when something is mounted there.
fn prepare_target(op: &'static str, target: &Path) -> Result<PathBuf> {
    let target = fs::canonicalize(target).map_err(|e| io_error(op, target, "resolve", &e))?;
    let table = MountTable::read().map_err(|e| sys_error(op, &target, e))?;
    if let Some(m) = table.at(&target) {
        return Err(CephError::Fuse {
            op,
            detail: format!("already mounted ({} from {})", m.fs_type, m.source),
            target,
            errno: Some(libc::EBUSY),
        });
    }
    Ok(target)
}

/// Starts `program args…`, waits for it to daemonize and for `target` to
/// show up as `fs_type` and `ready` to say yes, all within `timeout`.
fn run_helper(
    op: &'static str,
    program: &str,
    args: &[String],
    target: &Path,
    fs_type: &str,
    timeout: Duration,
    ready: impl Fn(&Path) -> std::io::Result<bool>,
) -> Result<()> {
    let start = Instant::now();
    let deadline = start + timeout;
    let (log_path, log) = log_file(program).map_err(|e| CephError::Fuse {
        op,
        target: target.to_path_buf(),
        detail: format!("cannot create a log file for {program}: {e}"),
        errno: e.raw_os_error(),
    })?;
    crate::step::enter(format!("start {program} for {}", target.display()));
    let result = (|| {
        let err_log = log
            .try_clone()
            .map_err(|e| io_error(op, &log_path, "dup", &e))?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| io_error(op, &log_path, "dup", &e))?,
            )
            .stderr(err_log)
            .env("LC_ALL", "C")
            .env_remove("CEPH_ARGS")
            // Its own process group: a Ctrl-C or a signal to Berth's group
            // must not take the mount down.
            .process_group(0)
            .spawn()
            .map_err(|e| CephError::Fuse {
                op,
                target: target.to_path_buf(),
                detail: format!("cannot start {program}: {e}"),
                errno: e.raw_os_error(),
            })?;
        let status = match child.wait_timeout(timeout) {
            Ok(Some(status)) => status,
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(
                    op,
                    target,
                    &log_path,
                    format!("{program} did not finish mounting within {timeout:?}"),
                    Some(libc::ETIMEDOUT),
                ));
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io_error(op, target, "wait for helper", &e));
            }
        };
        if !status.success() {
            return Err(fail(
                op,
                target,
                &log_path,
                format!("{program} failed ({status})"),
                None,
            ));
        }
        // The daemonized helper serves the mount now; wait for the kernel
        // to show it and for the helper to be ready.
        crate::step::enter(format!("wait for {program} to serve {}", target.display()));
        loop {
            let table = MountTable::read().map_err(|e| sys_error(op, target, e))?;
            let mounted = table.at(target).is_some_and(|m| m.fs_type == fs_type);
            if mounted {
                match ready(target) {
                    Ok(true) => return Ok(()),
                    Ok(false) => {}
                    Err(e) => {
                        return Err(fail(
                            op,
                            target,
                            &log_path,
                            format!("{program} mounted but does not serve: {e}"),
                            e.raw_os_error(),
                        ))
                    }
                }
            }
            if Instant::now() >= deadline {
                let what = if mounted {
                    "is mounted but its content did not appear"
                } else {
                    "exited, but the mount did not appear"
                };
                return Err(fail(
                    op,
                    target,
                    &log_path,
                    format!("{program} {what} within {timeout:?}"),
                    Some(if mounted {
                        libc::ENOENT
                    } else {
                        libc::ETIMEDOUT
                    }),
                ));
            }
            std::thread::sleep(POLL);
        }
    })();
    let _ = fs::remove_file(&log_path);
    if result.is_err() {
        // Leave nothing half-mounted behind.
        let _ = fuse_unmount(target, Duration::from_secs(2));
    }
    result
}

/// A fresh, private log file in the temp directory.
fn log_file(program: &str) -> std::io::Result<(PathBuf, File)> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir();
    loop {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("berth-{program}.{}.{n}.log", std::process::id()));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The last `max` bytes of a log file, trimmed, on one line per line.
fn log_tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).trim().to_string()
}

fn fail(
    op: &'static str,
    target: &Path,
    log: &Path,
    what: String,
    errno: Option<i32>,
) -> CephError {
    // One line: the tool's lines joined, so logs keep the error together.
    let tail = log_tail(log, 2000)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    let detail = if tail.is_empty() {
        format!("{what} (no output)")
    } else {
        format!("{what}; its output ends with: {tail}")
    };
    // The helper's own message often carries the errno: "(2) No such file".
    let errno = errno.or_else(|| errno_in(&tail));
    CephError::Fuse {
        op,
        target: target.to_path_buf(),
        detail,
        errno,
    }
}

/// The last `(N) ` errno Ceph tools print, e.g. `failed with (2) No such`.
fn errno_in(text: &str) -> Option<i32> {
    text.rmatch_indices('(').find_map(|(i, _)| {
        let rest = &text[i + 1..];
        let end = rest.find(')')?;
        rest[..end].parse::<i32>().ok().filter(|n| *n > 0)
    })
}

fn io_error(op: &'static str, target: &Path, what: &str, e: &std::io::Error) -> CephError {
    CephError::Fuse {
        op,
        target: target.to_path_buf(),
        detail: format!("{what}: {e}"),
        errno: e.raw_os_error(),
    }
}

fn sys_error(op: &'static str, target: &Path, e: crate::sys::SysError) -> CephError {
    CephError::Fuse {
        op,
        target: target.to_path_buf(),
        errno: e.errno(),
        detail: e.to_string(),
    }
}

/// PIDs of `ceph-fuse`/`rbd-fuse` processes whose command line names
/// `target`.
/// SIGKILLs the FUSE helpers serving `target` (a fenced rbd-fuse, whose
/// writes hang until its blocklisting ends and must never land) and waits
/// up to `timeout` for them to go. Returns their PIDs. The mount stays
/// (its I/O now fails); [`fuse_unmount`] removes it.
pub fn kill_helpers(target: &Path, timeout: Duration) -> Vec<i32> {
    let target = fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf());
    let pids = helpers_serving(&target);
    for &pid in &pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let deadline = Instant::now() + timeout;
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
    pids
}

fn helpers_serving(target: &Path) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let want = target.as_os_str().as_encoded_bytes();
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let mut argv = cmdline.split(|&b| b == 0);
            let prog = argv.next().unwrap_or_default();
            let base = prog.rsplit(|&b| b == b'/').next().unwrap_or_default();
            (base == b"ceph-fuse" || base == b"rbd-fuse") && argv.any(|a| a == want)
        })
        .collect()
}

/// The process exists and is not a zombie.
fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S …": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_from_tool_output() {
        assert_eq!(
            errno_in("ceph-fuse[1]: ceph mount failed with (2) No such file or directory"),
            Some(2)
        );
        assert_eq!(errno_in("nothing (here)"), None);
    }

    #[test]
    fn unmount_of_nothing_is_ok() {
        fuse_unmount(Path::new("/nonexistent/berth/mnt"), Duration::from_secs(1))
            .expect("absent path");
        let dir = std::env::temp_dir().join(format!("berth-fuse-test.{}", std::process::id()));
        fs::create_dir_all(&dir).expect("mkdir");
        fuse_unmount(&dir, Duration::from_secs(1)).expect("not a mount point");
        let _ = fs::remove_dir(&dir);
        let err = fuse_unmount(Path::new("/proc"), Duration::from_secs(1))
            .expect_err("proc is no FUSE mount");
        assert_eq!(err.errno(), Some(libc::EINVAL), "{err}");
    }

    #[test]
    fn this_process_is_alive() {
        assert!(alive(std::process::id() as i32));
        assert!(!alive(i32::MAX));
    }
}
