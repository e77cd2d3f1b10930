//! Finding a v1 plugin by name, as dockerd does (`pkg/plugins/discovery`),
//! so a client works with any volume plugin and without a Docker engine:
//!
//! 1. a socket `<socket_dir>/<name>.sock`, then `<socket_dir>/<name>/<name>.sock`
//!    (only a socket counts);
//! 2. in each spec directory in turn (`/etc/docker/plugins`, then
//!    `/usr/lib/docker/plugins`): `<name>.spec`, `<name>/<name>.spec`,
//!    `<name>.json`, `<name>/<name>.json`. A `.spec` file holds one URL
//!    (`unix:///path` or `tcp://host:port`); a `.json` file holds
//!    `{"Name": …, "Addr": URL, "TLSConfig": …}`.
//!
//! The first candidate that exists wins; a spec file that exists but is
//! unreadable or malformed is an error (dockerd does not skip it either).

use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::Endpoint;

/// Docker's socket directory.
pub const DOCKER_SOCKET_DIR: &str = "/run/docker/plugins";

/// Docker's spec directories, in search order.
pub const DOCKER_SPEC_DIRS: [&str; 2] = ["/etc/docker/plugins", "/usr/lib/docker/plugins"];

/// Longest plugin name: a file name with room for `.sock`/`.spec`/`.json`.
pub const MAX_NAME_LEN: usize = 250;

/// Largest spec file read (real ones are a line or two).
const MAX_SPEC_BYTES: u64 = 64 * 1024;

/// Where to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPaths {
    /// Directory of plugin sockets.
    pub socket_dir: PathBuf,
    /// Directories of `.spec`/`.json` files, in search order.
    pub spec_dirs: Vec<PathBuf>,
}

impl SearchPaths {
    /// dockerd's directories.
    pub fn docker() -> Self {
        SearchPaths {
            socket_dir: PathBuf::from(DOCKER_SOCKET_DIR),
            spec_dirs: DOCKER_SPEC_DIRS.iter().map(PathBuf::from).collect(),
        }
    }

    /// Every file that would be looked at for `name`, in order.
    pub fn candidates(&self, name: &str) -> Vec<PathBuf> {
        let mut out = vec![
            self.socket_dir.join(format!("{name}.sock")),
            self.socket_dir.join(name).join(format!("{name}.sock")),
        ];
        for d in &self.spec_dirs {
            for ext in ["spec", "json"] {
                out.push(d.join(format!("{name}.{ext}")));
                out.push(d.join(name).join(format!("{name}.{ext}")));
            }
        }
        out
    }
}

impl Default for SearchPaths {
    fn default() -> Self {
        Self::docker()
    }
}

/// A plugin found by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// Where to send requests.
    pub endpoint: Endpoint,
    /// The socket or spec file that named it.
    pub source: PathBuf,
}

/// Why a plugin could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// The name cannot be a plugin name.
    #[error("volume driver name {name:?} is invalid: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Nothing matched.
    #[error(
        "volume driver {name:?} not found: no socket {name}.sock in {socket_dir}, \
         and no {name}.spec or {name}.json in {spec_dirs}"
    )]
    NotFound {
        /// The name.
        name: String,
        /// The socket directory searched.
        socket_dir: String,
        /// The spec directories searched, comma-separated.
        spec_dirs: String,
    },
    /// A spec file exists but cannot be used.
    #[error("volume driver {name:?}: plugin file {}: {reason}", file.display())]
    BadFile {
        /// The name.
        name: String,
        /// The file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl DiscoveryError {
    /// True when the plugin may simply not have started yet.
    pub fn is_not_found(&self) -> bool {
        matches!(self, DiscoveryError::NotFound { .. })
    }
}

/// Checks that `name` can be a plugin name: a plain file name.
pub fn validate_name(name: &str) -> Result<(), DiscoveryError> {
    let reason = if name.len() > MAX_NAME_LEN {
        Some("it is longer than 250 bytes")
    } else {
        file_name_problem(name)
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(DiscoveryError::InvalidName {
            name: name.chars().take(80).collect(),
            reason,
        }),
    }
}

