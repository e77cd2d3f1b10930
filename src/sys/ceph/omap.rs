//! The omap (key/value map) of one RADOS object: where Berth keeps the
//! catalog index of a Ceph service (`crate::driver::ceph::index`).
//!
//! Every write is one RADOS write operation, applied atomically by the
//! object's primary OSD. Writes to different keys never interfere, and
//! the guarded writes ([`OmapObject::set_if`], [`OmapObject::remove_if`])
//! compare a key's value in the same operation, so two hosts cannot lose
//! each other's updates.

use std::ffi::{CStr, CString};
use std::ptr;

use ceph::rados::{
    rados_create_read_op, rados_create_write_op, rados_get_last_version, rados_ioctx_create,
    rados_ioctx_destroy, rados_ioctx_set_namespace, rados_ioctx_t, rados_omap_get_end,
    rados_omap_get_next, rados_omap_iter_t, rados_read_op_omap_get_vals_by_keys,
    rados_read_op_operate, rados_read_op_stat, rados_release_read_op, rados_release_write_op,
    rados_write_op_omap_cmp, rados_write_op_omap_rm_keys, rados_write_op_omap_set,
    rados_write_op_operate,
};

use super::rados_ffi::rados_read_op_omap_get_vals2;
use super::{check, cstr, Cluster, Result};

/// `LIBRADOS_CMPXATTR_OP_EQ`.
const CMP_EQ: u8 = 1;

/// Keys asked for per round trip by [`OmapObject::list`] (the OSD may
/// return fewer: `osd_max_omap_entries_per_request`, 1 024 by default).
const PAGE: u64 = 4096;

/// Omap entries: (key, value) in key order.
pub type Entries = Vec<(String, Vec<u8>)>;

/// One RADOS object (in a pool and namespace) used for its omap.
pub struct OmapObject {
    // Keeps the librados handle alive while the I/O context exists.
    _cluster: Cluster,
    ioctx: rados_ioctx_t,
    oid: CString,
    name: String,
}

// SAFETY: librados I/O contexts may be used from several threads for
// operations; the only configuration change (the namespace) is made in
// `open`, before the value is shared.
unsafe impl Send for OmapObject {}
// SAFETY: as above; every method takes `&self` and librados locks
// internally.
unsafe impl Sync for OmapObject {}

impl Drop for OmapObject {
    fn drop(&mut self) {
        // SAFETY: `ioctx` came from `rados_ioctx_create` and is destroyed
        // once, here; `_cluster` (dropped after this) keeps the handle.
        unsafe { rados_ioctx_destroy(self.ioctx) }
    }
}

impl std::fmt::Debug for OmapObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// Frees an omap iterator however the operation ended.
struct Iter(rados_omap_iter_t);

impl Drop for Iter {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: made by librados when the read op was built; freed once.
            unsafe { rados_omap_get_end(self.0) }
        }
    }
}

impl Iter {
    /// Every (key, value) left in the iterator.
    fn drain(&self, object: &str) -> Result<Entries> {
        let mut out = Vec::new();
        loop {
            let mut key: *mut libc::c_char = ptr::null_mut();
            let mut val: *mut libc::c_char = ptr::null_mut();
            let mut len: libc::size_t = 0;
            // SAFETY: a live iterator of a completed read op; valid out
            // pointers. The strings belong to the iterator.
            let ret = unsafe { rados_omap_get_next(self.0, &mut key, &mut val, &mut len) };
            check("read omap", || object.to_string(), ret.into())?;
            if key.is_null() {
                return Ok(out);
            }
            // SAFETY: librados returns a NUL-terminated key and `len`
            // readable bytes at `val` (or null with len 0).
            let k = unsafe { CStr::from_ptr(key) }
                .to_string_lossy()
                .into_owned();
            let v = if val.is_null() {
                Vec::new()
            } else {
                // SAFETY: as above.
                unsafe { std::slice::from_raw_parts(val.cast::<u8>(), len) }.to_vec()
            };
            out.push((k, v));
        }
    }
}

