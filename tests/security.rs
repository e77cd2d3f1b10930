//! Security properties that can be checked mechanically: private files
//! and sockets, no network listener, no shell anywhere a command line is
//! built. (Names and option values can never reach outside the state and
//! mount directories: tests/hostile.rs and the fuzz target check that.)
//! The threat model is docs/security.md.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{can_use_storage, Daemon};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn root_images_records_and_sockets_are_private() {
    if !can_use_storage("root_images_records_and_sockets_are_private") {
        return;
    }
    let d = Daemon::builder().start();
    let api = d.client("berth");
    api.create("sec", &[("size", "16M")]);
    api.mount("sec", Some("x"));
    let img = d.image_dir("berth").join("sec.img");
    assert_eq!(mode(&img), 0o600, "image files are not world-readable");
    assert_eq!(std::fs::metadata(&img).expect("stat").uid(), 0);
    assert_eq!(mode(&d.image_dir("berth")), 0o700);
    assert_eq!(mode(&d.records_dir("berth")), 0o700);
    assert_eq!(mode(&d.records_dir("berth").join("sec.json")), 0o600);
    let sock = d.socket("berth");
    assert_eq!(mode(&sock), 0o660, "socket: owner and group only");
    assert_eq!(std::fs::metadata(&sock).expect("stat").uid(), 0);
    // The mount is nosuid,nodev: a volume can't smuggle in setuid
    // binaries or device nodes.
    let mi = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let target = d.mount_dir().join("sec");
    let line = mi
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(target.to_str().expect("utf-8")))
        .expect("mounted");
    let opts = line.split(' ').nth(5).expect("options");
    assert!(opts.contains("nosuid") && opts.contains("nodev"), "{line}");
    api.unmount("sec", Some("x"));
    api.remove("sec");
}

/// Socket inodes of a process.
fn socket_inodes(pid: u32) -> BTreeSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_string_lossy()
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn no_network_socket_is_open() {
    let d = Daemon::builder().start();
    let pid = d.pid().expect("pid");
    let mine = socket_inodes(pid);
    assert!(!mine.is_empty(), "the plugin socket is there");
    for table in ["tcp", "tcp6", "udp", "udp6", "raw", "raw6"] {
        let text = std::fs::read_to_string(format!("/proc/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let inode = line.split_whitespace().nth(9).unwrap_or("");
            assert!(!mine.contains(inode), "berthd has a {table} socket: {line}");
        }
    }
    let unix = std::fs::read_to_string("/proc/net/unix").expect("unix sockets");
    let listening: Vec<&str> = unix
        .lines()
        .filter(|l| mine.contains(l.split_whitespace().nth(6).unwrap_or("")))
        .filter(|l| l.split_whitespace().nth(5) == Some("01") && l.contains(".sock"))
        .collect();
    assert_eq!(listening.len(), 1, "one plugin socket: {listening:?}");
}

/// Every external command is one of the known tools, run with an argument
/// vector by `sys::cmd::run`; nothing builds a shell command line.
#[test]
fn no_shell_in_any_command_line() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![root];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("src").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let tools = [
        "\"mkfs.ext4\"",
        "\"mkfs.xfs\"",
        "\"mkfs.btrfs\"",
        "\"blkid\"",
        "\"e2fsck\"",
        "\"resize2fs\"",
        "\"xfs_growfs\"",
        "\"btrfs\"",
    ];
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        if f.ends_with("sys/ceph/fuse.rs") {
            // Its helpers are fixed programs, never a shell.
            let helpers: Vec<&str> = text
                .split("run_helper(")
                .skip(1)
                // Calls pass the operation first; the definition does not.
                .filter(|c| c.trim_start().starts_with("OP,"))
                .filter_map(|c| c.split('"').nth(1))
                .collect();
            assert!(
                !helpers.is_empty()
                    && helpers
                        .iter()
                        .all(|h| ["ceph-fuse", "rbd-fuse"].contains(h)),
                "FUSE helpers: {helpers:?}"
            );
        }
        let rel = f.display().to_string();
        // Test modules may run helpers; production code may not.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (i, line) in code.lines().enumerate() {
            let l = line.trim();
            if l.starts_with("//") {
                continue;
            }
            if l.contains("Command::new(") {
                // sys::cmd::run, and the FUSE helpers of the Ceph drivers
                // (daemons that outlive the call, started by run_helper).
                assert!(
                    (rel.ends_with("sys/cmd.rs") || rel.ends_with("sys/ceph/fuse.rs"))
                        && l.contains("Command::new(program)"),
                    "{rel}:{}: commands are run only by sys::cmd::run: {l}",
                    i + 1
                );
            }
            for shell in ["\"sh\"", "\"bash\"", "\"/bin/sh\"", "\"-c\""] {
                assert!(!l.contains(shell), "{rel}:{}: shell: {l}", i + 1);
            }
            if let Some(pos) = l.find("cmd::run(") {
                let rest = &l[pos + "cmd::run(".len()..];
                let next = if rest.is_empty() {
                    code.lines().nth(i + 1).unwrap_or("").trim()
                } else {
                    rest
                };
                assert!(
                    tools.iter().any(|t| next.starts_with(t)),
                    "{rel}:{}: cmd::run of an unknown program: {next}",
                    i + 1
                );
            }
        }
    }
}
