//! A TCP load balancer (KubePrism's): each connection to its address goes to the fastest
//! healthy upstream, the next one when that connect fails. Upstreams are checked with a TCP
//! connect every `interval`; one that refuses a connection is marked down at once. Stops when
//! dropped.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a connect to an upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
struct Upstream {
    /// `host:port`.
    addr: String,
    /// Last health check's connect time; None while down (or not yet checked).
    latency: Option<Duration>,
    checked: bool,
}

type Upstreams = Arc<Mutex<Vec<Upstream>>>;

pub struct Balancer {
    upstreams: Upstreams,
    healthy: watch::Receiver<bool>,
    addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Balancer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn connect(addr: &str) -> std::io::Result<TcpStream> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{addr}: connect timed out"),
        )),
    }
}

/// Upstreams in the order to try: healthy ones by latency, then unchecked ones, then the rest.
fn order(ups: &[Upstream]) -> Vec<String> {
    let mut sorted: Vec<&Upstream> = ups.iter().collect();
    sorted.sort_by_key(|u| match u.latency {
        Some(l) => (0, l),
        None if !u.checked => (1, Duration::ZERO),
        None => (2, Duration::ZERO),
    });
    sorted.into_iter().map(|u| u.addr.clone()).collect()
}

fn mark(ups: &Upstreams, addr: &str, latency: Option<Duration>) {
    if let Some(u) = ups
        .lock()
        .expect("upstreams")
        .iter_mut()
        .find(|u| u.addr == addr)
    {
        u.latency = latency;
        u.checked = true;
    }
}

async fn serve(listener: TcpListener, ups: Upstreams) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        let ups = ups.clone();
        tokio::spawn(async move {
            let candidates = order(&ups.lock().expect("upstreams"));
            for addr in candidates {
                let started = Instant::now();
                match connect(&addr).await {
                    Ok(mut upstream) => {
                        mark(&ups, &addr, Some(started.elapsed()));
                        let _ = upstream.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(upstream = addr, error = %e, "upstream is down");
                        mark(&ups, &addr, None);
                    }
                }
            }
        });
    }
}

async fn check(ups: Upstreams, interval: Duration, healthy: watch::Sender<bool>) {
    loop {
        let addrs: Vec<String> = ups
            .lock()
            .expect("upstreams")
            .iter()
            .map(|u| u.addr.clone())
            .collect();
        let results = futures::future::join_all(addrs.iter().map(|a| async move {
            let started = Instant::now();
            connect(a).await.ok().map(|_| started.elapsed())
        }))
        .await;
        for (addr, latency) in addrs.iter().zip(results) {
            mark(&ups, addr, latency);
        }
        let any = ups
            .lock()
            .expect("upstreams")
            .iter()
            .any(|u| u.latency.is_some());
        healthy.send_if_modified(|h| std::mem::replace(h, any) != any);
        tokio::time::sleep(interval).await;
    }
}

impl Balancer {
    /// Listen on `listen` and send connections to `upstreams` (`host:port`).
    pub async fn start(
        listen: &str,
        upstreams: Vec<String>,
        interval: Duration,
    ) -> std::io::Result<Balancer> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let ups: Upstreams = Arc::default();
        let (tx, rx) = watch::channel(false);
        let b = Balancer {
            upstreams: ups.clone(),
            healthy: rx,
            addr,
            tasks: vec![
                tokio::spawn(serve(listener, ups.clone())),
                tokio::spawn(check(ups, interval, tx)),
            ],
        };
        b.set_upstreams(upstreams);
        Ok(b)
    }

    /// Replace the upstreams, keeping what is known of those that stay.
    pub fn set_upstreams(&self, addrs: Vec<String>) {
        let mut ups = self.upstreams.lock().expect("upstreams");
        let old = std::mem::take(&mut *ups);
        *ups = addrs
            .into_iter()
            .map(|addr| {
                old.iter()
                    .find(|u| u.addr == addr)
                    .cloned()
                    .unwrap_or(Upstream {
                        addr,
                        latency: None,
                        checked: false,
                    })
            })
            .collect();
    }

    /// Whether any upstream answered the last check.
    pub fn healthy(&self) -> bool {
        *self.healthy.borrow()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A stand-in API server: answers each connection with its name.
    async fn named_server(name: &'static str) -> (String, JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(name.as_bytes()).await;
            }
        });
        (addr, task)
    }

    async fn ask(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out
    }

    #[tokio::test]
    async fn connections_reach_a_live_upstream_and_move_when_it_dies() {
        let (a, a_task) = named_server("a").await;
        let (b, _b_task) = named_server("b").await;
        let lb = Balancer::start(
            "127.0.0.1:0",
            vec![a.clone(), b.clone()],
            Duration::from_millis(100),
        )
        .await
        .unwrap();
        let first = ask(lb.local_addr()).await;
        assert!(first == "a" || first == "b", "{first:?}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !lb.healthy() {
            assert!(Instant::now() < deadline, "never healthy");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The one that answered dies: the next connection goes to the other at once.
        let (dead, other) = if first == "a" {
            (a_task, "b")
        } else {
            (_b_task, "a")
        };
        dead.abort();
        let _ = dead.await;
        for _ in 0..3 {
            assert_eq!(ask(lb.local_addr()).await, other);
        }
        // With none left, it says so.
        lb.set_upstreams(vec!["127.0.0.1:1".into()]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while lb.healthy() {
            assert!(Instant::now() < deadline, "still healthy");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