impl OmapObject {
    /// Object `object` in namespace `namespace` of pool `pool`; nothing
    /// is read or written yet (the object is made by the first write).
    pub fn open(cluster: &Cluster, pool: &str, namespace: &str, object: &str) -> Result<Self> {
        let name = format!("{pool}/{namespace}/{object}");
        let p = cstr("open pool", &name, pool)?;
        let ns = cstr("open pool", &name, namespace)?;
        let oid = cstr("open pool", &name, object)?;
        let mut ioctx: rados_ioctx_t = ptr::null_mut();
        // SAFETY: connected handle (kept by `cluster`), NUL-terminated
        // name, valid out pointer.
        let ret = unsafe { rados_ioctx_create(cluster.raw(), p.as_ptr(), &mut ioctx) };
        check("open pool", || name.clone(), ret.into())?;
        // SAFETY: a fresh, unshared I/O context; NUL-terminated string.
        unsafe { rados_ioctx_set_namespace(ioctx, ns.as_ptr()) };
        Ok(OmapObject {
            _cluster: cluster.clone(),
            ioctx,
            oid,
            name,
        })
    }

    /// `pool/namespace/object`, as errors name it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The object's version (every write raises it); `None` when the
    /// object does not exist. One small round trip: callers keep what
    /// they read last with the version read before it, and read again
    /// only when the version moved.
    pub fn version(&self) -> Result<Option<u64>> {
        let mut size: u64 = 0;
        let mut mtime: libc::time_t = 0;
        let mut prval: libc::c_int = 0;
        // SAFETY: a fresh read op, released below; the out pointers
        // outlive the operate call; this I/O context is used by this
        // call alone (each user opens its own), so the last version read
        // from it is this operation's.
        let (ret, version) = unsafe {
            let op = rados_create_read_op();
            rados_read_op_stat(op, &mut size, &mut mtime, &mut prval);
            let ret = rados_read_op_operate(op, self.ioctx, self.oid.as_ptr(), 0);
            rados_release_read_op(op);
            (ret, rados_get_last_version(self.ioctx))
        };
        if ret == -libc::ENOENT {
            return Ok(None);
        }
        check("stat", || self.name.clone(), ret.into())?;
        Ok(Some(version))
    }

