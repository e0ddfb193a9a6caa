//! The node's event stream (`talosctl events`): service state changes and other node events,
//! kept for replay (the last 1000) and delivered live to every subscriber.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

const KEPT: usize = 1000;
pub const SERVICE_STATE_EVENT: &str = "talos/runtime/machine.ServiceStateEvent";

#[derive(Debug)]
pub struct NodeEvent {
    pub id: u64,
    pub ts: SystemTime,
    pub type_url: String,
    pub data: Vec<u8>,
}

#[derive(Clone)]
pub struct Events {
    kept: Arc<Mutex<VecDeque<Arc<NodeEvent>>>>,
    tx: broadcast::Sender<Arc<NodeEvent>>,
    next: Arc<AtomicU64>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            kept: Arc::default(),
            tx: broadcast::channel(1024).0,
            next: Arc::new(AtomicU64::new(1)),
        }
    }
}

/// Which past events a subscriber wants first.
#[derive(Debug, Clone, Default)]
pub struct Tail {
    pub events: usize,
    pub after_id: Option<u64>,
    pub seconds: Option<Duration>,
}

impl Events {
    pub fn publish(&self, type_url: &str, data: Vec<u8>) {
        let mut kept = self.kept.lock().expect("events");
        let ev = Arc::new(NodeEvent {
            id: self.next.fetch_add(1, Ordering::SeqCst),
            ts: SystemTime::now(),
            type_url: type_url.into(),
            data,
        });
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back(ev.clone());
        let _ = self.tx.send(ev);
    }

    /// The past events asked for, and a receiver of what comes next (taken together, so
    /// nothing is missed or repeated).
    pub fn subscribe(
        &self,
        tail: &Tail,
    ) -> (Vec<Arc<NodeEvent>>, broadcast::Receiver<Arc<NodeEvent>>) {
        let kept = self.kept.lock().expect("events");
        let rx = self.tx.subscribe();
        let now = SystemTime::now();
        let mut past: Vec<Arc<NodeEvent>> = kept
            .iter()
            .filter(|e| match (tail.after_id, tail.seconds) {
                (Some(id), _) => e.id > id,
                (None, Some(s)) => now.duration_since(e.ts).is_ok_and(|age| age <= s),
                (None, None) => true,
            })
            .cloned()
            .collect();
        if tail.after_id.is_none() && tail.seconds.is_none() {
            let skip = past.len().saturating_sub(tail.events);
            past.drain(..skip);
        }
        (past, rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails() {
        let e = Events::default();
        for i in 0..5u8 {
            e.publish("t", vec![i]);
        }
        let ids = |t: &Tail| e.subscribe(t).0.iter().map(|x| x.id).collect::<Vec<_>>();
        assert_eq!(ids(&Tail::default()), Vec::<u64>::new());
        assert_eq!(
            ids(&Tail {
                events: 2,
                ..Default::default()
            }),
            [4, 5]
        );
        assert_eq!(
            ids(&Tail {
                after_id: Some(3),
                ..Default::default()
            }),
            [4, 5]
        );
        assert_eq!(
            ids(&Tail {
                seconds: Some(Duration::from_secs(60)),
                ..Default::default()
            })
            .len(),
            5
        );
    }
}
