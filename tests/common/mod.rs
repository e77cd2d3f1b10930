//! Shared helpers for the integration tests: start a real `berthd` with a
//! private config, talk to it over its socket, and check the host for
//! leftovers.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth::client::PluginClient;
use bytes::Bytes;
use hyper::StatusCode;
use serde_json::Value;

/// True when the test may use loop devices, mkfs and mount. When it may
/// not, prints a loud SKIPPED line naming the test.
pub fn can_use_storage(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    let loop_ctl = Path::new("/dev/loop-control").exists();
    let tools = which("mkfs.ext4") && which("blkid");
    if root && loop_ctl && tools {
        return true;
    }
    eprintln!(
        "SKIPPED (needs root, /dev/loop-control, mkfs.ext4 and blkid): {test} \
         [root={root} loop-control={loop_ctl} tools={tools}]"
    );
    false
}

/// Whether `tool` is on PATH.
pub fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// A running berthd with its own directories.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub config: PathBuf,
    pub extra_env: Vec<(String, String)>,
}

impl Daemon {
    /// Writes a config with `services` (TOML for `[services.*]` and any
    /// other tables) and starts berthd.
    pub fn start(extra_toml: &str) -> Daemon {
        Self::start_with_env(extra_toml, Vec::new())
    }

    pub fn start_with_env(extra_toml: &str, env: Vec<(String, String)>) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("berth-test-")
            .tempdir()
            .expect("tempdir");
        let config = dir.path().join("config.toml");
        let mut text = format!(
            "[daemon]\nplugins_dir = \"{p}/plugins\"\nstate_dir = \"{p}/state\"\nmount_dir = \"{p}/mnt\"\nlog_level = \"debug\"\n",
            p = dir.path().display()
        );
        text.push_str(extra_toml);
        if !extra_toml.contains("[services.") {
            text.push_str("\n[services.berth]\ndriver = \"loop\"\n");
        }
        std::fs::write(&config, text).expect("write config");
        let mut d = Daemon {
            dir,
            child: None,
            config,
            extra_env: env,
        };
        d.spawn();
        d
    }

    /// Starts (again) the daemon process and waits until it answers.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("berthd.log"))
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berthd"));
        cmd.arg("--config")
            .arg(&self.config)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn berthd"));
        self.wait_ready("berth");
    }

    /// Waits until `service`'s socket answers Activate.
    pub fn wait_ready(&mut self, service: &str) {
        let sock = self.socket(service);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("berthd exited early ({status}); log:\n{}", self.log());
                }
            }
            assert!(
                Instant::now() < deadline,
                "berthd did not start; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("berthd.log")).unwrap_or_default()
    }

    pub fn socket(&self, service: &str) -> PathBuf {
        self.dir
            .path()
            .join("plugins")
            .join(format!("{service}.sock"))
    }

    pub fn mount_dir(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    pub fn image_dir(&self, service: &str) -> PathBuf {
        self.dir.path().join("state/images").join(service)
    }

    pub fn records_dir(&self, service: &str) -> PathBuf {
        self.dir.path().join("state/records").join(service)
    }

    /// SIGKILL, no clean-up by the daemon.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn client(&self, service: &str) -> Api {
        Api {
            client: PluginClient::new(self.socket(service), Duration::from_secs(130)),
        }
    }

    /// Everything this daemon's directories still have mounted or attached.
    pub fn leftovers(&self) -> Vec<String> {
        leftovers_under(self.dir.path())
    }
}

/// Mounts and loop devices that reference `root`.
pub fn leftovers_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let r = root.to_string_lossy();
    for line in mi.lines() {
        if line.contains(&*r) {
            out.push(format!("mount: {line}"));
        }
    }
    for (dev, backing) in berth::sys::loopdev::list_attached() {
        if backing.starts_with(root) {
            out.push(format!("loop: {} -> {}", dev.display(), backing.display()));
        }
    }
    out
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        // Best-effort clean-up so one failing test can't leak into others.
        let mnt = self.mount_dir();
        if let Ok(entries) = std::fs::read_dir(&mnt) {
            for e in entries.flatten() {
                let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
        for (dev, backing) in berth::sys::loopdev::list_attached() {
            if backing.starts_with(self.dir.path()) {
                let _ = berth::sys::loopdev::detach(&dev);
            }
        }
    }
}

/// A small synchronous facade over the plugin client.
pub struct Api {
    pub client: PluginClient,
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

impl Api {
    /// POSTs `body` to `/method`: (status, parsed JSON).
    pub fn raw(&self, method: &str, body: &str) -> (StatusCode, Value) {
        let (status, bytes) = rt()
            .block_on(self.client.call_raw(method, Bytes::from(body.to_string())))
            .expect("transport");
        let v = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "answer to {method} is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status, v)
    }

    /// Calls and expects 200 with an empty Err.
    pub fn ok(&self, method: &str, body: Value) -> Value {
        let (s, v) = self.raw(method, &body.to_string());
        assert_eq!(s, StatusCode::OK, "{method} {body}: {v}");
        assert!(v.get("Err").is_none_or(|e| e == ""), "{method}: {v}");
        v
    }

    /// Calls and expects an error answer; returns its message.
    pub fn err(&self, method: &str, body: Value) -> String {
        let (s, v) = self.raw(method, &body.to_string());
        assert_ne!(s, StatusCode::OK, "{method} {body} should fail: {v}");
        v["Err"]
            .as_str()
            .unwrap_or_else(|| panic!("no Err in {v}"))
            .to_string()
    }

    pub fn create(&self, name: &str, opts: &[(&str, &str)]) {
        let o: serde_json::Map<String, Value> = opts
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect();
        self.ok(
            "VolumeDriver.Create",
            serde_json::json!({"Name": name, "Opts": o}),
        );
    }

    pub fn mount(&self, name: &str, id: Option<&str>) -> PathBuf {
        let body = match id {
            Some(id) => serde_json::json!({"Name": name, "ID": id}),
            None => serde_json::json!({"Name": name}),
        };
        let v = self.ok("VolumeDriver.Mount", body);
        PathBuf::from(v["Mountpoint"].as_str().expect("Mountpoint"))
    }

    pub fn unmount(&self, name: &str, id: Option<&str>) {
        let body = match id {
            Some(id) => serde_json::json!({"Name": name, "ID": id}),
            None => serde_json::json!({"Name": name}),
        };
        self.ok("VolumeDriver.Unmount", body);
    }

    pub fn remove(&self, name: &str) {
        self.ok("VolumeDriver.Remove", serde_json::json!({"Name": name}));
    }

    pub fn get(&self, name: &str) -> Value {
        self.ok("VolumeDriver.Get", serde_json::json!({"Name": name}))["Volume"].clone()
    }

    pub fn list_names(&self) -> Vec<String> {
        let v = self.ok("VolumeDriver.List", serde_json::json!({}));
        v["Volumes"]
            .as_array()
            .expect("Volumes")
            .iter()
            .map(|x| x["Name"].as_str().expect("Name").to_string())
            .collect()
    }
}

/// Whether `path` is a mount point (per mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    berth::sys::mounts::MountTable::read()
        .expect("mountinfo")
        .at(path)
        .is_some()
}

/// Filesystem type on a device or image, per blkid.
pub fn blkid_type(dev: &Path) -> String {
    let out = Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "TYPE"])
        .arg(dev)
        .output()
        .expect("blkid");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