    /// The value of `key`; `None` when the key or the object is absent.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let k = cstr("read omap", &self.name, key)?;
        let keys = [k.as_ptr()];
        let mut iter = Iter(ptr::null_mut());
        let mut prval: libc::c_int = 0;
        // SAFETY: a fresh read op, released below; `keys` and `prval`
        // outlive the operate call; `oid` is NUL-terminated.
        let ret = unsafe {
            let op = rados_create_read_op();
            rados_read_op_omap_get_vals_by_keys(op, keys.as_ptr(), 1, &mut iter.0, &mut prval);
            let ret = rados_read_op_operate(op, self.ioctx, self.oid.as_ptr(), 0);
            rados_release_read_op(op);
            ret
        };
        if !self.read_ok(ret, prval)? {
            return Ok(None);
        }
        Ok(iter.drain(&self.name)?.into_iter().next().map(|(_, v)| v))
    }

    /// The outcome of an omap read op: `false` when the object does not
    /// exist, an error when the op or its read failed.
    fn read_ok(&self, ret: libc::c_int, prval: libc::c_int) -> Result<bool> {
        if ret == -libc::ENOENT {
            return Ok(false);
        }
        check("read omap", || self.name.clone(), ret.into())?;
        check("read omap", || self.name.clone(), prval.into())?;
        Ok(true)
    }

    /// Every key starting with `prefix`, in key order, with its value;
    /// `None` when the object does not exist.
    pub fn list(&self, prefix: &str) -> Result<Option<Entries>> {
        let pre = cstr("read omap", &self.name, prefix)?;
        let mut out: Entries = Vec::new();
        loop {
            let after = cstr(
                "read omap",
                &self.name,
                out.last().map(|(k, _)| k.as_str()).unwrap_or(""),
            )?;
            let mut iter = Iter(ptr::null_mut());
            let mut prval: libc::c_int = 0;
            let mut more: libc::c_uchar = 0;
            // SAFETY: a fresh read op, released below; the strings,
            // `more` and `prval` outlive the operate call.
            let ret = unsafe {
                let op = rados_create_read_op();
                rados_read_op_omap_get_vals2(
                    op,
                    after.as_ptr(),
                    pre.as_ptr(),
                    PAGE,
                    &mut iter.0,
                    &mut more,
                    &mut prval,
                );
                let ret = rados_read_op_operate(op, self.ioctx, self.oid.as_ptr(), 0);
                rados_release_read_op(op);
                ret
            };
            if !self.read_ok(ret, prval)? {
                return Ok(None);
            }
            let page = iter.drain(&self.name)?;
            let empty = page.is_empty();
            out.extend(page);
            if more == 0 || empty {
                return Ok(Some(out));
            }
        }
    }

    /// Sets `entries` in one operation (making the object if needed).
    pub fn set(&self, entries: &[(&str, &[u8])]) -> Result<()> {
        self.write(None, entries, &[]).map(|_| ())
    }

    /// Sets `key` to `value` if its value is `expected` now (`None`:
    /// the key is absent). `false`: it was not; nothing changed.
    pub fn set_if(&self, key: &str, expected: Option<&[u8]>, value: &[u8]) -> Result<bool> {
        self.write(
            Some((key, expected.unwrap_or_default())),
            &[(key, value)],
            &[],
        )
    }

    /// Removes `key` if its value is `expected` now. `false`: it was not
    /// (changed or already gone); nothing changed.
    pub fn remove_if(&self, key: &str, expected: &[u8]) -> Result<bool> {
        self.write(Some((key, expected)), &[], &[key])
    }

    /// Removes `keys` (absent ones are fine).
    pub fn remove(&self, keys: &[&str]) -> Result<()> {
        self.write(None, &[], keys).map(|_| ())
    }

    /// One write operation: an optional comparison (a missing key
    /// compares as empty), then sets, then removals. `false`: the
    /// comparison failed (`ECANCELED`) and nothing was written.
    fn write(
        &self,
        guard: Option<(&str, &[u8])>,
        set: &[(&str, &[u8])],
        rm: &[&str],
    ) -> Result<bool> {
        let c = |s: &str| cstr("write omap", &self.name, s);
        let guard_key = guard.map(|(k, _)| c(k)).transpose()?;
        let set_keys = set.iter().map(|(k, _)| c(k)).collect::<Result<Vec<_>>>()?;
        let set_key_ptrs: Vec<*const libc::c_char> = set_keys.iter().map(|k| k.as_ptr()).collect();
        let set_vals: Vec<*const libc::c_char> =
            set.iter().map(|(_, v)| v.as_ptr().cast()).collect();
        let set_lens: Vec<libc::size_t> = set.iter().map(|(_, v)| v.len()).collect();
        let rm_keys = rm.iter().map(|k| c(k)).collect::<Result<Vec<_>>>()?;
        let rm_ptrs: Vec<*const libc::c_char> = rm_keys.iter().map(|k| k.as_ptr()).collect();
        let mut prval: libc::c_int = 0;
        // SAFETY: a fresh write op, released below; every pointer handed
        // to it points into vectors and strings that outlive the operate
        // call; lengths match the buffers.
        let ret = unsafe {
            let op = rados_create_write_op();
            if let (Some(k), Some((_, v))) = (&guard_key, guard) {
                rados_write_op_omap_cmp(
                    op,
                    k.as_ptr(),
                    CMP_EQ,
                    v.as_ptr().cast(),
                    v.len(),
                    &mut prval,
                );
            }
            if !set.is_empty() {
                rados_write_op_omap_set(
                    op,
                    set_key_ptrs.as_ptr(),
                    set_vals.as_ptr(),
                    set_lens.as_ptr(),
                    set.len(),
                );
            }
            if !rm.is_empty() {
                rados_write_op_omap_rm_keys(op, rm_ptrs.as_ptr(), rm.len());
            }
            let ret = rados_write_op_operate(op, self.ioctx, self.oid.as_ptr(), ptr::null_mut(), 0);
            rados_release_write_op(op);
            ret
        };
        if guard.is_some() && ret == -libc::ECANCELED {
            return Ok(false);
        }
        check("write omap", || self.name.clone(), ret.into())?;
        Ok(true)
    }
}
