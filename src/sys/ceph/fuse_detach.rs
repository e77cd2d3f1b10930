//! Unmounting a `ceph-fuse` mount without waiting for the helper to exit.
//!
//! Once the kernel detaches a FUSE mount, `ceph-fuse` writes back what it
//! still buffers, returns its capabilities, closes its MDS session and
//! exits: about a second on the test cluster, all of it spent after the
//! mount is gone. Nobody needs to wait for that. CephFS keeps every client
//! coherent through capabilities: another client (this host's next mount
//! of the same volume, or another host) that opens a file the exiting
//! helper wrote makes the MDS recall the helper's write capabilities,
//! which makes it write its data back first. So the unmount returns at
//! once, and a thread reaps the helper in the background.

use std::path::Path;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::fuse::{detach, wait_exit};
use super::Result;

/// Flushes what the kernel still buffers for the `ceph-fuse` mount on
/// `target` (`syncfs`), detaches it, and reaps its helper in the
/// background (logged if it runs longer than `timeout`). Nothing mounted
/// there is `Ok`; a mount that is not FUSE is refused (`EINVAL`).
pub fn ceph_fuse_detach(target: &Path, timeout: Duration) -> Result<()> {
    crate::step::enter(format!("syncfs {}", target.display()));
    if let Ok(dir) = std::fs::File::open(target) {
        // What the kernel still buffers goes to ceph-fuse, which writes
        // it back on its way out. A failure here is no reason to keep the
        // mount: ceph-fuse writes back on its way out either way.
        if let Err(e) = nix::unistd::syncfs(&dir) {
            warn!(target = %target.display(), "syncfs before unmounting ceph-fuse: {e}");
        }
    }
    let Some((target, helpers)) = detach(target)? else {
        return Ok(());
    };
    if helpers.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    let _ = std::thread::Builder::new()
        .name("ceph-fuse-reap".into())
        .spawn(move || match wait_exit(&target, &helpers, timeout) {
            Ok(()) => debug!(target = %target.display(), took = ?started.elapsed(),
                "ceph-fuse wrote back and exited after its unmount"),
            Err(e) => warn!(target = %target.display(),
                "ceph-fuse has not exited after its unmount (it may still be writing back): {e}"),
        });
    Ok(())
}
