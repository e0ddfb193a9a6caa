//! Services as child processes: started with their output piped and dying with machined,
//! stopped with SIGTERM then SIGKILL, their output drained once they end.

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncRead;

use crate::sys::{BoxFuture, Task};

/// Start a service as a child process: output piped, dying with machined, with the
/// descriptors it inherits in place.
pub fn spawn(
    program: &std::path::Path,
    args: &[String],
    env: &[(String, String)],
    fds: &[i32],
) -> Result<Task, String> {
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // A service never outlives machined, however machined ends.
    // SAFETY: prctl(2), getppid(2), fcntl(2) and dup2(2) only, between fork and exec.
    let fds = fds.to_vec();
    let parent = nix::unistd::getpid();
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)?;
            // machined may have died between the fork and the line above: then the signal
            // never comes, and the service must not start as an orphan.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            disk::place_descriptors(&fds)
        });
    }
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    let pid = child.id();
    let mut outputs: Vec<Box<dyn AsyncRead + Unpin + Send>> = Vec::new();
    if let Some(o) = child
        .stdout
        .take()
        .and_then(|o| tokio::process::ChildStdout::from_std(o).ok())
    {
        outputs.push(Box::new(o));
    }
    if let Some(o) = child
        .stderr
        .take()
        .and_then(|o| tokio::process::ChildStderr::from_std(o).ok())
    {
        outputs.push(Box::new(o));
    }
    Ok(Task {
        pid,
        outputs,
        exited: Box::pin(crate::sys::reaper::wait(pid)),
        cleanup: None,
    })
}

/// After a task ended: let its output come through (a descendant may hold it open: bounded),
/// then undo what starting it made.
pub async fn drain(pumps: Vec<tokio::task::JoinHandle<()>>, cleanup: Option<BoxFuture<()>>) {
    for p in pumps {
        let abort = p.abort_handle();
        if tokio::time::timeout(Duration::from_secs(1), p)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    if let Some(c) = cleanup {
        c.await;
    }
}

/// SIGTERM, then SIGKILL after 10 s; returns once the process is reaped.
pub async fn terminate(
    pid: u32,
    exited: impl std::future::Future<Output = std::process::ExitStatus>,
) {
    use nix::sys::signal::{kill, Signal};
    let pid_t = nix::unistd::Pid::from_raw(pid as i32);
    let _ = kill(pid_t, Signal::SIGTERM);
    let mut exited = std::pin::pin!(exited);
    if tokio::time::timeout(Duration::from_secs(10), &mut exited)
        .await
        .is_err()
    {
        let _ = kill(pid_t, Signal::SIGKILL);
        exited.await;
    }
}
