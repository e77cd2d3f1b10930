//! Loop devices, through the kernel's loop-control ioctls (loopdev-3).

use std::fs;
use std::path::{Path, PathBuf};

use loopdev::{LoopControl, LoopDevice};

use super::{SysError, SysResult};

/// How often attaching retries when another process grabs the free device
/// between `LOOP_CTL_GET_FREE` and `LOOP_SET_FD`.
const ATTACH_ATTEMPTS: usize = 16;

/// An attached loop device, held open.
///
/// The device is attached with `LO_FLAGS_AUTOCLEAR`: the kernel detaches it
/// when the last reference goes away. While this handle lives, it is the
/// reference; once the filesystem is mounted, the mount is. So a crash
/// between attach and mount can never leak a loop device.
#[derive(Debug)]
pub struct Attached {
    dev: LoopDevice,
    path: PathBuf,
}

impl Attached {
    /// The device node, e.g. `/dev/loop3`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Detaches explicitly (used when the mount failed).
    pub fn detach(self) -> SysResult<()> {
        self.dev.detach().map_err(|e| SysError::Loop {
            what: format!("detach {}", self.path.display()),
            source: e,
        })
    }

    /// Tells the kernel the backing file changed size (LOOP_SET_CAPACITY).
    pub fn set_capacity(&self) -> SysResult<()> {
        self.dev.set_capacity().map_err(|e| SysError::Loop {
            what: format!("set capacity of {}", self.path.display()),
            source: e,
        })
    }
}

/// Attaches `image` to a free loop device.
pub fn attach(image: &Path) -> SysResult<Attached> {
    let ctl = LoopControl::open().map_err(|e| SysError::Loop {
        what: "open /dev/loop-control".into(),
        source: e,
    })?;
    let mut last_err = None;
    for _ in 0..ATTACH_ATTEMPTS {
        let dev = ctl.next_free().map_err(|e| SysError::Loop {
            what: "find a free device".into(),
            source: e,
        })?;
        match dev.with().autoclear(true).attach(image) {
            Ok(()) => {
                let path = dev.path().ok_or_else(|| SysError::Loop {
                    what: format!("resolve device path for {}", image.display()),
                    source: std::io::ErrorKind::NotFound.into(),
                })?;
                return Ok(Attached { dev, path });
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                last_err = Some(e);
                continue;
            }
            Err(e) => {
                return Err(SysError::Loop {
                    what: format!("attach {}", image.display()),
                    source: e,
                })
            }
        }
    }
    Err(SysError::Loop {
        what: format!(
            "attach {} (every free device was taken by someone else {ATTACH_ATTEMPTS} times)",
            image.display()
        ),
        source: last_err.unwrap_or_else(|| std::io::ErrorKind::ResourceBusy.into()),
    })
}

/// Opens an already attached device (to resize it).
pub fn open(dev: &Path) -> SysResult<Attached> {
    let d = LoopDevice::open(dev).map_err(|e| SysError::Loop {
        what: format!("open {}", dev.display()),
        source: e,
    })?;
    Ok(Attached {
        dev: d,
        path: dev.to_path_buf(),
    })
}

/// Detaches `dev`; a device that is already free is fine.
pub fn detach(dev: &Path) -> SysResult<()> {
    let d = match LoopDevice::open(dev) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(SysError::Loop {
                what: format!("open {}", dev.display()),
                source: e,
            })
        }
    };
    match d.detach() {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(()),
        Err(e) => Err(SysError::Loop {
            what: format!("detach {}", dev.display()),
            source: e,
        }),
    }
}

/// Every attached loop device and its backing file, read from sysfs.
pub fn list_attached() -> Vec<(PathBuf, PathBuf)> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with("loop") {
            continue;
        }
        let bf = e.path().join("loop/backing_file");
        if let Ok(s) = fs::read_to_string(&bf) {
            let s = s.trim_end_matches('\n');
            let s = s.strip_suffix(" (deleted)").unwrap_or(s);
            out.push((PathBuf::from("/dev").join(&*name), PathBuf::from(s)));
        }
    }
    out.sort();
    out
}

/// The loop devices whose backing file is `image`.
pub fn find_by_backing_file(image: &Path) -> Vec<PathBuf> {
    let canon = fs::canonicalize(image).unwrap_or_else(|_| image.to_path_buf());
    list_attached()
        .into_iter()
        .filter(|(_, b)| b == &canon || b == image)
        .map(|(d, _)| d)
        .collect()
}
