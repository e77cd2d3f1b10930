//! RBD images of one pool through librbd.
//!
//! Each operation opens the image, does its work and closes it again: no
//! image handle outlives a call, so an [`RbdPool`] holds no per-image
//! state and can be shared between threads. Queries (size, metadata,
//! lockers, watchers, snapshots, children) open the image read-only, which
//! registers no watch; changes open it read-write, which registers a watch
//! for the duration of the call ([`RbdPool::watchers`] hides those).

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::ptr;
use std::time::Duration;

use ceph::rados::{rados_ioctx_destroy, rados_ioctx_t};
use libc::{c_char, c_int, size_t};

use super::rbd_ffi as ffi;
use super::{check, cstr, Cluster, Result};

mod directory;
mod import;

/// A lock holder, as `rbd lock ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locker {
    /// The holding client's entity name, e.g. `client.4167` (compare with
    /// [`Cluster::client_name`]).
    pub client: String,
    /// The cookie the holder chose when locking.
    pub cookie: String,
    /// The holder's address, `ip:0/nonce` (what to blocklist).
    pub address: String,
}

/// A client that has the image open (a watch on its header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watcher {
    /// Address, `ip:0/nonce` (what to blocklist).
    pub addr: String,
    /// The client id: the `N` of `client.N`.
    pub id: i64,
    /// The watch cookie.
    pub cookie: u64,
}

/// One snapshot of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Snapshot id.
    pub id: u64,
    /// Snapshot name.
    pub name: String,
    /// Image size when the snapshot was taken, bytes.
    pub size: u64,
    /// Whether it is protected (clones need that; it cannot be removed).
    pub protected: bool,
}

/// A clone made from a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildImage {
    /// Pool of the clone.
    pub pool: String,
    /// Image name of the clone.
    pub image: String,
    /// Whether the clone sits in the RBD trash.
    pub trash: bool,
}

/// An I/O context on one pool: RBD image operations.
///
/// `Send + Sync`; it keeps its [`Cluster`] connection alive.
pub struct RbdPool {
    ioctx: rados_ioctx_t,
    pool: String,
    // Declared after `ioctx` users only for documentation: Drop destroys
    // the ioctx explicitly before this field releases the connection.
    cluster: Cluster,
}

// SAFETY: a librados ioctx may be used from several threads as long as its
// state (namespace, locator key, snap context) is not changed; this type
// never changes it after creation.
unsafe impl Send for RbdPool {}
// SAFETY: as above; all methods take `&self` and only pass the ioctx to
// thread-safe librbd/librados calls.
unsafe impl Sync for RbdPool {}

impl Drop for RbdPool {
    fn drop(&mut self) {
        // SAFETY: created by rados_ioctx_create, destroyed once, while
        // `self.cluster` still keeps the connection alive.
        unsafe { rados_ioctx_destroy(self.ioctx) }
    }
}

impl std::fmt::Debug for RbdPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RbdPool").field("pool", &self.pool).finish()
    }
}

/// An open image, closed on drop.
struct Image {
    raw: ffi::rbd_image_t,
}

impl Drop for Image {
    fn drop(&mut self) {
        // SAFETY: opened by rbd_open/rbd_open_read_only, closed once.
        unsafe {
            ffi::rbd_close(self.raw);
        }
    }
}

impl RbdPool {
    pub(crate) fn new(cluster: Cluster, pool: String, ioctx: rados_ioctx_t) -> Self {
        RbdPool {
            ioctx,
            pool,
            cluster,
        }
    }

    /// The pool's name.
    pub fn pool(&self) -> &str {
        &self.pool
    }