/// Why `name` can't be used as one path component, if it can't.
pub fn file_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.contains('/') {
        Some("it contains '/'")
    } else if name.contains('\0') {
        Some("it contains a NUL byte")
    } else if name.chars().any(char::is_control) {
        Some("it contains a control character")
    } else if name == "." || name == ".." {
        Some("it is not a file name")
    } else {
        None
    }
}

fn is_socket(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

fn is_file(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file())
}

fn read_small(p: &Path) -> Result<String, String> {
    let f = std::fs::File::open(p).map_err(|e| format!("cannot read: {e}"))?;
    let mut s = String::new();
    f.take(MAX_SPEC_BYTES + 1)
        .read_to_string(&mut s)
        .map_err(|e| format!("cannot read: {e}"))?;
    if s.len() as u64 > MAX_SPEC_BYTES {
        return Err(format!("larger than {MAX_SPEC_BYTES} bytes"));
    }
    Ok(s)
}

fn parse_spec(text: &str) -> Result<Endpoint, String> {
    let url = text.trim();
    if url.is_empty() {
        return Err("it is empty (expected a URL like unix:///path or tcp://host:port)".into());
    }
    Endpoint::from_url(url)
}

fn parse_json(text: &str) -> Result<Endpoint, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    if v.get("TLSConfig").is_some_and(|t| !t.is_null()) {
        return Err("TLSConfig is set, and TLS endpoints are not supported".into());
    }
    let addr = v
        .get("Addr")
        .and_then(|a| a.as_str())
        .ok_or("no \"Addr\" string (expected {\"Addr\": \"tcp://host:port\"})")?;
    Endpoint::from_url(addr)
}

