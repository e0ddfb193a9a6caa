//! The in-memory resource state: get, list, create, update (optimistic concurrency), teardown,
//! destroy, finalizers, and watches of one resource or a whole kind.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use crate::query::LabelQuery;
use crate::resource::{Phase, Pointer, Resource};
use crate::watch::{Event, EventKind, Queue, Watcher, DEFAULT_WATCH_BUFFER};

/// Errors of state operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("resource {0} doesn't exist")]
    NotFound(Pointer),
    #[error("resource {0} already exists")]
    AlreadyExists(Pointer),
    #[error(
        "resource {ptr} update conflict: expected version {expected}, current version {current}"
    )]
    Conflict {
        ptr: Pointer,
        expected: u64,
        current: u64,
    },
    #[error("resource {ptr} is owned by \"{owner}\", not \"{by}\"")]
    OwnerConflict {
        ptr: Pointer,
        owner: String,
        by: String,
    },
    #[error("resource {ptr} has pending finalizers {finalizers:?}")]
    PendingFinalizers {
        ptr: Pointer,
        finalizers: Vec<String>,
    },
    #[error("resource {0} is being torn down")]
    TearingDown(Pointer),
    #[error("bookmark {0} is no longer in the event history")]
    BookmarkExpired(u64),
    #[error("timed out waiting for {0}")]
    Timeout(Pointer),
    #[error("{0}")]
    Denied(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How many past events of a kind are kept for `tail` and bookmark resumes.
pub const HISTORY: usize = 1024;

#[derive(Default)]
struct Collection {
    /// The namespace and type, shared by every resource stored here.
    ns: Arc<str>,
    ty: Arc<str>,
    items: BTreeMap<String, Arc<Resource>>,
    /// The bookmark of the newest event no longer kept (0: none dropped yet).
    dropped_through: u64,
    kind_watchers: Vec<Arc<Queue>>,
    id_watchers: HashMap<String, Vec<Arc<Queue>>>,
    history: VecDeque<Arc<Event>>,
}

impl Collection {
    fn publish(&mut self, ev: Event) {
        let ev = Arc::new(ev);
        if self.history.len() == HISTORY {
            if let Some(old) = self.history.pop_front() {
                self.dropped_through = old.bookmark;
            }
        }
        self.history.push_back(ev.clone());
        self.kind_watchers.retain(|q| q.push(&ev));
        let id = ev
            .resource
            .as_ref()
            .map(|r| r.metadata.id.as_str())
            .unwrap_or_default();
        if let Some(ws) = self.id_watchers.get_mut(id) {
            ws.retain(|q| q.push(&ev));
            if ws.is_empty() {
                self.id_watchers.remove(id);
            }
        }
    }
}

/// Options of a kind watch.
#[derive(Debug, Clone, Default)]
pub struct WatchKindOptions {
    /// Send every existing resource first, then a `Bootstrapped` event.
    pub bootstrap: bool,
    /// Replay the last N events first.
    pub tail: Option<usize>,
    /// Resume after this bookmark (replaying the events that came after it).
    pub since: Option<u64>,
    /// Only resources whose labels match.
    pub labels: Option<LabelQuery>,
    /// Queue capacity before the watcher is overrun (default 4096).
    pub buffer: Option<usize>,
}

/// The state. Cheap to clone; all clones share the same resources.
#[derive(Clone, Default)]
pub struct State {
    inner: Arc<Inner>,
}

type TypeMap = HashMap<Arc<str>, Arc<Mutex<Collection>>>;

#[derive(Default)]
struct Inner {
    /// namespace → type → collection
    collections: RwLock<HashMap<Arc<str>, TypeMap>>,
    bookmark: AtomicU64,
}

fn now() -> SystemTime {
    SystemTime::now()
}

impl State {
    pub fn new() -> State {
        State::default()
    }

    fn collection(&self, ns: &str, ty: &str) -> Arc<Mutex<Collection>> {
        if let Some(c) = self
            .inner
            .collections
            .read()
            .expect("state")
            .get(ns)
            .and_then(|types| types.get(ty))
        {
            return c.clone();
        }
        let mut all = self.inner.collections.write().expect("state");
        let (ns_key, types) = match all.get_key_value(ns) {
            Some((k, _)) => (k.clone(), all.get_mut(ns).expect("present")),
            None => {
                let k: Arc<str> = ns.into();
                (k.clone(), all.entry(k).or_default())
            }
        };
        types
            .entry(ty.into())
            .or_insert_with_key(|ty_key| {
                Arc::new(Mutex::new(Collection {
                    ns: ns_key,
                    ty: ty_key.clone(),
                    ..Default::default()
                }))
            })
            .clone()
    }

    fn next_bookmark(&self) -> u64 {
        self.inner.bookmark.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn get(&self, ptr: &Pointer) -> Result<Arc<Resource>> {
        let c = self.collection(&ptr.namespace, &ptr.ty);
        let c = c.lock().expect("collection");
        c.items
            .get(&ptr.id)
            .cloned()
            .ok_or_else(|| Error::NotFound(ptr.clone()))
    }

    /// Resources of a kind whose labels match, ordered by id.
    pub fn list(&self, ns: &str, ty: &str, query: &LabelQuery) -> Vec<Arc<Resource>> {
        let c = self.collection(ns, ty);
        let c = c.lock().expect("collection");
        c.items
            .values()
            .filter(|r| query.matches(&r.metadata.labels))
            .cloned()
            .collect()
    }

    /// Create a resource owned by `metadata.owner`; its version becomes 1.
    pub fn create(&self, mut res: Resource) -> Result<Arc<Resource>> {
        let c = self.collection(&res.metadata.namespace, &res.metadata.ty);
        let mut c = c.lock().expect("collection");
        if c.items.contains_key(&res.metadata.id) {
            return Err(Error::AlreadyExists(res.pointer()));
        }
        let t = now();
        res.metadata.namespace = c.ns.clone();
        res.metadata.ty = c.ty.clone();
        res.metadata.version = 1;
        res.metadata.created = t;
        res.metadata.updated = t;
        res.metadata.phase = Phase::Running;
        let res = Arc::new(res);
        c.items.insert(res.metadata.id.clone(), res.clone());
        c.publish(Event {
            kind: EventKind::Created,
            resource: Some(res.clone()),
            old: None,
            error: None,
            bookmark: self.next_bookmark(),
        });
        Ok(res)
    }

    /// Replace a resource. `res.metadata.version` must be the current version (optimistic
    /// concurrency) and `res.metadata.owner` the current owner. Phase and finalizers are kept
    /// as the state has them (use teardown and the finalizer calls to change those).
    pub fn update(&self, mut res: Resource) -> Result<Arc<Resource>> {
        let c = self.collection(&res.metadata.namespace, &res.metadata.ty);
        let mut c = c.lock().expect("collection");
        let Some(cur) = c.items.get(&res.metadata.id).cloned() else {
            return Err(Error::NotFound(res.pointer()));
        };
        if cur.metadata.version != res.metadata.version {
            return Err(Error::Conflict {
                ptr: res.pointer(),
                expected: res.metadata.version,
                current: cur.metadata.version,
            });
        }
        check_owner(&cur, &res.metadata.owner)?;
        res.metadata.namespace = c.ns.clone();
        res.metadata.ty = c.ty.clone();
        res.metadata.owner = cur.metadata.owner.clone();
        res.metadata.version = cur.metadata.version + 1;
        res.metadata.created = cur.metadata.created;
        res.metadata.updated = now();
        res.metadata.phase = cur.metadata.phase;
        res.metadata.finalizers = cur.metadata.finalizers.clone();
        let res = Arc::new(res);
        c.items.insert(res.metadata.id.clone(), res.clone());
        c.publish(Event {
            kind: EventKind::Updated,
            resource: Some(res.clone()),
            old: Some(cur),
            error: None,
            bookmark: self.next_bookmark(),
        });
        Ok(res)
    }

    /// Change a resource's metadata in place (bumping its version) and publish the update.
    fn modify_meta(
        &self,
        ptr: &Pointer,
        f: impl FnOnce(&Resource, &mut Resource) -> Result<bool>,
    ) -> Result<Arc<Resource>> {
        let c = self.collection(&ptr.namespace, &ptr.ty);
        let mut c = c.lock().expect("collection");
        let Some(cur) = c.items.get(&ptr.id).cloned() else {
            return Err(Error::NotFound(ptr.clone()));
        };
        let mut next = (*cur).clone();
        if !f(&cur, &mut next)? {
            return Ok(cur);
        }
        next.metadata.version = cur.metadata.version + 1;
        next.metadata.updated = now();
        let next = Arc::new(next);
        c.items.insert(ptr.id.clone(), next.clone());
        c.publish(Event {
            kind: EventKind::Updated,
            resource: Some(next.clone()),
            old: Some(cur),
            error: None,
            bookmark: self.next_bookmark(),
        });
        Ok(next)
    }

    /// Mark a resource as tearing down (owners and finalizer holders see the phase change).
    pub fn teardown(&self, ptr: &Pointer, owner: &str) -> Result<Arc<Resource>> {
        self.modify_meta(ptr, |cur, next| {
            check_owner(cur, owner)?;
            if cur.metadata.phase == Phase::TearingDown {
                return Ok(false);
            }
            next.metadata.phase = Phase::TearingDown;
            Ok(true)
        })
    }

    pub fn add_finalizer(&self, ptr: &Pointer, finalizer: &str) -> Result<Arc<Resource>> {
        self.modify_meta(ptr, |cur, next| {
            if cur.metadata.finalizers.iter().any(|f| f == finalizer) {
                return Ok(false);
            }
            if cur.metadata.phase == Phase::TearingDown {
                return Err(Error::TearingDown(ptr.clone()));
            }
            next.metadata.finalizers.push(finalizer.into());
            Ok(true)
        })
    }

    pub fn remove_finalizer(&self, ptr: &Pointer, finalizer: &str) -> Result<Arc<Resource>> {
        self.modify_meta(ptr, |cur, next| {
            if !cur.metadata.finalizers.iter().any(|f| f == finalizer) {
                return Ok(false);
            }
            next.metadata.finalizers.retain(|f| f != finalizer);
            Ok(true)
        })
    }

    /// Remove a resource. Fails while finalizers remain.
    pub fn destroy(&self, ptr: &Pointer, owner: &str) -> Result<()> {
        let c = self.collection(&ptr.namespace, &ptr.ty);
        let mut c = c.lock().expect("collection");
        let Some(cur) = c.items.get(&ptr.id).cloned() else {
            return Err(Error::NotFound(ptr.clone()));
        };
        check_owner(&cur, owner)?;
        if !cur.metadata.finalizers.is_empty() {
            return Err(Error::PendingFinalizers {
                ptr: ptr.clone(),
                finalizers: cur.metadata.finalizers.clone(),
            });
        }
        c.items.remove(&ptr.id);
        c.publish(Event {
            kind: EventKind::Destroyed,
            resource: Some(cur),
            old: None,
            error: None,
            bookmark: self.next_bookmark(),
        });
        Ok(())
    }

    /// Tear down, wait for the finalizers to go, then destroy.
    pub async fn teardown_and_destroy(
        &self,
        ptr: &Pointer,
        owner: &str,
        timeout: Duration,
    ) -> Result<()> {
        let mut w = self.watch(ptr);
        self.teardown(ptr, owner)?;
        let wait = async {
            while let Some(ev) = w.next().await {
                match (&ev.kind, &ev.resource) {
                    (EventKind::Destroyed, _) => return Ok(false),
                    (_, Some(r)) if r.metadata.finalizers.is_empty() => return Ok(true),
                    _ => {}
                }
            }
            Ok(false)
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(true)) => self.destroy(ptr, owner),
            Ok(Ok(false)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Timeout(ptr.clone())),
        }
    }

    /// Watch one resource: its current state first (`Created`, or `Destroyed` without a
    /// resource when it does not exist), then every change.
    pub fn watch(&self, ptr: &Pointer) -> Watcher {
        let c = self.collection(&ptr.namespace, &ptr.ty);
        let mut c = c.lock().expect("collection");
        let queue = Queue::new(DEFAULT_WATCH_BUFFER, None);
        let bookmark = self.inner.bookmark.load(Ordering::Relaxed);
        match c.items.get(&ptr.id) {
            Some(r) => queue.push_initial(Arc::new(Event {
                kind: EventKind::Created,
                resource: Some(r.clone()),
                old: None,
                error: None,
                bookmark,
            })),
            None => queue.push_initial(Event::marker(EventKind::Destroyed, bookmark, None)),
        }
        c.id_watchers
            .entry(ptr.id.clone())
            .or_default()
            .push(queue.clone());
        Watcher { queue }
    }

    /// Watch every resource of a kind.
    pub fn watch_kind(&self, ns: &str, ty: &str, opts: WatchKindOptions) -> Result<Watcher> {
        let c = self.collection(ns, ty);
        let mut c = c.lock().expect("collection");
        let queue = Queue::new(
            opts.buffer.unwrap_or(DEFAULT_WATCH_BUFFER),
            opts.labels.clone(),
        );
        let bookmark = self.inner.bookmark.load(Ordering::Relaxed);
        if let Some(since) = opts.since {
            // Events after `since` were dropped from the history: they cannot be replayed.
            if since < c.dropped_through {
                return Err(Error::BookmarkExpired(since));
            }
            for ev in c.history.iter().filter(|e| e.bookmark > since) {
                queue.push_initial(ev.clone());
            }
        } else if let Some(n) = opts.tail {
            let skip = c.history.len().saturating_sub(n);
            for ev in c.history.iter().skip(skip) {
                queue.push_initial(ev.clone());
            }
        }
        if opts.bootstrap {
            for r in c.items.values() {
                queue.push_initial(Arc::new(Event {
                    kind: EventKind::Created,
                    resource: Some(r.clone()),
                    old: None,
                    error: None,
                    bookmark,
                }));
            }
            queue.push_initial(Event::marker(EventKind::Bootstrapped, bookmark, None));
        }
        c.kind_watchers.push(queue.clone());
        Ok(Watcher { queue })
    }

    /// The bookmark of the latest event.
    pub fn bookmark(&self) -> u64 {
        self.inner.bookmark.load(Ordering::Relaxed)
    }
}

fn check_owner(cur: &Resource, owner: &str) -> Result<()> {
    if &*cur.metadata.owner != owner {
        return Err(Error::OwnerConflict {
            ptr: cur.pointer(),
            owner: cur.metadata.owner.to_string(),
            by: owner.to_string(),
        });
    }
    Ok(())
}
