//! Child reaping. machined is PID 1 of its node (or a subreaper when run as a plain process),
//! so orphans of its services become its children: every exited child is collected here with
//! `waitpid(-1)`, and the processes machined started learn their exit status from this table,
//! by pid, instead of waiting for it themselves.

use std::collections::{HashMap, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Mutex;

use tokio::sync::oneshot;

/// Exits nobody was waiting for yet (a child can end before its starter asks); orphans end up
/// here too and age out.
const UNCLAIMED_KEPT: usize = 256;

#[derive(Default)]
struct Table {
    waiting: HashMap<i32, oneshot::Sender<ExitStatus>>,
    unclaimed: VecDeque<(i32, ExitStatus)>,
}

static TABLE: Mutex<Option<Table>> = Mutex::new(None);

fn with<R>(f: impl FnOnce(&mut Table) -> R) -> R {
    let mut t = TABLE.lock().expect("reaper");
    f(t.get_or_insert_with(Table::default))
}

static CHILDREN: (Mutex<bool>, std::sync::Condvar) = (Mutex::new(false), std::sync::Condvar::new());

fn deliver(pid: i32, status: ExitStatus) {
    with(|t| match t.waiting.remove(&pid) {
        Some(tx) => {
            let _ = tx.send(status);
        }
        None => {
            if t.unclaimed.len() == UNCLAIMED_KEPT {
                t.unclaimed.pop_front();
            }
            t.unclaimed.push_back((pid, status));
        }
    });
}

/// Start reaping (once per process): a thread blocks in `waitpid(-1)` while there are children
/// and sleeps on a condition variable while there are none.
pub fn start() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Orphans of our services are re-parented to us rather than to the host's init.
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(error = %e, "cannot become a subreaper");
        }
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(|| loop {
                let mut status = 0;
                // SAFETY: waitpid with a valid out pointer.
                let pid = unsafe { nix::libc::waitpid(-1, &mut status, 0) };
                if pid > 0 {
                    deliver(pid, ExitStatus::from_raw(status));
                    continue;
                }
                if std::io::Error::last_os_error().raw_os_error() == Some(nix::libc::EINTR) {
                    continue;
                }
                // No children: sleep until one is started.
                let (lock, cv) = &CHILDREN;
                let mut any = lock.lock().expect("reaper");
                while !*any {
                    any = cv.wait(any).expect("reaper");
                }
                *any = false;
            })
            .expect("reaper thread");
    });
}

/// Ask for child `pid`'s exit: its status if it has ended already, else where it will come.
fn claim(pid: u32) -> Result<oneshot::Receiver<ExitStatus>, ExitStatus> {
    start();
    {
        let (lock, cv) = &CHILDREN;
        *lock.lock().expect("reaper") = true;
        cv.notify_one();
    }
    let pid = pid as i32;
    with(|t| {
        if let Some(i) = t.unclaimed.iter().position(|(p, _)| *p == pid) {
            let (_, status) = t.unclaimed.remove(i).expect("index");
            return Err(status);
        }
        let (tx, rx) = oneshot::channel();
        t.waiting.insert(pid, tx);
        Ok(rx)
    })
}

/// The exit status of child `pid` (started by this process), once it has ended.
pub async fn wait(pid: u32) -> ExitStatus {
    match claim(pid) {
        Err(status) => status,
        // The table lives as long as the process; a dropped sender cannot happen.
        Ok(rx) => rx.await.unwrap_or_else(|_| ExitStatus::from_raw(0)),
    }
}

/// Run `cmd` to its end and collect its output, as `Command::output` would (which cannot
/// wait here: the exit goes to the reaper). For threads outside the async runtime.
pub fn output(cmd: &mut std::process::Command) -> std::io::Result<std::process::Output> {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let exit = claim(child.id());
    let mut err_pipe = child.stderr.take().expect("piped");
    let errs = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err_pipe.read_to_end(&mut b);
        b
    });
    let mut stdout = Vec::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_end(&mut stdout)?;
    let stderr = errs.join().unwrap_or_default();
    let status = match exit {
        Err(status) => status,
        Ok(rx) => rx
            .blocking_recv()
            .unwrap_or_else(|_| ExitStatus::from_raw(0)),
    };
    Ok(std::process::Output {
        status,
        stdout,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn orphans_are_reaped_and_children_get_their_status() {
        // The subshell exits at once; its `sleep` is orphaned to us and must not stay a zombie.
        let mut sh = std::process::Command::new("/bin/sh")
            .args(["-c", "(sleep 0.2 &) ; exit 3"])
            .spawn()
            .unwrap();
        let pid = sh.id();
        let status = tokio::time::timeout(std::time::Duration::from_secs(5), wait(pid))
            .await
            .unwrap();
        assert_eq!(status.code(), Some(3));
        // The orphan ends and is reaped; no zombie child of ours remains.
        let me = std::process::id().to_string();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let zombies: Vec<_> = std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
                .filter(|s| {
                    let rest = s.rsplit_once(") ").map(|x| x.1).unwrap_or("");
                    let f: Vec<&str> = rest.split(' ').collect();
                    f.first() == Some(&"Z") && f.get(1) == Some(&me.as_str())
                })
                .collect();
            let orphan_gone = zombies.is_empty()
                && !std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
                    std::fs::read_to_string(e.path().join("stat"))
                        .is_ok_and(|s| s.contains("(sleep)") && s.contains(&format!(" {me} ")))
                });
            if orphan_gone {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "zombies left: {zombies:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let _ = sh.try_wait();
    }
}
