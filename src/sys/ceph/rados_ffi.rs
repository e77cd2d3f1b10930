//! The librados functions Berth needs that `ceph::rados` (ceph-rust 3.2)
//! does not declare. Signatures checked against
//! `/usr/include/rados/librados.h` of Ceph 16.2.15.

use ceph::rados::{rados_omap_iter_t, rados_read_op_t, rados_t};
use libc::{c_char, c_int, size_t};

#[link(name = "rados")]
extern "C" {
    /// `int rados_mgr_command(rados_t cluster, const char **cmd, size_t
    /// cmdlen, const char *inbuf, size_t inbuflen, char **outbuf, size_t
    /// *outbuflen, char **outs, size_t *outslen);` — buffers are freed
    /// with `rados_buffer_free`.
    pub fn rados_mgr_command(
        cluster: rados_t,
        cmd: *mut *const c_char,
        cmdlen: size_t,
        inbuf: *const c_char,
        inbuflen: size_t,
        outbuf: *mut *mut c_char,
        outbuflen: *mut size_t,
        outs: *mut *mut c_char,
        outslen: *mut size_t,
    ) -> c_int;

    /// `int rados_getaddrs(rados_t cluster, char **addrs);` — the string
    /// is `strdup`ed by librados: free it with `free(3)`.
    pub fn rados_getaddrs(cluster: rados_t, addrs: *mut *mut c_char) -> c_int;

    /// `void rados_read_op_omap_get_vals2(rados_read_op_t read_op, const
    /// char *start_after, const char *filter_prefix, uint64_t max_return,
    /// rados_omap_iter_t *iter, unsigned char *pmore, int *prval);` —
    /// `*pmore` tells whether the OSD has more entries than it returned
    /// (it caps a reply at `osd_max_omap_entries_per_request`).
    pub fn rados_read_op_omap_get_vals2(
        read_op: rados_read_op_t,
        start_after: *const c_char,
        filter_prefix: *const c_char,
        max_return: u64,
        iter: *mut rados_omap_iter_t,
        pmore: *mut libc::c_uchar,
        prval: *mut c_int,
    );
}
