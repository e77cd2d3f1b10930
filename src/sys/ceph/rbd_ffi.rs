//! Minimal librbd declarations: exactly the functions [`super::RbdPool`]
//! calls. Signatures checked against `/usr/include/rbd/librbd.h` of Ceph
//! 16.2.15 (librbd1); `rados_ioctx_t` comes from the `ceph` crate.

#![allow(non_camel_case_types)]

use ceph::rados::rados_ioctx_t;
use libc::{c_char, c_int, c_void, size_t, ssize_t};

/// `rbd_image_t`: an open image.
pub type rbd_image_t = *mut c_void;
/// `rbd_completion_t`: an asynchronous operation's handle.
pub type rbd_completion_t = *mut c_void;
/// `rbd_callback_t`: called when an asynchronous operation completes.
pub type rbd_callback_t = Option<unsafe extern "C" fn(cb: rbd_completion_t, arg: *mut c_void)>;

/// `librbd_progress_fn_t`.
pub type librbd_progress_fn_t =
    Option<unsafe extern "C" fn(offset: u64, total: u64, ptr: *mut c_void) -> c_int>;

/// `RBD_FEATURE_LAYERING` from `<rbd/features.h>`.
pub const RBD_FEATURE_LAYERING: u64 = 1 << 0;

/// `rbd_image_spec_t`.
#[repr(C)]
pub struct rbd_image_spec_t {
    /// Image id.
    pub id: *mut c_char,
    /// Image name.
    pub name: *mut c_char,
}

/// `rbd_linked_image_spec_t`.
#[repr(C)]
pub struct rbd_linked_image_spec_t {
    /// Pool id.
    pub pool_id: i64,
    /// Pool name.
    pub pool_name: *mut c_char,
    /// Pool namespace.
    pub pool_namespace: *mut c_char,
    /// Image id.
    pub image_id: *mut c_char,
    /// Image name.
    pub image_name: *mut c_char,
    /// Whether the image is in the trash.
    pub trash: bool,
}

/// `rbd_snap_info_t`.
#[repr(C)]
pub struct rbd_snap_info_t {
    /// Snapshot id.
    pub id: u64,
    /// Image size at the snapshot.
    pub size: u64,
    /// Snapshot name.
    pub name: *const c_char,
}

/// `rbd_image_watcher_t`.
#[repr(C)]
pub struct rbd_image_watcher_t {
    /// Watcher address, `ip:0/nonce`.
    pub addr: *mut c_char,
    /// Watcher's client id (the `N` of `client.N`).
    pub id: i64,
    /// Watch cookie.
    pub cookie: u64,
}

