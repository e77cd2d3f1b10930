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
    assert!(blocks.len() >= 10, "only {} shell blocks found", blocks.len());
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
                assert!(b.text.contains(k.as_str()), "{}: {k} is not in the block", b.at());
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
    assert!(matches!(b[2].marker, Marker::Missing(Some(_))), "a reason that short is no reason");
    assert!(matches!(&b[3].marker, Marker::Illustration(r) if r == "needs a Ceph cluster"));
    let loose = docblocks::unfenced_commands("t.md", "text\n\n    berth volume ls\n\n    volume x: output\n");
    assert_eq!(loose, vec!["t.md:3: berth volume ls".to_string()]);
}
