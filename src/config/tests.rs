use super::*;

#[test]
fn builtin_default() {
    let s = Settings::builtin();
    assert_eq!(s.daemon.plugins_dir, Path::new("/run/docker/plugins"));
    assert_eq!(s.daemon.state_dir, Path::new("/var/lib/berth"));
    assert_eq!(s.daemon.mount_dir, Path::new("/var/lib/berth/volumes"));
    let svc = s.services.get("berth").expect("berth service");
    assert_eq!(svc.driver.kind(), "loop");
    assert_eq!(svc.scope, Scope::Local);
    let p = &svc.policy;
    assert_eq!(p.create_defaults.size, 16 << 30);
    assert_eq!(p.create_defaults.fs_type, FsType::Ext4);
    assert!(p.create_implicit);
    assert!(!p.create_disable && !p.remove_disable && !p.remove_force);
    assert!(!p.mount_preempt && !p.ignore_used_count);
    assert_eq!(p.root_path, "/data");
    assert_eq!(p.data_mode, 0o755);
}

#[test]
fn per_service_overrides_global_key_by_key() {
    let text = r#"
[daemon]
state_dir = "/srv/berth"

[volume.create.default]
size = 4
fsType = "xfs"

[volume.unmount]
ignoreusedcount = true

[services.fast]
driver = "loop"
[services.fast.volume.create.default]
size = "500M"

[services.slow]
driver = "loop"
scope = "global"
[services.slow.volume.unmount]
ignore_used_count = false
"#;
    let s = Settings::from_str_with_source(text, Some(Path::new("/x.toml"))).expect("valid");
    let fast = &s.services["fast"];
    assert_eq!(fast.policy.create_defaults.size, 500 << 20);
    assert_eq!(fast.policy.create_defaults.fs_type, FsType::Xfs);
    assert!(fast.policy.ignore_used_count);
    let slow = &s.services["slow"];
    assert_eq!(slow.policy.create_defaults.size, 4 << 30);
    assert!(!slow.policy.ignore_used_count);
    assert_eq!(slow.scope, Scope::Global);
    assert_eq!(
        fast.driver,
        DriverSettings::Loop {
            image_dir: PathBuf::from("/srv/berth/images/fast"),
            pools: Default::default(),
        }
    );
    assert_eq!(s.daemon.mount_dir, Path::new("/srv/berth/volumes"));
}

fn err_of(text: &str) -> String {
    Settings::from_str_with_source(text, Some(Path::new("/etc/berth/config.toml")))
        .expect_err("must be refused")
        .to_string()
}

#[test]
fn errors_name_file_key_and_reason() {
    let e = err_of("[daemon]\nbogus = 1\n");
    assert!(
        e.contains("/etc/berth/config.toml") && e.contains("bogus"),
        "{e}"
    );

    let e = err_of("[services.a]\ndriver = \"zfs\"\n");
    assert!(e.contains("services.a.driver") && e.contains("loop"), "{e}");

    let e = err_of("[volume.create.default]\nsize = 0\n");
    assert!(e.contains("volume.create.default.size"), "{e}");

    let e = err_of(
        "[services.a]\ndriver = \"loop\"\n[services.a.volume.create.default]\nfsType = \"zfs\"\n",
    );
    assert!(
        e.contains("services.a.volume.create.default.fsType") && e.contains("zfs"),
        "{e}"
    );

    let e = err_of("[volume.mount]\nrootPath = \"../x\"\n");
    assert!(e.contains("volume.mount.rootPath"), "{e}");

    let e = err_of("[volume.data]\nmode = \"999\"\n");
    assert!(e.contains("volume.data.mode"), "{e}");

    let e = err_of("[daemon]\nstate_dir = \"relative\"\n");
    assert!(
        e.contains("daemon.state_dir") && e.contains("absolute"),
        "{e}"
    );

    let e = err_of("[services.\"a/b\"]\ndriver = \"loop\"\n");
    assert!(e.contains("a/b"), "{e}");

    let e = err_of("[services]\n");
    assert!(e.contains("at least one service"), "{e}");

    let e = err_of("[daemon]\ncommand_timeout = \"soon\"\n");
    assert!(e.contains("daemon.command_timeout"), "{e}");

    let e = err_of("[services.a]\ndriver = \"loop\"\nimage_dir = \"/i\"\n[services.b]\ndriver = \"loop\"\nimage_dir = \"/i\"\n");
    assert!(e.contains("already used"), "{e}");
}

#[test]
fn missing_file_default_vs_explicit() {
    let p = Path::new("/nonexistent/berth.toml");
    assert_eq!(
        Settings::load(p, false).expect("default"),
        Settings::builtin()
    );
    let e = Settings::load(p, true).expect_err("explicit missing");
    assert!(e.to_string().contains("/nonexistent/berth.toml"), "{e}");
}

#[test]
fn shipped_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/berth/config.toml");
    let s = Settings::load(&path, true).expect("shipped example must be valid");
    assert!(s.services.contains_key("berth"));
}

