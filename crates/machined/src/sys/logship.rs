//! Log shipping: every service's output and machined's own log, as `json_lines` records, to the
//! destinations of `machine.logging.destinations` (`tcp://host:port/`, `udp://host:port/`).
//!
//! Each destination has a bounded queue: when it is full the oldest record is dropped and
//! counted, so a destination that is down never blocks or bloats the node; its sender
//! reconnects with backoff and resumes. `LogDestinationStatuses` (runtime namespace) show the
//! counters. Destinations change with the config, without a reboot.

use types::runtime::LogDestinationStatusSpec;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

/// Records a destination may hold while it cannot take them.
pub const QUEUE: usize = 10_000;

struct Destination {
    queue: VecDeque<Arc<[u8]>>,
    extra: serde_json::Map<String, serde_json::Value>,
    sent: u64,
    dropped: u64,
    connected: bool,
    wake: Arc<Notify>,
    stop: Arc<AtomicBool>,
}

#[derive(Default)]
struct Inner {
    destinations: BTreeMap<String, Destination>,
    /// Unfinished last lines of each service's output.
    partial: HashMap<String, Vec<u8>>,
}

/// The node's log shipper (one per machined process).
#[derive(Clone, Default)]
pub struct Shipper {
    inner: Arc<Mutex<Inner>>,
}

/// The tracing layer (installed before anything else runs) and the services' output share
/// this one shipper for the life of the process.
static GLOBAL: std::sync::OnceLock<Shipper> = std::sync::OnceLock::new();

/// The process's shipper.
pub fn shipper() -> &'static Shipper {
    GLOBAL.get_or_init(Shipper::default)
}

/// A shipper of the kernel's log (its destinations: KmsgLogConfig, `talos.logging.kernel=`),
/// reading `/dev/kmsg` from now on.
pub fn kernel_shipper() -> Shipper {
    let s = Shipper::default();
    let reader = s.clone();
    std::thread::spawn(move || read_kmsg(&reader));
    s
}

const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "", "", "", "", "local0", "local1", "local2", "local3", "local4", "local5", "local6",
    "local7",
];
const PRIORITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// A `/dev/kmsg` record (`prio,seq,usec,flags;message`) as the fields shipped for it;
/// `boot`: when the kernel started (to turn its clock into wall time).
pub fn kmsg_fields(
    record: &str,
    boot: std::time::SystemTime,
) -> Option<Vec<(&'static str, serde_json::Value)>> {
    let (meta, rest) = record.split_once(';')?;
    let mut meta = meta.split(',');
    let prio: usize = meta.next()?.parse().ok()?;
    let seq: u64 = meta.next()?.parse().ok()?;
    let usec: u64 = meta.next()?.parse().ok()?;
    let msg = rest.lines().next().unwrap_or_default();
    let priority = PRIORITIES[prio & 7];
    Some(vec![
        ("clock", rfc3339(boot + Duration::from_micros(usec)).into()),
        (
            "facility",
            FACILITIES.get(prio >> 3).copied().unwrap_or("").into(),
        ),
        ("msg", msg.into()),
        ("priority", priority.into()),
        ("seq", seq.into()),
        ("talos-level", priority.into()),
        ("talos-time", now_rfc3339().into()),
    ])
}

fn read_kmsg(shipper: &Shipper) {
    use std::io::Read;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| u.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let boot = std::time::SystemTime::now() - Duration::from_secs_f64(uptime);
    let mut f = match std::fs::File::open("/dev/kmsg") {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the kernel log: none shipped");
            return;
        }
    };
    let mut buf = vec![0u8; 8192];
    loop {
        match f.read(&mut buf) {
            Ok(n) if n > 0 => {
                if let Some(fields) = kmsg_fields(&String::from_utf8_lossy(&buf[..n]), boot) {
                    shipper.fields(&fields);
                }
            }
            // EPIPE: records overwritten before they were read; go on with the next.
            Err(e) if e.raw_os_error() == Some(32) => continue,
            _ => return,
        }
    }
}

fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

impl Shipper {
    /// One log record of `service`.
    pub fn record(&self, service: &str, level: &str, msg: &str) {
        self.fields(&[
            ("msg", msg.into()),
            ("talos-level", level.into()),
            ("talos-service", service.into()),
            ("talos-time", now_rfc3339().into()),
        ]);
    }

