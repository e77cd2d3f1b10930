//! Manual pages from the clap definitions: `berth.1` and one page per
//! subcommand (`berth-volume-create.1`, …), and `berth.toml.5` from the
//! commented example configuration (`etc/berth/config.toml`), which shows
//! every key with its default.

use std::path::Path;

use clap_mangen::roff::{roman, Roff};

use super::exit::{CliError, Kind};

/// The commented example configuration, the source of `berth.toml(5)`.
const EXAMPLE_CONFIG: &str = include_str!("../../etc/berth/config.toml");

/// Writes every page into `dir`; returns the list of files written.
pub fn write_all(cmd: &clap::Command, dir: &Path) -> Result<String, CliError> {
    let fail = |what: &str, e: std::io::Error| CliError::new(Kind::Refused, format!("{what}: {e}"));
    std::fs::create_dir_all(dir).map_err(|e| fail(&dir.display().to_string(), e))?;
    let mut written = String::new();
    let mut cmd = cmd.clone();
    cmd.build();
    for (file, page) in pages(&cmd, "berth") {
        let path = dir.join(&file);
        std::fs::write(&path, page).map_err(|e| fail(&path.display().to_string(), e))?;
        written.push_str(&format!("{}\n", path.display()));
    }
    let path = dir.join("berth.toml.5");
    std::fs::write(&path, config_page()).map_err(|e| fail(&path.display().to_string(), e))?;
    written.push_str(&format!("{}\n", path.display()));
    Ok(written)
}

/// `(file name, roff)` of `cmd` and of each visible subcommand, recursively.
fn pages(cmd: &clap::Command, name: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let cmd = cmd.clone().name(name.to_string());
    let mut page = Vec::new();
    if clap_mangen::Man::new(cmd.clone())
        .title(name.to_uppercase())
        .render(&mut page)
        .is_ok()
    {
        out.push((format!("{name}.1"), page));
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        out.extend(pages(sub, &format!("{name}-{}", sub.get_name())));
    }
    out
}

/// A paragraph of comment lines.
fn flush(roff: &mut Roff, text: &mut Vec<String>) {
    if !text.is_empty() {
        roff.control("PP", []).text([roman(text.join(" "))]);
        text.clear();
    }
}

/// `berth.toml(5)`: each table of the example a section, each key (shown
/// commented out with its default) a tagged paragraph with the comment
/// above it.
pub fn config_page() -> Vec<u8> {
    let mut roff = Roff::new();
    roff.control(
        "TH",
        [
            "BERTH.TOML",
            "5",
            "",
            env!("CARGO_PKG_VERSION"),
            "File Formats",
        ],
    );
    roff.control("SH", ["NAME"]).text([roman(
        "berth.toml - configuration of berthd and berth (/etc/berth/config.toml)",
    )]);
    roff.control("SH", ["DESCRIPTION"]);
    let mut text: Vec<String> = Vec::new();
    for line in EXAMPLE_CONFIG.lines() {
        let line = line.trim_end();
        if let Some(table) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            flush(&mut roff, &mut text);
            roff.control("SH", [format!("[{table}]").as_str()]);
        } else if let Some(key) = line
            .strip_prefix('#')
            .filter(|k| !k.starts_with(' ') && k.contains(" = "))
        {
            roff.control("TP", []).text([roman(key)]);
            roff.text([roman(text.join(" "))]);
            text.clear();
        } else if let Some(c) = line.strip_prefix('#') {
            text.push(c.trim().to_string());
        } else if line.is_empty() {
            flush(&mut roff, &mut text);
        } else {
            flush(&mut roff, &mut text);
            roff.control("TP", []).text([roman(line)]);
        }
    }
    flush(&mut roff, &mut text);
    roff.control("SH", ["FILES"]).text([roman(
        "/etc/berth/config.toml; /usr/share/doc/berth/docs/configuration.md has the full reference.",
    )]);
    roff.control("SH", ["SEE ALSO"])
        .text([roman("berth(1), berthd(8)")]);
    roff.render().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_has_a_page() {
        use clap::CommandFactory;
        let mut cmd = super::super::Cli::command();
        cmd.build();
        let names: Vec<String> = pages(&cmd, "berth").into_iter().map(|p| p.0).collect();
        for want in [
            "berth.1",
            "berth-volume.1",
            "berth-volume-create.1",
            "berth-volume-rm.1",
            "berth-snapshot-create.1",
            "berth-completions.1",
        ] {
            assert!(names.contains(&want.to_string()), "{want} in {names:?}");
        }
        assert!(
            !names.iter().any(|n| n.starts_with("berth-man")),
            "{names:?}"
        );
    }

    #[test]
    fn config_page_has_every_table_and_key() {
        let page = String::from_utf8(config_page()).expect("utf8");
        assert!(page.contains(".SH [daemon]"), "{page}");
        assert!(page.contains("plugins_dir = "), "{page}");
        assert!(page.contains("socket_group"), "{page}");
    }
}