/// Finds the plugin called `name`.
pub fn resolve(name: &str, paths: &SearchPaths) -> Result<Discovered, DiscoveryError> {
    validate_name(name)?;
    let candidates = paths.candidates(name);
    let (sockets, specs) = candidates.split_at(2);
    for s in sockets {
        if is_socket(s) {
            return Ok(Discovered {
                endpoint: Endpoint::Unix(s.clone()),
                source: s.clone(),
            });
        }
    }
    for f in specs {
        if !is_file(f) {
            continue;
        }
        let bad = |reason: String| DiscoveryError::BadFile {
            name: name.to_string(),
            file: f.clone(),
            reason,
        };
        let text = read_small(f).map_err(bad)?;
        let json = f.extension().is_some_and(|e| e == "json");
        let endpoint = if json {
            parse_json(&text)
        } else {
            parse_spec(&text)
        }
        .map_err(bad)?;
        return Ok(Discovered {
            endpoint,
            source: f.clone(),
        });
    }
    Err(DiscoveryError::NotFound {
        name: name.to_string(),
        socket_dir: paths.socket_dir.display().to_string(),
        spec_dirs: if paths.spec_dirs.is_empty() {
            "(no spec directory)".into()
        } else {
            paths
                .spec_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    struct Dirs {
        _tmp: tempfile::TempDir,
        paths: SearchPaths,
    }

    fn dirs() -> Dirs {
        let tmp = tempfile::tempdir().expect("tempdir");
        let paths = SearchPaths {
            socket_dir: tmp.path().join("run"),
            spec_dirs: vec![tmp.path().join("etc"), tmp.path().join("lib")],
        };
        for d in [&paths.socket_dir, &paths.spec_dirs[0], &paths.spec_dirs[1]] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        Dirs { _tmp: tmp, paths }
    }

    fn write(p: &Path, text: &str) {
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, text).expect("write");
    }

    #[test]
    fn names_are_file_names() {
        for ok in ["berth", "rexray", "my-plugin_1.0", "Ünïcode"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "../x", "a\0b", ".", "..", "a\nb"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name(&"x".repeat(251)).is_err());
    }

    #[test]
    fn order_is_dockers() {
        let d = dirs();
        let c = d.paths.candidates("p");
        let rel: Vec<String> = c
            .iter()
            .map(|p| {
                p.strip_prefix(d._tmp.path())
                    .expect("under tmp")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(
            rel,
            [
                "run/p.sock",
                "run/p/p.sock",
                "etc/p.spec",
                "etc/p/p.spec",
                "etc/p.json",
                "etc/p/p.json",
                "lib/p.spec",
                "lib/p/p.spec",
                "lib/p.json",
                "lib/p/p.json",
            ]
        );
    }

    #[test]
    fn socket_beats_spec_and_must_be_a_socket() {
        let d = dirs();
        write(
            &d.paths.spec_dirs[0].join("p.spec"),
            "tcp://127.0.0.1:7000\n",
        );
        // A regular file named like a socket is not a socket.
        write(&d.paths.socket_dir.join("p.sock"), "");
        let f = resolve("p", &d.paths).expect("spec");
        assert_eq!(f.endpoint, Endpoint::Tcp("127.0.0.1:7000".into()));
        std::fs::remove_file(d.paths.socket_dir.join("p.sock")).expect("rm");
        let nested = d.paths.socket_dir.join("p").join("p.sock");
        std::fs::create_dir_all(nested.parent().expect("parent")).expect("mkdir");
        let _l = UnixListener::bind(&nested).expect("bind");
        let f = resolve("p", &d.paths).expect("nested socket");
        assert_eq!(f.endpoint, Endpoint::Unix(nested.clone()));
        let top = d.paths.socket_dir.join("p.sock");
        let _l2 = UnixListener::bind(&top).expect("bind");
        assert_eq!(
            resolve("p", &d.paths).expect("top socket").endpoint,
            Endpoint::Unix(top)
        );
    }

    #[test]
    fn spec_then_json_then_next_directory() {
        let d = dirs();
        write(&d.paths.spec_dirs[1].join("p.spec"), "tcp://10.0.0.1:1");
        assert_eq!(
            resolve("p", &d.paths).expect("lib spec").endpoint,
            Endpoint::Tcp("10.0.0.1:1".into())
        );
        write(
            &d.paths.spec_dirs[0].join("p").join("p.json"),
            r#"{"Name":"other","Addr":"unix:///run/x/p.sock"}"#,
        );
        let f = resolve("p", &d.paths).expect("etc json");
        assert_eq!(f.endpoint, Endpoint::Unix("/run/x/p.sock".into()));
        assert!(f.source.ends_with("etc/p/p.json"));
        write(&d.paths.spec_dirs[0].join("p").join("p.spec"), "tcp://h:2");
        assert_eq!(
            resolve("p", &d.paths).expect("etc nested spec").endpoint,
            Endpoint::Tcp("h:2".into())
        );
    }

    #[test]
    fn bad_files_are_errors_that_name_them() {
        let d = dirs();
        let f = d.paths.spec_dirs[0].join("p.spec");
        for (text, needle) in [
            ("", "empty"),
            ("127.0.0.1:80", "no protocol"),
            ("https://h:443", "TLS"),
        ] {
            write(&f, text);
            let e = resolve("p", &d.paths).expect_err(text).to_string();
            assert!(e.contains("p.spec") && e.contains(needle), "{text}: {e}");
        }
        std::fs::remove_file(&f).expect("rm");
        let j = d.paths.spec_dirs[0].join("p.json");
        for (text, needle) in [
            ("{", "JSON"),
            (r#"{"Name":"p"}"#, "Addr"),
            (r#"{"Addr":"tcp://h:1","TLSConfig":{"CAFile":"/x"}}"#, "TLS"),
        ] {
            write(&j, text);
            let e = resolve("p", &d.paths).expect_err(text).to_string();
            assert!(e.contains("p.json") && e.contains(needle), "{text}: {e}");
        }
        write(&j, r#"{"Addr":"tcp://h:1","TLSConfig":null}"#);
        assert!(resolve("p", &d.paths).is_ok());
    }

    #[test]
    fn not_found_says_where_it_looked() {
        let d = dirs();
        let e = resolve("ghost", &d.paths).expect_err("absent");
        assert!(e.is_not_found());
        let s = e.to_string();
        assert!(
            s.contains("ghost") && s.contains("run") && s.contains("lib"),
            "{s}"
        );
        let e = resolve("a/b", &d.paths).expect_err("invalid");
        assert!(!e.is_not_found());
    }
}