    /// One record of these fields, then each destination's extra tags.
    pub fn fields(&self, fields: &[(&str, serde_json::Value)]) {
        let mut inner = self.inner.lock().expect("shipper");
        if inner.destinations.is_empty() {
            return;
        }
        let mut base = Vec::with_capacity(160);
        for (i, (k, v)) in fields.iter().enumerate() {
            base.push(if i == 0 { b'{' } else { b',' });
            let _ = serde_json::to_writer(&mut base, k);
            base.push(b':');
            let _ = serde_json::to_writer(&mut base, v);
        }
        for d in inner.destinations.values_mut() {
            let mut line = base.clone();
            for (k, v) in &d.extra {
                line.push(b',');
                let _ = serde_json::to_writer(&mut line, k);
                line.push(b':');
                let _ = serde_json::to_writer(&mut line, v);
            }
            line.extend_from_slice(b"}\n");
            if d.queue.len() >= QUEUE {
                d.queue.pop_front();
                d.dropped += 1;
            }
            d.queue.push_back(line.into());
            d.wake.notify_one();
        }
    }

    /// A chunk of a service's output: complete lines become records.
    pub fn output(&self, service: &str, chunk: &[u8]) {
        let lines: Vec<String> = {
            let mut inner = self.inner.lock().expect("shipper");
            if inner.destinations.is_empty() {
                inner.partial.clear();
                return;
            }
            let buf = inner.partial.entry(service.to_string()).or_default();
            buf.extend_from_slice(chunk);
            let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
                if buf.len() > 64 * 1024 {
                    buf.clear();
                }
                return;
            };
            let done: Vec<u8> = buf.drain(..=end).collect();
            done.split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    String::from_utf8_lossy(l)
                        .trim_end_matches('\r')
                        .to_string()
                })
                .collect()
        };
        for l in lines {
            self.record(service, "info", &l);
        }
    }

    /// The destinations wanted now: new ones start sending, gone ones stop.
    pub fn configure(&self, wanted: Vec<(String, serde_json::Map<String, serde_json::Value>)>) {
        let mut inner = self.inner.lock().expect("shipper");
        inner.destinations.retain(|endpoint, d| {
            let keep = wanted.iter().any(|(e, _)| e == endpoint);
            if !keep {
                d.stop.store(true, Ordering::SeqCst);
                d.wake.notify_one();
            }
            keep
        });
        for (endpoint, extra) in wanted {
            if let Some(d) = inner.destinations.get_mut(&endpoint) {
                d.extra = extra;
                continue;
            }
            let d = Destination {
                queue: VecDeque::new(),
                extra,
                sent: 0,
                dropped: 0,
                connected: false,
                wake: Arc::new(Notify::new()),
                stop: Arc::new(AtomicBool::new(false)),
            };
            tokio::spawn(send(
                self.clone(),
                endpoint.clone(),
                d.wake.clone(),
                d.stop.clone(),
            ));
            inner.destinations.insert(endpoint, d);
        }
    }

    pub fn statuses(&self) -> Vec<LogDestinationStatusSpec> {
        let inner = self.inner.lock().expect("shipper");
        inner
            .destinations
            .iter()
            .map(|(e, d)| LogDestinationStatusSpec {
                endpoint: e.clone(),
                connected: d.connected,
                queued: d.queue.len(),
                sent: d.sent,
                dropped: d.dropped,
            })
            .collect()
    }

    fn with<T>(&self, endpoint: &str, f: impl FnOnce(&mut Destination) -> T) -> Option<T> {
        self.inner
            .lock()
            .expect("shipper")
            .destinations
            .get_mut(endpoint)
            .map(f)
    }
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Udp(tokio::net::UdpSocket),
}

async fn connect(endpoint: &str) -> std::io::Result<Conn> {
    let bad = || {
        std::io::Error::other(format!(
            "{endpoint:?}: expected tcp://host:port/ or udp://host:port/"
        ))
    };
    let (scheme, rest) = endpoint.split_once("://").ok_or_else(bad)?;
    let addr = rest.trim_end_matches('/');
    let timeout = Duration::from_secs(2);
    let timed_out = |_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
    match scheme {
        "tcp" => Ok(Conn::Tcp(
            tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
                .await
                .map_err(timed_out)??,
        )),
        "udp" => {
            let target = tokio::net::lookup_host(addr)
                .await?
                .next()
                .ok_or_else(bad)?;
            let local = if target.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let s = tokio::net::UdpSocket::bind(local).await?;
            s.connect(target).await?;
            Ok(Conn::Udp(s))
        }
        _ => Err(bad()),
    }
}

