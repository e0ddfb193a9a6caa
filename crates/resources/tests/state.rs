//! The state's rules: versions, owners, optimistic concurrency, finalizers, teardown, watches.

use std::time::Duration;

use resources::{
    Error, EventKind, LabelQuery, Op, Phase, Pointer, Resource, State, WatchKindOptions, OVERRUN,
};

const NS: &str = "network";
const TY: &str = "Things.test.dev";

fn thing(id: &str, v: u32) -> Resource {
    let mut r = Resource::new(NS, TY, id, v);
    r.metadata.owner = "owner".into();
    r
}

fn ptr(id: &str) -> Pointer {
    Pointer::new(NS, TY, id)
}

#[test]
fn create_get_list_with_labels() {
    let s = State::new();
    let mut a = thing("a", 1);
    a.metadata.labels.insert("role".into(), "cp".into());
    s.create(a).unwrap();
    s.create(thing("b", 2)).unwrap();
    assert!(matches!(
        s.create(thing("a", 3)),
        Err(Error::AlreadyExists(_))
    ));
    let got = s.get(&ptr("a")).unwrap();
    assert_eq!(got.metadata.version, 1);
    assert_eq!(got.metadata.phase, Phase::Running);
    assert_eq!(*got.spec::<u32>().unwrap(), 1);
    assert!(matches!(s.get(&ptr("zz")), Err(Error::NotFound(_))));
    let all: Vec<_> = s
        .list(NS, TY, &LabelQuery::all())
        .iter()
        .map(|r| r.metadata.id.clone())
        .collect();
    assert_eq!(all, ["a", "b"]);
    let cp = s.list(
        NS,
        TY,
        &LabelQuery::all().term("role", Op::Equal("cp".into())),
    );
    assert_eq!(cp.len(), 1);
    assert!(s.list("other", TY, &LabelQuery::all()).is_empty());
}

