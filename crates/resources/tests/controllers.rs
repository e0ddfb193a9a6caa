//! The controller runtime: registration rules, access enforcement, coalescing, restarts with
//! backoff, cleanup of untouched outputs, finalizers on strong inputs, and the DOT graph.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use resources::{
    dependency_dot, Controller, ControllerError, Input, LabelQuery, Output, Pointer,
    ReconcileContext, Resource, Runtime, RuntimeError, State,
};

const NS: &str = "test";

/// Copies every input resource to the output type with its value plus one.
struct Plus1 {
    name: String,
    from: String,
    to: String,
    calls: Arc<AtomicU32>,
    fail_first: u32,
    panic_first: u32,
    delay: Duration,
}

impl Plus1 {
    fn new(name: &str, from: &str, to: &str) -> Plus1 {
        Plus1 {
            name: name.into(),
            from: from.into(),
            to: to.into(),
            calls: Arc::default(),
            fail_first: 0,
            panic_first: 0,
            delay: Duration::ZERO,
        }
    }
}

#[async_trait::async_trait]
impl Controller for Plus1 {
    fn name(&self) -> &str {
        &self.name
    }

    fn inputs(&self) -> Vec<Input> {
        vec![Input::weak(NS, &self.from)]
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive(NS, &self.to)]
    }

    fn cleanup_untouched(&self) -> bool {
        true
    }

    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n < self.panic_first {
            panic!("boom {n}");
        }
        if n < self.fail_first {
            return Err(format!("not yet ({n})").into());
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        for r in ctx.list(NS, &self.from, &LabelQuery::all())? {
            let v = *r.spec::<u64>().unwrap();
            ctx.modify(NS, &self.to, &r.metadata.id, |_| v + 1)?;
        }
        Ok(())
    }
}

fn input(state: &State, id: &str, v: u64) {
    let p = Pointer::new(NS, "In", id);
    match state.get(&p) {
        Ok(cur) => {
            state.update(cur.with_spec(v)).unwrap();
        }
        Err(_) => {
            let mut r = Resource::new(NS, "In", id, v);
            r.metadata.owner = "user".into();
            state.create(r).unwrap();
        }
    }
}

fn values(state: &State, ty: &str) -> Vec<(String, u64)> {
    state
        .list(NS, ty, &LabelQuery::all())
        .iter()
        .map(|r| (r.metadata.id.clone(), *r.spec::<u64>().unwrap()))
        .collect()
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn registration_rejects_a_second_exclusive_owner() {
    let mut rt = Runtime::new(State::new());
    rt.register(Plus1::new("a", "In", "Out")).unwrap();
    let e = rt.register(Plus1::new("b", "In", "Out")).unwrap_err();
    assert_eq!(
        e,
        RuntimeError::OutputConflict {
            controller: "b".into(),
            ty: "Out".into(),
            other: "a".into()
        }
    );
    assert_eq!(
        rt.register(Plus1::new("a", "In", "Other")).unwrap_err(),
        RuntimeError::DuplicateName("a".into())
    );
}

struct SharedWriter(&'static str);

#[async_trait::async_trait]
impl Controller for SharedWriter {
    fn name(&self) -> &str {
        self.0
    }
    fn inputs(&self) -> Vec<Input> {
        vec![]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::shared(NS, "Shared")]
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        ctx.modify(NS, "Shared", self.0, |_| 1u64)?;
        Ok(())
    }
}

#[tokio::test]
async fn shared_outputs_have_one_owner_per_resource() {
    let state = State::new();
    let mut rt = Runtime::new(state.clone());
    rt.register(SharedWriter("w1")).unwrap();
    rt.register(SharedWriter("w2")).unwrap();
    assert!(matches!(
        rt.register(Plus1::new("x", "In", "Shared")),
        Err(RuntimeError::OutputConflict { .. })
    ));
    let _h = rt.start();
    eventually("both shared outputs", || {
        state.list(NS, "Shared", &LabelQuery::all()).len() == 2
    })
    .await;
    let owners: Vec<String> = state
        .list(NS, "Shared", &LabelQuery::all())
        .iter()
        .map(|r| r.metadata.owner.to_string())
        .collect();
    assert_eq!(owners, ["w1", "w2"]);
}

/// Tries to read and write what it did not declare.
struct Trespasser(Arc<std::sync::Mutex<Vec<String>>>);

#[async_trait::async_trait]
impl Controller for Trespasser {
    fn name(&self) -> &str {
        "trespasser"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![Input::weak(NS, "In").id("only-this")]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive(NS, "Mine")]
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let mut errs = self.0.lock().unwrap();
        errs.clear();
        if let Err(e) = ctx.get(&Pointer::new(NS, "Secret", "x")) {
            errs.push(e.to_string());
        }
        if let Err(e) = ctx.get(&Pointer::new(NS, "In", "not-this")) {
            errs.push(e.to_string());
        }
        if let Err(e) = ctx.modify(NS, "In", "x", |_| 1u64) {
            errs.push(e.to_string());
        }
        if let Err(e) = ctx.add_finalizer(&Pointer::new(NS, "In", "only-this")) {
            errs.push(e.to_string());
        }
        let visible = ctx.list(NS, "In", &LabelQuery::all())?;
        errs.push(format!("visible {}", visible.len()));
        ctx.modify(NS, "Mine", "ok", |_| 1u64)?;
        Ok(())
    }
}

