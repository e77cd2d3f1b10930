//! systemd integration: sockets passed by socket activation (matched to
//! services by `FileDescriptorName=`), the fallback of binding sockets
//! ourselves, and sd-notify messages.

use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use nix::sys::socket::{getsockopt, sockopt, SockType};
use sd_notify::NotifyState;
use tracing::warn;

use crate::sys::{fsutil, SysError};

/// Sockets passed by systemd (`LISTEN_FDS`, `LISTEN_FDNAMES`), checked
/// against `LISTEN_PID`. Each is verified to be a listening UNIX stream
/// socket; anything else is closed and reported.
pub fn passed_listeners() -> Vec<(String, UnixListener)> {
    let fds = match sd_notify::listen_fds_with_names() {
        Ok(fds) => fds.collect::<Vec<(RawFd, String)>>(),
        Err(e) => {
            warn!("ignoring sockets passed by the service manager: {e}");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (fd, name) in fds {
        // SAFETY: systemd passed this descriptor to this process
        // (LISTEN_PID matched) and nothing else in the process owns it;
        // we take ownership exactly once here.
        let listener = unsafe { UnixListener::from_raw_fd(fd) };
        match getsockopt(&listener, sockopt::SockType) {
            Ok(SockType::Stream)
                if listener
                    .local_addr()
                    .is_ok_and(|a| a.as_pathname().is_some()) => {}
            _ => {
                warn!(fd, name = %name, "passed descriptor is not a UNIX stream socket with a path; closing it");
                continue;
            }
        }
        if let Err(e) = listener.set_nonblocking(true) {
            warn!(fd, name = %name, "cannot make passed socket non-blocking: {e}; closing it");
            continue;
        }
        out.push((name, listener));
    }
    out
}

/// Binds `path` ourselves (no socket activation): creates the directory,
/// replaces a stale socket (one nobody answers on), refuses to steal a
/// live one, and sets mode and group.
pub fn bind(path: &Path, mode: u32, group: Option<&str>) -> Result<UnixListener, SysError> {
    if let Some(dir) = path.parent() {
        fsutil::ensure_dir(dir, 0o755)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(SysError::io(
                    "bind",
                    path,
                    std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        "another process is serving this socket",
                    ),
                ));
            }
            std::fs::remove_file(path).map_err(|e| SysError::io("remove stale socket", path, e))?;
        }
        Ok(_) => {
            return Err(SysError::io(
                "bind",
                path,
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "exists and is not a socket",
                ),
            ))
        }
        Err(_) => {}
    }
    let l = UnixListener::bind(path).map_err(|e| SysError::io("bind", path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| SysError::io("chmod", path, e))?;
    if let Some(g) = group {
        let gid = nix::unistd::Group::from_name(g)
            .ok()
            .flatten()
            .ok_or_else(|| {
                SysError::io(
                    "chown",
                    path,
                    std::io::Error::other(format!("no group named {g:?}")),
                )
            })?;
        nix::unistd::chown(path, None, Some(gid.gid))
            .map_err(|e| SysError::io("chown", path, e.into()))?;
    }
    l.set_nonblocking(true)
        .map_err(|e| SysError::io("set non-blocking", path, e))?;
    Ok(l)
}

/// Where a socket systemd passed differs from the configuration's
/// `socket_mode`/`socket_group` (the unit's `SocketMode=`/`SocketGroup=`
/// win): a sentence saying so and how to change it, else `None`.
pub fn disagreement(path: &Path, mode: u32, group: Option<&str>) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    let gid = match group {
        Some(g) => nix::unistd::Group::from_name(g)
            .ok()
            .flatten()?
            .gid
            .as_raw(),
        None => 0,
    };
    let (have_mode, have_gid) = (m.mode() & 0o7777, m.gid());
    if have_mode == mode && have_gid == gid {
        return None;
    }
    let name = |gid: u32| {
        nix::unistd::Group::from_gid(gid.into())
            .ok()
            .flatten()
            .map_or_else(|| gid.to_string(), |g| g.name)
    };
    Some(format!(
        "socket {} has group {} and mode {:04o} from its systemd unit, the configuration says socket_group {} and socket_mode {:04o}; the unit's SocketGroup=/SocketMode= apply (change them with `systemctl edit berth@.socket`)",
        path.display(),
        name(have_gid),
        have_mode,
        name(gid),
        mode
    ))
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!("sd_notify failed: {e}");
    }
}

/// `READY=1` with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `STATUS=…`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// `RELOADING=1` (with the monotonic timestamp systemd wants).
pub fn reloading() {
    match sd_notify::NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// `STOPPING=1`.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// `WATCHDOG=1`.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// The watchdog interval, when systemd asked for pings.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    sd_notify::watchdog_enabled()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_replaces_stale_and_refuses_live() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("plugins/x.sock");
        let l = bind(&p, 0o660, None).expect("bind");
        let mode = std::fs::metadata(&p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let e = bind(&p, 0o660, None).expect_err("live socket must not be stolen");
        assert!(e.to_string().contains("another process"), "{e}");
        drop(l); // socket file stays behind: stale
        let _l2 = bind(&p, 0o660, None).expect("stale socket replaced");
        let f = dir.path().join("plain");
        std::fs::write(&f, b"x").expect("write");
        assert!(
            bind(&f, 0o660, None).is_err(),
            "a regular file is never removed"
        );
        assert!(f.exists());
    }

    #[test]
    fn no_passed_sockets_without_env() {
        // LISTEN_PID is not ours in a test process.
        assert!(passed_listeners().is_empty());
    }

    #[test]
    fn a_socket_unlike_the_configuration_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        let _l = UnixListener::bind(&path).expect("bind");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let gid = std::fs::metadata(&path).map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.gid()
        });
        let w = disagreement(&path, 0o660, None).expect("mode differs");
        assert!(
            w.contains("mode 0600") && w.contains("socket_mode 0660"),
            "{w}"
        );
        if gid.is_ok_and(|g| g == 0) {
            assert_eq!(disagreement(&path, 0o600, None), None);
        }
    }
}
