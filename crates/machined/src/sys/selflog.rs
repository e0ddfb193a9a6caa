//! machined's own log: what it prints on stderr is also kept (the last 256 KiB) and followed,
//! so `talosctl logs machined` serves it like any service's (machined is listed as a service,
//! as upstream lists it).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::broadcast;

const KEPT: usize = 256 * 1024;

struct SelfLog {
    kept: Mutex<VecDeque<u8>>,
    follow: broadcast::Sender<Arc<[u8]>>,
}

fn log() -> &'static SelfLog {
    static L: OnceLock<SelfLog> = OnceLock::new();
    L.get_or_init(|| SelfLog {
        kept: Mutex::default(),
        follow: broadcast::channel(256).0,
    })
}

/// Keep `bytes` (already written to stderr) and pass them to followers.
pub fn keep(bytes: &[u8]) {
    let l = log();
    let mut kept = l.kept.lock().expect("self log");
    kept.extend(bytes);
    let excess = kept.len().saturating_sub(KEPT);
    kept.drain(..excess);
    let _ = l.follow.send(Arc::from(bytes));
}

/// What is kept, and a receiver of what comes next.
pub fn read() -> (Vec<u8>, broadcast::Receiver<Arc<[u8]>>) {
    let l = log();
    let kept = l.kept.lock().expect("self log");
    (kept.iter().copied().collect(), l.follow.subscribe())
}

/// A line on stderr (the console) and in the log, in one write: other threads' lines must not
/// land inside it. A closed stderr is not a reason to stop.
pub fn line(msg: &str) {
    use std::io::Write;
    let _ = Stderr.write_all(format!("{msg}\n").as_bytes());
}

/// stderr, with every write kept as well (the writer of machined's tracing output).
pub struct Stderr;

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        keep(buf);
        // A closed stderr is not a reason to lose the log.
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_and_followed() {
        let (_, mut rx) = read();
        keep(b"one\n");
        let (kept, _) = read();
        assert!(kept.ends_with(b"one\n"));
        assert_eq!(&*rx.try_recv().unwrap(), b"one\n");
        keep(&vec![b'x'; KEPT + 10]);
        assert_eq!(read().0.len(), KEPT);
    }
}