/// Sends a destination's queue, reconnecting with backoff; a record leaves the queue only once
/// it is written.
async fn send(shipper: Shipper, endpoint: String, wake: Arc<Notify>, stop: Arc<AtomicBool>) {
    let mut backoff = Duration::from_millis(200);
    while !stop.load(Ordering::SeqCst) {
        let mut conn = match connect(&endpoint).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(endpoint, error = %e, "log destination unavailable");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = wake.notified() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        shipper.with(&endpoint, |d| d.connected = true);
        backoff = Duration::from_millis(200);
        loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            // Up to 2048 records at a time: one write for TCP, a datagram each for UDP.
            let batch: Vec<Arc<[u8]>> = shipper
                .with(&endpoint, |d| d.queue.iter().take(2048).cloned().collect())
                .unwrap_or_default();
            if batch.is_empty() {
                wake.notified().await;
                continue;
            }
            let written = match &mut conn {
                Conn::Tcp(s) => s.write_all(&batch.concat()).await,
                Conn::Udp(s) => {
                    let mut r = Ok(());
                    for rec in &batch {
                        if let Err(e) = s.send(rec).await {
                            r = Err(e);
                            break;
                        }
                    }
                    r
                }
            };
            match written {
                Ok(()) => {
                    shipper.with(&endpoint, |d| {
                        // Unless the oldest were dropped meanwhile, the batch is the front.
                        for rec in &batch {
                            if d.queue.front().is_some_and(|f| Arc::ptr_eq(f, rec)) {
                                d.queue.pop_front();
                            }
                        }
                        d.sent += batch.len() as u64;
                    });
                }
                Err(e) => {
                    tracing::debug!(endpoint, error = %e, "log destination lost");
                    shipper.with(&endpoint, |d| d.connected = false);
                    break;
                }
            }
        }
    }
}

/// Ships `records` records of a typical length to `endpoint` as fast as the destination takes
/// them (none dropped); how long until all are written.
pub async fn bench(endpoint: &str, records: u64) -> Result<Duration, String> {
    let s = Shipper::default();
    s.configure(vec![(endpoint.to_string(), Default::default())]);
    let msg = "2026-11-22 05:40:00.123456 I | etcdserver: published local member to cluster";
    let started = std::time::Instant::now();
    let sent = |s: &Shipper| s.statuses().first().map_or(0, |st| st.sent);
    for i in 0..records {
        if i % 1000 == 0 {
            while s.statuses().first().is_some_and(|st| st.queued > QUEUE / 2) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        s.record("bench", "info", msg);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while sent(&s) < records {
        if std::time::Instant::now() > deadline {
            return Err(format!("only {} of {records} records written", sent(&s)));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(started.elapsed())
}

/// Sends machined's own log records to the shipper (as service `machined`).
pub struct Layer;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Layer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0.insert_str(0, &format!("{value:?}"));
                } else {
                    self.0.push_str(&format!(" {}={value:?}", field.name()));
                }
            }
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            tracing::Level::INFO => "info",
            _ => "debug",
        };
        shipper().record("machined", level, &text.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_records() {
        let boot = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let f = kmsg_fields(
            "30,1234,5000000,-;eth0: link becomes ready\n SUBSYSTEM=net\n",
            boot,
        )
        .unwrap();
        let get = |k: &str| f.iter().find(|(n, _)| *n == k).unwrap().1.clone();
        assert_eq!(get("facility"), "daemon");
        assert_eq!(get("priority"), "info");
        assert_eq!(get("talos-level"), "info");
        assert_eq!(get("seq"), 1234);
        assert_eq!(get("msg"), "eth0: link becomes ready");
        assert_eq!(get("clock"), "2023-11-14T22:13:25.000000000Z");
        assert!(kmsg_fields("garbage", boot).is_none());
    }

    #[test]
    fn times_are_rfc3339_with_nanoseconds() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 30, "{t}");
        assert!(
            t.starts_with("20") && t.ends_with('Z') && t.as_bytes()[10] == b'T',
            "{t}"
        );
    }

    #[tokio::test]
    async fn records_go_out_and_a_full_queue_drops_the_oldest() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("tcp://{}/", listener.local_addr().unwrap());
        let s = Shipper::default();
        let mut tags = serde_json::Map::new();
        tags.insert("cluster".into(), "c1".into());
        s.configure(vec![(endpoint.clone(), tags)]);
        s.output("etcd", b"first line\nsecond ");
        s.output("etcd", b"line\n");
        let (conn, _) = listener.accept().await.unwrap();
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(conn));
        for want in ["first line", "second line"] {
            let l = lines.next_line().await.unwrap().unwrap();
            let v: serde_json::Value = serde_json::from_str(&l).unwrap();
            assert_eq!(v["msg"], want);
            assert_eq!(v["talos-service"], "etcd");
            assert_eq!(v["talos-level"], "info");
            assert_eq!(v["cluster"], "c1");
            assert!(v["talos-time"].as_str().unwrap().ends_with('Z'));
        }
        // Nobody reading and the destination gone: the queue stays bounded.
        s.configure(vec![("tcp://127.0.0.1:9/".into(), Default::default())]);
        for i in 0..QUEUE + 5 {
            s.record("x", "info", &format!("{i}"));
        }
        let st = s.statuses();
        assert_eq!(st[0].queued, QUEUE);
        assert_eq!(st[0].dropped, 5);
    }
}
