//! The `berth` command against a real berthd: exit codes (0 ok, 1
//! refused, 2 usage, 3 not found, 4 unreachable), messages, `--json`
//! errors, `--service`/`BERTH_SOCKET`, `rm` of several names, `create`
//! of an existing volume, and the Docker API left as Docker expects it.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{can_use_storage, Daemon};
use serde_json::{json, Value};

/// Runs `berth` with `args` against `socket` (None: no --socket).
fn berth(socket: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
    c.env_remove("BERTH_SOCKET").env_remove("BERTH_CONFIG");
    if let Some(s) = socket {
        c.arg("--socket").arg(s);
    }
    c.args(args).output().expect("run berth")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exit code")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json_out(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(o)))
}

#[test]
fn unreachable_daemon_exits_4_with_a_hint_naming_the_unit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("fast.sock");
    let o = berth(Some(&sock), &["status"]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("fast.sock") && e.contains("berth@fast.socket"),
        "{e}"
    );
    // A socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&sock).expect("bind"));
    let o = berth(Some(&sock), &["volume", "ls"]);
    assert_eq!(code(&o), 4);
    assert!(stderr(&o).contains("nothing listens"), "{}", stderr(&o));
    // --json: one object on stdout, nothing on stderr.
    let o = berth(Some(&sock), &["--json", "volume", "ls"]);
    assert_eq!(code(&o), 4);
    let v = json_out(&o);
    assert_eq!(v["Error"]["Kind"], "unreachable");
    assert_eq!(v["Error"]["Exit"], 4);
    assert!(v["Error"]["Hint"]
        .as_str()
        .expect("hint")
        .contains("berth@fast.socket"));
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
}

