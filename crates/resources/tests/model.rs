//! Random sequences of operations against a simple model: versions, finalizers and the watch
//! stream must agree with it.

use std::collections::BTreeMap;

use proptest::prelude::*;
use resources::{Error, EventKind, Phase, Pointer, Resource, State, WatchKindOptions};

const NS: &str = "model";
const TY: &str = "Items.model.dev";

#[derive(Debug, Clone)]
enum Op {
    Create(u8, u32),
    Update(u8, u32),
    StaleUpdate(u8),
    AddFinalizer(u8, u8),
    RemoveFinalizer(u8, u8),
    Teardown(u8),
    Destroy(u8),
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0u8..6;
    let fin = 0u8..3;
    prop_oneof![
        (id.clone(), any::<u32>()).prop_map(|(i, v)| Op::Create(i, v)),
        (id.clone(), any::<u32>()).prop_map(|(i, v)| Op::Update(i, v)),
        id.clone().prop_map(Op::StaleUpdate),
        (id.clone(), fin.clone()).prop_map(|(i, f)| Op::AddFinalizer(i, f)),
        (id.clone(), fin).prop_map(|(i, f)| Op::RemoveFinalizer(i, f)),
        id.clone().prop_map(Op::Teardown),
        id.prop_map(Op::Destroy),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct Item {
    version: u64,
    value: u32,
    finalizers: Vec<String>,
    phase: Phase,
}

fn ptr(i: u8) -> Pointer {
    Pointer::new(NS, TY, &format!("i{i}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn state_agrees_with_model(ops in proptest::collection::vec(op(), 1..80)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let state = State::new();
        let mut watcher = state.watch_kind(NS, TY, WatchKindOptions::default()).unwrap();
        let mut model: BTreeMap<String, Item> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Create(i, v) => {
                    let mut r = Resource::new(NS, TY, &ptr(i).id, v);
                    r.metadata.owner = "o".into();
                    let res = state.create(r);
                    match model.entry(ptr(i).id) {
                        std::collections::btree_map::Entry::Occupied(_) => {
                            prop_assert!(matches!(res, Err(Error::AlreadyExists(_))));
                        }
                        std::collections::btree_map::Entry::Vacant(slot) => {
                            prop_assert_eq!(res.unwrap().metadata.version, 1);
                            slot.insert(Item { version: 1, value: v, finalizers: vec![], phase: Phase::Running });
                        }
                    }
                }
                Op::Update(i, v) => match (state.get(&ptr(i)), model.get_mut(&ptr(i).id)) {
                    (Ok(cur), Some(m)) => {
                        let next = state.update(cur.with_spec(v)).unwrap();
                        m.version += 1;
                        m.value = v;
                        prop_assert_eq!(next.metadata.version, m.version);
                    }
                    (Err(_), None) => {}
                    (a, b) => prop_assert!(false, "disagree on existence: {:?} {:?}", a.is_ok(), b),
                },
                Op::StaleUpdate(i) => {
                    if let Some(m) = model.get(&ptr(i).id) {
                        if m.version > 1 {
                            let mut stale = Resource::new(NS, TY, &ptr(i).id, 0u32);
                            stale.metadata.owner = "o".into();
                            stale.metadata.version = m.version - 1;
                            let is_conflict = matches!(state.update(stale), Err(Error::Conflict { .. }));
                            prop_assert!(is_conflict);
                        }
                    }
                }
                Op::AddFinalizer(i, f) => {
                    let f = format!("f{f}");
                    let res = state.add_finalizer(&ptr(i), &f);
                    match model.get_mut(&ptr(i).id) {
                        None => prop_assert!(res.is_err()),
                        Some(m) if m.finalizers.contains(&f) => prop_assert!(res.is_ok()),
                        Some(m) if m.phase == Phase::TearingDown => prop_assert!(res.is_err()),
                        Some(m) => {
                            prop_assert!(res.is_ok());
                            m.finalizers.push(f);
                            m.version += 1;
                        }
                    }
                }
                Op::RemoveFinalizer(i, f) => {
                    let f = format!("f{f}");
                    let res = state.remove_finalizer(&ptr(i), &f);
                    match model.get_mut(&ptr(i).id) {
                        None => prop_assert!(res.is_err()),
                        Some(m) => {
                            prop_assert!(res.is_ok());
                            if m.finalizers.contains(&f) {
                                m.finalizers.retain(|x| *x != f);
                                m.version += 1;
                            }
                        }
                    }
                }
                Op::Teardown(i) => {
                    let res = state.teardown(&ptr(i), "o");
                    match model.get_mut(&ptr(i).id) {
                        None => prop_assert!(res.is_err()),
                        Some(m) => {
                            prop_assert!(res.is_ok());
                            if m.phase == Phase::Running {
                                m.phase = Phase::TearingDown;
                                m.version += 1;
                            }
                        }
                    }
                }
                Op::Destroy(i) => {
                    let res = state.destroy(&ptr(i), "o");
                    match model.get(&ptr(i).id) {
                        None => prop_assert!(res.is_err()),
                        Some(m) if !m.finalizers.is_empty() => {
                            let pending = matches!(res, Err(Error::PendingFinalizers { .. }));
                            prop_assert!(pending);
                        }
                        Some(_) => {
                            prop_assert!(res.is_ok());
                            model.remove(&ptr(i).id);
                        }
                    }
                }
            }
        }
        // The state matches the model.
        for (id, m) in &model {
            let r = state.get(&Pointer::new(NS, TY, id)).unwrap();
            prop_assert_eq!(r.metadata.version, m.version);
            prop_assert_eq!(*r.spec::<u32>().unwrap(), m.value);
            prop_assert_eq!(&r.metadata.finalizers, &m.finalizers);
            prop_assert_eq!(r.metadata.phase, m.phase);
        }
        prop_assert_eq!(state.list(NS, TY, &resources::LabelQuery::all()).len(), model.len());
        // Replaying the watch stream rebuilds the same state.
        let mut replay: BTreeMap<String, (u64, u32)> = BTreeMap::new();
        let mut last = 0;
        rt.block_on(async {
            while let Some(ev) = watcher.try_next() {
                assert!(ev.bookmark > last, "bookmarks increase");
                last = ev.bookmark;
                let r = ev.resource.as_ref().unwrap();
                match ev.kind {
                    EventKind::Created | EventKind::Updated => {
                        if ev.kind == EventKind::Updated {
                            let old = ev.old.as_ref().unwrap();
                            assert_eq!(old.metadata.version + 1, r.metadata.version);
                            assert_eq!(replay[&r.metadata.id].0, old.metadata.version);
                        }
                        replay.insert(r.metadata.id.clone(), (r.metadata.version, *r.spec::<u32>().unwrap()));
                    }
                    EventKind::Destroyed => {
                        replay.remove(&r.metadata.id);
                    }
                    _ => panic!("unexpected {:?}", ev.kind),
                }
            }
        });
        let want: BTreeMap<String, (u64, u32)> = model.iter().map(|(k, m)| (k.clone(), (m.version, m.value))).collect();
        prop_assert_eq!(replay, want);
    }
}
