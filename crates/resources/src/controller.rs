//! Controllers and the runtime that runs them. A controller declares its inputs (weak, strong,
//! destroy-ready; optionally one id) and outputs (exclusive or shared); it is reconciled when an
//! input changes (requests coalesce), may read only its inputs and outputs and write only its
//! outputs. A reconcile that fails or panics is retried with exponential backoff and logged,
//! without disturbing the other controllers.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::query::LabelQuery;
use crate::resource::{Phase, Pointer, Resource, Spec};
use crate::state::{Error, State, WatchKindOptions};
use crate::watch::EventKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// Notified of every change; may read.
    Weak,
    /// Like weak, and the controller may hold finalizers on these resources.
    Strong,
    /// Notified only when a resource is tearing down with no finalizers left.
    DestroyReady,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub namespace: String,
    pub ty: String,
    /// Narrow the input to one resource.
    pub id: Option<String>,
    pub kind: InputKind,
    /// What part of the input's spec the controller reads (for the machine config: JSON
    /// pointers into the v1alpha1 document); informational: every change wakes it.
    pub paths: Vec<String>,
}

impl Input {
    pub fn new(namespace: &str, ty: &str, kind: InputKind) -> Input {
        Input {
            namespace: namespace.into(),
            ty: ty.into(),
            id: None,
            kind,
            paths: Vec::new(),
        }
    }

    pub fn weak(namespace: &str, ty: &str) -> Input {
        Input::new(namespace, ty, InputKind::Weak)
    }

    pub fn strong(namespace: &str, ty: &str) -> Input {
        Input::new(namespace, ty, InputKind::Strong)
    }

    pub fn id(mut self, id: &str) -> Input {
        self.id = Some(id.into());
        self
    }

    /// Declare the parts of the spec the controller reads.
    pub fn paths(mut self, paths: &[&str]) -> Input {
        self.paths = paths.iter().map(|p| p.to_string()).collect();
        self
    }

    fn covers(&self, ns: &str, ty: &str, id: Option<&str>) -> bool {
        self.namespace == ns
            && self.ty == ty
            && match (&self.id, id) {
                (None, _) => true,
                (Some(mine), Some(id)) => mine == id,
                (Some(_), None) => false,
            }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// Only this controller writes resources of the type.
    Exclusive,
    /// Several controllers write the type, each its own resources.
    Shared,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub namespace: String,
    pub ty: String,
    pub kind: OutputKind,
}

impl Output {
    pub fn exclusive(namespace: &str, ty: &str) -> Output {
        Output {
            namespace: namespace.into(),
            ty: ty.into(),
            kind: OutputKind::Exclusive,
        }
    }

    pub fn shared(namespace: &str, ty: &str) -> Output {
        Output {
            namespace: namespace.into(),
            ty: ty.into(),
            kind: OutputKind::Shared,
        }
    }
}

pub type ControllerError = Box<dyn std::error::Error + Send + Sync>;

/// A controller: a name, declared inputs and outputs, and a reconcile step.
#[async_trait::async_trait]
pub trait Controller: Send + 'static {
    fn name(&self) -> &str;
    fn inputs(&self) -> Vec<Input>;
    fn outputs(&self) -> Vec<Output>;
    /// After a successful reconcile, destroy (or tear down, while finalizers remain) this
    /// controller's outputs that the reconcile did not write.
    fn cleanup_untouched(&self) -> bool {
        false
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError>;
}

/// What a reconcile may do: read its inputs and outputs, write its outputs.
pub struct ReconcileContext {
    state: State,
    name: Arc<str>,
    inputs: Vec<Input>,
    outputs: Vec<Output>,
    touched: HashSet<Pointer>,
    requeue: Option<Duration>,
}

impl ReconcileContext {
    /// Run this controller again after `after` even if no input changes (for work that is due
    /// at a time, such as renewing a certificate). The latest request wins.
    pub fn requeue_after(&mut self, after: Duration) {
        self.requeue = Some(after);
    }

    fn readable(&self, ns: &str, ty: &str, id: Option<&str>) -> Result<(), Error> {
        let ok = self.inputs.iter().any(|i| i.covers(ns, ty, id))
            || self.outputs.iter().any(|o| o.namespace == ns && o.ty == ty);
        if ok {
            Ok(())
        } else {
            Err(Error::Denied(format!(
                "controller {} may not read {ty} in {ns}: it is neither an input nor an output",
                self.name
            )))
        }
    }

