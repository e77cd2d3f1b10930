//! Whether this host still holds the rbd volumes it has mounted: the
//! check the service's sampler runs ([`Driver::check_hold`]), never a
//! request.
//!
//! A host loses a volume in two ways. Another host preempts it: that
//! host blocklisted this host's rbd-fuse and broke its lock, so the lock
//! now carries another cookie. Or the cluster blocklists this host's
//! rbd-fuse without a take-over (an operator fencing it): the lock is
//! still this host's, but the helper's address is on the blocklist. Either
//! way this host stops its rbd-fuse at once (a blocklisted rbd-fuse hangs
//! some writes, which would land when the entry expires) and remembers the
//! take-over until the volume is unmounted or mounted anew.
//!
//! [`Driver::check_hold`]: crate::driver::Driver::check_hold

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::info;

use super::{lock, RbdDriver};
use crate::driver::{DriverResult, TakeOver};
use crate::sys::ceph::{self as sysceph, RbdPool};

/// What the hold checks learnt, per mounted volume.
#[derive(Debug, Default)]
pub(super) struct Holds {
    /// Volumes this host lost, since when and to whom.
    lost: Mutex<BTreeMap<String, TakeOver>>,
    /// The address of this host's rbd-fuse of a volume, once seen among
    /// the image's watchers.
    client: Mutex<BTreeMap<String, String>>,
    /// The cluster's blocklist as last read, and when: one read serves a
    /// whole sampling round.
    blocklist: Mutex<Option<(Instant, Vec<String>)>>,
}

/// How long a read of the blocklist serves the hold checks.
const BLOCKLIST_REUSE: Duration = Duration::from_secs(1);

impl Holds {
    /// Forgets `name` (mounted anew, or unmounted); what was known.
    pub(super) fn forget(&self, name: &str) -> Option<TakeOver> {
        lock(&self.client).remove(name);
        lock(&self.lost).remove(name)
    }

    fn lost(&self, name: &str) -> Option<TakeOver> {
        lock(&self.lost).get(name).cloned()
    }
}

impl RbdDriver {
    /// [`crate::driver::Driver::check_hold`] of volume `name`.
    pub(super) fn check_hold_of(&self, name: &str) -> DriverResult<Option<TakeOver>> {
        if let Some(t) = self.holds.lost(name) {
            return Ok(Some(t));
        }
        if !lock(&self.held).contains(name) {
            return Ok(None);
        }
        let pool = self.pool(name)?;
        let Some(taken) = self.lost_to(&pool, name)? else {
            return Ok(None);
        };
        // Still mounted here? (An unmount may have run meanwhile.)
        if !lock(&self.held).contains(name) {
            return Ok(None);
        }
        let killed = sysceph::kill_helpers(&self.fuse_dir(name), self.timeout);
        info!(volume = %name, helpers = ?killed,
            "stopped this host's rbd-fuse of a volume it lost: nothing written here can land");
        lock(&self.holds.lost).insert(name.to_string(), taken.clone());
        Ok(Some(taken))
    }

    /// How this host lost `name`, if it did: another host's cookie on the
    /// lock (or no lock at all), or its rbd-fuse's address blocklisted.
    fn lost_to(&self, pool: &RbdPool, name: &str) -> DriverResult<Option<TakeOver>> {
        let cookie = self.cookie();
        let lockers = pool
            .lockers(name)
            .map_err(|e| self.b.fail(name, "list lockers", e))?;
        if !lockers.iter().any(|l| l.cookie == cookie) {
            let by = lockers.first().map_or_else(
                || "(none: the lock was broken)".to_string(),
                |l| {
                    l.cookie
                        .strip_prefix("berth:")
                        .unwrap_or(&l.cookie)
                        .to_string()
                },
            );
            return Ok(Some(TakeOver::by_host(by)));
        }
        let Some(addr) = self.helper_addr(pool, name)? else {
            return Ok(None);
        };
        let entries = self.blocklist(pool, name)?;
        Ok(sysceph::is_blocklisted(&entries, &addr).then(|| TakeOver::blocklisted(addr)))
    }

    /// The cluster's blocklist, read at most once per [`BLOCKLIST_REUSE`].
    fn blocklist(&self, pool: &RbdPool, name: &str) -> DriverResult<Vec<String>> {
        if let Some((at, l)) = lock(&self.holds.blocklist).as_ref() {
            if at.elapsed() < BLOCKLIST_REUSE {
                return Ok(l.clone());
            }
        }
        let l = pool
            .cluster()
            .blocklist()
            .map_err(|e| self.b.fail(name, "read the blocklist", e))?;
        *lock(&self.holds.blocklist) = Some((Instant::now(), l.clone()));
        Ok(l)
    }

    /// The address of this host's rbd-fuse of `name`: the image's watcher
    /// on this host's IP (berthd's own connection does not watch it).
    /// Looked up once per mount; `None` while it does not show.
    fn helper_addr(&self, pool: &RbdPool, name: &str) -> DriverResult<Option<String>> {
        if let Some(a) = lock(&self.holds.client).get(name) {
            return Ok(Some(a.clone()));
        }
        let own = pool
            .cluster()
            .instance_addr()
            .map_err(|e| self.b.fail(name, "get this client's address", e))?;
        let ip = own.rsplit_once(':').map_or(own.as_str(), |(ip, _)| ip);
        let watchers = pool
            .watchers(name)
            .map_err(|e| self.b.fail(name, "list the image's clients", e))?;
        let mine = watchers
            .into_iter()
            .find(|w| w.addr.rsplit_once(':').is_some_and(|(wip, _)| wip == ip))
            .map(|w| w.addr);
        if let Some(a) = &mine {
            lock(&self.holds.client).insert(name.to_string(), a.clone());
        }
        Ok(mine)
    }
}
