//! Documented commands run, or say why not. Every fenced shell block of
//! README.md and docs/*.md carries a marker on the line before it
//! (tests/common/docblocks.rs; docs/architecture.md, "Documented
//! commands"): `runs: daemon` blocks run here as root against a real
//! berthd and a private dockerd (tests/e2e/docs.sh), `runs: systemd`
//! blocks in the package test's machine (tests/systemd/run.sh), and
//! `illustration: REASON` blocks are not run.

mod common;

#[path = "common/docblocks.rs"]
mod docblocks;

use std::path::{Path, PathBuf};
use std::process::Command;

use docblocks::{Marker, Place};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_shell_block_is_run_or_marked_an_illustration() {
    let blocks = docblocks::all(&root());
    assert!(
        blocks.len() >= 10,
        "only {} shell blocks found",
        blocks.len()
    );
    let unmarked: Vec<String> = blocks
        .iter()
        .filter_map(|b| match &b.marker {
            Marker::Missing(m) => Some(format!(
                "{}: marker {:?}; put `<!-- runs: daemon -->`, `<!-- runs: systemd -->` or \
                 `<!-- illustration: REASON -->` on the line before the fence",
                b.at(),
                m.as_deref().unwrap_or("(none)")
            )),
            _ => None,
        })
        .collect();
    assert!(unmarked.is_empty(), "\n{}", unmarked.join("\n"));
    for place in [Place::Daemon, Place::Systemd] {
        assert!(
            blocks.iter().any(|b| b.runs_in(&place)),
            "no block runs in {place:?}"
        );
    }
    // A placeholder the marker sets must be in the block.
    for b in &blocks {
        if let Marker::Runs { vars, .. } = &b.marker {
            for (k, _) in vars {
                assert!(
                    b.text.contains(k.as_str()),
                    "{}: {k} is not in the block",
                    b.at()
                );
            }
        }
    }
}

#[test]
fn commands_are_in_fenced_blocks() {
    let r = root();
    let loose: Vec<String> = docblocks::files(&r)
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(r.join(f)).expect("read");
            docblocks::unfenced_commands(f, &text)
        })
        .collect();
    assert!(
        loose.is_empty(),
        "commands in indented code blocks (make them fenced ```sh blocks with a marker):\n{}",
        loose.join("\n")
    );
}

#[test]
fn markers_parse() {
    let md = "x\n<!-- runs: systemd NAME=doc -->\n```sh\nsystemctl start berth@NAME.socket NAMED\n```\n\
              ```bash\nls\n```\n<!-- illustration: short -->\n```console\nls\n```\n\
              <!-- illustration: needs a Ceph cluster -->\n```shell\nceph -s\n```\n```toml\nx = 1\n```\n";
    let b = docblocks::blocks_of("t.md", md);
    assert_eq!(b.len(), 4);
    assert_eq!(b[0].line, 3);
    assert_eq!(b[0].script(), "systemctl start berth@doc.socket NAMED\n");
    assert!(matches!(b[1].marker, Marker::Missing(None)));
    assert!(
        matches!(b[2].marker, Marker::Missing(Some(_))),
        "a reason that short is no reason"
    );
    assert!(matches!(&b[3].marker, Marker::Illustration(r) if r == "needs a Ceph cluster"));
    let loose = docblocks::unfenced_commands(
        "t.md",
        "text\n\n    berth volume ls\n\n    volume x: output\n",
    );
    assert_eq!(loose, vec!["t.md:3: berth volume ls".to_string()]);
}

#[test]
fn root_documented_commands_run_against_berthd_and_dockerd() {
    let name = "root_documented_commands_run_against_berthd_and_dockerd";
    if !common::can_use_storage(name) {
        return;
    }
    for tool in ["dockerd", "docker", "unshare", "curl", "ip", "mkfs.xfs"] {
        if !common::which(tool) {
            eprintln!("SKIPPED (needs {tool}): {name}");
            return;
        }
    }
    if !Path::new("/bin/busybox").exists() {
        eprintln!("SKIPPED (needs /bin/busybox from busybox-static): {name}");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("berth-docs-")
        .tempdir()
        .expect("tempdir");
    let blocks = dir.path().join("blocks");
    std::fs::create_dir(&blocks).expect("mkdir");
    let mut files = Vec::new();
    for (n, b) in docblocks::all(&root())
        .iter()
        .filter(|b| b.runs_in(&Place::Daemon))
        .enumerate()
    {
        let f = blocks.join(format!("{n:02}.sh"));
        std::fs::write(&f, format!("# {}\n{}", b.at(), b.script())).expect("write block");
        files.push(f);
    }
    let work = dir.path().join("w");
    let bindir = Path::new(env!("CARGO_BIN_EXE_berth"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/docs.sh"))
        .arg(&work)
        .arg(env!("CARGO_BIN_EXE_berthd"))
        .arg(&bindir)
        .args(&files)
        .output()
        .expect("run docs.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    let log = |f: &str| std::fs::read_to_string(work.join(f)).unwrap_or_default();
    assert!(
        out.status.success() && stdout.contains(&format!("{} passed, 0 failed", files.len() + 3)),
        "documented commands failed:\n{stdout}\n{}\n--- checks.log\n{}\n--- berthd.log\n{}",
        String::from_utf8_lossy(&out.stderr),
        log("checks.log"),
        log("berthd.log")
    );
    assert!(common::leftovers_under(dir.path()).is_empty());
}
