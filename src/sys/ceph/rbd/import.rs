//! Writing a local sparse file into a fresh image through librbd: how a
//! new volume gets its filesystem without a FUSE helper (the filesystem
//! is made in a local sparse file of the image's size, then only its data
//! is sent).

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::unistd::{lseek, Whence};

use super::{ffi, Image, RbdPool};
use crate::sys::ceph::{check, CephError, Result};

/// Largest write sent at once.
const CHUNK: usize = 4 << 20;

impl RbdPool {
    /// Writes the data of sparse file `src` into image `image` at the
    /// same offsets, then flushes: returns once the OSDs have every byte.
    /// Holes and all-zero chunks are skipped, so the image must read as
    /// zeros there (a fresh image does). The writes go out together (at
    /// most [`IN_FLIGHT`] at once), so a filesystem's few metadata extents
    /// cost about one round trip. Returns the bytes written.
    pub fn import_sparse(&self, image: &str, src: &Path) -> Result<u64> {
        let object = self.obj(image);
        let io = |what: &str, e: std::io::Error| CephError::Reply {
            op: "rbd import".into(),
            object: object.clone(),
            detail: format!("{what} {}: {e}", src.display()),
        };
        let file = File::open(src).map_err(|e| io("open", e))?;
        let len = file.metadata().map_err(|e| io("stat", e))?.len();
        let img = self.open("rbd import", image, None, false)?;
        let mut pending: VecDeque<Write> = VecDeque::new();
        let mut written = 0u64;
        let sent = (|| {
            for (start, end) in data_extents(&file, len).map_err(|e| io("seek", e))? {
                let mut at = start;
                while at < end {
                    let n = usize::try_from(end - at).map_or(CHUNK, |r| r.min(CHUNK));
                    let mut buf = vec![0u8; n];
                    file.read_exact_at(&mut buf, at)
                        .map_err(|e| io("read", e))?;
                    if buf.iter().any(|&b| b != 0) {
                        if pending.len() >= IN_FLIGHT {
                            if let Some(w) = pending.pop_front() {
                                w.finish(&object)?;
                            }
                        }
                        pending.push_back(Write::start(&img, at, buf, &object)?);
                        written += n as u64;
                    }
                    at += n as u64;
                }
            }
            Ok(())
        })();
        // Every write started is waited for, whatever happened: librbd
        // reads its buffer until it completes.
        let mut done = sent;
        for w in pending.drain(..) {
            let r = w.finish(&object);
            if done.is_ok() {
                done = r;
            }
        }
        done?;
        // SAFETY: open image.
        let ret = unsafe { ffi::rbd_flush(img.raw) };
        check("rbd flush", || object.clone(), ret.into())?;
        Ok(written)
    }
}

/// Writes sent at once at most.
const IN_FLIGHT: usize = 16;

/// An asynchronous write in flight and the buffer it reads.
struct Write {
    completion: ffi::rbd_completion_t,
    at: u64,
    _buf: Vec<u8>,
}

impl Write {
    fn start(img: &Image, at: u64, buf: Vec<u8>, object: &str) -> Result<Write> {
        let mut completion: ffi::rbd_completion_t = std::ptr::null_mut();
        // SAFETY: valid out pointer; no callback.
        let ret =
            unsafe { ffi::rbd_aio_create_completion(std::ptr::null_mut(), None, &mut completion) };
        check("rbd aio", || object.to_string(), ret.into())?;
        // SAFETY: open image; `buf` holds `len` bytes and is kept (in the
        // returned Write) until the completion is waited for.
        let ret = unsafe {
            ffi::rbd_aio_write(
                img.raw,
                at,
                buf.len(),
                buf.as_ptr().cast::<libc::c_char>(),
                completion,
            )
        };
        if ret < 0 {
            // SAFETY: created above, never submitted, released once.
            unsafe { ffi::rbd_aio_release(completion) };
            check("rbd write", || format!("{object} at {at}"), ret.into())?;
        }
        Ok(Write {
            completion,
            at,
            _buf: buf,
        })
    }

    /// Waits for the write; its result.
    fn finish(self, object: &str) -> Result<()> {
        // SAFETY: a submitted completion, waited for and released once;
        // the buffer lives in `self` until after the wait.
        let ret = unsafe {
            ffi::rbd_aio_wait_for_complete(self.completion);
            let r = ffi::rbd_aio_get_return_value(self.completion);
            ffi::rbd_aio_release(self.completion);
            r
        };
        check(
            "rbd write",
            || format!("{object} at {}", self.at),
            ret as i64,
        )?;
        Ok(())
    }
}

/// The `(start, end)` byte ranges of `file` that hold data (not holes).
fn data_extents(file: &File, len: u64) -> std::io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    while pos < len {
        let start = match lseek(file, pos, Whence::SeekData) {
            Ok(s) => s,
            // No data after `pos`.
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = lseek(file, start, Whence::SeekHole).map_err(std::io::Error::from)?;
        out.push((start as u64, end as u64));
        pos = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::data_extents;
    use std::os::unix::fs::FileExt;

    #[test]
    fn extents_of_a_sparse_file() {
        let f = tempfile::tempfile().expect("tempfile");
        f.set_len(64 << 20).expect("size");
        f.write_all_at(&[1u8; 4096], 8 << 20).expect("write");
        let ext = data_extents(&f, 64 << 20).expect("extents");
        // Some filesystems report whole files as data; all cover the write.
        assert!(
            ext.iter()
                .any(|&(s, e)| s <= 8 << 20 && e >= (8 << 20) + 4096),
            "{ext:?}"
        );
    }
}
