//! Reading the cluster's blocklist (adding to it is
//! [`Cluster::blocklist_add`]): how a host finds out that its own clients
//! were fenced.

use serde_json::Value;

use super::{CephError, Cluster, Result};

impl Cluster {
    /// Every blocklisted address (`ip:port/nonce`, as `osd blocklist ls`
    /// spells them; port 0 and nonce 0 block every client of the IP).
    pub fn blocklist(&self) -> Result<Vec<String>> {
        let out = self.mon_command(&serde_json::json!({"prefix": "osd blocklist ls"}))?;
        parse_blocklist(&out).ok_or_else(|| CephError::Reply {
            op: "osd blocklist ls".into(),
            object: "osdmap".into(),
            detail: format!("cannot parse {:?}", String::from_utf8_lossy(&out)),
        })
    }
}

/// Whether `entries` fence client `addr` (`ip:0/nonce`): the address
/// itself, or a whole-IP entry of its IP.
pub fn is_blocklisted(entries: &[String], addr: &str) -> bool {
    let ip = addr.rsplit_once(':').map_or(addr, |(ip, _)| ip);
    entries.iter().any(|e| {
        e == addr
            || e.rsplit_once(':')
                .is_some_and(|(eip, rest)| eip == ip && rest == "0/0")
    })
}

fn parse_blocklist(out: &[u8]) -> Option<Vec<String>> {
    if out.iter().all(u8::is_ascii_whitespace) {
        return Some(Vec::new());
    }
    let v: Value = serde_json::from_slice(out).ok()?;
    v.as_array()?
        .iter()
        .map(|e| e.get("addr").and_then(Value::as_str).map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{is_blocklisted, parse_blocklist};

    #[test]
    fn entries_and_matches() {
        let l = parse_blocklist(
            br#"[{"addr":"10.0.0.1:0/77","until":"2026-12-03T13:00:00"},{"addr":"10.0.0.2:0/0","until":"x"}]"#,
        )
        .expect("parses");
        assert_eq!(l, ["10.0.0.1:0/77", "10.0.0.2:0/0"]);
        assert!(is_blocklisted(&l, "10.0.0.1:0/77"));
        assert!(!is_blocklisted(&l, "10.0.0.1:0/78"));
        assert!(is_blocklisted(&l, "10.0.0.2:0/1234"));
        assert!(!is_blocklisted(&l, "10.0.0.3:0/77"));
        assert_eq!(parse_blocklist(b""), Some(Vec::new()));
        assert_eq!(parse_blocklist(b"[]"), Some(Vec::new()));
        assert_eq!(parse_blocklist(b"{}"), None);
    }
}