#[tokio::test]
async fn access_is_limited_to_declared_inputs_and_outputs() {
    let state = State::new();
    input(&state, "only-this", 1);
    input(&state, "not-this", 1);
    let errs = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut rt = Runtime::new(state.clone());
    rt.register(Trespasser(errs.clone())).unwrap();
    let _h = rt.start();
    eventually("the reconcile", || {
        state.get(&Pointer::new(NS, "Mine", "ok")).is_ok()
    })
    .await;
    let errs = errs.lock().unwrap().clone();
    assert_eq!(errs.len(), 5, "{errs:?}");
    assert!(errs[0].contains("may not read Secret"), "{errs:?}");
    assert!(errs[1].contains("may not read In"), "{errs:?}");
    assert!(errs[2].contains("may not write In"), "{errs:?}");
    assert!(errs[3].contains("only on strong inputs"), "{errs:?}");
    assert_eq!(errs[4], "visible 1", "a narrowed input lists only its id");
}

#[tokio::test]
async fn failures_and_panics_restart_with_backoff_without_stopping_others() {
    let state = State::new();
    input(&state, "a", 1);
    let mut rt = Runtime::new(state.clone())
        .with_backoff(Duration::from_millis(5), Duration::from_millis(40));
    let mut failing = Plus1::new("failing", "In", "Out1");
    failing.fail_first = 3;
    let mut panicking = Plus1::new("panicking", "In", "Out2");
    panicking.panic_first = 2;
    rt.register(failing).unwrap();
    rt.register(panicking).unwrap();
    rt.register(Plus1::new("healthy", "In", "Out3")).unwrap();
    let h = rt.start();
    eventually("all outputs", || {
        ["Out1", "Out2", "Out3"]
            .iter()
            .all(|t| values(&state, t) == [("a".to_string(), 2)])
    })
    .await;
    assert_eq!(h.stats("failing").failures, 3);
    assert_eq!(h.stats("panicking").failures, 2);
    assert_eq!(h.stats("healthy").failures, 0);
}

#[tokio::test]
async fn reconcile_requests_coalesce() {
    let state = State::new();
    let mut rt = Runtime::new(state.clone());
    let mut slow = Plus1::new("slow", "In", "Out");
    slow.delay = Duration::from_millis(20);
    let calls = slow.calls.clone();
    rt.register(slow).unwrap();
    let _h = rt.start();
    for v in 0..200 {
        input(&state, "a", v);
    }
    eventually("the last value", || {
        values(&state, "Out") == [("a".to_string(), 200)]
    })
    .await;
    let n = calls.load(Ordering::SeqCst);
    assert!(n < 20, "200 changes coalesced into {n} reconciles");
}

