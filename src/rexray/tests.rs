use super::*;
use crate::config::{DriverSettings, Settings};

fn fixture(name: &str) -> String {
    let p = format!(
        "{}/tests/fixtures/rexray/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn imported(name: &str) -> String {
    import(&fixture(name), name).unwrap_or_else(|e| panic!("{e}"))
}

/// Every key of the input is named in the output, with its line.
fn every_key_commented(name: &str, out: &str) {
    for e in yaml::flatten(&fixture(name)).expect("yaml") {
        let tag = format!("{} (line {})", e.key, e.line);
        assert!(out.contains(&tag), "{name}: {tag} not in\n{out}");
    }
}

/// Valid Berth configuration (loop services only: rbd needs the ceph
/// feature, checked by tests/import_rexray.rs).
fn settings(out: &str) -> Settings {
    Settings::from_str_with_source(out, None).unwrap_or_else(|e| panic!("{e}\n{out}"))
}

#[test]
fn seed_config_becomes_the_rexray_service_with_1gb_volumes() {
    let out = imported("seed-volume-size.yml");
    every_key_commented("seed-volume-size.yml", &out);
    let s = settings(&out);
    assert_eq!(s.services.keys().collect::<Vec<_>>(), ["rexray"]);
    let svc = &s.services["rexray"];
    assert!(matches!(svc.driver, DriverSettings::Loop { .. }));
    assert_eq!(svc.policy.create_defaults.size, 1 << 30);
    assert!(
        out.contains("REX-Ray's virtualbox driver has no Berth equivalent"),
        "{out}"
    );
    assert!(out.contains("virtualbox.volumePath (line 10) = $PATH/VirtualBox Volumes: a setting of REX-Ray's virtualbox driver"), "{out}");
}

#[test]
fn seed_mesos_settings_are_carried_over() {
    let out = imported("seed-mesos.yml");
    every_key_commented("seed-mesos.yml", &out);
    let p = &settings(&out).services["rexray"].policy;
    assert!(
        p.mount_preempt && p.ignore_used_count && p.remove_disable,
        "{p:?}"
    );
}

#[test]
fn multi_service_modules_become_services_named_after_their_sockets() {
    let out = imported("multi-service.yml");
    every_key_commented("multi-service.yml", &out);
    let s = settings(&out);
    assert_eq!(
        s.services.keys().collect::<Vec<_>>(),
        ["scaleio", "virtualbox"]
    );
    // File-wide 8 GB, module override 2 GB.
    assert_eq!(
        s.services["virtualbox"].policy.create_defaults.size,
        2 << 30
    );
    assert_eq!(s.services["scaleio"].policy.create_defaults.size, 8 << 30);
    // Per-service override of the libStorage service scaleio.
    assert!(s.services["scaleio"].policy.mount_preempt);
    assert!(!s.services["virtualbox"].policy.mount_preempt);
    assert_eq!(s.services["scaleio"].policy.data_mode, 0o700);
    assert!(
        out.contains("create.default.type (line 35) = gp2: a REX-Ray volume type"),
        "{out}"
    );
    assert!(out.contains("scaleio.password (line 56) = secret"), "{out}");
    assert!(s.daemon.log_level == "info", "{out}");
}

#[test]
fn rbd_becomes_an_rbd_service_with_pool_and_client() {
    let out = imported("rbd.yml");
    every_key_commented("rbd.yml", &out);
    let raw: crate::config::RawConfig = toml::from_str(&out).expect("toml");
    let svc = &raw.services.as_ref().expect("services")["rexray"];
    assert_eq!(svc.driver, "rbd");
    let ceph = svc.ceph.as_ref().expect("ceph table");
    assert_eq!(ceph.pool.as_deref(), Some("volumes"));
    assert_eq!(ceph.client.as_deref(), Some("docker"));
    assert_eq!(
        ceph.adopt.as_deref(),
        Some("rexray"),
        "REX-Ray's images adopted"
    );
    assert_eq!(
        ceph.keyring.as_deref(),
        Some(std::path::Path::new("/etc/ceph/ceph.client.docker.keyring"))
    );
    assert_eq!(
        ceph.conf.as_deref(),
        Some(std::path::Path::new("/etc/ceph/ceph.conf"))
    );
    assert!(
        out.contains("= -m 10.0.0.1:6789: these ceph arguments are not carried over"),
        "{out}"
    );
}

#[test]
fn legacy_keys_map_and_lose_to_current_ones() {
    let out = imported("legacy-docker.yml");
    every_key_commented("legacy-docker.yml", &out);
    let s = settings(&out);
    let p = &s.services["rexray"].policy;
    assert!(
        p.mount_preempt && p.ignore_used_count && !p.remove_disable,
        "{p:?}"
    );
    // libstorage...create.default.size beats docker.size.
    assert_eq!(p.create_defaults.size, 5 << 30);
    assert!(out.contains("docker.size (line 12) = 3: overridden by libstorage.integration.volume.operations.create.default.size (line 27)"), "{out}");
    assert_eq!(p.create_defaults.iops, 100);
    assert_eq!(p.data_mode, 0o750);
    assert_eq!(
        s.daemon.mount_dir,
        std::path::Path::new("/var/lib/rexray/volumes")
    );
    assert!(out.contains("docker.volumeType (line 10) = gold"), "{out}");
}

#[test]
fn a_broken_file_names_its_line() {
    let e = import(&fixture("broken.yml"), "broken.yml").expect_err("broken");
    assert!(e.to_string().starts_with("broken.yml: line 9"), "{e}");
    let e = import(&fixture("bad-value.yml"), "bad-value.yml").expect_err("bad value");
    assert_eq!(
        e.to_string(),
        "bad-value.yml: line 8: libstorage.integration.volume.operations.create.default.size: \"lots\" is not a whole number of GB above 0"
    );
}

#[test]
fn an_empty_file_is_rexrays_default_module() {
    let out = import("", "empty.yml").expect("empty");
    let s = settings(&out);
    assert_eq!(s.services.keys().collect::<Vec<_>>(), ["rexray"]);
}

#[test]
fn unknown_keys_are_named_as_not_carried_over() {
    let out = import("libstorage:\n  service: ebs\nfoo:\n  bar: 1\n", "x.yml").expect("import");
    assert!(
        out.contains("foo.bar (line 4) = 1: not a REX-Ray or libStorage setting"),
        "{out}"
    );
    settings(&out);
}

#[test]
fn two_modules_on_one_socket_make_one_service() {
    let yml =
        "rexray:\n  modules:\n    mine:\n      host: unix:///run/docker/plugins/rexray.sock\n";
    let out = import(yml, "x.yml").expect("import");
    assert_eq!(out.matches("[services.rexray]").count(), 1, "{out}");
    assert!(
        out.contains("names the socket rexray.sock of module default-docker"),
        "{out}"
    );
    settings(&out);
}
