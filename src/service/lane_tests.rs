//! Tests of the lane: deadlines, stuck work, free workers.

use super::*;

fn limits(workers: usize, ms: u64) -> Limits {
    Limits {
        workers,
        create_timeout: Duration::from_millis(ms),
        mount_timeout: Duration::from_millis(ms),
        timeout: Duration::from_millis(ms),
        sample_every: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn work_past_its_deadline_is_stuck_and_reconciled_later() {
    let lane = Lane::new("s", limits(2, 1000));
    let gate = Arc::new(std::sync::Barrier::new(2));
    let g2 = gate.clone();
    let mut held = Held::default();
    let err = lane
        .run(Op::Mount, &"v1", &mut held, move |t| {
            step::enter("mount /dev/loop9");
            g2.wait();
            t.commit(&"v1")
        })
        .await
        .expect_err("stuck");
    assert!(matches!(err, ServiceError::Stuck { .. }), "{err}");
    assert!(err.to_string().contains("mount /dev/loop9"), "{err}");
    assert_eq!(lane.stuck().len(), 1);
    // A second worker is still free for other work.
    let v = lane
        .run(Op::Catalog, &"v2", &mut Held::default(), |_| Ok(7))
        .await;
    assert_eq!(v.ok(), Some(7));
    gate.wait();
    tokio::time::timeout(Duration::from_secs(5), lane.late_ready.notified())
        .await
        .expect("late");
    assert_eq!(lane.take_late(), vec!["v1".to_string()]);
    assert!(lane.stuck().is_empty());
}

#[tokio::test]
async fn no_free_worker_is_a_clear_error() {
    let lane = Lane::new("s", limits(1, 1000));
    let gate = Arc::new(std::sync::Barrier::new(2));
    let g2 = gate.clone();
    let _ = lane
        .run(Op::Remove, &"v1", &mut Held::default(), move |_| {
            g2.wait();
            Ok(())
        })
        .await;
    let err = lane
        .run(Op::Remove, &"v2", &mut Held::default(), |_| Ok(()))
        .await
        .expect_err("busy");
    assert!(err.to_string().contains("storage workers"), "{err}");
    assert!(err.to_string().contains("STUCK remove of v1"), "{err}");
    gate.wait();
}

#[test]
fn a_commit_after_the_deadline_is_refused() {
    let t = Ticket::new();
    assert!(t.abandon());
    assert!(t.commit(&"v").is_err());
    let t = Ticket::new();
    assert!(t.commit(&"v").is_ok());
    assert!(!t.abandon());
}

#[tokio::test]
async fn run_if_free_does_not_wait_for_a_worker() {
    let lane = Lane::new("s", limits(1, 1000));
    let gate = Arc::new(std::sync::Barrier::new(2));
    let g2 = gate.clone();
    let _ = lane
        .run(Op::Unmount, &"v1", &mut Held::default(), move |_| {
            g2.wait();
            Ok(())
        })
        .await;
    let t = Instant::now();
    let r = lane
        .run_if_free(Op::Catalog, &"c", &mut Held::default(), |_| Ok(1))
        .await;
    assert!(r.is_none());
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    gate.wait();
    tokio::time::timeout(Duration::from_secs(5), lane.late_ready.notified())
        .await
        .expect("late");
    let r = lane
        .run_if_free(Op::Catalog, &"c", &mut Held::default(), |_| Ok(1))
        .await;
    assert_eq!(r.and_then(|r| r.ok()), Some(1));
}
