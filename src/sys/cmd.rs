//! Running external tools (mkfs, blkid) with a bounded run time.
//!
//! Arguments are always passed as a vector: no shell ever sees user input.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use wait_timeout::ChildExt;

use super::{SysError, SysResult};

/// Output of a successful command.
#[derive(Debug)]
pub struct Output {
    /// Captured standard output.
    pub stdout: String,
}

/// Replaces this process with `program` (`execve`), passing `args` and
/// the environment unchanged: no shell, no child. Returns only on
/// failure.
pub fn replace_process(
    program: &std::path::Path,
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> std::io::Error {
    Command::new(program).args(args).exec()
}

/// Runs `program args…`, waits at most `timeout`, and returns its stdout.
///
/// A non-zero exit, a signal or the timeout becomes [`SysError::Command`]
/// with the full command line and the tool's stderr. A command that runs
/// past the timeout is killed.
pub fn run(program: &str, args: &[&str], timeout: Duration) -> SysResult<Output> {
    let command_line = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let parent = std::process::id() as libc::pid_t;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("LC_ALL", "C");
    // A tool dies with berthd: after a crash, the next berthd repairs
    // the image the tool was working on, and no orphan (a resize2fs, an
    // e2fsck) may go on writing it meanwhile. The thread that spawns the
    // tool waits for it, so the signal never comes early.
    crate::step::enter(format!("run {}", truncate(&command_line, 200)));
    let hidden = loop_mounts_to_hide(args);
    // SAFETY: the closure runs in the child between fork and exec and
    // calls only async-signal-safe functions (prctl, getppid, unshare,
    // mount, umount2, _exit) on memory allocated before the fork.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died before the prctl: nobody will wait for us.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            hide_mounts(&hidden);
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| SysError::Command {
        command: command_line.clone(),
        outcome: format!("could not be started: {e}"),
    })?;
    // Drain the pipes on helper threads so a chatty tool can't block on a
    // full pipe while we wait for it.
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(p) = out_pipe.as_mut() {
            let _ = p.read_to_string(&mut s);
        }
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(p) = err_pipe.as_mut() {
            let _ = p.read_to_string(&mut s);
        }
        s
    });
    let status = match child.wait_timeout(timeout) {
        Ok(Some(status)) => status,
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SysError::Command {
                command: command_line,
                outcome: format!("timed out after {}s and was killed", timeout.as_secs()),
            });
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SysError::Command {
                command: command_line,
                outcome: format!("could not be waited for: {e}"),
            });
        }
    };
    let stdout = out_thread.join().unwrap_or_default();
    let stderr = err_thread.join().unwrap_or_default();
    if status.success() {
        Ok(Output { stdout })
    } else {
        let detail = stderr.trim();
        let detail = if detail.is_empty() {
            stdout.trim()
        } else {
            detail
        };
        Err(SysError::Command {
            command: command_line,
            outcome: format!("failed ({status}): {}", truncate(detail, 400)),
        })
    }
}

/// Mount points of loop-device mounts the command does not name (nor
/// reaches through).
///
/// Tools that check whether their target is mounted (mkfs.ext4,
/// e2fsck, resize2fs: e2fsprogs' `ext2fs_check_if_mounted`) ask every
/// loop device in the mount table for its backing file
/// (`LOOP_GET_STATUS64`), and the kernel asks that file's filesystem: a
/// loop device backed by a file on a hung FUSE helper (an rbd-fuse, a
/// wedged image directory) would hang every such tool on the host. So
/// each tool runs in a mount namespace of its own without the loop
/// mounts it does not name; nothing changes in the host's namespace.
fn loop_mounts_to_hide(args: &[&str]) -> Vec<std::ffi::CString> {
    match super::mounts::MountTable::read() {
        Ok(table) => to_hide(table.entries(), args),
        Err(_) => Vec::new(),
    }
}

fn to_hide(entries: &[super::mounts::MountEntry], args: &[&str]) -> Vec<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    entries
        .iter()
        .filter(|m| m.source.starts_with("/dev/loop"))
        // Kept: the mounts an argument names or lies under (an image in
        // a pool that is itself a loop mount).
        .filter(|m| {
            !args
                .iter()
                .any(|a| *a == m.source || std::path::Path::new(a).starts_with(&m.target))
        })
        .filter_map(|m| std::ffi::CString::new(m.target.as_os_str().as_bytes()).ok())
        .collect()
}

/// In the forked child: a private copy of the mount namespace (changes
/// never propagate back), then lazy detach of `targets` in it. Best
/// effort: without the privilege the tool runs in the host's namespace.
fn hide_mounts(targets: &[std::ffi::CString]) {
    if targets.is_empty() {
        return;
    }
    // SAFETY: plain system calls on NUL-terminated strings that live
    // until exec.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return;
        }
        let root = c"/";
        let flags = libc::MS_REC | libc::MS_SLAVE;
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        ) != 0
        {
            return;
        }
        for t in targets {
            libc::umount2(t.as_ptr(), libc::MNT_DETACH);
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_see_only_the_loop_mounts_they_name_or_reach_through() {
        use super::super::mounts::MountEntry;
        let m = |src: &str, tgt: &str| MountEntry {
            target: tgt.into(),
            source: src.into(),
            fs_type: "ext4".into(),
        };
        let entries = [
            m("/dev/loop1", "/mnt/v1"),
            m("/dev/loop2", "/srv/pool"),
            m("/dev/loop3", "/mnt/v3"),
            m("/dev/vda1", "/"),
        ];
        let hidden = to_hide(&entries, &["-F", "/srv/pool/images/v.img"]);
        let shown: Vec<&str> = hidden.iter().map(|c| c.to_str().unwrap_or("")).collect();
        assert_eq!(shown, ["/mnt/v1", "/mnt/v3"]);
        let hidden = to_hide(&entries, &["/dev/loop3"]);
        assert_eq!(hidden.len(), 2, "the named device stays");
    }

    #[test]
    fn success_returns_stdout() {
        let out = run("echo", &["hello"], Duration::from_secs(5)).expect("echo runs");
        assert_eq!(out.stdout.trim(), "hello");
    }

    #[test]
    fn failure_names_command_and_stderr() {
        let err = run(
            "sh",
            &["-c", "echo nope >&2; exit 3"],
            Duration::from_secs(5),
        )
        .expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.contains("sh -c"), "{msg}");
        assert!(msg.contains("nope"), "{msg}");
        assert!(msg.contains("exit status: 3"), "{msg}");
    }

    #[test]
    fn timeout_kills() {
        let start = std::time::Instant::now();
        let err = run("sleep", &["10"], Duration::from_millis(200)).expect_err("must time out");
        assert!(err.to_string().contains("timed out"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn missing_program() {
        let err = run("/nonexistent/tool", &[], Duration::from_secs(1)).expect_err("missing");
        assert!(err.to_string().contains("could not be started"), "{err}");
    }
}
