//! The process's effective capabilities (from `/proc/self/status`).

/// `CAP_SYS_RESOURCE`: ext4's online resize ioctl demands it.
pub const CAP_SYS_RESOURCE: u32 = 24;

/// Whether capability number `cap` is in this process's effective set.
/// `None` when `/proc/self/status` can't be read or parsed.
pub fn has_effective(cap: u32) -> Option<bool> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    effective_in(&text, cap)
}

fn effective_in(status: &str, cap: u32) -> Option<bool> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    let bits = u64::from_str_radix(hex, 16).ok()?;
    Some(cap < 64 && bits & (1u64 << cap) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cap_eff() {
        let s = "Name:\tx\nCapPrm:\t000001ffffffffff\nCapEff:\t000001fffeffffff\n";
        assert_eq!(effective_in(s, CAP_SYS_RESOURCE), Some(false));
        assert_eq!(effective_in(s, 21), Some(true));
        assert_eq!(effective_in("nothing", 21), None);
        assert!(has_effective(0).is_some());
    }
}