#[link(name = "rbd")]
extern "C" {
    /// `int rbd_list2(rados_ioctx_t io, rbd_image_spec_t *images, size_t *max_images);`
    pub fn rbd_list2(
        io: rados_ioctx_t,
        images: *mut rbd_image_spec_t,
        max_images: *mut size_t,
    ) -> c_int;
    /// `void rbd_image_spec_list_cleanup(rbd_image_spec_t *images, size_t num_images);`
    pub fn rbd_image_spec_list_cleanup(images: *mut rbd_image_spec_t, num_images: size_t);
    /// `int rbd_create2(rados_ioctx_t io, const char *name, uint64_t size, uint64_t features, int *order);`
    pub fn rbd_create2(
        io: rados_ioctx_t,
        name: *const c_char,
        size: u64,
        features: u64,
        order: *mut c_int,
    ) -> c_int;
    /// `int rbd_remove(rados_ioctx_t io, const char *name);`
    pub fn rbd_remove(io: rados_ioctx_t, name: *const c_char) -> c_int;
    /// `int rbd_open(rados_ioctx_t io, const char *name, rbd_image_t *image, const char *snap_name);`
    pub fn rbd_open(
        io: rados_ioctx_t,
        name: *const c_char,
        image: *mut rbd_image_t,
        snap_name: *const c_char,
    ) -> c_int;
    /// `int rbd_open_read_only(rados_ioctx_t io, const char *name, rbd_image_t *image, const char *snap_name);`
    pub fn rbd_open_read_only(
        io: rados_ioctx_t,
        name: *const c_char,
        image: *mut rbd_image_t,
        snap_name: *const c_char,
    ) -> c_int;
    /// `int rbd_aio_create_completion(void *cb_arg, rbd_callback_t complete_cb, rbd_completion_t *c);`
    pub fn rbd_aio_create_completion(
        cb_arg: *mut c_void,
        complete_cb: rbd_callback_t,
        c: *mut rbd_completion_t,
    ) -> c_int;
    /// `ssize_t rbd_aio_write(rbd_image_t image, uint64_t off, size_t len, const char *buf, rbd_completion_t c);`
    pub fn rbd_aio_write(
        image: rbd_image_t,
        off: u64,
        len: size_t,
        buf: *const c_char,
        c: rbd_completion_t,
    ) -> c_int;
    /// `int rbd_aio_wait_for_complete(rbd_completion_t c);`
    pub fn rbd_aio_wait_for_complete(c: rbd_completion_t) -> c_int;
    /// `ssize_t rbd_aio_get_return_value(rbd_completion_t c);`
    pub fn rbd_aio_get_return_value(c: rbd_completion_t) -> isize;
    /// `void rbd_aio_release(rbd_completion_t c);`
    pub fn rbd_aio_release(c: rbd_completion_t);
    /// `int rbd_flush(rbd_image_t image);`
    pub fn rbd_flush(image: rbd_image_t) -> c_int;
    /// `int rbd_close(rbd_image_t image);`
    pub fn rbd_close(image: rbd_image_t) -> c_int;
    /// `int rbd_get_size(rbd_image_t image, uint64_t *size);`
    pub fn rbd_get_size(image: rbd_image_t, size: *mut u64) -> c_int;
    /// `int rbd_resize2(rbd_image_t image, uint64_t size, bool allow_shrink, librbd_progress_fn_t cb, void *cbdata);`
    pub fn rbd_resize2(
        image: rbd_image_t,
        size: u64,
        allow_shrink: bool,
        cb: librbd_progress_fn_t,
        cbdata: *mut c_void,
    ) -> c_int;
    /// `int rbd_metadata_set(rbd_image_t image, const char *key, const char *value);`
    pub fn rbd_metadata_set(image: rbd_image_t, key: *const c_char, value: *const c_char) -> c_int;
    /// `int rbd_metadata_get(rbd_image_t image, const char *key, char *value, size_t *val_len);`
    pub fn rbd_metadata_get(
        image: rbd_image_t,
        key: *const c_char,
        value: *mut c_char,
        val_len: *mut size_t,
    ) -> c_int;
    /// `int rbd_metadata_list(rbd_image_t image, const char *start, uint64_t max, char *keys, size_t *key_len, char *values, size_t *vals_len);`
    pub fn rbd_metadata_list(
        image: rbd_image_t,
        start: *const c_char,
        max: u64,
        keys: *mut c_char,
        key_len: *mut size_t,
        values: *mut c_char,
        vals_len: *mut size_t,
    ) -> c_int;
    /// `int rbd_metadata_remove(rbd_image_t image, const char *key);`
    pub fn rbd_metadata_remove(image: rbd_image_t, key: *const c_char) -> c_int;
    /// `int rbd_lock_exclusive(rbd_image_t image, const char *cookie);`
    pub fn rbd_lock_exclusive(image: rbd_image_t, cookie: *const c_char) -> c_int;
    /// `ssize_t rbd_list_lockers(rbd_image_t image, int *exclusive, char *tag, size_t *tag_len, char *clients, size_t *clients_len, char *cookies, size_t *cookies_len, char *addrs, size_t *addrs_len);`
    pub fn rbd_list_lockers(
        image: rbd_image_t,
        exclusive: *mut c_int,
        tag: *mut c_char,
        tag_len: *mut size_t,
        clients: *mut c_char,
        clients_len: *mut size_t,
        cookies: *mut c_char,
        cookies_len: *mut size_t,
        addrs: *mut c_char,
        addrs_len: *mut size_t,
    ) -> ssize_t;
    /// `int rbd_break_lock(rbd_image_t image, const char *client, const char *cookie);`
    pub fn rbd_break_lock(
        image: rbd_image_t,
        client: *const c_char,
        cookie: *const c_char,
    ) -> c_int;
    /// `int rbd_unlock(rbd_image_t image, const char *cookie);`
    pub fn rbd_unlock(image: rbd_image_t, cookie: *const c_char) -> c_int;
    /// `int rbd_watchers_list(rbd_image_t image, rbd_image_watcher_t *watchers, size_t *max_watchers);`
    pub fn rbd_watchers_list(
        image: rbd_image_t,
        watchers: *mut rbd_image_watcher_t,
        max_watchers: *mut size_t,
    ) -> c_int;
    /// `void rbd_watchers_list_cleanup(rbd_image_watcher_t *watchers, size_t num_watchers);`
    pub fn rbd_watchers_list_cleanup(watchers: *mut rbd_image_watcher_t, num_watchers: size_t);
    /// `int rbd_snap_create(rbd_image_t image, const char *snapname);`
    pub fn rbd_snap_create(image: rbd_image_t, snapname: *const c_char) -> c_int;
    /// `int rbd_snap_remove(rbd_image_t image, const char *snapname);`
    pub fn rbd_snap_remove(image: rbd_image_t, snapname: *const c_char) -> c_int;
    /// `int rbd_snap_list(rbd_image_t image, rbd_snap_info_t *snaps, int *max_snaps);`
    pub fn rbd_snap_list(
        image: rbd_image_t,
        snaps: *mut rbd_snap_info_t,
        max_snaps: *mut c_int,
    ) -> c_int;
    /// `void rbd_snap_list_end(rbd_snap_info_t *snaps);`
    pub fn rbd_snap_list_end(snaps: *mut rbd_snap_info_t);
    /// `int rbd_snap_protect(rbd_image_t image, const char *snap_name);`
    pub fn rbd_snap_protect(image: rbd_image_t, snap_name: *const c_char) -> c_int;
    /// `int rbd_snap_unprotect(rbd_image_t image, const char *snap_name);`
    pub fn rbd_snap_unprotect(image: rbd_image_t, snap_name: *const c_char) -> c_int;
    /// `int rbd_snap_is_protected(rbd_image_t image, const char *snap_name, int *is_protected);`
    pub fn rbd_snap_is_protected(
        image: rbd_image_t,
        snap_name: *const c_char,
        is_protected: *mut c_int,
    ) -> c_int;
    /// `int rbd_clone(rados_ioctx_t p_ioctx, const char *p_name, const char *p_snapname, rados_ioctx_t c_ioctx, const char *c_name, uint64_t features, int *c_order);`
    pub fn rbd_clone(
        p_ioctx: rados_ioctx_t,
        p_name: *const c_char,
        p_snapname: *const c_char,
        c_ioctx: rados_ioctx_t,
        c_name: *const c_char,
        features: u64,
        c_order: *mut c_int,
    ) -> c_int;
    /// `int rbd_flatten(rbd_image_t image);`
    pub fn rbd_flatten(image: rbd_image_t) -> c_int;
    /// `int rbd_list_children3(rbd_image_t image, rbd_linked_image_spec_t *images, size_t *max_images);`
    pub fn rbd_list_children3(
        image: rbd_image_t,
        images: *mut rbd_linked_image_spec_t,
        max_images: *mut size_t,
    ) -> c_int;
    /// `void rbd_linked_image_spec_list_cleanup(rbd_linked_image_spec_t *images, size_t num_images);`
    pub fn rbd_linked_image_spec_list_cleanup(
        images: *mut rbd_linked_image_spec_t,
        num_images: size_t,
    );
}
