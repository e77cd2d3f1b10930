//! One librados connection: commands, blocklisting, pools.

use std::ffi::CStr;
use std::ptr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ceph::rados::{
    rados_buffer_free, rados_conf_read_file, rados_conf_set, rados_connect, rados_create,
    rados_get_instance_id, rados_ioctx_create, rados_ioctx_t, rados_mon_command, rados_pg_command,
    rados_pool_lookup, rados_shutdown, rados_t, rados_wait_for_latest_osdmap,
};
use serde_json::Value;

use super::rados_ffi::{rados_getaddrs, rados_mgr_command};
use super::rbd::RbdPool;
use super::{check, cstr, CephConfig, CephError, Result};

/// The librados handle; shut down when the last [`Cluster`] clone and the
/// last [`RbdPool`] made from it are gone.
struct Handle {
    raw: rados_t,
}

// SAFETY: a connected `rados_t` is documented as thread-safe ("the
// cluster handle ... can be shared between threads"); we never mutate its
// configuration after `rados_connect`.
unsafe impl Send for Handle {}
// SAFETY: as above; every method takes `&self` and librados locks
// internally.
unsafe impl Sync for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `rados_create` and is shut down exactly
        // once, here; every ioctx made from it holds an `Arc<Handle>` and
        // is therefore already destroyed.
        unsafe { rados_shutdown(self.raw) }
    }
}

/// Which daemon a command goes to.
#[derive(Clone, Copy)]
enum Target<'a> {
    Mon,
    Mgr,
    /// The primary OSD of a placement group (`2.1f`).
    Pg(&'a std::ffi::CStr),
}

/// A failed command: errno (positive) and Ceph's status string.
pub(crate) struct CommandFailure {
    pub errno: i32,
    pub status: String,
}

/// A connection to a Ceph cluster (one librados client instance).
///
/// Cheap to clone (the handle is shared); `Send + Sync`. The connection is
/// shut down when the last clone (and the last [`RbdPool`] opened from it)
/// is dropped.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Handle>,
    timeout: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("instance_id", &self.instance_id())
            .finish()
    }
}

impl Cluster {
    /// Connects as `client.<cfg.client>` with `cfg.conf` (and
    /// `cfg.keyring`).
    ///
    /// `cfg.timeout` becomes `client_mount_timeout` (the connect itself),
    /// `rados_mon_op_timeout` (mon and mgr commands) and
    /// `rados_osd_op_timeout` (object and image operations), so an
    /// unreachable cluster fails with `ETIMEDOUT` instead of hanging.
    /// `rbd_blocklist_on_break_lock` is turned off: [`RbdPool::break_lock`]
    /// only breaks, callers blocklist explicitly with
    /// [`Cluster::blocklist_add`].
    pub fn connect(cfg: &CephConfig) -> Result<Cluster> {
        let conf_name = cfg.conf.display().to_string();
        let id = cstr("connect", &conf_name, &cfg.client)?;
        let mut raw: rados_t = ptr::null_mut();
        // SAFETY: `raw` is a valid out pointer and `id` a NUL-terminated
        // string that outlives the call.
        let ret = unsafe { rados_create(&mut raw, id.as_ptr()) };
        check("connect", || conf_name.clone(), ret.into())?;
        // From here on, dropping `handle` releases the handle on every
        // error path (rados_shutdown also frees a never-connected handle).
        let handle = Handle { raw };
        let conf = cstr(
            "connect",
            &conf_name,
            cfg.conf.to_str().ok_or_else(|| CephError::Invalid {
                op: "connect",
                object: conf_name.clone(),
                reason: "path is not UTF-8".into(),
            })?,
        )?;
        // SAFETY: handle.raw is a live, unconnected handle; `conf` is a
        // NUL-terminated string.
        let ret = unsafe { rados_conf_read_file(handle.raw, conf.as_ptr()) };
        check("read conf", || conf_name.clone(), ret.into())?;
        let secs = cfg.timeout_secs().to_string();
        let mut options: Vec<(&str, String)> = vec![
            ("client_mount_timeout", secs.clone()),
            ("rados_mon_op_timeout", secs.clone()),
            ("rados_osd_op_timeout", secs),
            ("rbd_blocklist_on_break_lock", "false".into()),
        ];
        if let Some(k) = &cfg.keyring {
            options.push(("keyring", k.display().to_string()));
        }
        for (name, value) in &options {
            let n = cstr("set option", name, name)?;
            let v = cstr("set option", name, value)?;
            // SAFETY: live unconnected handle, two NUL-terminated strings.
            let ret = unsafe { rados_conf_set(handle.raw, n.as_ptr(), v.as_ptr()) };
            check("set option", || format!("{name}={value}"), ret.into())?;
        }
        // SAFETY: live handle with its configuration read.
        let ret = unsafe { rados_connect(handle.raw) };
        check(
            "connect",
            || format!("client.{} via {conf_name}", cfg.client),
            ret.into(),
        )?;
        Ok(Cluster {
            inner: Arc::new(handle),
            timeout: cfg.timeout,
        })
    }

