//! Which Berth services a REX-Ray configuration becomes: one per enabled
//! Docker module (`rexray.modules`, with REX-Ray's built-in
//! `default-docker` module on `rexray.sock`), named after its socket, on
//! the driver of the libStorage service the module uses.

use std::collections::BTreeMap;

use super::yaml::{Entry, Value};

/// REX-Ray's socket directory (and Berth's default `plugins_dir`).
pub const PLUGINS_DIR: &str = "/run/docker/plugins";

/// A source key and its line, for comments.
#[derive(Debug, Clone, PartialEq)]
pub struct Src {
    /// The key as written.
    pub key: String,
    /// 1-based line.
    pub line: usize,
}

impl std::fmt::Display for Src {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (line {})", self.key, self.line)
    }
}

/// A Berth service made from one REX-Ray module.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// Berth service name = the socket's name.
    pub name: String,
    /// The module (lowercase).
    pub module: String,
    /// The libStorage service the module uses (lowercase), if any.
    pub ls_service: Option<String>,
    /// The REX-Ray driver (lowercase), if known.
    pub rexray_driver: Option<String>,
    /// `loop` or `rbd`.
    pub driver: &'static str,
    /// Comment lines: where it came from.
    pub story: Vec<String>,
}

/// The services, and the socket directory they share.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// By module, in name order.
    pub services: Vec<Service>,
    /// A socket directory other than /run/docker/plugins, if every module
    /// names the same one.
    pub plugins_dir: Option<(String, Src)>,
    /// Structural keys that were not used (disabled modules, services no
    /// module reaches), with why.
    pub unused: Vec<(usize, String)>,
    /// Structural keys that were used, by entry index.
    pub used: Vec<usize>,
}

#[derive(Default)]
struct Module {
    fields: BTreeMap<&'static str, (usize, String)>,
    service: Option<(usize, String)>,
}

/// `cleanName` of REX-Ray: lowercase, `[ &_=+:]` → `-`, other characters
/// outside `[a-z0-9.-]` dropped, dashes collapsed.
pub fn clean_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.to_ascii_lowercase().chars() {
        let c = match c {
            ' ' | '&' | '_' | '=' | '+' | ':' => '-',
            c if c.is_ascii_alphanumeric() || c == '.' || c == '-' => c,
            _ => continue,
        };
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
    }
    out
}

fn text(e: &Entry) -> String {
    match &e.value {
        Value::Text(t) => t.trim().to_string(),
        other => other.show(),
    }
}

fn truthy(t: &str) -> bool {
    matches!(
        t.to_ascii_lowercase().as_str(),
        "true" | "yes" | "on" | "y" | "t" | "1"
    )
}