    fn writable(&self, ns: &str, ty: &str) -> Result<(), Error> {
        if self.outputs.iter().any(|o| o.namespace == ns && o.ty == ty) {
            Ok(())
        } else {
            Err(Error::Denied(format!(
                "controller {} may not write {ty} in {ns}: it is not an output",
                self.name
            )))
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A resource, or `None` when it does not exist.
    pub fn get(&self, ptr: &Pointer) -> Result<Option<Arc<Resource>>, Error> {
        self.readable(&ptr.namespace, &ptr.ty, Some(&ptr.id))?;
        match self.state.get(ptr) {
            Ok(r) => Ok(Some(r)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn list(
        &self,
        ns: &str,
        ty: &str,
        query: &LabelQuery,
    ) -> Result<Vec<Arc<Resource>>, Error> {
        if !self.inputs.iter().any(|i| i.namespace == ns && i.ty == ty) {
            self.readable(ns, ty, None)?;
        }
        let narrowed: Vec<&String> = self
            .inputs
            .iter()
            .filter(|i| i.namespace == ns && i.ty == ty)
            .filter_map(|i| i.id.as_ref())
            .collect();
        let whole = self.outputs.iter().any(|o| o.namespace == ns && o.ty == ty)
            || self
                .inputs
                .iter()
                .any(|i| i.namespace == ns && i.ty == ty && i.id.is_none());
        Ok(self
            .state
            .list(ns, ty, query)
            .into_iter()
            .filter(|r| whole || narrowed.contains(&&r.metadata.id))
            .collect())
    }

    /// Create or update an output owned by this controller with the spec `f` returns (given
    /// the current resource, if any). An unchanged spec writes nothing.
    pub fn modify<S: Spec>(
        &mut self,
        ns: &str,
        ty: &str,
        id: &str,
        f: impl FnOnce(Option<&Resource>) -> S,
    ) -> Result<Arc<Resource>, Error> {
        self.modify_with(ns, ty, id, |cur, res| {
            res.spec = Arc::new(f(cur));
        })
    }

    /// Like [`modify`](Self::modify), with access to labels and annotations.
    pub fn modify_with(
        &mut self,
        ns: &str,
        ty: &str,
        id: &str,
        f: impl FnOnce(Option<&Resource>, &mut Resource),
    ) -> Result<Arc<Resource>, Error> {
        self.writable(ns, ty)?;
        let ptr = Pointer::new(ns, ty, id);
        self.touched.insert(ptr.clone());
        match self.state.get(&ptr) {
            Ok(cur) => {
                let mut next = (*cur).clone();
                f(Some(&cur), &mut next);
                next.metadata.owner = self.name.clone();
                let same = next.spec.spec_eq(cur.spec.as_ref())
                    && next.metadata.labels == cur.metadata.labels
                    && next.metadata.annotations == cur.metadata.annotations;
                if same && cur.metadata.owner == self.name {
                    return Ok(cur);
                }
                if cur.metadata.owner != self.name {
                    return Err(Error::OwnerConflict {
                        ptr,
                        owner: cur.metadata.owner.to_string(),
                        by: self.name.to_string(),
                    });
                }
                self.state.update(next)
            }
            Err(Error::NotFound(_)) => {
                let mut res = Resource::new(ns, ty, id, ());
                f(None, &mut res);
                res.metadata.owner = self.name.clone();
                self.state.create(res)
            }
            Err(e) => Err(e),
        }
    }

    /// Destroy an output; while finalizers remain it is torn down instead (and destroyed by a
    /// later cleanup).
    pub fn destroy(&mut self, ptr: &Pointer) -> Result<(), Error> {
        self.writable(&ptr.namespace, &ptr.ty)?;
        match self.state.destroy(ptr, &self.name) {
            Err(Error::PendingFinalizers { .. }) => {
                self.state.teardown(ptr, &self.name).map(|_| ())
            }
            other => other,
        }
    }

    pub fn teardown(&mut self, ptr: &Pointer) -> Result<Arc<Resource>, Error> {
        self.writable(&ptr.namespace, &ptr.ty)?;
        self.state.teardown(ptr, &self.name)
    }

    fn strong(&self, ptr: &Pointer) -> Result<(), Error> {
        let ok = self.inputs.iter().any(|i| {
            i.kind == InputKind::Strong && i.covers(&ptr.namespace, &ptr.ty, Some(&ptr.id))
        });
        if ok {
            Ok(())
        } else {
            Err(Error::Denied(format!(
                "controller {} may hold finalizers only on strong inputs, not {ptr}",
                self.name
            )))
        }
    }

    /// Hold a finalizer (the controller's name) on a strong input.
    pub fn add_finalizer(&self, ptr: &Pointer) -> Result<(), Error> {
        self.strong(ptr)?;
        self.state.add_finalizer(ptr, &self.name).map(|_| ())
    }

    pub fn remove_finalizer(&self, ptr: &Pointer) -> Result<(), Error> {
        self.strong(ptr)?;
        self.state.remove_finalizer(ptr, &self.name).map(|_| ())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuntimeError {
    #[error("controller \"{0}\" is already registered")]
    DuplicateName(String),
    #[error("controller \"{controller}\" cannot own {ty} exclusively: it is already an output of \"{other}\"")]
    OutputConflict {
        controller: String,
        ty: String,
        other: String,
    },
}

/// What the graph export needs to know about a controller.
#[derive(Debug, Clone)]
pub struct ControllerInfo {
    pub name: String,
    pub inputs: Vec<Input>,
    pub outputs: Vec<Output>,
}

/// Counters of one controller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ControllerStats {
    pub reconciles: u64,
    pub failures: u64,
}

/// Runs registered controllers against a state.
pub struct Runtime {
    state: State,
    controllers: Vec<Box<dyn Controller>>,
    infos: Vec<ControllerInfo>,
    backoff: (Duration, Duration),
    watch_buffer: Option<usize>,
    stats: Arc<Mutex<HashMap<String, ControllerStats>>>,
}

/// The running controllers; dropping it (or `stop`) stops them.
pub struct RuntimeHandle {
    tasks: Vec<JoinHandle<()>>,
    stats: Arc<Mutex<HashMap<String, ControllerStats>>>,
}

impl RuntimeHandle {
    pub fn stats(&self, controller: &str) -> ControllerStats {
        self.stats
            .lock()
            .expect("stats")
            .get(controller)
            .copied()
            .unwrap_or_default()
    }

    pub fn stop(self) {}
}

impl Drop for RuntimeHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Runtime {
    pub fn new(state: State) -> Runtime {
        Runtime {
            state,
            controllers: Vec::new(),
            infos: Vec::new(),
            backoff: (Duration::from_millis(100), Duration::from_secs(30)),
            watch_buffer: None,
            stats: Arc::default(),
        }
    }

    /// Retry delays after a failed reconcile: from `min`, doubling, capped at `max`.
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Runtime {
        self.backoff = (min, max);
        self
    }

    /// Queue size of the runtime's own watches (a smaller one overruns sooner; the runtime
    /// reopens it and the controller catches up).
    pub fn with_watch_buffer(mut self, events: usize) -> Runtime {
        self.watch_buffer = Some(events);
        self
    }

    /// Register a controller; a second exclusive owner of an output type is refused.
    pub fn register(&mut self, c: impl Controller) -> Result<(), RuntimeError> {
        let name = c.name().to_string();
        if self.infos.iter().any(|i| i.name == name) {
            return Err(RuntimeError::DuplicateName(name));
        }
        for out in c.outputs() {
            for other in &self.infos {
                let clash = other.outputs.iter().any(|o| {
                    o.namespace == out.namespace
                        && o.ty == out.ty
                        && (o.kind == OutputKind::Exclusive || out.kind == OutputKind::Exclusive)
                });
                if clash {
                    return Err(RuntimeError::OutputConflict {
                        controller: name,
                        ty: out.ty,
                        other: other.name.clone(),
                    });
                }
            }
        }
        self.infos.push(ControllerInfo {
            name,
            inputs: c.inputs(),
            outputs: c.outputs(),
        });
        self.controllers.push(Box::new(c));
        Ok(())
    }

    pub fn controllers(&self) -> &[ControllerInfo] {
        &self.infos
    }

    /// Start every controller on the current tokio runtime.
    pub fn start(self) -> RuntimeHandle {
        let mut tasks = Vec::new();
        for (c, info) in self.controllers.into_iter().zip(self.infos) {
            let dirty = Arc::new(Notify::new());
            let opts = WatchKindOptions {
                buffer: self.watch_buffer,
                ..Default::default()
            };
            for input in &info.inputs {
                tasks.push(spawn_input_watch(
                    &self.state,
                    &opts,
                    input.clone(),
                    dirty.clone(),
                ));
            }
            for output in &info.outputs {
                tasks.push(spawn_output_watch(
                    &self.state,
                    &opts,
                    output.clone(),
                    &info.name,
                    dirty.clone(),
                ));
            }
            tasks.push(tokio::spawn(run_controller(
                c,
                info,
                self.state.clone(),
                dirty,
                self.backoff,
                self.stats.clone(),
            )));
        }
        RuntimeHandle {
            tasks,
            stats: self.stats,
        }
    }
}

/// Keep a kind watch open for a controller: `wake` decides which events matter. A watch that
/// ends (a consumer overrun) is reopened, and the controller woken to catch up.
fn spawn_watch(
    state: &State,
    opts: &WatchKindOptions,
    ns: &str,
    ty: &str,
    dirty: Arc<Notify>,
    wake: impl Fn(&crate::watch::Event) -> bool + Send + 'static,
) -> JoinHandle<()> {
    let first = state.watch_kind(ns, ty, opts.clone());
    let (state, opts, ns, ty) = (state.clone(), opts.clone(), ns.to_string(), ty.to_string());
    tokio::spawn(async move {
        let mut watcher = first;
        loop {
            let Ok(mut w) = watcher else { return };
            while let Some(ev) = w.next().await {
                if ev.kind == EventKind::Errored || wake(&ev) {
                    dirty.notify_one();
                }
            }
            watcher = state.watch_kind(&ns, &ty, opts.clone());
            dirty.notify_one();
        }
    })
}

fn spawn_input_watch(
    state: &State,
    opts: &WatchKindOptions,
    input: Input,
    dirty: Arc<Notify>,
) -> JoinHandle<()> {
    let (ns, ty) = (input.namespace.clone(), input.ty.clone());
    spawn_watch(state, opts, &ns, &ty, dirty, move |ev| {
        ev.resource.as_ref().is_some_and(|r| {
            input.id.as_deref().is_none_or(|id| id == r.metadata.id)
                && (input.kind != InputKind::DestroyReady
                    || (r.metadata.phase == Phase::TearingDown && r.metadata.finalizers.is_empty()))
        })
    })
}

/// Wake the owner when one of its torn-down outputs has lost its last finalizer.
fn spawn_output_watch(
    state: &State,
    opts: &WatchKindOptions,
    output: Output,
    owner: &str,
    dirty: Arc<Notify>,
) -> JoinHandle<()> {
    let owner = owner.to_string();
    spawn_watch(
        state,
        opts,
        &output.namespace,
        &output.ty,
        dirty,
        move |ev| {
            ev.kind == EventKind::Updated
                && ev.resource.as_ref().is_some_and(|r| {
                    *r.metadata.owner == *owner
                        && r.metadata.phase == Phase::TearingDown
                        && r.metadata.finalizers.is_empty()
                })
        },
    )
}

async fn run_controller(
    mut c: Box<dyn Controller>,
    info: ControllerInfo,
    state: State,
    dirty: Arc<Notify>,
    (min, max): (Duration, Duration),
    stats: Arc<Mutex<HashMap<String, ControllerStats>>>,
) {
    let name: Arc<str> = info.name.as_str().into();
    let mut delay = min;
    let mut timer: Option<tokio::task::JoinHandle<()>> = None;
    dirty.notify_one();
    loop {
        dirty.notified().await;
        let mut ctx = ReconcileContext {
            state: state.clone(),
            name: name.clone(),
            inputs: info.inputs.clone(),
            outputs: info.outputs.clone(),
            touched: HashSet::new(),
            requeue: None,
        };
        let outcome = AssertUnwindSafe(c.reconcile(&mut ctx)).catch_unwind().await;
        let failure = match outcome {
            Ok(Ok(())) => {
                if c.cleanup_untouched() {
                    cleanup(&mut ctx).err().map(|e| e.to_string())
                } else {
                    None
                }
            }
            Ok(Err(e)) => Some(e.to_string()),
            Err(panic) => Some(format!("panic: {}", panic_message(&panic))),
        };
        {
            let mut s = stats.lock().expect("stats");
            let entry = s.entry(info.name.clone()).or_default();
            entry.reconciles += 1;
            if failure.is_some() {
                entry.failures += 1;
            }
        }
        if let Some(after) = ctx.requeue.take().filter(|_| failure.is_none()) {
            if let Some(t) = timer.take() {
                t.abort();
            }
            let dirty = dirty.clone();
            timer = Some(tokio::spawn(async move {
                tokio::time::sleep(after).await;
                dirty.notify_one();
            }));
        }
        match failure {
            None => delay = min,
            Some(e) => {
                tracing::error!(controller = %name, error = %e, retry_in = ?delay, "controller failed");
                // Retried after the delay, or sooner when an input changes (what failed may be
                // what was missing).
                let _ = tokio::time::timeout(delay, dirty.notified()).await;
                delay = (delay * 2).min(max);
                dirty.notify_one();
            }
        }
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown".into())
}

fn cleanup(ctx: &mut ReconcileContext) -> Result<(), Error> {
    for out in ctx.outputs.clone() {
        for r in ctx.state.list(&out.namespace, &out.ty, &LabelQuery::all()) {
            if *r.metadata.owner != *ctx.name || ctx.touched.contains(&r.pointer()) {
                continue;
            }
            match ctx.state.destroy(&r.pointer(), &ctx.name) {
                Ok(()) | Err(Error::NotFound(_)) => {}
                Err(Error::PendingFinalizers { .. }) => {
                    ctx.state.teardown(&r.pointer(), &ctx.name)?;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