#[test]
fn usage_errors_exit_2_and_send_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("none.sock");
    // Bad options are refused before any connection (the socket is absent:
    // reaching it would exit 4).
    let o = berth(Some(&sock), &["volume", "create", "v", "-o", "novalue"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("KEY=VALUE"), "{}", stderr(&o));
    let o = berth(
        Some(&sock),
        &["volume", "clone", "a", "b", "-o", "snapshotName=s"],
    );
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let o = berth(Some(&sock), &["volume", "frobnicate"]);
    assert_eq!(code(&o), 2);
    let o = berth(Some(&sock), &["--json", "volume", "frobnicate"]);
    assert_eq!(code(&o), 2);
    assert_eq!(json_out(&o)["Error"]["Kind"], "usage");
    let o = berth(None, &["--service", "no/such", "status"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let o = berth(
        None,
        &[
            "--config",
            "/nonexistent/berth.toml",
            "--service",
            "x",
            "status",
        ],
    );
    assert_eq!(code(&o), 2, "an explicit missing config: {}", stderr(&o));
    let o = berth(None, &["--help"]);
    assert_eq!(code(&o), 0);
}

#[test]
fn service_and_environment_pick_the_socket() {
    let d = Daemon::builder().start();
    let config = d.config.to_string_lossy().into_owned();
    let o = berth(
        None,
        &[
            "--config",
            &config,
            "--service",
            "berth",
            "--json",
            "status",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_out(&o)["Service"], "berth");
    // A service with no daemon: exit 4, naming its unit.
    let o = berth(None, &["--config", &config, "--service", "other", "status"]);
    assert_eq!(code(&o), 4);
    assert!(stderr(&o).contains("berth@other.socket"), "{}", stderr(&o));
    // BERTH_SOCKET, below --service.
    let o = Command::new(env!("CARGO_BIN_EXE_berth"))
        .env("BERTH_SOCKET", d.socket("berth"))
        .args(["--json", "status"])
        .output()
        .expect("run");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = Command::new(env!("CARGO_BIN_EXE_berth"))
        .env("BERTH_SOCKET", d.socket("berth"))
        .args(["--config", &config, "--service", "other", "status"])
        .output()
        .expect("run");
    assert_eq!(code(&o), 4, "--service wins over BERTH_SOCKET");
}

#[test]
fn unknown_names_exit_3_unless_forced() {
    let d = Daemon::builder().start();
    let s = d.socket("berth");
    let o = berth(Some(&s), &["volume", "rm", "typo"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("volume typo not found"),
        "{}",
        stderr(&o)
    );
    let o = berth(Some(&s), &["volume", "rm", "--force", "typo", "other"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "nothing was removed: {}", stdout(&o));
    let o = berth(Some(&s), &["--json", "volume", "rm", "typo"]);
    assert_eq!(code(&o), 3);
    let v = json_out(&o);
    assert_eq!(v[0]["Name"], "typo");
    assert_eq!(v[0]["Removed"], false);
    assert_eq!(v[0]["Error"]["Kind"], "not-found");
    for args in [
        &["volume", "inspect", "nope"][..],
        &["volume", "path", "nope"],
        &["volume", "resize", "nope", "2G"],
        &["snapshot", "rm", "nope"],
        &["snapshot", "inspect", "nope"],
    ] {
        let o = berth(Some(&s), args);
        assert_eq!(code(&o), 3, "{args:?}: {}", stderr(&o));
    }
    // A refusal is 1: a bad name.
    let o = berth(Some(&s), &["volume", "create", "bad/name"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("volume name"), "{}", stderr(&o));
    // The Docker API keeps Docker's semantics: removing an unknown
    // volume is success.
    let api = d.client("berth");
    assert_eq!(
        api.ok("VolumeDriver.Remove", json!({"Name": "typo"}))["Err"],
        ""
    );
}

#[test]
fn root_rm_takes_several_names_and_create_tells_what_differs() {
    if !can_use_storage("root_rm_takes_several_names_and_create_tells_what_differs") {
        return;
    }
    let d = Daemon::builder().start();
    let s = d.socket("berth");
    for n in ["a", "b"] {
        let o = berth(Some(&s), &["volume", "create", n, "-o", "size=64M"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert_eq!(stdout(&o), format!("{n}\n"));
    }
    // The same again: exit 0, quiet about options that match.
    let o = berth(Some(&s), &["volume", "create", "a", "-o", "size=64M"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("exists already"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("differs"), "{}", stderr(&o));
    // Other options: exit 0, and says which differ.
    let o = berth(
        Some(&s),
        &[
            "volume",
            "create",
            "a",
            "-o",
            "size=512M",
            "-o",
            "fsType=xfs",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("size: 64.0 MiB, asked 512.0 MiB"), "{e}");
    assert!(e.contains("fsType: ext4, asked xfs"), "{e}");
    let o = berth(
        Some(&s),
        &["--json", "volume", "create", "a", "-o", "size=128M"],
    );
    let v = json_out(&o);
    assert_eq!(v["Outcome"], "existed");
    assert_eq!(v["Differs"][0], "size: 64.0 MiB, asked 128.0 MiB");
    // Docker's Create still answers only success.
    let api = d.client("berth");
    let r = api.ok(
        "VolumeDriver.Create",
        json!({"Name": "a", "Opts": {"size": "128M"}}),
    );
    assert_eq!(r, json!({"Err": ""}));
    // rm of several names goes on past an unknown one; exit 3.
    let o = berth(Some(&s), &["volume", "rm", "a", "typo", "b"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert_eq!(stdout(&o), "a\nb\n");
    assert!(
        stderr(&o).contains("volume typo not found"),
        "{}",
        stderr(&o)
    );
    assert!(api.list_names().is_empty(), "{:?}", api.list_names());
}

#[test]
fn root_forbidden_socket_exits_4_naming_the_group() {
    if !nix::unistd::geteuid().is_root() || !common::which("setpriv") {
        eprintln!(
            "SKIPPED (needs root and setpriv): root_forbidden_socket_exits_4_naming_the_group"
        );
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let sock = dir.path().join("berth.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o660)).expect("chmod");
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_berth"))
        .arg("--socket")
        .arg(&sock)
        .arg("status")
        .output()
        .expect("run setpriv");
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("Permission denied"), "{e}");
    assert!(
        e.contains("group root, mode 660") && e.contains("usermod -aG root"),
        "{e}"
    );
    assert!(e.contains("SocketGroup= of berth@berth.socket"), "{e}");
}

fn check<'a>(checks: &'a Value, name: &str) -> &'a Value {
    checks
        .as_array()
        .expect("array")
        .iter()
        .find(|c| c["Check"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {checks:#}"))
}

#[test]
fn doctor_checks_the_sockets_and_names_leftovers() {
    let mut d = Daemon::builder().start();
    let config = d.config.to_string_lossy().into_owned();
    // A socket file nobody listens on, in Docker's plugin directory.
    let dead = d.dir.path().join("plugins").join("rexray.sock");
    drop(std::os::unix::net::UnixListener::bind(&dead).expect("bind"));
    let o = berth(None, &["--config", &config, "--json", "doctor"]);
    let checks = json_out(&o);
    assert_eq!(
        check(&checks, "socket of service berth")["Ok"],
        true,
        "{checks:#}"
    );
    let left = check(&checks, "leftover plugin sockets and spec files");
    assert_eq!(left["Ok"], false, "{checks:#}");
    assert!(left["Detail"]
        .as_str()
        .expect("detail")
        .contains("rexray.sock"));
    assert_eq!(code(&o), 1, "a failed check exits 1");
    std::fs::remove_file(&dead).expect("rm");
    // The daemon down: the socket check fails, with the unit to start.
    d.stop();
    let o = berth(None, &["--config", &config, "doctor"]);
    assert_eq!(code(&o), 1);
    let out = stdout(&o);
    assert!(out.contains("FAIL    socket of service berth"), "{out}");
    assert!(
        out.contains("systemctl enable --now berth@berth.socket"),
        "{out}"
    );
}

#[test]
fn metrics_count_requests_and_write_textfiles() {
    let mut d = Daemon::builder().start();
    let s = d.socket("berth");
    let config = d.config.to_string_lossy().into_owned();
    assert_eq!(code(&berth(Some(&s), &["status"])), 0);
    assert_eq!(code(&berth(Some(&s), &["volume", "rm", "typo"])), 3);
    let o = berth(Some(&s), &["metrics"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let m = stdout(&o);
    for want in [
        "berth_requests_total{service=\"berth\",route=\"Berth.Status\",status=\"200\"} 1",
        "berth_requests_total{service=\"berth\",route=\"Berth.VolumeRemove\",status=\"500\"} 1",
        "# TYPE berth_request_duration_seconds histogram",
        "berth_request_duration_seconds_count{service=\"berth\",route=\"Berth.Status\"} 1",
        "berth_volumes{service=\"berth\"} 0",
        "berth_mounted_volumes{service=\"berth\"} 0",
        "berth_stuck_operations{service=\"berth\"} 0",
        "berth_backend_healthy{service=\"berth\"} 1",
        "berth_up{service=\"berth\"} 1",
        "# EOF",
    ] {
        assert!(m.contains(want), "{want:?} missing from:\n{m}");
    }
    let out = tempfile::tempdir().expect("tempdir");
    let dir = out.path().to_string_lossy().into_owned();
    let o = berth(None, &["--config", &config, "metrics", "--textfile", &dir]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let f = std::fs::read_to_string(out.path().join("berth-berth.prom")).expect("textfile");
    assert!(f.contains("berth_up{service=\"berth\"} 1"), "{f}");
    d.stop();
    let o = berth(None, &["--config", &config, "metrics", "--textfile", &dir]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    let f = std::fs::read_to_string(out.path().join("berth-berth.prom")).expect("textfile");
    assert!(f.contains("berth_up{service=\"berth\"} 0"), "{f}");
}

/// The fields of every `info!`/`warn!`/`error!`/`debug!`/`trace!` in
/// `src` (the `key = value`, `%key`, `?key` and bare `key` arguments
/// before the message).
fn logged_fields(dir: &Path, out: &mut std::collections::BTreeSet<String>) {
    for e in std::fs::read_dir(dir).expect("read src").flatten() {
        let p = e.path();
        if p.is_dir() {
            logged_fields(&p, out);
            continue;
        }
        if p.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&p).expect("read");
        for mac in ["info!(", "warn!(", "error!(", "debug!(", "trace!("] {
            for (at, _) in text.match_indices(mac) {
                let before = text[..at].chars().last().unwrap_or(' ');
                if before.is_alphanumeric() || before == '_' {
                    continue;
                }
                fields_of(&text[at + mac.len()..], out);
            }
        }
    }
}

fn fields_of(args: &str, out: &mut std::collections::BTreeSet<String>) {
    let mut depth = 0;
    let mut cur = String::new();
    let mut parts = Vec::new();
    let mut chars = args.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' if cur.trim_end().ends_with('=') => {
                cur.push(c);
                for d in chars.by_ref() {
                    cur.push(d);
                    if d == '"' {
                        break;
                    }
                }
            }
            '"' => break,
            '(' | '[' | '{' => {
                depth += 1;
                cur.push(c);
            }
            ')' | ']' | '}' if depth == 0 => break,
            ')' | ']' | '}' => {
                depth -= 1;
                cur.push(c);
            }
            ',' if depth == 0 => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    for p in parts {
        let p = p.trim().trim_start_matches(['%', '?']);
        let ident: String = p
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        let rest = p[ident.len()..].trim_start();
        if !ident.is_empty()
            && (rest.is_empty() || (rest.starts_with('=') && !rest.starts_with("==")))
            && ident != "target"
            && ident != "parent"
        {
            out.insert(format!("BERTH_{}", ident.to_ascii_uppercase()));
        }
    }
}

#[test]
fn the_journal_fields_table_names_every_field_logged() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut fields = std::collections::BTreeSet::new();
    logged_fields(&root.join("src"), &mut fields);
    assert!(
        fields.contains("BERTH_SERVICE") && fields.contains("BERTH_DURATION_MS"),
        "{fields:?}"
    );
    let doc = std::fs::read_to_string(root.join("docs/systemd.md")).expect("systemd.md");
    let missing: Vec<&String> = fields
        .iter()
        .filter(|f| !doc.contains(&format!("`{f}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/systemd.md's journal fields table lacks {missing:?}"
    );
}
