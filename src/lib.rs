//! Berth: a Docker (and Mesos) volume plugin daemon.
//!
//! # Layout
//!
//! Dependencies point down only:
//!
//! ```text
//! bin/berthd ── daemon ── api ──────┐        bin/berth ── cli ── client
//!                  │                ▼                               │
//!              systemd, logging   service (names, locks, counts,   protocol
//!                                  policy, lifecycle) ── state
//!                                   │
//!                                  driver (trait; loop)
//!                                   │
//!                                  sys (mounts, loop devices, tools, files)
//! ```
//!
//! - [`config`]: TOML → validated [`config::Settings`].
//! - [`protocol`]: the plugin API's wire types, shared with clients.
//! - [`api`]: HTTP over UNIX sockets; one error → response mapping.
//! - [`service`]: the volume service: validation, per-volume locks,
//!   mount-ID multisets, policy, crash-safe lifecycle, reconciliation.
//! - [`state`]: per-volume records written atomically.
//! - [`driver`]: the storage boundary; [`driver::loopdrv`] is real loop
//!   devices with mkfs and mount.
//! - [`sys`]: the OS boundary (blocking; never called on async threads).
//! - [`systemd`], [`logging`], [`daemon`]: the host service around it.
//! - [`client`], [`cli`]: the `berth` command.
//! - [`rexray`]: REX-Ray's YAML configuration → Berth's (`berth import-rexray`).
//! - [`dvdcli`]: the `dvdcli` command Mesos runs (any v1 plugin, found as
//!   Docker finds plugins).

#![deny(missing_docs)]

/// A named fault-injection point: with the `failpoints` feature and
/// `FAILPOINTS="name=return(ENOSPC)"` in the environment, the enclosing
/// function fails there with that errno (see docs/robustness.md). Without
/// the feature it is nothing.
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        fail::fail_point!($name, |arg| Err(::core::convert::From::from(
            $crate::sys::SysError::injected($name, arg)
        )));
    };
}

pub mod api;
pub mod cephexec;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod driver;
pub mod dvdcli;
pub mod logging;
pub mod protocol;
pub mod rexray;
pub mod service;
pub mod state;
pub mod step;
pub mod sys;
pub mod systemd;
pub mod volume;
