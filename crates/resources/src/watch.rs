//! Watch events and bounded per-watcher queues. A watcher that falls behind gets one `Errored`
//! ("buffer overrun") event and is closed: memory stays bounded whatever the consumer does.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::query::LabelQuery;
use crate::resource::Resource;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Updated,
    Destroyed,
    /// All existing resources have been sent (kind watches with bootstrap contents).
    Bootstrapped,
    Errored,
}

/// One change. `bookmark` orders events of a kind; a watch can resume after it.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    pub resource: Option<Arc<Resource>>,
    /// The previous value, on updates.
    pub old: Option<Arc<Resource>>,
    pub error: Option<String>,
    pub bookmark: u64,
}

impl Event {
    pub(crate) fn marker(kind: EventKind, bookmark: u64, error: Option<String>) -> Arc<Event> {
        Arc::new(Event {
            kind,
            resource: None,
            old: None,
            error,
            bookmark,
        })
    }

    fn labels_match(&self, q: &LabelQuery) -> bool {
        let hit =
            |r: &Option<Arc<Resource>>| r.as_ref().is_some_and(|r| q.matches(&r.metadata.labels));
        self.resource.is_none() || hit(&self.resource) || hit(&self.old)
    }
}

pub const DEFAULT_WATCH_BUFFER: usize = 4096;
pub const OVERRUN: &str = "buffer overrun";

struct QueueState {
    events: VecDeque<Arc<Event>>,
    closed: bool,
}

pub(crate) struct Queue {
    state: Mutex<QueueState>,
    notify: Notify,
    capacity: usize,
    filter: Option<LabelQuery>,
}

impl Queue {
    pub(crate) fn new(capacity: usize, filter: Option<LabelQuery>) -> Arc<Queue> {
        Arc::new(Queue {
            state: Mutex::new(QueueState {
                events: VecDeque::new(),
                closed: false,
            }),
            notify: Notify::new(),
            capacity: capacity.max(1),
            filter,
        })
    }

    /// Deliver an event; false when the watcher is gone (closed, dropped or overrun).
    pub(crate) fn push(&self, ev: &Arc<Event>) -> bool {
        if let Some(q) = &self.filter {
            if !ev.labels_match(q) {
                return true;
            }
        }
        let mut s = self.state.lock().expect("watch queue");
        if s.closed {
            return false;
        }
        if s.events.len() >= self.capacity {
            s.events.clear();
            s.events.push_back(Event::marker(
                EventKind::Errored,
                ev.bookmark,
                Some(OVERRUN.into()),
            ));
            s.closed = true;
            drop(s);
            self.notify.notify_one();
            return false;
        }
        s.events.push_back(ev.clone());
        drop(s);
        self.notify.notify_one();
        true
    }

    /// Deliver without a capacity check (the initial contents of a watch).
    pub(crate) fn push_initial(&self, ev: Arc<Event>) {
        let keep = self.filter.as_ref().is_none_or(|q| ev.labels_match(q));
        if keep {
            self.state.lock().expect("watch queue").events.push_back(ev);
        }
    }

    fn close(&self) {
        self.state.lock().expect("watch queue").closed = true;
        self.notify.notify_one();
    }
}

/// The receiving end of a watch. Dropping it ends the watch.
pub struct Watcher {
    pub(crate) queue: Arc<Queue>,
}

impl Watcher {
    /// The next event; `None` once the watch has ended (after an overrun, its `Errored` event
    /// comes first).
    pub async fn next(&mut self) -> Option<Arc<Event>> {
        loop {
            {
                let mut s = self.queue.state.lock().expect("watch queue");
                if let Some(ev) = s.events.pop_front() {
                    return Some(ev);
                }
                if s.closed {
                    return None;
                }
            }
            self.queue.notify.notified().await;
        }
    }

    /// An event if one is waiting.
    pub fn try_next(&mut self) -> Option<Arc<Event>> {
        self.queue
            .state
            .lock()
            .expect("watch queue")
            .events
            .pop_front()
    }

    /// Events waiting to be read.
    pub fn pending(&self) -> usize {
        self.queue.state.lock().expect("watch queue").events.len()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.queue.close();
    }
}