#[test]
fn root_paths() {
    assert!(validate_root_path("/data").is_ok());
    assert!(validate_root_path("/").is_ok());
    for bad in ["data", "/a/b", "/..", "/../x", ""] {
        assert!(validate_root_path(bad).is_err(), "{bad}");
    }
}

#[test]
fn selecting_services() {
    let text = "[services.a]\ndriver = \"loop\"\n[services.b]\ndriver = \"loop\"\n[volume.create.default]\nsize = 2\n";
    let s = Settings::parse_only(text, None, &["b".into(), "new".into()]).expect("valid");
    assert_eq!(s.services.keys().collect::<Vec<_>>(), vec!["b", "new"]);
    assert_eq!(
        s.services["new"].policy.create_defaults.size,
        2 << 30,
        "global defaults apply"
    );
    let e = Settings::parse_only(text, None, &["bad/name".into()]).expect_err("bad name");
    assert!(e.to_string().contains("bad/name"), "{e}");
}

#[test]
fn pools_are_parsed_and_validated() {
    let text = r#"
[services.mesos]
driver = "loop"
image_dir = "/srv/images/mesos"
[services.mesos.pools.io1]
image_dir = "/mnt/fast/berth"
[services.mesos.pools.slow]
image_dir = "/mnt/slow/berth"
[services.mesos.volume.create.default]
type = "io1"
"#;
    let s = Settings::from_str_with_source(text, Some(Path::new("/x.toml"))).expect("valid");
    let m = &s.services["mesos"];
    let DriverSettings::Loop { pools, .. } = &m.driver else {
        panic!("loop service expected");
    };
    assert_eq!(pools.len(), 2);
    assert_eq!(pools["io1"], PathBuf::from("/mnt/fast/berth"));
    assert_eq!(m.policy.create_defaults.volume_type, "io1");

    let e = err_of("[services.a]\ndriver = \"loop\"\n[services.a.pools.p]\nimage_dir = \"rel\"\n");
    assert!(
        e.contains("services.a.pools.p.image_dir") && e.contains("absolute"),
        "{e}"
    );
    let e = err_of(
        "[services.a]\ndriver = \"loop\"\n[services.a.pools.p]\nimage_dir = \"/x\"\nsize = 1\n",
    );
    assert!(e.contains("size"), "{e}");
    let e =
        err_of("[services.a]\ndriver = \"loop\"\n[services.a.pools.default]\nimage_dir = \"/x\"\n");
    assert!(
        e.contains("services.a.pools.default") && e.contains("reserved"),
        "{e}"
    );
    let e =
        err_of("[services.a]\ndriver = \"loop\"\n[services.a.pools.\"b/c\"]\nimage_dir = \"/x\"\n");
    assert!(e.contains("b/c"), "{e}");
    let e = err_of("[services.a]\ndriver = \"loop\"\nimage_dir = \"/i\"\n[services.a.pools.p]\nimage_dir = \"/i/sub\"\n");
    assert!(
        e.contains("services.a.pools.p.image_dir") && e.contains("overlaps"),
        "{e}"
    );
    let e = err_of(
        "[services.a]\ndriver = \"loop\"\n[services.a.volume.create.default]\ntype = \"io1\"\n",
    );
    assert!(
        e.contains("services.a.volume.create.default.type")
            && e.contains("io1")
            && e.contains("default"),
        "{e}"
    );
    let e = err_of("[volume.create.default]\ntype = \"gold\"\n");
    assert!(
        e.contains("volume.create.default.type") && e.contains("gold"),
        "{e}"
    );
    // "default" is always a pool.
    Settings::from_str_with_source("[volume.create.default]\ntype = \"default\"\n", None)
        .expect("default pool");
}

