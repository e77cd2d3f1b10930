//! The state index: used when valid, ignored when stale, damaged or of
//! a newer format, and never vouching for a record it did not see.

use super::tests::sample;
use super::*;

fn store() -> (tempfile::TempDir, RecordStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RecordStore::open(&dir.path().join("records").join("svc")).expect("open");
    (dir, store)
}

fn names(recs: &[VolumeRecord]) -> Vec<&str> {
    recs.iter().map(|r| r.name.as_str()).collect()
}

fn saved(store: &RecordStore, names: &[&str]) -> Vec<VolumeRecord> {
    names
        .iter()
        .map(|n| {
            let r = sample(n);
            store.save(&r).expect("save");
            r
        })
        .collect()
}

/// A fresh store on the same directory (a new berthd).
fn reopened(store: &RecordStore) -> RecordStore {
    RecordStore::open(store.dir()).expect("open")
}

#[test]
fn valid_index_gives_every_record_in_one_read() {
    let (_d, store) = store();
    let recs = saved(&store, &["a", "b", "c"]);
    let w = store.write_index(recs.iter()).expect("index");
    assert_eq!((w.records, w.reread), (3, 0));
    assert!(store.index_path().ends_with("records/svc.index"));
    let idx = reopened(&store).read_index().expect("valid");
    assert_eq!(idx.records, recs);
    assert!(idx.reread.is_empty());
}

#[test]
fn index_of_records_read_back_is_valid_and_can_be_rewritten() {
    let (_d, store) = store();
    saved(&store, &["a", "b"]);
    let fresh = reopened(&store);
    let (recs, _) = fresh.load_all().expect("load");
    assert_eq!(fresh.write_index(recs.iter()).expect("index").records, 2);
    // A start from that index can write the next one without reading a
    // record: the index carries what the store knows of each file.
    let again = reopened(&store);
    let idx = again.read_index().expect("valid");
    let w = again.write_index(idx.records.iter()).expect("index");
    assert_eq!((w.records, w.reread), (2, 0));
}

#[test]
fn a_record_created_after_the_index_makes_it_stale() {
    let (_d, store) = store();
    let recs = saved(&store, &["a"]);
    store.write_index(recs.iter()).expect("index");
    // A create after the index was written, then a crash (no new index).
    saved(&store, &["late"]);
    let fresh = reopened(&store);
    assert!(matches!(fresh.read_index(), Err(IndexUnused::Stale(_))));
    let (all, _) = fresh.load_all().expect("full load");
    assert_eq!(names(&all), vec!["a", "late"]);
}

#[test]
fn changed_or_removed_records_make_it_stale() {
    let (_d, store) = store();
    let recs = saved(&store, &["a", "b"]);
    store.write_index(recs.iter()).expect("index");
    let mut a = recs[0].clone();
    a.size = 7;
    store.save(&a).expect("save");
    assert!(matches!(
        reopened(&store).read_index(),
        Err(IndexUnused::Stale(_))
    ));
    store
        .write_index([a.clone(), recs[1].clone()].iter())
        .expect("index");
    store.delete(&recs[1].name).expect("delete");
    assert!(matches!(
        reopened(&store).read_index(),
        Err(IndexUnused::Stale(_))
    ));
}

#[test]
fn damaged_missing_or_newer_index_is_refused_with_its_reason() {
    let (_d, store) = store();
    assert!(matches!(store.read_index(), Err(IndexUnused::Missing(_))));
    let recs = saved(&store, &["a"]);
    store.write_index(recs.iter()).expect("index");
    let path = store.index_path();
    let good = std::fs::read(&path).expect("read");
    std::fs::write(&path, &good[..good.len() / 2]).expect("cut");
    let e = reopened(&store).read_index().expect_err("damaged");
    assert!(matches!(e, IndexUnused::Damaged { .. }), "{e}");
    let mut v: serde_json::Value = serde_json::from_slice(&good).expect("json");
    v["version"] = serde_json::Value::from(INDEX_VERSION + 1);
    // A newer layout this build could not even parse.
    v["records"] = serde_json::Value::from("elsewhere");
    std::fs::write(&path, serde_json::to_vec(&v).expect("encode")).expect("write");
    let e = reopened(&store).read_index().expect_err("newer");
    assert_eq!(
        e,
        IndexUnused::Newer {
            path: path.clone(),
            format: INDEX_VERSION + 1
        }
    );
    assert!(
        e.to_string().contains("newer than this berthd reads"),
        "{e}"
    );
}

#[test]
fn a_record_unlike_its_file_is_reread_not_indexed() {
    let (_d, store) = store();
    let recs = saved(&store, &["a", "b"]);
    // Memory lags the file of b (work that returned after its deadline).
    let mut stale_b = recs[1].clone();
    stale_b.size = 1;
    let w = store
        .write_index([recs[0].clone(), stale_b].iter())
        .expect("index");
    assert_eq!((w.records, w.reread), (1, 1));
    let idx = reopened(&store).read_index().expect("valid");
    assert_eq!(names(&idx.records), vec!["a"]);
    assert_eq!(idx.reread, vec!["b".to_string()]);
    let more = store.load_named(&idx.reread);
    assert_eq!(more.records, vec![recs[1].clone()]);
}

#[test]
fn files_the_store_did_not_write_and_unreadable_ones_are_reread() {
    let (_d, store) = store();
    let recs = saved(&store, &["a"]);
    // Another process's record, and a damaged one.
    let other = reopened(&store);
    other.save(&sample("foreign")).expect("save");
    std::fs::write(store.dir().join("broken.json"), b"{nope").expect("write");
    let w = store.write_index(recs.iter()).expect("index");
    assert_eq!((w.records, w.reread), (1, 2));
    let fresh = reopened(&store);
    let idx = fresh.read_index().expect("valid");
    assert_eq!(
        idx.reread,
        vec!["broken".to_string(), "foreign".to_string()]
    );
    let more = fresh.load_named(&idx.reread);
    assert_eq!(names(&more.records), vec!["foreign"]);
    assert_eq!(more.bad.len(), 1);
    // A re-read name whose file is gone is simply absent.
    let gone = fresh.load_named(&["nothing".to_string()]);
    assert!(gone.records.is_empty() && gone.bad.is_empty());
}

#[test]
fn a_record_edited_in_place_is_reread() {
    let (_d, store) = store();
    let recs = saved(&store, &["a", "b"]);
    store.write_index(recs.iter()).expect("index");
    // Edited in place (not replaced): the directory does not change.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut b = recs[1].clone();
    b.phase = Phase::Creating;
    std::fs::write(
        store.dir().join("b.json"),
        serde_json::to_vec(&b).expect("encode"),
    )
    .expect("write");
    let fresh = reopened(&store);
    let idx = fresh.read_index().expect("valid");
    assert_eq!(names(&idx.records), vec!["a"]);
    assert_eq!(idx.reread, vec!["b".to_string()]);
    assert_eq!(fresh.load_named(&idx.reread).records, vec![b]);
}
