//! What the commands print: tables for humans, JSON for scripts.

use std::collections::BTreeMap;

use serde_json::Value;

pub(super) fn parse_opts(opts: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut m = BTreeMap::new();
    for o in opts {
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| format!("option {o:?} is not KEY=VALUE"))?;
        if k.is_empty() {
            return Err(format!("option {o:?} has an empty key"));
        }
        m.insert(k.to_string(), v.to_string());
    }
    Ok(m)
}

pub(super) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let last = cells.len() - 1;
        for (i, c) in cells.iter().enumerate() {
            if i == last {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.push('\n');
    };
    line(headers.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

pub(super) fn s(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

pub(super) fn u(v: Option<&Value>) -> Option<u64> {
    v.and_then(Value::as_u64)
}

/// What a command that acts on one named object prints.
pub(super) fn named(json: bool, name: &str) -> String {
    if json {
        erased::Json::to_json(&serde_json::json!({ "Name": name }))
    } else {
        format!("{name}\n")
    }
}

pub(super) mod erased {
    /// Pretty JSON of anything serializable, newline-terminated.
    pub trait Json {
        fn to_json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> String {
            let mut s = serde_json::to_string_pretty(self)
                .unwrap_or_else(|e| format!("{{\"Err\":\"{e}\"}}"));
            s.push('\n');
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opts_parse() {
        let m = parse_opts(&["size=1".into(), "a=b=c".into()]).expect("valid");
        assert_eq!(m["size"], "1");
        assert_eq!(m["a"], "b=c", "value keeps its '='");
        assert!(parse_opts(&["novalue".into()]).is_err());
        assert!(parse_opts(&["=x".into()]).is_err());
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