/// Lays out the services of `entries`.
pub fn layout(entries: &[Entry]) -> Layout {
    let mut modules: BTreeMap<String, Module> = BTreeMap::new();
    modules.insert("default-docker".into(), Module::default());
    let mut global_service = None;
    let mut ls_drivers: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        let k = e.lower.as_str();
        if let Some(rest) = k.strip_prefix("rexray.modules.") {
            let Some((m, field)) = rest.split_once('.') else {
                continue;
            };
            let module = modules.entry(m.to_string()).or_default();
            let f = match field {
                "type" => "type",
                "desc" => "desc",
                "host" => "host",
                "spec" => "spec",
                "disabled" => "disabled",
                "libstorage.service" | "rexray.service" => {
                    module.service = Some((i, text(e).to_ascii_lowercase()));
                    continue;
                }
                _ => continue,
            };
            module.fields.insert(f, (i, text(e)));
        } else if k == "libstorage.service" || k == "rexray.service" {
            if global_service.is_none() || k == "libstorage.service" {
                global_service = Some((i, text(e).to_ascii_lowercase()));
            }
        } else if let Some(rest) = k.strip_prefix("libstorage.server.services.") {
            if let Some((s, "driver")) = rest.split_once('.') {
                ls_drivers.insert(s.to_string(), (i, text(e).to_ascii_lowercase()));
            }
        }
    }
    let mut out = Layout::default();
    let mut dirs: BTreeMap<String, Src> = BTreeMap::new();
    let mut reached = Vec::new();
    for (m, module) in &modules {
        let field = |f: &str| module.fields.get(f);
        let disabled = field("disabled").is_some_and(|(_, v)| truthy(v));
        let not_docker = field("type").is_some_and(|(_, v)| !v.eq_ignore_ascii_case("docker"));
        if disabled || not_docker {
            let why = if disabled {
                format!("module {m} is disabled")
            } else {
                format!("module {m} is not a Docker module")
            };
            for (i, _) in module.fields.values().chain(module.service.iter()) {
                out.unused.push((*i, why.clone()));
            }
            continue;
        }
        let mut story = vec![format!("module {m}")];
        let (name, dir) = socket_of(m, field("host"), entries, &mut story, &mut out);
        if let Some(first) = out.services.iter().find(|s| s.name == name) {
            // REX-Ray could not have bound one socket twice either.
            let why = format!(
                "module {m} names the socket {name}.sock of module {}",
                first.module
            );
            out.used
                .retain(|i| !module.fields.values().any(|(j, _)| j == i));
            for (i, _) in module.fields.values().chain(module.service.iter()) {
                out.unused.push((*i, why.clone()));
            }
            continue;
        }
        if let Some((d, src)) = dir {
            dirs.entry(d).or_insert(src);
        }
        for f in ["type", "desc", "spec"] {
            if let Some((i, v)) = field(f) {
                out.used.push(*i);
                let what = match f {
                    "spec" => "(Berth writes no spec file; Docker finds the socket by its name)",
                    "desc" => "(description)",
                    _ => "",
                };
                story.push(format!("  {}: {v} {what}", src(entries, *i)));
            }
        }
        let svc = module.service.clone().or_else(|| global_service.clone());
        if let Some((i, s)) = &svc {
            out.used.push(*i);
            story.push(format!("  libStorage service {s:?}: {}", src(entries, *i)));
            reached.push(s.clone());
        }
        let rexray_driver = svc.as_ref().map(|(_, s)| match ls_drivers.get(s) {
            Some((i, d)) => {
                if !out.used.contains(i) {
                    out.used.push(*i);
                }
                story.push(format!("  its driver {d:?}: {}", src(entries, *i)));
                d.clone()
            }
            None => s.clone(),
        });
        let driver = match rexray_driver.as_deref() {
            Some("rbd") => "rbd",
            _ => "loop",
        };
        match rexray_driver.as_deref() {
            Some("rbd") => story.push("  REX-Ray's rbd driver: a Berth rbd service (RBD images in the same pool)".into()),
            Some(d) => story.push(format!(
                "  NOTE: REX-Ray's {d} driver has no Berth equivalent; this service keeps its volumes as loop images (files) on this host. Volumes on {d} are not reached by it"
            )),
            None => story.push(
                "  NOTE: no libstorage.service names a driver; this service keeps its volumes as loop images on this host".into(),
            ),
        }
        out.services.push(Service {
            name,
            module: m.clone(),
            ls_service: svc.map(|(_, s)| s),
            rexray_driver,
            driver,
            story,
        });
    }
    for (s, (i, _)) in &ls_drivers {
        if !reached.contains(s) {
            out.unused.push((
                *i,
                format!("libStorage service {s} is reached by no Docker module (REX-Ray served it to its own CLI only)"),
            ));
        }
    }
    if dirs.len() == 1 {
        out.plugins_dir = dirs.into_iter().next();
    } else if dirs.len() > 1 {
        for (d, s) in dirs {
            out.unused.push((
                entries.iter().position(|e| e.key == s.key && e.line == s.line).unwrap_or(0),
                format!("modules listen in several directories; Berth puts every socket in one plugins_dir ({PLUGINS_DIR}), not in {d}"),
            ));
        }
    }
    out
}

fn src(entries: &[Entry], i: usize) -> Src {
    Src {
        key: entries[i].key.clone(),
        line: entries[i].line,
    }
}

/// The service name and a socket directory other than the default.
fn socket_of(
    module: &str,
    host: Option<&(usize, String)>,
    entries: &[Entry],
    story: &mut Vec<String>,
    out: &mut Layout,
) -> (String, Option<(String, Src)>) {
    let default_name = if module == "default-docker" {
        "rexray".to_string()
    } else {
        clean_name(module)
    };
    let Some((i, host)) = host else {
        story.push(format!(
            "  socket {PLUGINS_DIR}/{default_name}.sock (REX-Ray's default for this module)"
        ));
        return (default_name, None);
    };
    let s = src(entries, *i);
    if let Some(path) = host.strip_prefix("unix://") {
        let p = std::path::Path::new(path);
        let stem = p.file_stem().map(|x| x.to_string_lossy().into_owned());
        let dir = p.parent().map(|d| d.to_string_lossy().into_owned());
        if let (Some(stem), Some(dir)) = (stem, dir) {
            if crate::config::validate_service_name(&stem).is_ok() {
                out.used.push(*i);
                story.push(format!("  socket {host}: {s}"));
                let other = (dir != PLUGINS_DIR).then_some((dir, s));
                return (stem, other);
            }
        }
    }
    out.unused.push((
        *i,
        format!("Berth listens on UNIX sockets in plugins_dir only; this module's service is {PLUGINS_DIR}/{default_name}.sock (remove any /etc/docker/plugins/{default_name}.spec that pointed at {host})"),
    ));
    story.push(format!(
        "  socket {PLUGINS_DIR}/{default_name}.sock (see the note on {s})"
    ));
    (default_name, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_name_as_rexray() {
        assert_eq!(clean_name("Scale IO__docker"), "scale-io-docker");
        assert_eq!(clean_name("default-docker"), "default-docker");
    }
}
