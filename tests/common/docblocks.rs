//! The shell blocks of README.md and docs/*.md, and their markers
//! (docs/architecture.md, "Documented commands"). A fenced block whose
//! info string is `sh`, `bash`, `shell` or `console` is a shell block;
//! the line right before its fence says what happens to it:
//!
//! - `<!-- runs: daemon [KEY=VALUE…] -->`: tests/doc_commands.rs runs it
//!   as root against a real berthd and a private dockerd;
//! - `<!-- runs: systemd [KEY=VALUE…] -->`: tests/systemd/run.sh runs it
//!   in the machine where the package is installed;
//! - `<!-- illustration: REASON -->`: not run, for the reason given.
//!
//! `KEY=VALUE` replaces the placeholder KEY (a whole word) before the
//! block runs: `NAME=doc` makes `berth@NAME.socket` `berth@doc.socket`.

#![allow(dead_code)]

use std::path::Path;

/// Where a block runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Daemon,
    Systemd,
}

/// What the marker before a block says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    Runs {
        place: Place,
        vars: Vec<(String, String)>,
    },
    Illustration(String),
    /// No marker, or one that does not parse (the text is kept).
    Missing(Option<String>),
}

#[derive(Debug, Clone)]
pub struct Block {
    /// Relative to the repository: `docs/systemd.md`.
    pub file: String,
    /// Line of the opening fence, from 1.
    pub line: usize,
    pub text: String,
    pub marker: Marker,
}

impl Block {
    pub fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }

    /// The block with its placeholders replaced.
    pub fn script(&self) -> String {
        let Marker::Runs { vars, .. } = &self.marker else {
            return self.text.clone();
        };
        let mut out = self.text.clone();
        for (k, v) in vars {
            out = replace_word(&out, k, v);
        }
        out
    }

    pub fn runs_in(&self, place: &Place) -> bool {
        matches!(&self.marker, Marker::Runs { place: p, .. } if p == place)
    }
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn replace_word(text: &str, word: &str, with: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(word) {
        let before = rest[..i].chars().next_back();
        let after = rest[i + word.len()..].chars().next();
        out.push_str(&rest[..i]);
        if before.is_some_and(is_word) || after.is_some_and(is_word) {
            out.push_str(word);
        } else {
            out.push_str(with);
        }
        rest = &rest[i + word.len()..];
    }
    out.push_str(rest);
    out
}

const SHELL: &[&str] = &["sh", "bash", "shell", "console"];

fn parse_marker(line: &str) -> Marker {
    let t = line.trim();
    let Some(inner) = t.strip_prefix("<!--").and_then(|s| s.strip_suffix("-->")) else {
        return Marker::Missing(None);
    };
    let inner = inner.trim();
    if let Some(reason) = inner.strip_prefix("illustration:") {
        let reason = reason.trim();
        if reason.len() >= 10 {
            return Marker::Illustration(reason.to_string());
        }
    } else if let Some(rest) = inner.strip_prefix("runs:") {
        let mut words = rest.split_whitespace();
        let place = match words.next() {
            Some("daemon") => Some(Place::Daemon),
            Some("systemd") => Some(Place::Systemd),
            _ => None,
        };
        let vars: Option<Vec<(String, String)>> = words
            .map(|w| {
                w.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        if let (Some(place), Some(vars)) = (place, vars) {
            return Marker::Runs { place, vars };
        }
    }
    Marker::Missing(Some(t.to_string()))
}

/// Every shell block of one markdown text.
pub fn blocks_of(file: &str, text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(info) = lines[i].strip_prefix("```") else {
            i += 1;
            continue;
        };
        let lang = info.split_whitespace().next().unwrap_or("");
        let start = i;
        i += 1;
        let mut body = String::new();
        while i < lines.len() && !lines[i].starts_with("```") {
            body.push_str(lines[i]);
            body.push('\n');
            i += 1;
        }
        i += 1;
        if !SHELL.contains(&lang) {
            continue;
        }
        let marker = if start == 0 {
            Marker::Missing(None)
        } else {
            parse_marker(lines[start - 1])
        };
        out.push(Block {
            file: file.to_string(),
            line: start + 1,
            text: body,
            marker,
        });
    }
    out
}

/// Commands in indented (unfenced) code blocks: a shell command belongs
/// in a fenced `sh` block, where the marker applies. `file:line: text`.
pub fn unfenced_commands(file: &str, text: &str) -> Vec<String> {
    const WORDS: &[&str] = &[
        "berth",
        "berthd",
        "dvdcli",
        "docker",
        "systemctl",
        "journalctl",
        "apt",
        "apt-get",
        "dpkg",
        "dpkg-buildpackage",
        "cargo",
        "sudo",
        "scripts/",
        "tests/",
        "mkdir",
        "rbd",
        "ceph",
        "mount",
        "CARGO_TARGET_DIR=",
    ];
    let mut out = Vec::new();
    let mut fenced = false;
    let mut prev_blank = true;
    let mut in_indented = false;
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let indented = line.starts_with("    ") && !line.trim().is_empty();
        if indented && (prev_blank || in_indented) {
            in_indented = true;
            let t = line.trim_start();
            if WORDS.iter().any(|w| {
                t.starts_with(w)
                    && (w.ends_with('/')
                        || w.ends_with('=')
                        || t[w.len()..].starts_with(' ')
                        || t.len() == w.len())
            }) {
                out.push(format!("{file}:{}: {t}", n + 1));
            }
        } else if !line.trim().is_empty() {
            in_indented = false;
        }
        prev_blank = line.trim().is_empty();
    }
    out
}

/// The markdown files: README.md and docs/*.md, relative, sorted.
pub fn files(root: &Path) -> Vec<String> {
    let mut v = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(root.join("docs"))
        .expect("read docs/")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    v.extend(docs);
    v
}

pub fn all(root: &Path) -> Vec<Block> {
    files(root)
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(root.join(f)).expect("read markdown");
            blocks_of(f, &text)
        })
        .collect()
}
