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
    // SAFETY: the closure runs in the child between fork and exec and
    // calls only async-signal-safe functions (prctl, getppid, _exit).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died before the prctl: nobody will wait for us.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
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
