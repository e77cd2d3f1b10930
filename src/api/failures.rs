//! Every failed request logged once: WARNING (ERROR for Berth's own
//! faults) with the service, the volume when known, the operation, the
//! duration and the text the client got. A flood is summarised: at most
//! [`PER_SECOND`] lines a second per service, then one line that counts
//! the rest, so a hostile client cannot fill the journal.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{error, warn};

use super::response::Failure;

/// Failed requests logged one by one per service and second.
pub const PER_SECOND: u32 = 20;

#[derive(Debug)]
struct Window {
    start: Instant,
    logged: u32,
    suppressed: u32,
}

static WINDOWS: Mutex<Option<HashMap<String, Window>>> = Mutex::new(None);

/// What a failed request was.
#[derive(Debug)]
pub struct Request<'a> {
    /// The service (socket) it came to.
    pub service: &'a str,
    /// The route or path ("VolumeDriver.Mount").
    pub operation: &'a str,
    /// The volume it named, when known.
    pub volume: Option<&'a str>,
    /// Time from the request to the answer.
    pub duration: Duration,
}

/// Logs `f`, the answer to `req`, unless the service's budget for this
/// second is spent.
pub fn log(req: &Request<'_>, f: &Failure) {
    let Some(summary) = admit(req.service) else {
        return;
    };
    if summary > 0 {
        warn!(service = %req.service,
            "{summary} more failed requests in the last second were not logged one by one (rate limit)");
    }
    let (service, operation, volume) = (req.service, req.operation, req.volume.unwrap_or(""));
    let duration_ms = req.duration.as_millis() as u64;
    let status = f.status.as_u16();
    if f.internal {
        error!(
            service,
            volume, operation, duration_ms, status, "{operation} failed: {}", f.message
        );
    } else {
        warn!(
            service,
            volume, operation, duration_ms, status, "{operation} failed: {}", f.message
        );
    }
}

/// Logs the summary of every service whose window of suppressed lines
/// has ended (the daemon calls this every second, so a flood that stops
/// is still counted).
pub fn flush() {
    let mut g = WINDOWS.lock().unwrap_or_else(|p| p.into_inner());
    let Some(map) = g.as_mut() else { return };
    for (service, w) in map.iter_mut() {
        if w.suppressed > 0 && w.start.elapsed() >= Duration::from_secs(1) {
            warn!(service = %service,
                "{} more failed requests in the last second were not logged one by one (rate limit)", w.suppressed);
            w.suppressed = 0;
        }
    }
}

/// `Some(n)`: log, after a summary of `n` suppressed lines; `None`:
/// suppressed.
fn admit(service: &str) -> Option<u32> {
    let mut g = WINDOWS.lock().unwrap_or_else(|p| p.into_inner());
    let map = g.get_or_insert_with(HashMap::new);
    let w = map.entry(service.to_string()).or_insert(Window {
        start: Instant::now(),
        logged: 0,
        suppressed: 0,
    });
    let mut summary = 0;
    if w.start.elapsed() >= Duration::from_secs(1) {
        summary = w.suppressed;
        *w = Window {
            start: Instant::now(),
            logged: 0,
            suppressed: 0,
        };
    }
    if w.logged >= PER_SECOND {
        w.suppressed += 1;
        return None;
    }
    w.logged += 1;
    Some(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_budget_and_counted() {
        let s = "flood-test";
        let admitted = (0..100).filter(|_| admit(s).is_some()).count();
        assert_eq!(admitted, PER_SECOND as usize);
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(admit(s), Some(100 - PER_SECOND));
        assert_eq!(admit("another-service"), Some(0));
    }
}