#[test]
fn update_bumps_version_and_detects_conflicts() {
    let s = State::new();
    let v1 = s.create(thing("a", 1)).unwrap();
    let v2 = s.update(v1.with_spec(2u32)).unwrap();
    assert_eq!(v2.metadata.version, 2);
    assert_eq!(v2.metadata.created, v1.metadata.created);
    // A writer still holding version 1 loses.
    let e = s.update(v1.with_spec(3u32)).unwrap_err();
    assert_eq!(
        e,
        Error::Conflict {
            ptr: ptr("a"),
            expected: 1,
            current: 2
        }
    );
    let mut stranger = (*v2).clone();
    stranger.metadata.owner = "someone-else".into();
    assert!(matches!(
        s.update(stranger),
        Err(Error::OwnerConflict { .. })
    ));
    assert!(matches!(
        s.update(thing("nope", 1)),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn finalizers_block_destroy() {
    let s = State::new();
    s.create(thing("a", 1)).unwrap();
    s.add_finalizer(&ptr("a"), "ctrl").unwrap();
    s.add_finalizer(&ptr("a"), "ctrl").unwrap();
    assert_eq!(s.get(&ptr("a")).unwrap().metadata.finalizers, ["ctrl"]);
    assert_eq!(
        s.get(&ptr("a")).unwrap().metadata.version,
        2,
        "a repeated finalizer is a no-op"
    );
    let e = s.destroy(&ptr("a"), "owner").unwrap_err();
    assert!(matches!(e, Error::PendingFinalizers { .. }), "{e}");
    assert!(matches!(
        s.destroy(&ptr("a"), "intruder"),
        Err(Error::OwnerConflict { .. })
    ));
    let t = s.teardown(&ptr("a"), "owner").unwrap();
    assert_eq!(t.metadata.phase, Phase::TearingDown);
    assert!(matches!(
        s.add_finalizer(&ptr("a"), "late"),
        Err(Error::TearingDown(_))
    ));
    s.remove_finalizer(&ptr("a"), "ctrl").unwrap();
    s.destroy(&ptr("a"), "owner").unwrap();
    assert!(matches!(s.get(&ptr("a")), Err(Error::NotFound(_))));
}

#[tokio::test]
async fn teardown_and_destroy_waits_for_finalizers() {
    let s = State::new();
    s.create(thing("a", 1)).unwrap();
    s.add_finalizer(&ptr("a"), "ctrl").unwrap();
    let s2 = s.clone();
    let releaser = tokio::spawn(async move {
        // The holder sees the teardown and lets go.
        let mut w = s2.watch(&ptr("a"));
        while let Some(ev) = w.next().await {
            if ev
                .resource
                .as_ref()
                .is_some_and(|r| r.metadata.phase == Phase::TearingDown)
            {
                s2.remove_finalizer(&ptr("a"), "ctrl").unwrap();
                break;
            }
        }
    });
    s.teardown_and_destroy(&ptr("a"), "owner", Duration::from_secs(5))
        .await
        .unwrap();
    releaser.await.unwrap();
    assert!(s.get(&ptr("a")).is_err());
    // A finalizer nobody releases: a timeout, and the resource stays.
    s.create(thing("b", 1)).unwrap();
    s.add_finalizer(&ptr("b"), "stuck").unwrap();
    let e = s
        .teardown_and_destroy(&ptr("b"), "owner", Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout(_)));
    assert!(s.get(&ptr("b")).is_ok());
}

#[tokio::test]
async fn watch_one_resource() {
    let s = State::new();
    let mut w = s.watch(&ptr("a"));
    let first = w.next().await.unwrap();
    assert_eq!(first.kind, EventKind::Destroyed, "absent at first");
    assert!(first.resource.is_none());
    let v1 = s.create(thing("a", 1)).unwrap();
    s.create(thing("other", 1)).unwrap();
    s.update(v1.with_spec(5u32)).unwrap();
    s.destroy(&ptr("a"), "owner").unwrap();
    let kinds: Vec<_> = [w.next().await, w.next().await, w.next().await]
        .into_iter()
        .map(|e| e.unwrap())
        .collect();
    assert_eq!(kinds[0].kind, EventKind::Created);
    assert_eq!(kinds[1].kind, EventKind::Updated);
    assert_eq!(
        *kinds[1].old.as_ref().unwrap().spec::<u32>().unwrap(),
        1,
        "old value"
    );
    assert_eq!(
        *kinds[1].resource.as_ref().unwrap().spec::<u32>().unwrap(),
        5
    );
    assert_eq!(kinds[2].kind, EventKind::Destroyed);
    assert!(w.try_next().is_none(), "other resources are not seen");
}

#[tokio::test]
async fn watch_kind_bootstrap_tail_and_bookmark() {
    let s = State::new();
    s.create(thing("a", 1)).unwrap();
    let b = s.create(thing("b", 1)).unwrap();
    let mark = s.bookmark();
    s.update(b.with_spec(2u32)).unwrap();
    s.destroy(&ptr("a"), "owner").unwrap();

    let mut boot = s
        .watch_kind(
            NS,
            TY,
            WatchKindOptions {
                bootstrap: true,
                ..Default::default()
            },
        )
        .unwrap();
    let ev = boot.next().await.unwrap();
    assert_eq!(
        (ev.kind, ev.resource.as_ref().unwrap().metadata.id.as_str()),
        (EventKind::Created, "b")
    );
    assert_eq!(boot.next().await.unwrap().kind, EventKind::Bootstrapped);

    let mut tail = s
        .watch_kind(
            NS,
            TY,
            WatchKindOptions {
                tail: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(tail.next().await.unwrap().kind, EventKind::Updated);
    assert_eq!(tail.next().await.unwrap().kind, EventKind::Destroyed);

    let mut resumed = s
        .watch_kind(
            NS,
            TY,
            WatchKindOptions {
                since: Some(mark),
                ..Default::default()
            },
        )
        .unwrap();
    let ev = resumed.next().await.unwrap();
    assert_eq!(ev.kind, EventKind::Updated);
    assert!(ev.bookmark > mark);
    assert_eq!(resumed.next().await.unwrap().kind, EventKind::Destroyed);
    assert!(resumed.try_next().is_none());

    // Live events follow for all of them.
    s.create(thing("c", 1)).unwrap();
    for w in [&mut boot, &mut tail, &mut resumed] {
        assert_eq!(w.next().await.unwrap().kind, EventKind::Created);
    }
}

#[tokio::test]
async fn expired_bookmark_is_an_error() {
    let s = State::new();
    let r = s.create(thing("a", 0)).unwrap();
    let old = s.bookmark();
    let mut cur = r;
    for i in 0..(resources::HISTORY as u32 + 10) {
        cur = s.update(cur.with_spec(i)).unwrap();
    }
    let e = s
        .watch_kind(
            NS,
            TY,
            WatchKindOptions {
                since: Some(old - 1),
                ..Default::default()
            },
        )
        .err()
        .unwrap();
    assert!(matches!(e, Error::BookmarkExpired(_)), "{e}");
}

#[tokio::test]
async fn a_bookmark_from_a_quiet_kind_is_still_valid() {
    // Bookmarks are global: other kinds moving on do not expire this kind's bookmark.
    let s = State::new();
    s.create(thing("a", 1)).unwrap();
    let mark = s.bookmark();
    for i in 0..(resources::HISTORY as u32 + 5) {
        let mut r = Resource::new(NS, "Other.test.dev", &format!("o{i}"), i);
        r.metadata.owner = "o".into();
        s.create(r).unwrap();
    }
    s.create(thing("b", 1)).unwrap();
    let mut w = s
        .watch_kind(
            NS,
            TY,
            WatchKindOptions {
                since: Some(mark),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        w.next()
            .await
            .unwrap()
            .resource
            .as_ref()
            .unwrap()
            .metadata
            .id,
        "b"
    );
}

#[tokio::test]
async fn label_filtered_kind_watch() {
    let s = State::new();
    let q = LabelQuery::all().term("role", Op::Equal("cp".into()));
    let mut w = s
        .watch_kind(
            NS,
            TY,
            WatchKindOptions {
                labels: Some(q),
                ..Default::default()
            },
        )
        .unwrap();
    s.create(thing("plain", 1)).unwrap();
    let mut cp = thing("cp", 1);
    cp.metadata.labels.insert("role".into(), "cp".into());
    s.create(cp).unwrap();
    let ev = w.next().await.unwrap();
    assert_eq!(ev.resource.as_ref().unwrap().metadata.id, "cp");
    assert!(w.try_next().is_none());
}

#[tokio::test]
async fn slow_watcher_is_overrun_not_unbounded() {
    let s = State::new();
    let mut w = s
        .watch_kind(
            NS,
            TY,
            WatchKindOptions {
                buffer: Some(8),
                ..Default::default()
            },
        )
        .unwrap();
    let mut r = s.create(thing("a", 0)).unwrap();
    for i in 1..100u32 {
        r = s.update(r.with_spec(i)).unwrap();
    }
    assert!(w.pending() <= 8);
    let ev = w.next().await.unwrap();
    assert_eq!(ev.kind, EventKind::Errored);
    assert_eq!(ev.error.as_deref(), Some(OVERRUN));
    assert!(w.next().await.is_none(), "the watch ends after an overrun");
    // The state goes on.
    s.update(r.with_spec(1000u32)).unwrap();
}
