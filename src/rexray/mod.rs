//! REX-Ray/libStorage configuration → Berth configuration
//! (`berth import-rexray`). The YAML is read into leaf settings with their
//! lines ([`yaml`]); services are laid out from REX-Ray's Docker modules
//! ([`layout`]); every other key is mapped or dropped by the key map
//! ([`keys`]); the result is TOML with a comment on every key of the input
//! ([`emit`]).

mod emit;
mod keys;
mod layout;
pub mod yaml;

use layout::{Layout, Src};
use yaml::{Entry, Value};

/// Where REX-Ray reads its configuration.
pub const DEFAULT_PATH: &str = "/etc/rexray/config.yml";

/// An input REX-Ray could not have run with, naming the line.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {detail}")]
pub struct ImportError {
    /// The input file.
    pub file: String,
    /// `line N, column C: …` or `line N: KEY: …`.
    pub detail: String,
}

/// Where a carried-over setting goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Daemon,
    /// `[volume]` (`None`) or `[services.NAME.volume]`.
    Volume(Option<String>),
    /// `[services.NAME.ceph]`.
    Ceph(String),
}

/// A setting of the output, with its source.
#[derive(Debug, Clone)]
struct Setting {
    target: Target,
    key: &'static str,
    value: String,
    src: Src,
    /// Higher wins: module > libStorage service > file; current > legacy.
    prio: u8,
}

/// A key of the input that is not carried over.
#[derive(Debug, Clone)]
struct Dropped {
    src: Src,
    value: String,
    why: String,
}