    /// The timeout this connection was made with.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// This client's global id (the `4167` of `client.4167`).
    pub fn instance_id(&self) -> u64 {
        // SAFETY: connected handle; the call only reads it.
        unsafe { rados_get_instance_id(self.inner.raw) }
    }

    /// This client's entity name, `client.<instance_id>`, as RBD lockers
    /// name their owner ([`super::Locker::client`]).
    pub fn client_name(&self) -> String {
        format!("client.{}", self.instance_id())
    }

    /// This client's address, `ip:0/nonce`, as watchers, lockers and
    /// blocklists spell it.
    pub fn instance_addr(&self) -> Result<String> {
        let mut out: *mut libc::c_char = ptr::null_mut();
        // SAFETY: connected handle, valid out pointer.
        let ret = unsafe { rados_getaddrs(self.inner.raw, &mut out) };
        check(
            "get address",
            || format!("client.{}", self.instance_id()),
            ret.into(),
        )?;
        if out.is_null() {
            return Err(CephError::Reply {
                op: "get address".into(),
                object: self.client_name(),
                detail: "librados returned no string".into(),
            });
        }
        // SAFETY: librados returned a NUL-terminated string from strdup.
        let s = unsafe { CStr::from_ptr(out) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: `out` was allocated with strdup (malloc) and is freed once.
        unsafe { libc::free(out.cast()) };
        parse_addrvec(&s).ok_or_else(|| CephError::Reply {
            op: "get address".into(),
            object: self.client_name(),
            detail: format!("cannot parse {s:?}"),
        })
    }

    /// Sends a command to the monitors and returns its output.
    ///
    /// `cmd` is the JSON object the `ceph` CLI would send
    /// (`{"prefix": "osd pool ls"}`); `"format": "json"` is added when it
    /// has no `format`. A failure carries Ceph's status string.
    pub fn mon_command(&self, cmd: &Value) -> Result<Vec<u8>> {
        self.command(Target::Mon, cmd, &[])
            .map_err(|f| command_error("mon command", cmd, f))
    }

    /// Sends a command to the active mgr (e.g. the `volumes` module's
    /// `fs subvolume …`); as [`Cluster::mon_command`] otherwise.
    pub fn mgr_command(&self, cmd: &Value) -> Result<Vec<u8>> {
        self.command(Target::Mgr, cmd, &[])
            .map_err(|f| command_error("mgr command", cmd, f))
    }

    /// As [`Cluster::mgr_command`], with the raw failure for callers that
    /// build their own error.
    pub(crate) fn mgr_command_raw(
        &self,
        cmd: &Value,
    ) -> std::result::Result<Vec<u8>, CommandFailure> {
        self.command(Target::Mgr, cmd, &[])
    }

    fn command(
        &self,
        target: Target<'_>,
        cmd: &Value,
        input: &[u8],
    ) -> std::result::Result<Vec<u8>, CommandFailure> {
        let mut cmd = cmd.clone();
        if let Value::Object(map) = &mut cmd {
            map.entry("format")
                .or_insert_with(|| Value::String("json".into()));
        }
        let text = std::ffi::CString::new(cmd.to_string()).map_err(|_| CommandFailure {
            errno: libc::EINVAL,
            status: "command contains a NUL byte".into(),
        })?;
        let mut argv = [text.as_ptr()];
        let mut outbuf: *mut libc::c_char = ptr::null_mut();
        let mut outlen: libc::size_t = 0;
        let mut outs: *mut libc::c_char = ptr::null_mut();
        let mut outslen: libc::size_t = 0;
        // SAFETY: connected handle; `argv` holds one NUL-terminated string
        // that outlives the call; `input` is a valid buffer of the given
        // length; the out pointers are valid. librados allocates the
        // outputs, freed below with rados_buffer_free.
        let ret = unsafe {
            match target {
                Target::Mon => rados_mon_command(
                    self.inner.raw,
                    argv.as_mut_ptr(),
                    1,
                    input.as_ptr().cast(),
                    input.len(),
                    &mut outbuf,
                    &mut outlen,
                    &mut outs,
                    &mut outslen,
                ),
                Target::Mgr => rados_mgr_command(
                    self.inner.raw,
                    argv.as_mut_ptr(),
                    1,
                    input.as_ptr().cast(),
                    input.len(),
                    &mut outbuf,
                    &mut outlen,
                    &mut outs,
                    &mut outslen,
                ),
                Target::Pg(pgid) => rados_pg_command(
                    self.inner.raw,
                    pgid.as_ptr(),
                    argv.as_mut_ptr(),
                    1,
                    input.as_ptr().cast(),
                    input.len(),
                    &mut outbuf,
                    &mut outlen,
                    &mut outs,
                    &mut outslen,
                ),
            }
        };
        // SAFETY: librados set (ptr, len) pairs for its own allocations, or
        // left them null/0.
        let out = unsafe { take_buffer(outbuf, outlen) };
        // SAFETY: as above.
        let status = unsafe { take_buffer(outs, outslen) };
        if ret < 0 {
            return Err(CommandFailure {
                errno: -ret,
                status: String::from_utf8_lossy(&status).trim().to_string(),
            });
        }
        Ok(out)
    }

    /// Blocklists a client address (`ip:0/nonce`, as in
    /// [`super::Watcher::addr`] or [`super::Locker::address`]) for `expire`
    /// (0 = Ceph's default, one hour). Returns the OSD map epoch E that
    /// carries the entry (the cluster's epoch once the monitors answered,
    /// so at least the entry's), once this client has map E: its own
    /// operations from here on carry E.
    ///
    /// The blocklisting is **not yet in effect** on the OSDs then: see
    /// [`Cluster::pg_epoch_barrier`] and [`RbdPool::fence`], which does
    /// both.
    pub fn blocklist_add(&self, addr: &str, expire: Duration) -> Result<u64> {
        let mut cmd = serde_json::json!({
            "prefix": "osd blocklist",
            "blocklistop": "add",
            "addr": addr,
        });
        if !expire.is_zero() {
            cmd["expire"] = Value::from(expire.as_secs_f64());
        }
        self.command(Target::Mon, &cmd, &[])
            .map_err(|f| CephError::Command {
                op: "osd blocklist add".into(),
                object: addr.to_string(),
                errno: f.errno,
                status: f.status,
            })?;
        let (epoch, _) = self.osd_dump_pool(None)?;
        // SAFETY: connected handle.
        let ret = unsafe { rados_wait_for_latest_osdmap(self.inner.raw) };
        check(
            "wait for osdmap after blocklisting",
            || addr.to_string(),
            ret.into(),
        )?;
        Ok(epoch)
    }

    /// The cluster's OSD map epoch and, for `pool`, its placement groups
    /// (`<pool id>.<hex>`).
    fn osd_dump_pool(&self, pool: Option<&str>) -> Result<(u64, Vec<String>)> {
        let cmd = serde_json::json!({"prefix": "osd dump"});
        let out = self.mon_command(&cmd)?;
        let bad = |detail: String| CephError::Reply {
            op: "osd dump".into(),
            object: pool.unwrap_or("osdmap").to_string(),
            detail,
        };
        let v: Value = serde_json::from_slice(&out).map_err(|e| bad(e.to_string()))?;
        let epoch = v
            .get("epoch")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("no epoch".into()))?;
        let Some(pool) = pool else {
            return Ok((epoch, Vec::new()));
        };
        let p = v
            .get("pools")
            .and_then(Value::as_array)
            .and_then(|ps| {
                ps.iter()
                    .find(|p| p.get("pool_name").and_then(Value::as_str) == Some(pool))
            })
            .ok_or_else(|| bad("no such pool".into()))?;
        let (Some(id), Some(pg_num)) = (
            p.get("pool").and_then(Value::as_u64),
            p.get("pg_num").and_then(Value::as_u64),
        ) else {
            return Err(bad("pool without id or pg_num".into()));
        };
        Ok((epoch, (0..pg_num).map(|i| format!("{id}.{i:x}")).collect()))
    }