#[cfg(feature = "ceph")]
#[test]
fn ceph_services_have_defaults_and_named_errors() {
    let s = Settings::from_str_with_source(
        "[services.shared]\ndriver = \"cephfs\"\n[services.block]\ndriver = \"rbd\"\n[services.block.ceph]\nconf = \"/c/ceph.conf\"\nclient = \"client.berth\"\nhost = \"node1\"\npool = \"vols\"\ntimeout = \"5s\"\n",
        None,
    )
    .expect("valid");
    let shared = &s.services["shared"];
    assert_eq!(shared.scope, Scope::Global, "Ceph volumes are global");
    match &shared.driver {
        DriverSettings::Cephfs {
            ceph,
            filesystem,
            group,
        } => {
            assert_eq!(ceph.conf, Path::new("/etc/ceph/ceph.conf"));
            assert_eq!(ceph.client, "admin");
            assert_eq!(ceph.timeout, Duration::from_secs(30));
            assert_eq!((filesystem.as_str(), group.as_str()), ("cephfs", "berth"));
        }
        other => panic!("{other:?}"),
    }
    match &s.services["block"].driver {
        DriverSettings::Rbd { ceph, pool, adopt } => {
            assert_eq!(*adopt, None, "adopts nothing unless asked");
            assert_eq!(ceph.client, "berth", "client. prefix dropped");
            assert_eq!(ceph.host, "node1");
            assert_eq!(ceph.timeout, Duration::from_secs(5));
            assert_eq!(pool, "vols");
        }
        other => panic!("{other:?}"),
    }
    let local =
        Settings::from_str_with_source("[services.x]\ndriver = \"rbd\"\nscope = \"local\"\n", None)
            .expect("valid");
    assert_eq!(
        local.services["x"].scope,
        Scope::Local,
        "scope can be overridden"
    );
    for (text, key) in [
        (
            "[services.x]\ndriver = \"rbd\"\n[services.x.ceph]\nconf = \"rel/ceph.conf\"\n",
            "services.x.ceph.conf",
        ),
        (
            "[services.x]\ndriver = \"rbd\"\n[services.x.ceph]\nfilesystem = \"fs\"\n",
            "services.x.ceph",
        ),
        (
            "[services.x]\ndriver = \"cephfs\"\n[services.x.ceph]\npool = \"p\"\n",
            "services.x.ceph.pool",
        ),
        (
            "[services.x]\ndriver = \"rbd\"\n[services.x.ceph]\ntimeout = \"soon\"\n",
            "services.x.ceph.timeout",
        ),
        (
            "[services.x]\ndriver = \"rbd\"\n[services.x.ceph]\nhost = \"a b\"\n",
            "services.x.ceph.host",
        ),
        (
            "[services.x]\ndriver = \"rbd\"\nimage_dir = \"/i\"\n",
            "services.x",
        ),
        (
            "[services.x]\ndriver = \"loop\"\n[services.x.ceph]\npool = \"p\"\n",
            "services.x.ceph",
        ),
        (
            "[services.x]\ndriver = \"rbd\"\n[services.x.ceph]\nmonitors = \"m\"\n",
            "monitors",
        ),
    ] {
        let e = err_of(text);
        assert!(e.contains(key), "{text}: {e}");
    }
}

/// Every build reads Ceph services (the berth command of a loop-only
/// host included); berthd hands them to the build with Ceph (cephexec).
#[test]
fn ceph_services_parse_in_every_build() {
    let s =
        Settings::from_str_with_source("[services.x]\ndriver = \"rbd\"\n", None).expect("parse");
    assert_eq!(s.ceph_services(), vec!["x (rbd)".to_string()]);
    assert!(Settings::builtin().ceph_services().is_empty());
}

#[test]
fn limits_have_defaults_inside_dockers_timeouts_and_errors_name_the_key() {
    let s =
        Settings::from_str_with_source("[services.a]\ndriver = \"loop\"\n", None).expect("parse");
    let l = &s.services["a"].limits;
    assert_eq!(l.workers, 8);
    assert!(l.mount_timeout < std::time::Duration::from_secs(120));
    assert!(l.timeout < std::time::Duration::from_secs(60));
    let s = Settings::from_str_with_source(
        "[services.a]\ndriver = \"loop\"\n[services.a.limits]\nworkers = 2\nmount_timeout = \"3s\"\nsample_every = \"500ms\"\n",
        None,
    )
    .expect("parse");
    let l = &s.services["a"].limits;
    assert_eq!(l.workers, 2);
    assert_eq!(l.mount_timeout, std::time::Duration::from_secs(3));
    assert_eq!(l.sample_every, std::time::Duration::from_millis(500));
    let e = err_of("[services.a]\ndriver = \"loop\"\n[services.a.limits]\nworkers = 0\n");
    assert!(e.contains("services.a.limits.workers"), "{e}");
    let e = err_of("[services.a]\ndriver = \"loop\"\n[services.a.limits]\ntimeout = \"soon\"\n");
    assert!(
        e.contains("services.a.limits.timeout") && e.contains("soon"),
        "{e}"
    );
    let e = err_of("[services.a]\ndriver = \"loop\"\n[services.a.limits]\nwait = \"1s\"\n");
    assert!(e.contains("wait"), "{e}");
}

#[cfg(feature = "ceph")]
#[test]
fn rbd_adopt_is_opt_in_and_checked() {
    use crate::config::Adopt;
    let s = Settings::from_str_with_source(
        "[services.block]\ndriver = \"rbd\"\n[services.block.ceph]\nadopt = \"rexray\"\n",
        None,
    )
    .expect("valid");
    match &s.services["block"].driver {
        DriverSettings::Rbd { adopt, .. } => assert_eq!(*adopt, Some(Adopt::Rexray)),
        other => panic!("{other:?}"),
    }
    let e =
        err_of("[services.block]\ndriver = \"rbd\"\n[services.block.ceph]\nadopt = \"flocker\"\n");
    assert!(
        e.contains("services.block.ceph.adopt") && e.contains("flocker") && e.contains("rexray"),
        "{e}"
    );
    let e = err_of("[services.s]\ndriver = \"cephfs\"\n[services.s.ceph]\nadopt = \"rexray\"\n");
    assert!(
        e.contains("services.s.ceph.adopt") && e.contains("only rbd"),
        "{e}"
    );
}