/// Where a key sits.
enum Scope<'a> {
    File,
    Module(&'a str),
    LsService(&'a str),
}

#[derive(Default)]
struct Plan {
    settings: Vec<Setting>,
    dropped: Vec<Dropped>,
}

/// Translates REX-Ray's YAML `text` (read from `file`) into Berth's TOML.
pub fn import(text: &str, file: &str) -> Result<String, ImportError> {
    let fail = |detail: String| ImportError {
        file: file.to_string(),
        detail,
    };
    let entries = yaml::flatten(text).map_err(|e| fail(e.to_string()))?;
    let lay = layout::layout(&entries);
    let mut plan = Plan::default();
    for (i, e) in entries.iter().enumerate() {
        let src = Src {
            key: e.key.clone(),
            line: e.line,
        };
        if lay.used.contains(&i) {
            continue;
        }
        if let Some((_, why)) = lay.unused.iter().find(|(j, _)| *j == i) {
            plan.drop(e, why.clone());
            continue;
        }
        let (scope, rest) = scope_of(e);
        place(&mut plan, &lay, e, src, scope, rest).map_err(fail)?;
    }
    resolve(&mut plan);
    Ok(emit::render(file, &lay, &plan))
}

impl Plan {
    fn drop(&mut self, e: &Entry, why: String) {
        self.dropped.push(Dropped {
            src: Src {
                key: e.key.clone(),
                line: e.line,
            },
            value: e.value.show(),
            why,
        });
    }
}

fn scope_of(e: &Entry) -> (Scope<'_>, &str) {
    let k = e.lower.as_str();
    if let Some(rest) = k.strip_prefix("rexray.modules.") {
        if let Some((m, r)) = rest.split_once('.') {
            return (Scope::Module(m), r);
        }
    }
    if let Some(rest) = k.strip_prefix("libstorage.server.services.") {
        if let Some((s, r)) = rest.split_once('.') {
            return (Scope::LsService(s), r);
        }
    }
    (Scope::File, k)
}

/// The services a scoped key applies to (`None`: the whole file).
fn services_of(lay: &Layout, scope: &Scope<'_>) -> Option<Vec<String>> {
    match scope {
        Scope::File => None,
        Scope::Module(m) => Some(
            lay.services
                .iter()
                .filter(|s| s.module == *m)
                .map(|s| s.name.clone())
                .collect(),
        ),
        Scope::LsService(x) => Some(
            lay.services
                .iter()
                .filter(|s| s.ls_service.as_deref() == Some(*x))
                .map(|s| s.name.clone())
                .collect(),
        ),
    }
}

fn place(
    plan: &mut Plan,
    lay: &Layout,
    e: &Entry,
    src: Src,
    scope: Scope<'_>,
    rest: &str,
) -> Result<(), String> {
    let rank = match scope {
        Scope::File => 0,
        Scope::LsService(_) => 2,
        Scope::Module(_) => 4,
    };
    let targets = services_of(lay, &scope);
    if targets.as_ref().is_some_and(Vec::is_empty) {
        let why = match scope {
            Scope::Module(m) => format!("module {m} serves no Docker socket"),
            Scope::LsService(s) => format!("libStorage service {s} is reached by no Docker module"),
            Scope::File => String::new(),
        };
        plan.drop(e, why);
        return Ok(());
    }
    let key = keys::classify(rest);
    let text = match &e.value {
        Value::Text(t) => t.clone(),
        Value::Null => String::new(),
        Value::List(_) if !matches!(key, keys::Key::Dropped(_)) => {
            plan.drop(e, "a list where REX-Ray expects one value".into());
            return Ok(());
        }
        Value::List(_) => String::new(),
    };
    match key {
        keys::Key::Dropped(why) => plan.drop(e, why),
        keys::Key::Service => plan.drop(
            e,
            "not used: libstorage.service (or each module's own) names the service".into(),
        ),
        keys::Key::CephArgs => ceph_args(plan, lay, e, &src, targets, rank, &text),
        keys::Key::Mapped {
            table,
            key,
            kind,
            legacy,
        } => {
            let value = keys::convert(kind, &text)
                .map_err(|why| format!("line {}: {}: {why}", e.line, e.key))?;
            let prio = rank + u8::from(!legacy);
            let list: Vec<Target> = match (table, targets) {
                (keys::Table::Daemon, None) => vec![Target::Daemon],
                (keys::Table::Daemon, Some(_)) => {
                    plan.drop(e, format!("Berth's {key} is daemon-wide ([daemon] {key}); a module or service cannot have its own"));
                    return Ok(());
                }
                (keys::Table::Volume, None) => vec![Target::Volume(None)],
                (keys::Table::Volume, Some(t)) => {
                    t.into_iter().map(|n| Target::Volume(Some(n))).collect()
                }
                (keys::Table::Ceph, t) => {
                    let rbd = rbd_services(lay, t);
                    if rbd.is_empty() {
                        plan.drop(e, "no service here uses the rbd driver".into());
                        return Ok(());
                    }
                    rbd.into_iter().map(Target::Ceph).collect()
                }
            };
            for target in list {
                plan.settings.push(Setting {
                    target,
                    key,
                    value: value.clone(),
                    src: src.clone(),
                    prio,
                });
            }
        }
    }
    Ok(())
}

fn rbd_services(lay: &Layout, targets: Option<Vec<String>>) -> Vec<String> {
    lay.services
        .iter()
        .filter(|s| s.driver == "rbd")
        .filter(|s| targets.as_ref().is_none_or(|t| t.contains(&s.name)))
        .map(|s| s.name.clone())
        .collect()
}

/// `rbd.cephArgs`: `--id`/`--user`/`--name`, `--keyring`, `--conf`,
/// `--cluster` are carried over; other arguments are named as dropped.
fn ceph_args(
    plan: &mut Plan,
    lay: &Layout,
    e: &Entry,
    src: &Src,
    targets: Option<Vec<String>>,
    rank: u8,
    text: &str,
) {
    let rbd = rbd_services(lay, targets);
    if rbd.is_empty() {
        plan.drop(e, "no service here uses the rbd driver".into());
        return;
    }
    let mut found: std::collections::BTreeMap<&'static str, String> = Default::default();
    let mut rest: Vec<String> = Vec::new();
    let mut toks = text.split_whitespace();
    while let Some(t) = toks.next() {
        let (flag, inline) = match t.split_once('=') {
            Some((f, v)) if f.starts_with('-') => (f, Some(v.to_string())),
            _ => (t, None),
        };
        // ceph's flags, with one or two dashes (`-k`, `--keyring`).
        let key = match flag.strip_prefix('-').map(|f| f.trim_start_matches('-')) {
            Some("id" | "user" | "i" | "name" | "n") => "client",
            Some("keyring" | "k") => "keyring",
            Some("conf" | "c") => "conf",
            Some("cluster") => "cluster",
            _ => {
                rest.push(t.to_string());
                continue;
            }
        };
        match inline.or_else(|| toks.next().map(str::to_string)) {
            Some(v) => {
                found.insert(key, v.trim_start_matches("client.").to_string());
            }
            None => rest.push(t.to_string()),
        }
    }
    // A cluster name is the ceph.conf of that name, unless --conf says.
    if let Some(cluster) = found.remove("cluster") {
        found
            .entry("conf")
            .or_insert_with(|| format!("/etc/ceph/{cluster}.conf"));
    }
    for (key, v) in found {
        for s in &rbd {
            plan.settings.push(Setting {
                target: Target::Ceph(s.clone()),
                key,
                value: toml::Value::String(v.clone()).to_string(),
                src: src.clone(),
                prio: rank + 1,
            });
        }
    }
    if !rest.is_empty() {
        plan.dropped.push(Dropped {
            src: src.clone(),
            value: rest.join(" "),
            why: "these ceph arguments are not carried over: monitors and other options come from ceph.conf ([services.NAME.ceph] conf)".into(),
        });
    }
}

/// One value per (target, key): the highest priority wins, the others are
/// named as overridden.
fn resolve(plan: &mut Plan) {
    let mut kept: Vec<Setting> = Vec::new();
    let all = std::mem::take(&mut plan.settings);
    for s in all {
        match kept
            .iter_mut()
            .find(|k| k.target == s.target && k.key == s.key)
        {
            None => kept.push(s),
            Some(k) => {
                let (win, lose) = if s.prio >= k.prio {
                    (s, k.clone())
                } else {
                    (k.clone(), s)
                };
                if lose.src != win.src {
                    plan.dropped.push(Dropped {
                        why: format!("overridden by {}, as in REX-Ray", win.src),
                        src: lose.src.clone(),
                        value: lose.value.clone(),
                    });
                }
                *k = win;
            }
        }
    }
    plan.settings = kept;
}

#[cfg(test)]
mod tests;