    /// The connection this pool was opened on.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    fn obj(&self, image: &str) -> String {
        format!("{}/{image}", self.pool)
    }

    fn open(
        &self,
        op: &'static str,
        image: &str,
        snap: Option<&str>,
        read_only: bool,
    ) -> Result<Image> {
        let object = match snap {
            Some(s) => format!("{}/{image}@{s}", self.pool),
            None => self.obj(image),
        };
        let name = cstr(op, &object, image)?;
        let snap_c = snap.map(|s| cstr(op, &object, s)).transpose()?;
        let snap_ptr = snap_c.as_ref().map_or(ptr::null(), |s| s.as_ptr());
        let mut raw: ffi::rbd_image_t = ptr::null_mut();
        // SAFETY: live ioctx; NUL-terminated name; snap name NUL-terminated
        // or null; valid out pointer.
        let ret = unsafe {
            if read_only {
                ffi::rbd_open_read_only(self.ioctx, name.as_ptr(), &mut raw, snap_ptr)
            } else {
                ffi::rbd_open(self.ioctx, name.as_ptr(), &mut raw, snap_ptr)
            }
        };
        check(op, || object, ret.into())?;
        Ok(Image { raw })
    }

    /// Names of all images in the pool (not those in the trash).
    pub fn list(&self) -> Result<Vec<String>> {
        let mut cap: size_t = 64;
        loop {
            let mut specs: Vec<ffi::rbd_image_spec_t> = (0..cap)
                .map(|_| ffi::rbd_image_spec_t {
                    id: ptr::null_mut(),
                    name: ptr::null_mut(),
                })
                .collect();
            let mut n = cap;
            // SAFETY: `specs` has room for `n` entries; librbd fills at most
            // `n` and reports the needed count with -ERANGE.
            let ret = unsafe { ffi::rbd_list2(self.ioctx, specs.as_mut_ptr(), &mut n) };
            if ret == -libc::ERANGE && n > cap {
                cap = n;
                continue;
            }
            check("rbd list", || self.pool.clone(), ret.into())?;
            let names = specs
                .iter()
                .take(n)
                // SAFETY: librbd filled the first `n` entries with strdup'ed
                // strings.
                .map(|s| unsafe { owned(s.name) })
                .collect();
            // SAFETY: frees exactly the `n` entries librbd filled.
            unsafe { ffi::rbd_image_spec_list_cleanup(specs.as_mut_ptr(), n) };
            return Ok(names);
        }
    }

    /// Creates an image of `size` bytes with the `layering` feature only.
    ///
    /// No `exclusive-lock`: that lock moves to whichever client writes and
    /// so does not keep a second writer out, while it makes advisory locks
    /// ([`RbdPool::lock_exclusive`]) fail whenever an rbd-fuse has the
    /// image open. An existing image → `EEXIST`.
    pub fn create(&self, image: &str, size: u64) -> Result<()> {
        let object = self.obj(image);
        let name = cstr("rbd create", &object, image)?;
        let mut order: c_int = 0;
        // SAFETY: live ioctx, NUL-terminated name, valid out pointer.
        let ret = unsafe {
            ffi::rbd_create2(
                self.ioctx,
                name.as_ptr(),
                size,
                ffi::RBD_FEATURE_LAYERING,
                &mut order,
            )
        };
        check("rbd create", || object, ret.into())?;
        Ok(())
    }

    /// Deletes an image. `EBUSY` while a client has it open (watchers),
    /// `ENOTEMPTY` while it has snapshots, `ENOENT` when absent.
    pub fn remove(&self, image: &str) -> Result<()> {
        let object = self.obj(image);
        let name = cstr("rbd remove", &object, image)?;
        // SAFETY: live ioctx, NUL-terminated name.
        let ret = unsafe { ffi::rbd_remove(self.ioctx, name.as_ptr()) };
        check("rbd remove", || object, ret.into())?;
        Ok(())
    }

    /// The image's size in bytes.
    pub fn size(&self, image: &str) -> Result<u64> {
        let img = self.open("rbd size", image, None, true)?;
        let mut size = 0u64;
        // SAFETY: open image, valid out pointer.
        let ret = unsafe { ffi::rbd_get_size(img.raw, &mut size) };
        check("rbd size", || self.obj(image), ret.into())?;
        Ok(size)
    }

    /// Grows the image to `size` bytes. Shrinking is refused (`EINVAL`):
    /// it would cut off the filesystem's end.
    pub fn resize(&self, image: &str, size: u64) -> Result<()> {
        let img = self.open("rbd resize", image, None, false)?;
        // SAFETY: open image; no progress callback.
        let ret = unsafe { ffi::rbd_resize2(img.raw, size, false, None, ptr::null_mut()) };
        check(
            "rbd resize",
            || format!("{} to {size}", self.obj(image)),
            ret.into(),
        )?;
        Ok(())
    }

    /// Sets an image metadata key (`rbd image-meta set`). Keys starting
    /// with `conf_` are librbd configuration overrides: avoid them.
    pub fn meta_set(&self, image: &str, key: &str, value: &str) -> Result<()> {
        let object = format!("{} key {key}", self.obj(image));
        let k = cstr("rbd meta set", &object, key)?;
        let v = cstr("rbd meta set", &object, value)?;
        let img = self.open("rbd meta set", image, None, false)?;
        // SAFETY: open image, NUL-terminated key and value.
        let ret = unsafe { ffi::rbd_metadata_set(img.raw, k.as_ptr(), v.as_ptr()) };
        check("rbd meta set", || object, ret.into())?;
        Ok(())
    }

    /// An image metadata value; `None` when the key is not set.
    pub fn meta_get(&self, image: &str, key: &str) -> Result<Option<String>> {
        let object = format!("{} key {key}", self.obj(image));
        let k = cstr("rbd meta get", &object, key)?;
        let img = self.open("rbd meta get", image, None, true)?;
        let mut cap: size_t = 256;
        loop {
            let mut buf = vec![0u8; cap];
            let mut len = cap;
            // SAFETY: open image; `buf` has `len` writable bytes; librbd
            // reports the needed size with -ERANGE.
            let ret = unsafe {
                ffi::rbd_metadata_get(img.raw, k.as_ptr(), buf.as_mut_ptr().cast(), &mut len)
            };
            if ret == -libc::ERANGE && len > cap {
                cap = len;
                continue;
            }
            if ret == -libc::ENOENT {
                return Ok(None);
            }
            check("rbd meta get", || object.clone(), ret.into())?;
            return Ok(Some(nul_terminated(&buf)));
        }
    }

    /// All metadata of an image (including librbd's own `conf_*` keys, if
    /// anyone set them).
    pub fn meta_list(&self, image: &str) -> Result<BTreeMap<String, String>> {
        const PAGE: u64 = 64;
        let object = self.obj(image);
        let img = self.open("rbd meta list", image, None, true)?;
        let mut out = BTreeMap::new();
        let mut start = CString::default();
        let (mut kcap, mut vcap): (size_t, size_t) = (4096, 4096);
        loop {
            let mut keys = vec![0u8; kcap];
            let mut vals = vec![0u8; vcap];
            let (mut klen, mut vlen) = (kcap, vcap);
            // SAFETY: open image; `start` NUL-terminated; both buffers have
            // the advertised sizes; -ERANGE reports the needed sizes.
            let ret = unsafe {
                ffi::rbd_metadata_list(
                    img.raw,
                    start.as_ptr(),
                    PAGE,
                    keys.as_mut_ptr().cast(),
                    &mut klen,
                    vals.as_mut_ptr().cast(),
                    &mut vlen,
                )
            };
            if ret == -libc::ERANGE && (klen > kcap || vlen > vcap) {
                kcap = kcap.max(klen);
                vcap = vcap.max(vlen);
                continue;
            }
            check("rbd meta list", || object.clone(), ret.into())?;
            let ks = split_nul(&keys[..klen.min(kcap)]);
            let vs = split_nul(&vals[..vlen.min(vcap)]);
            let got = ks.len();
            let last = ks.last().cloned();
            out.extend(ks.into_iter().zip(vs));
            match last {
                Some(k) if got as u64 >= PAGE => {
                    start = cstr("rbd meta list", &object, &k)?;
                }
                _ => return Ok(out),
            }
        }
    }

    /// Removes a metadata key; a key that is not set is not an error.
    pub fn meta_remove(&self, image: &str, key: &str) -> Result<()> {
        let object = format!("{} key {key}", self.obj(image));
        let k = cstr("rbd meta remove", &object, key)?;
        let img = self.open("rbd meta remove", image, None, false)?;
        // SAFETY: open image, NUL-terminated key.
        let ret = unsafe { ffi::rbd_metadata_remove(img.raw, k.as_ptr()) };
        if ret == -libc::ENOENT {
            return Ok(());
        }
        check("rbd meta remove", || object, ret.into())?;
        Ok(())
    }

    /// Fences a client of this pool's images (`ip:0/nonce`) and returns
    /// only once the fence holds: blocklists it
    /// ([`Cluster::blocklist_add`], which returns the epoch E carrying the
    /// entry), then waits until every placement group of the pool works
    /// with map E ([`Cluster::pg_epoch_barrier`]). From then on the OSDs
    /// refuse every operation of that client on the pool; what it got in
    /// before is ordered before anything sent afterwards. Returns E.
    pub fn fence(&self, addr: &str, expire: Duration) -> Result<u64> {
        let epoch = self.cluster().blocklist_add(addr, expire)?;
        self.cluster().pg_epoch_barrier(self.pool(), epoch)?;
        Ok(epoch)
    }

    /// Takes the image's advisory exclusive lock (`rbd lock add`) for this
    /// client with `cookie`.
    ///
    /// `EBUSY` when another client (or this one with another cookie) holds
    /// it, `EEXIST` when this client already holds it with this cookie.
    /// The lock belongs to this [`Cluster`] connection (`client.N` plus
    /// address): a reconnected client is a different holder and must
    /// [`RbdPool::break_lock`] its old lock.
    pub fn lock_exclusive(&self, image: &str, cookie: &str) -> Result<()> {
        let object = format!("{} cookie {cookie}", self.obj(image));
        let c = cstr("rbd lock", &object, cookie)?;
        let img = self.open("rbd lock", image, None, false)?;
        // SAFETY: open image, NUL-terminated cookie.
        let ret = unsafe { ffi::rbd_lock_exclusive(img.raw, c.as_ptr()) };
        check("rbd lock", || object, ret.into())?;
        Ok(())
    }

    /// Who holds the image's advisory lock (empty when unlocked).
    pub fn lockers(&self, image: &str) -> Result<Vec<Locker>> {
        let object = self.obj(image);
        let img = self.open("rbd lock list", image, None, true)?;
        let (mut tcap, mut ccap, mut kcap, mut acap): (size_t, size_t, size_t, size_t) =
            (256, 1024, 1024, 1024);
        loop {
            let mut tag = vec![0u8; tcap];
            let mut clients = vec![0u8; ccap];
            let mut cookies = vec![0u8; kcap];
            let mut addrs = vec![0u8; acap];
            let (mut tlen, mut clen, mut klen, mut alen) = (tcap, ccap, kcap, acap);
            let mut exclusive: c_int = 0;
            // SAFETY: open image; each buffer has the length passed next to
            // it; librbd reports the needed sizes with -ERANGE.
            let ret = unsafe {
                ffi::rbd_list_lockers(
                    img.raw,
                    &mut exclusive,
                    tag.as_mut_ptr().cast::<c_char>(),
                    &mut tlen,
                    clients.as_mut_ptr().cast::<c_char>(),
                    &mut clen,
                    cookies.as_mut_ptr().cast::<c_char>(),
                    &mut klen,
                    addrs.as_mut_ptr().cast::<c_char>(),
                    &mut alen,
                )
            };
            if ret == -(libc::ERANGE as isize)
                && (tlen > tcap || clen > ccap || klen > kcap || alen > acap)
            {
                (tcap, ccap, kcap, acap) = (
                    tcap.max(tlen),
                    ccap.max(clen),
                    kcap.max(klen),
                    acap.max(alen),
                );
                continue;
            }
            let n = check("rbd lock list", || object.clone(), ret as i64)? as usize;
            let clients = split_nul(&clients[..clen.min(ccap)]);
            let cookies = split_nul(&cookies[..klen.min(kcap)]);
            let addrs = split_nul(&addrs[..alen.min(acap)]);
            return Ok(clients
                .into_iter()
                .zip(cookies)
                .zip(addrs)
                .take(n)
                .map(|((client, cookie), address)| Locker {
                    client,
                    cookie,
                    address,
                })
                .collect());
        }
    }

    /// Breaks another client's lock (`rbd lock rm`). It does **not**
    /// blocklist the old holder (the connection turns
    /// `rbd_blocklist_on_break_lock` off): call [`Cluster::blocklist_add`]
    /// with [`Locker::address`] first, or the old holder may keep writing.
    pub fn break_lock(&self, image: &str, client: &str, cookie: &str) -> Result<()> {
        let object = format!("{} held by {client} cookie {cookie}", self.obj(image));
        let cl = cstr("rbd lock break", &object, client)?;
        let co = cstr("rbd lock break", &object, cookie)?;
        let img = self.open("rbd lock break", image, None, false)?;
        // SAFETY: open image, NUL-terminated strings.
        let ret = unsafe { ffi::rbd_break_lock(img.raw, cl.as_ptr(), co.as_ptr()) };
        check("rbd lock break", || object, ret.into())?;
        Ok(())
    }

    /// Releases this client's lock with `cookie` (`ENOENT` when this
    /// connection does not hold it).
    pub fn unlock(&self, image: &str, cookie: &str) -> Result<()> {
        let object = format!("{} cookie {cookie}", self.obj(image));
        let c = cstr("rbd unlock", &object, cookie)?;
        let img = self.open("rbd unlock", image, None, false)?;
        // SAFETY: open image, NUL-terminated cookie.
        let ret = unsafe { ffi::rbd_unlock(img.raw, c.as_ptr()) };
        check("rbd unlock", || object, ret.into())?;
        Ok(())
    }

    /// Clients that have the image open (`rbd status`), without this
    /// connection's own short-lived watches from concurrent calls.
    ///
    /// A client that died keeps its watch until the OSD times it out
    /// (`osd_client_watch_timeout`, 30 s by default) or until its address
    /// is blocklisted.
    pub fn watchers(&self, image: &str) -> Result<Vec<Watcher>> {
        let object = self.obj(image);
        let own_id = i64::try_from(self.cluster.instance_id()).unwrap_or(-1);
        let img = self.open("rbd watchers", image, None, true)?;
        let mut cap: size_t = 8;
        loop {
            let mut ws: Vec<ffi::rbd_image_watcher_t> = (0..cap)
                .map(|_| ffi::rbd_image_watcher_t {
                    addr: ptr::null_mut(),
                    id: 0,
                    cookie: 0,
                })
                .collect();
            let mut n = cap;
            // SAFETY: open image; `ws` has room for `n` entries; -ERANGE
            // reports the needed count.
            let ret = unsafe { ffi::rbd_watchers_list(img.raw, ws.as_mut_ptr(), &mut n) };
            if ret == -libc::ERANGE && n > cap {
                cap = n;
                continue;
            }
            check("rbd watchers", || object.clone(), ret.into())?;
            let out = ws
                .iter()
                .take(n)
                .map(|w| Watcher {
                    // SAFETY: librbd filled the first `n` entries with
                    // strdup'ed addresses.
                    addr: unsafe { owned(w.addr) },
                    id: w.id,
                    cookie: w.cookie,
                })
                .filter(|w| w.id != own_id)
                .collect();
            // SAFETY: frees exactly the `n` entries librbd filled.
            unsafe { ffi::rbd_watchers_list_cleanup(ws.as_mut_ptr(), n) };
            return Ok(out);
        }
    }

    fn snap_op(
        &self,
        op: &'static str,
        image: &str,
        snap: &str,
        f: unsafe extern "C" fn(ffi::rbd_image_t, *const c_char) -> c_int,
    ) -> Result<()> {
        let object = format!("{}@{snap}", self.obj(image));
        let s = cstr(op, &object, snap)?;
        let img = self.open(op, image, None, false)?;
        // SAFETY: open image, NUL-terminated snapshot name; `f` is one of
        // librbd's (image, name) snapshot functions.
        let ret = unsafe { f(img.raw, s.as_ptr()) };
        check(op, || object, ret.into())?;
        Ok(())
    }

    /// Takes a snapshot. Quiesce the filesystem on it first (fsfreeze):
    /// a writer's cache is not part of the snapshot.
    pub fn snap_create(&self, image: &str, snap: &str) -> Result<()> {
        self.snap_op("rbd snap create", image, snap, ffi::rbd_snap_create)
    }

    /// Removes a snapshot (`EBUSY` while protected).
    pub fn snap_remove(&self, image: &str, snap: &str) -> Result<()> {
        self.snap_op("rbd snap remove", image, snap, ffi::rbd_snap_remove)
    }

    /// Protects a snapshot so it can be cloned.
    pub fn snap_protect(&self, image: &str, snap: &str) -> Result<()> {
        self.snap_op("rbd snap protect", image, snap, ffi::rbd_snap_protect)
    }

    /// Unprotects a snapshot (`EBUSY` while clones depend on it).
    pub fn snap_unprotect(&self, image: &str, snap: &str) -> Result<()> {
        self.snap_op("rbd snap unprotect", image, snap, ffi::rbd_snap_unprotect)
    }

    /// The image's snapshots, oldest first.
    pub fn snap_list(&self, image: &str) -> Result<Vec<Snapshot>> {
        let object = self.obj(image);
        let img = self.open("rbd snap list", image, None, true)?;
        let mut cap: c_int = 16;
        let raw = loop {
            let len = usize::try_from(cap).unwrap_or(16);
            let mut snaps: Vec<ffi::rbd_snap_info_t> = (0..len)
                .map(|_| ffi::rbd_snap_info_t {
                    id: 0,
                    size: 0,
                    name: ptr::null(),
                })
                .collect();
            let mut n = cap;
            // SAFETY: open image; `snaps` has room for `n` entries (librbd
            // needs one more than the count for its end marker and says so
            // with -ERANGE).
            let ret = unsafe { ffi::rbd_snap_list(img.raw, snaps.as_mut_ptr(), &mut n) };
            if ret == -libc::ERANGE && n > cap {
                cap = n;
                continue;
            }
            let count = check("rbd snap list", || object.clone(), ret.into())? as usize;
            let list: Vec<(u64, String, u64)> = snaps
                .iter()
                .take(count)
                // SAFETY: librbd filled the first `count` entries.
                .map(|s| (s.id, unsafe { owned(s.name.cast_mut()) }, s.size))
                .collect();
            // SAFETY: librbd wrote an end marker after the `count` entries;
            // this frees their names.
            unsafe { ffi::rbd_snap_list_end(snaps.as_mut_ptr()) };
            break list;
        };
        let mut out = Vec::with_capacity(raw.len());
        for (id, name, size) in raw {
            let object = format!("{object}@{name}");
            let s = cstr("rbd snap list", &object, &name)?;
            let mut p: c_int = 0;
            // SAFETY: open image, NUL-terminated name, valid out pointer.
            let ret = unsafe { ffi::rbd_snap_is_protected(img.raw, s.as_ptr(), &mut p) };
            check("rbd snap list", || object, ret.into())?;
            out.push(Snapshot {
                id,
                name,
                size,
                protected: p != 0,
            });
        }
        Ok(out)
    }

    /// Clones `parent@snap` (protected) into a new image `child` in the
    /// same pool, with the `layering` feature only.
    pub fn clone_image(&self, parent: &str, snap: &str, child: &str) -> Result<()> {
        let object = format!("{}@{snap} to {}", self.obj(parent), self.obj(child));
        let p = cstr("rbd clone", &object, parent)?;
        let s = cstr("rbd clone", &object, snap)?;
        let c = cstr("rbd clone", &object, child)?;
        let mut order: c_int = 0;
        // SAFETY: live ioctx used as parent and child context; three
        // NUL-terminated names; valid out pointer.
        let ret = unsafe {
            ffi::rbd_clone(
                self.ioctx,
                p.as_ptr(),
                s.as_ptr(),
                self.ioctx,
                c.as_ptr(),
                ffi::RBD_FEATURE_LAYERING,
                &mut order,
            )
        };
        check("rbd clone", || object, ret.into())?;
        Ok(())
    }

    /// Copies all data a clone still shares with its parent, detaching
    /// it (its parent snapshot can then be unprotected and removed).
    pub fn flatten(&self, image: &str) -> Result<()> {
        let img = self.open("rbd flatten", image, None, false)?;
        // SAFETY: open image.
        let ret = unsafe { ffi::rbd_flatten(img.raw) };
        check("rbd flatten", || self.obj(image), ret.into())?;
        Ok(())
    }

    /// Clones made from `image@snap`.
    pub fn children(&self, image: &str, snap: &str) -> Result<Vec<ChildImage>> {
        let object = format!("{}@{snap}", self.obj(image));
        let img = self.open("rbd children", image, Some(snap), true)?;
        let mut cap: size_t = 8;
        loop {
            let mut specs: Vec<ffi::rbd_linked_image_spec_t> = (0..cap)
                .map(|_| ffi::rbd_linked_image_spec_t {
                    pool_id: 0,
                    pool_name: ptr::null_mut(),
                    pool_namespace: ptr::null_mut(),
                    image_id: ptr::null_mut(),
                    image_name: ptr::null_mut(),
                    trash: false,
                })
                .collect();
            let mut n = cap;
            // SAFETY: image open at the snapshot; room for `n` entries;
            // -ERANGE reports the needed count.
            let ret = unsafe { ffi::rbd_list_children3(img.raw, specs.as_mut_ptr(), &mut n) };
            if ret == -libc::ERANGE && n > cap {
                cap = n;
                continue;
            }
            check("rbd children", || object.clone(), ret.into())?;
            let out = specs
                .iter()
                .take(n)
                .map(|s| ChildImage {
                    // SAFETY: librbd filled the first `n` entries.
                    pool: unsafe { owned(s.pool_name) },
                    // SAFETY: as above.
                    image: unsafe { owned(s.image_name) },
                    trash: s.trash,
                })
                .collect();
            // SAFETY: frees exactly the `n` entries librbd filled.
            unsafe { ffi::rbd_linked_image_spec_list_cleanup(specs.as_mut_ptr(), n) };
            return Ok(out);
        }
    }
}

/// Copies a C string librbd owns (null → empty).
///
/// # Safety
/// `p` is null or points to a NUL-terminated string.
unsafe fn owned(p: *mut c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: guaranteed by the caller.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// The text before the first NUL.
fn nul_terminated(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// `a\0b\0c\0` → `[a, b, c]`.
fn split_nul(buf: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = buf
        .split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    // The buffer ends with a NUL: the last piece is empty.
    if v.last().is_some_and(String::is_empty) {
        v.pop();
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::ceph::CephError;

    #[test]
    fn nul_lists() {
        assert_eq!(split_nul(b"a\0bc\0"), vec!["a", "bc"]);
        assert!(split_nul(b"").is_empty());
        assert_eq!(nul_terminated(b"xy\0\0\0"), "xy");
    }

    #[test]
    fn errors_name_pool_and_image() {
        let e = CephError::from_ret("rbd remove", "rbd/v1", -16);
        assert_eq!(
            e.to_string(),
            "rbd remove rbd/v1: Device or resource busy (errno 16)"
        );
    }
}