#[tokio::test]
async fn an_overrun_runtime_watch_is_reopened() {
    let state = State::new();
    let mut rt = Runtime::new(state.clone()).with_watch_buffer(2);
    let mut slow = Plus1::new("slow", "In", "Out");
    slow.delay = Duration::from_millis(10);
    rt.register(slow).unwrap();
    let _h = rt.start();
    for v in 0..100 {
        input(&state, "a", v);
        if v % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
    eventually("the last value", || {
        values(&state, "Out") == [("a".to_string(), 100)]
    })
    .await;
    input(&state, "a", 500);
    eventually("a change after the overrun", || {
        values(&state, "Out") == [("a".to_string(), 501)]
    })
    .await;
}

#[tokio::test]
async fn untouched_outputs_are_cleaned_up() {
    let state = State::new();
    input(&state, "a", 1);
    input(&state, "b", 1);
    let mut rt = Runtime::new(state.clone());
    rt.register(Plus1::new("copy", "In", "Out")).unwrap();
    let _h = rt.start();
    eventually("two outputs", || values(&state, "Out").len() == 2).await;
    // An output that someone holds a finalizer on is torn down first, destroyed once released.
    state
        .add_finalizer(&Pointer::new(NS, "Out", "b"), "holder")
        .unwrap();
    state.destroy(&Pointer::new(NS, "In", "a"), "user").unwrap();
    state.destroy(&Pointer::new(NS, "In", "b"), "user").unwrap();
    eventually("a destroyed", || values(&state, "Out").len() == 1).await;
    eventually("b torn down", || {
        state
            .get(&Pointer::new(NS, "Out", "b"))
            .is_ok_and(|r| r.metadata.phase == resources::Phase::TearingDown)
    })
    .await;
    state
        .remove_finalizer(&Pointer::new(NS, "Out", "b"), "holder")
        .unwrap();
    eventually("b destroyed", || values(&state, "Out").is_empty()).await;
}

/// Holds a finalizer on every strong input it has seen, releasing it when the input is torn down.
struct Holder;

#[async_trait::async_trait]
impl Controller for Holder {
    fn name(&self) -> &str {
        "holder"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![Input::strong(NS, "In")]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![]
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        for r in ctx.list(NS, "In", &LabelQuery::all())? {
            if r.metadata.phase == resources::Phase::TearingDown {
                ctx.remove_finalizer(&r.pointer())?;
            } else {
                ctx.add_finalizer(&r.pointer())?;
            }
        }
        Ok(())
    }
}

#[tokio::test]
async fn strong_inputs_hold_teardown_until_released() {
    let state = State::new();
    input(&state, "a", 1);
    let mut rt = Runtime::new(state.clone());
    rt.register(Holder).unwrap();
    let _h = rt.start();
    let p = Pointer::new(NS, "In", "a");
    eventually("finalizer", || {
        state
            .get(&p)
            .is_ok_and(|r| r.metadata.finalizers == ["holder"])
    })
    .await;
    state
        .teardown_and_destroy(&p, "user", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(state.get(&p).is_err());
}

#[test]
fn dependency_graph_in_dot() {
    let state = State::new();
    let mut rt = Runtime::new(state.clone());
    rt.register(Plus1::new("first", "In", "Mid")).unwrap();
    rt.register(Plus1::new("second", "Mid", "Out")).unwrap();
    rt.register(Holder).unwrap();
    let dot = dependency_dot(rt.controllers(), None);
    assert!(dot.starts_with("digraph {"), "{dot}");
    assert!(dot.contains("c0[label=\"first\", shape=box];"), "{dot}");
    assert!(dot.contains("[label=\"Mid\", shape=ellipse];"), "{dot}");
    assert!(dot.contains("-> c1[style=dashed];"), "weak input: {dot}");
    assert!(
        dot.contains("c0 -> t1[style=bold];"),
        "exclusive output: {dot}"
    );
    assert!(dot.contains("-> c2[style=solid];"), "strong input: {dot}");
    let mut r = Resource::new(NS, "Mid", "x", 1u64);
    r.metadata.owner = "first".into();
    state.create(r).unwrap();
    let with = dependency_dot(rt.controllers(), Some(&state));
    assert!(with.contains("label=\"Mid/x\", shape=note"), "{with}");
    assert!(with.contains("c0 -> r0;"), "{with}");
}

/// Counts its reconciles; its input is destroy-ready only.
struct Reaper(Arc<AtomicU32>);

#[async_trait::async_trait]
impl Controller for Reaper {
    fn name(&self) -> &str {
        "reaper"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![Input::new(NS, "In", resources::InputKind::DestroyReady)]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![]
    }
    async fn reconcile(&mut self, _ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn destroy_ready_inputs_wake_only_when_ready_to_destroy() {
    let state = State::new();
    let calls = Arc::new(AtomicU32::new(0));
    let mut rt = Runtime::new(state.clone());
    rt.register(Reaper(calls.clone())).unwrap();
    let _h = rt.start();
    eventually("the first reconcile", || calls.load(Ordering::SeqCst) == 1).await;
    input(&state, "a", 1);
    input(&state, "a", 2);
    let p = Pointer::new(NS, "In", "a");
    state.add_finalizer(&p, "someone").unwrap();
    state.teardown(&p, "user").unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "changes and a teardown with finalizers do not wake it"
    );
    state.remove_finalizer(&p, "someone").unwrap();
    eventually("woken when ready", || calls.load(Ordering::SeqCst) == 2).await;
}

/// Asks to run again after a while, with no input change.
struct Ticker(Arc<AtomicU32>);

#[async_trait::async_trait]
impl Controller for Ticker {
    fn name(&self) -> &str {
        "Ticker"
    }
    fn inputs(&self) -> Vec<Input> {
        Vec::new()
    }
    fn outputs(&self) -> Vec<Output> {
        Vec::new()
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        ctx.requeue_after(Duration::from_millis(20));
        Ok(())
    }
}

#[tokio::test]
async fn requeue_after_runs_a_controller_again_without_input_changes() {
    let calls = Arc::new(AtomicU32::new(0));
    let mut rt = Runtime::new(State::new());
    rt.register(Ticker(calls.clone())).unwrap();
    let _h = rt.start();
    eventually("three reconciles", || calls.load(Ordering::SeqCst) >= 3).await;
}
