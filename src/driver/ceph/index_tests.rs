use super::*;
use crate::volume::VolumeName;

const V1: &str = include_str!("../../../tests/fixtures/v1/ceph/rbd/data1.berth.volume.json");
const S1: &str =
    include_str!("../../../tests/fixtures/v1/ceph/rbd/data1.berth.snapshot.snap1.json");

#[test]
fn format_absent_is_one_and_newer_is_refused_by_name() {
    let v: Value = serde_json::from_str(V1).expect("fixture");
    assert!(check_format("image data1", &v).is_ok());
    let one = serde_json::json!({"format": 1});
    assert!(check_format("x", &one).is_ok());
    let two = serde_json::json!({"format": 2});
    let e =
        check_format("catalog index entry v/a of rbd/berth/catalog", &two).expect_err("refused");
    assert!(
        e.contains("v/a of rbd/berth/catalog has format 2") && e.contains("format 1"),
        "{e}"
    );
}

#[test]
fn entries_round_trip_and_carry_their_format() {
    let rec: VolumeRecord = serde_json::from_str(V1).expect("fixture");
    let raw = volume_entry(&rec);
    let v: Value = serde_json::from_slice(&raw).expect("json");
    assert_eq!(v["format"], FORMAT);
    let back: VolumeRecord = parse("obj", "v/data1", "volume", &raw).expect("parse");
    assert_eq!(back.name, rec.name);
    assert_eq!(back.id, rec.id);
    assert_eq!(back.size, rec.size);

    let snap: SnapshotRecord = serde_json::from_str(S1).expect("fixture");
    let raw = snapshot_entry(&snap);
    let back: SnapshotRecord = parse("obj", "s/snap1", "snapshot", &raw).expect("parse");
    assert_eq!(back.name, VolumeName::parse("snap1").expect("name"));
}

#[test]
fn unreadable_or_newer_entries_are_refused_with_their_key() {
    let e = parse::<VolumeRecord>("rbd/berth/catalog", "v/x", "volume", b"{").expect_err("refused");
    assert!(
        e.contains("v/x of rbd/berth/catalog") && e.contains("unreadable"),
        "{e}"
    );
    let newer = format!("{{\"format\":7,\"volume\":{V1}}}");
    let e = parse::<VolumeRecord>("rbd/berth/catalog", "v/data1", "volume", newer.as_bytes())
        .expect_err("refused");
    assert!(e.contains("has format 7"), "{e}");
}

#[test]
fn metadata_of_a_newer_format_is_not_listed() {
    assert!(crate::driver::ceph::decode("svc", "image data1", V1).is_some());
    let newer = V1.replacen('{', "{\"format\":3,", 1);
    assert!(crate::driver::ceph::decode("svc", "image data1", &newer).is_none());
    let meta = std::collections::BTreeMap::from([(
        "berth.snapshot.snap1".to_string(),
        S1.replacen('{', "{\"format\":3,", 1),
    )]);
    assert!(crate::driver::ceph::snapshots_in("svc", "data1", &meta).is_empty());
}
