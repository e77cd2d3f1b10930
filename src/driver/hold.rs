//! A host that lost its hold on a volume it has mounted: another host
//! took the volume over (preempted it), or the cluster cut this host off
//! (blocklisted its client). Found by the service's sampler
//! ([`super::Driver::check_hold`]), shown by Get, List and status.

use std::time::SystemTime;

/// How this host lost a mounted volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LostTo {
    /// Another host holds the volume's lock now (it preempted this one).
    Host(String),
    /// This host's client of the volume is blocklisted; no other host
    /// holds the lock.
    Blocklisted {
        /// The blocklisted client address (`ip:0/nonce`).
        addr: String,
    },
}

/// A mounted volume this host no longer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakeOver {
    /// Who has it, or why this host lost it.
    pub to: LostTo,
    /// When this host found out (the sampler's period after the fact at
    /// most).
    pub at: SystemTime,
}

impl TakeOver {
    /// Another host, now.
    pub fn by_host(host: impl Into<String>) -> Self {
        TakeOver {
            to: LostTo::Host(host.into()),
            at: SystemTime::now(),
        }
    }

    /// Blocklisted, now.
    pub fn blocklisted(addr: impl Into<String>) -> Self {
        TakeOver {
            to: LostTo::Blocklisted { addr: addr.into() },
            at: SystemTime::now(),
        }
    }

    /// The host that has the volume now, when one does.
    pub fn host(&self) -> Option<&str> {
        match &self.to {
            LostTo::Host(h) => Some(h),
            LostTo::Blocklisted { .. } => None,
        }
    }

    /// When, as RFC 3339 (UTC, seconds).
    pub fn at_rfc3339(&self) -> String {
        humantime::format_rfc3339_seconds(self.at).to_string()
    }

    /// One line for status and logs: "taken over by host host-b at …".
    pub fn line(&self) -> String {
        match &self.to {
            LostTo::Host(h) => format!("taken over by host {h} at {}", self.at_rfc3339()),
            LostTo::Blocklisted { addr } => format!(
                "this host's client {addr} was blocklisted at {} (no other host holds it)",
                self.at_rfc3339()
            ),
        }
    }
}