    /// The placement groups of `pool` (`<pool id>.<hex>`).
    pub fn pool_pgs(&self, pool: &str) -> Result<Vec<String>> {
        Ok(self.osd_dump_pool(Some(pool))?.1)
    }

    /// The OSD map epoch placement group `pgid` (`2.1f`) works with on
    /// its primary OSD (`pg <pgid> query`).
    pub fn pg_epoch(&self, pgid: &str) -> Result<u64> {
        let id = cstr("pg query", pgid, pgid)?;
        let cmd = serde_json::json!({"prefix": "query", "pgid": pgid});
        let out = self
            .command(Target::Pg(&id), &cmd, &[])
            .map_err(|f| CephError::Command {
                op: "pg query".into(),
                object: pgid.to_string(),
                errno: f.errno,
                status: f.status,
            })?;
        let v: Value = serde_json::from_slice(&out).map_err(|e| CephError::Reply {
            op: "pg query".into(),
            object: pgid.to_string(),
            detail: e.to_string(),
        })?;
        v.get("epoch")
            .and_then(Value::as_u64)
            .ok_or_else(|| CephError::Reply {
                op: "pg query".into(),
                object: pgid.to_string(),
                detail: "no epoch".into(),
            })
    }

    /// The epoch barrier: waits until every placement group of `pool`
    /// works with OSD map `epoch` or a later one, within this
    /// connection's timeout (`ETIMEDOUT` otherwise). An OSD checks the
    /// blocklist against the map of the placement group an operation goes
    /// to, and placement groups take up a new map after their OSD has it:
    /// the OSD's own newest epoch is not enough. After this, an operation
    /// of a client blocklisted in `epoch` that reaches any of the pool's
    /// placement groups is refused.
    pub fn pg_epoch_barrier(&self, pool: &str, epoch: u64) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        let (_, mut waiting) = self.osd_dump_pool(Some(pool))?;
        let mut pause = Duration::from_millis(2);
        let mut last_error = None;
        loop {
            let mut behind = Vec::new();
            for pg in waiting {
                match self.pg_epoch(&pg) {
                    Ok(e) if e >= epoch => {}
                    Ok(_) => behind.push(pg),
                    // A placement group moving between OSDs; asked again.
                    Err(e) => {
                        last_error = Some(e.to_string());
                        behind.push(pg);
                    }
                }
            }
            waiting = behind;
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(CephError::Command {
                    op: format!("wait until every placement group has osdmap epoch {epoch}"),
                    object: format!("{pool}: {}", waiting.join(", ")),
                    errno: libc::ETIMEDOUT,
                    status: match last_error {
                        Some(e) => format!("still behind after {:?} ({e})", self.timeout),
                        None => format!("still behind after {:?}", self.timeout),
                    },
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Whether a pool of that name exists.
    pub fn pool_exists(&self, pool: &str) -> Result<bool> {
        let name = cstr("pool lookup", pool, pool)?;
        // SAFETY: connected handle, NUL-terminated name.
        let ret = unsafe { rados_pool_lookup(self.inner.raw, name.as_ptr()) };
        match ret {
            r if r >= 0 => Ok(true),
            r if r == -i64::from(libc::ENOENT) => Ok(false),
            r => Err(CephError::from_ret("pool lookup", pool, r)),
        }
    }

    /// The raw handle, for I/O contexts made elsewhere in this module
    /// (they hold a clone of this [`Cluster`], which keeps it alive).
    pub(crate) fn raw(&self) -> rados_t {
        self.inner.raw
    }

    /// Opens an I/O context on an RBD pool.
    pub fn rbd(&self, pool: &str) -> Result<RbdPool> {
        let name = cstr("open pool", pool, pool)?;
        let mut ioctx: rados_ioctx_t = ptr::null_mut();
        // SAFETY: connected handle, NUL-terminated name, valid out pointer.
        let ret = unsafe { rados_ioctx_create(self.inner.raw, name.as_ptr(), &mut ioctx) };
        check("open pool", || pool.to_string(), ret.into())?;
        Ok(RbdPool::new(self.clone(), pool.to_string(), ioctx))
    }
}

/// Copies and frees a buffer librados allocated.
///
/// # Safety
/// `(ptr, len)` must be null or a buffer from librados that is not used
/// again.
unsafe fn take_buffer(ptr: *mut libc::c_char, len: libc::size_t) -> Vec<u8> {
    if ptr.is_null() {
        return Vec::new();
    }
    // SAFETY: the caller guarantees `len` readable bytes at `ptr`.
    let v = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) }.to_vec();
    // SAFETY: allocated by librados, freed once.
    unsafe { rados_buffer_free(ptr) };
    v
}

fn command_error(op: &str, cmd: &Value, f: CommandFailure) -> CephError {
    let prefix = cmd
        .get("prefix")
        .and_then(Value::as_str)
        .unwrap_or("(no prefix)");
    CephError::Command {
        op: op.to_string(),
        object: format!("{prefix:?}"),
        errno: f.errno,
        status: f.status,
    }
}

/// `[v2:1.2.3.4:0/123,v1:1.2.3.4:0/123]`, `v2:1.2.3.4:0/123` or
/// `1.2.3.4:0/123` → `1.2.3.4:0/123`.
fn parse_addrvec(s: &str) -> Option<String> {
    let s = s.trim().trim_start_matches('[').trim_end_matches(']');
    let first = s.split(',').next()?.trim();
    let bare = ["v2:", "v1:", "any:"]
        .iter()
        .find_map(|p| first.strip_prefix(p))
        .unwrap_or(first);
    (bare.contains('/') && bare.contains(':')).then(|| bare.to_string())
}

#[cfg(test)]
mod tests {
    use super::parse_addrvec;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_addrvec("[v2:127.0.0.1:0/12,v1:127.0.0.1:0/12]").as_deref(),
            Some("127.0.0.1:0/12")
        );
        assert_eq!(
            parse_addrvec("127.0.0.1:0/3076781767").as_deref(),
            Some("127.0.0.1:0/3076781767")
        );
        assert_eq!(
            parse_addrvec("any:10.0.0.1:0/5").as_deref(),
            Some("10.0.0.1:0/5")
        );
        assert_eq!(parse_addrvec("garbage"), None);
    }
}
