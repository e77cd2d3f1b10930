//! Names shared by every service of the daemon: who owns a name, and the
//! per-name lock that serializes operations on one volume.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// What a lock is taken on. Volume names are unique across the daemon's
/// services; snapshot names per service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum LockKey {
    /// A volume.
    Volume(crate::volume::VolumeName),
    /// A snapshot of a service.
    Snapshot {
        /// The service.
        service: String,
        /// The snapshot.
        name: crate::volume::VolumeName,
    },
}

impl LockKey {
    /// The name as errors show it.
    pub fn shown(&self) -> &str {
        match self {
            LockKey::Volume(n) | LockKey::Snapshot { name: n, .. } => n.as_str(),
        }
    }

    fn key(&self) -> String {
        match self {
            LockKey::Volume(n) => n.as_str().to_string(),
            // Volume names can't contain '/', so this never collides.
            LockKey::Snapshot { service, name } => format!("{service}/{name}"),
        }
    }
}

/// Volume names across all services (Docker keys volumes by name alone).
#[derive(Debug, Default)]
pub struct Namespace {
    owners: Mutex<HashMap<String, String>>,
    locks: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

/// Holds the lock of one name; dropping it releases the lock and forgets
/// the lock entry when nobody else waits for it.
#[derive(Debug)]
pub struct NameGuard {
    ns: Arc<Namespace>,
    name: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for NameGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.ns.locks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = locks.get(&self.name) {
            if Arc::strong_count(l) == 1 {
                locks.remove(&self.name);
            }
        }
    }
}

impl Namespace {
    /// Waits for and takes the lock of `key`.
    pub async fn lock_key(self: &Arc<Self>, key: &LockKey) -> NameGuard {
        self.lock(&key.key()).await
    }

    /// Waits for and takes the lock of `name`.
    pub async fn lock(self: &Arc<Self>, name: &str) -> NameGuard {
        let m = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(name.to_string()).or_default().clone()
        };
        let guard = m.lock_owned().await;
        NameGuard {
            ns: self.clone(),
            name: name.to_string(),
            guard: Some(guard),
        }
    }

    /// The service owning `name`.
    pub fn owner(&self, name: &str) -> Option<String> {
        self.owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Records `service` as owner; `Err(other)` if another owns it.
    pub fn claim(&self, name: &str, service: &str) -> Result<(), String> {
        let mut o = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        match o.get(name) {
            Some(s) if s != service => Err(s.clone()),
            _ => {
                o.insert(name.to_string(), service.to_string());
                Ok(())
            }
        }
    }

    /// Forgets `name` if `service` owns it.
    pub fn release(&self, name: &str, service: &str) {
        let mut o = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        if o.get(name).is_some_and(|s| s == service) {
            o.remove(name);
        }
    }

    /// Number of lock entries (for tests: they must not leak).
    pub fn lock_entries(&self) -> usize {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serializes_one_name_and_forgets_idle_locks() {
        let ns = Arc::new(Namespace::default());
        let g = ns.lock("a").await;
        let ns2 = ns.clone();
        let waiter = tokio::spawn(async move {
            let _g = ns2.lock("a").await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "second lock of the same name must wait"
        );
        let _other = ns.lock("b").await; // another name is free
        drop(g);
        waiter.await.expect("waiter");
        drop(_other);
        assert_eq!(ns.lock_entries(), 0);
    }

    #[test]
    fn ownership() {
        let ns = Namespace::default();
        assert!(ns.claim("v", "s1").is_ok());
        assert_eq!(ns.claim("v", "s2"), Err("s1".into()));
        ns.release("v", "s2");
        assert_eq!(ns.owner("v").as_deref(), Some("s1"));
        ns.release("v", "s1");
        assert!(ns.owner("v").is_none());
    }
}
