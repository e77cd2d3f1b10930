//! The imported configuration as TOML: every setting under a comment
//! naming the REX-Ray key (and line) it came from; every key that is not
//! carried over listed at the end with the reason.

use std::fmt::Write;

use super::layout::{Layout, PLUGINS_DIR};
use super::{Plan, Setting, Target};

fn settings<'a>(plan: &'a Plan, target: &Target) -> Vec<&'a Setting> {
    plan.settings
        .iter()
        .filter(|s| &s.target == target)
        .collect()
}

fn table(out: &mut String, header: &str, items: &[&Setting]) {
    if items.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n[{header}]");
    for s in items {
        let _ = writeln!(out, "# {}", s.src);
        let _ = writeln!(out, "{} = {}", s.key, s.value);
    }
}

/// Renders the plan.
pub(super) fn render(file: &str, lay: &Layout, plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Berth configuration imported from the REX-Ray configuration {file}\n\
         # by `berth import-rexray`. Every key of that file is named here: above\n\
         # the setting it became, or under \"Not carried over\" at the end, with\n\
         # the reason. Check it with: berthd --check-config --config THIS_FILE\n\
         #\n\
         # Behaviour that differs from REX-Ray (docs/migrating-from-rexray.md):\n\
         # - a new data directory is 0755 (REX-Ray: 0700) unless [volume]\n\
         #   data.mode (from linux.volume.filemode) says otherwise;\n\
         # - mounts are counted per Docker mount ID and the counts survive a\n\
         #   restart of berthd (REX-Ray counted per name, in memory);\n\
         # - loop services report Scope local (REX-Ray: global), rbd services\n\
         #   global; rbd preemption fences the other host first;\n\
         # - a volumeType that names no pool is recorded and the volume goes\n\
         #   to the default pool ([volume] create.refuseUnknownType refuses it)."
    );
    let mut daemon: Vec<&Setting> = settings(plan, &Target::Daemon);
    let dir_setting;
    if let Some((dir, src)) = &lay.plugins_dir {
        dir_setting = Setting {
            target: Target::Daemon,
            key: "plugins_dir",
            value: toml::Value::String(dir.clone()).to_string(),
            src: src.clone(),
            prio: 0,
        };
        daemon.insert(0, &dir_setting);
    }
    table(&mut out, "daemon", &daemon);
    table(&mut out, "volume", &settings(plan, &Target::Volume(None)));
    for svc in &lay.services {
        let _ = writeln!(
            out,
            "\n# Service {:?}: docker run --volume-driver={}",
            svc.name, svc.name
        );
        for line in &svc.story {
            let _ = writeln!(out, "# {line}");
        }
        let _ = writeln!(out, "[services.{}]", svc.name);
        let _ = writeln!(out, "driver = \"{}\"", svc.driver);
        if svc.driver == "rbd" {
            let _ = writeln!(
                out,
                "# REX-Ray's rbd driver had no preemption; Berth's rbd service has\n\
                 # (volume mount.preempt), fencing the other host's client first."
            );
        }
        let ceph = format!("services.{}.ceph", svc.name);
        let ceph_items = settings(plan, &Target::Ceph(svc.name.clone()));
        table(&mut out, &ceph, &ceph_items);
        if svc.driver == "rbd" {
            if ceph_items.is_empty() {
                let _ = writeln!(out, "\n[{ceph}]");
            }
            let _ = writeln!(
                out,
                "# REX-Ray's images (named as the volume, in this pool, without\n\
                 # Berth metadata) are volumes of this service: the first mount\n\
                 # keeps the filesystem on one (a blank one gets the default\n\
                 # fsType, as REX-Ray did) and records it for every host\n\
                 # (docs/migrating-from-rexray.md). Remove this once every\n\
                 # REX-Ray volume has been mounted through Berth, if you like.\n\
                 adopt = \"rexray\""
            );
        }
        table(
            &mut out,
            &format!("services.{}.volume", svc.name),
            &settings(plan, &Target::Volume(Some(svc.name.clone()))),
        );
    }
    if lay.plugins_dir.is_none() {
        let _ = writeln!(
            out,
            "\n# Sockets: {PLUGINS_DIR}/<service>.sock, as REX-Ray's."
        );
    }
    let mut dropped = plan.dropped.clone();
    dropped.sort_by_key(|d| d.src.line);
    if dropped.is_empty() {
        let _ = writeln!(out, "\n# Not carried over: nothing.");
    } else {
        let _ = writeln!(out, "\n# Not carried over:");
        for d in &dropped {
            let _ = writeln!(
                out,
                "# - {} = {}: {}",
                d.src,
                d.value.replace('\n', " "),
                d.why
            );
        }
    }
    out
}
