//! Loop volumes checked on the real filesystem (blkid, statvfs, stat,
//! file contents): a berthd with one loop service, [`SERVICE`], whose
//! default size is 200M, and the tools to look at what it made. Used by
//! the create-option, snapshot, resize and reconcile tests.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::Daemon;

/// The loop service of [`start`].
pub const SERVICE: &str = "t";

/// True when the test may run: root, and every tool the loop driver and
/// these checks use. Prints a loud SKIPPED line naming the test when not.
pub fn can_run(test: &str) -> bool {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED (needs root): {test}: loop devices, mkfs and mount need root");
        return false;
    }
    for tool in ["mkfs.ext4", "mkfs.xfs", "mkfs.btrfs", "blkid", "filefrag"] {
        if !super::which(tool) {
            println!("SKIPPED (needs {tool}): {test}");
            return false;
        }
    }
    true
}

/// The config of [`SERVICE`], with `pools` (name, image directory).
fn service_toml(pools: &[(&str, PathBuf)]) -> String {
    let mut text = format!(
        "\n[volume.create.default]\nsize = \"200M\"\n\n[services.{SERVICE}]\ndriver = \"loop\"\n"
    );
    for (name, dir) in pools {
        text.push_str(&format!(
            "[services.{SERVICE}.pools.{name}]\nimage_dir = \"{}\"\n",
            dir.display()
        ));
    }
    text
}

/// A berthd serving [`SERVICE`].
pub fn start() -> Daemon {
    Daemon::builder()
        .daemon_toml("command_timeout = \"60s\"\n")
        .service_toml(&service_toml(&[]))
        .start()
}

/// A berthd whose pool `fast` of [`SERVICE`] is an xfs filesystem of its
/// own (a loop-mounted image of `pool_size` bytes), so reflinks work
/// there; [`xfs_pool_dir`] is its image directory.
pub fn start_with_xfs_pool(pool_size: u64) -> Daemon {
    let dir = tempfile::Builder::new()
        .prefix("berth-test-")
        .tempdir()
        .expect("tempdir");
    let img = dir.path().join("pool.img");
    let mnt = dir.path().join("poolfs");
    fs::create_dir(&mnt).expect("mkdir");
    fs::File::create(&img)
        .and_then(|f| f.set_len(pool_size))
        .expect("pool image");
    run_ok("mkfs.xfs", &["-q", "-f", "-m", "reflink=1", &s(&img)]);
    let att = berth::sys::loopdev::attach(&img).expect("attach pool");
    berth::sys::mounts::mount(att.path(), &mnt, "xfs", "").expect("mount pool");
    drop(att); // the mount holds the device (autoclear)
    Daemon::builder()
        .daemon_toml("command_timeout = \"60s\"\n")
        .service_toml(&service_toml(&[("fast", mnt.join("images"))]))
        .dir(dir)
        .start()
}

/// The image directory of the `fast` pool of [`start_with_xfs_pool`].
pub fn xfs_pool_dir(d: &Daemon) -> PathBuf {
    d.dir.path().join("poolfs/images")
}

/// The image of volume `name` of [`SERVICE`] (default pool).
pub fn image(d: &Daemon, name: &str) -> PathBuf {
    d.image_dir(SERVICE).join(format!("{name}.img"))
}

pub fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Runs `cmd`, which must succeed; returns its stdout.
pub fn run_ok(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Total bytes of the filesystem holding `p`.
pub fn fs_total(p: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(p).expect("statvfs");
    st.blocks() * st.fragment_size()
}

/// Free bytes of the filesystem holding `p`.
pub fn fs_free(p: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(p).expect("statvfs");
    st.blocks_free() * st.fragment_size()
}

/// Writes `len` bytes of a pattern derived from `seed`, and syncs.
pub fn write_data(p: &Path, len: usize, seed: u8) {
    let mut f = fs::File::create(p).expect("create");
    let chunk: Vec<u8> = (0..1 << 20)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        f.write_all(&chunk[..n]).expect("write");
        left -= n;
    }
    f.sync_all().expect("sync");
}

/// The filesystem type mounted at `target`.
pub fn mount_fs_type(target: &Path) -> String {
    let table = berth::sys::mounts::MountTable::read().expect("mountinfo");
    table
        .at(target)
        .map(|m| m.fs_type.clone())
        .unwrap_or_default()
}
