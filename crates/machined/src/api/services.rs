//! Service RPCs: list, start, stop, restart, and logs (tail and follow).

use std::pin::Pin;
use std::time::SystemTime;

use api::common::{Data, Metadata};
use api::machine::{
    ServiceEvent, ServiceEvents, ServiceHealth, ServiceInfo, ServiceList, ServiceListResponse,
};
use futures::Stream;
use tonic::Status;

use crate::services::supervisor::{ServiceError, Supervisor};

fn ts(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

pub fn list(sup: &Supervisor) -> ServiceListResponse {
    let services = sup
        .list()
        .into_iter()
        .map(|s| ServiceInfo {
            id: s.id,
            state: s.state.as_str().into(),
            events: Some(ServiceEvents {
                events: s
                    .events
                    .into_iter()
                    .map(|e| ServiceEvent {
                        msg: e.msg,
                        state: e.state.as_str().into(),
                        ts: Some(ts(e.ts)),
                    })
                    .collect(),
            }),
            health: Some(ServiceHealth {
                unknown: s.health.unknown,
                healthy: s.health.healthy,
                last_message: s.health.last_message,
                last_change: s.health.last_change.map(ts),
            }),
        })
        .collect();
    ServiceListResponse {
        messages: vec![ServiceList {
            metadata: None,
            services,
        }],
    }
}

pub fn not_found(e: ServiceError) -> Status {
    match e {
        ServiceError::NotFound(_) => Status::not_found(e.to_string()),
        ServiceError::Machined => Status::failed_precondition(e.to_string()),
    }
}

pub type DataStream = Pin<Box<dyn Stream<Item = Result<Data, Status>> + Send>>;

/// A stream of one chunk.
pub fn one(bytes: Vec<u8>) -> DataStream {
    Box::pin(futures::stream::once(async move { data(bytes) }))
}

fn data(bytes: Vec<u8>) -> Result<Data, Status> {
    Ok(Data {
        metadata: None::<Metadata>,
        bytes,
    })
}

/// The kept log (the last `tail` lines, all when negative), then, when following, new output.
pub fn logs(sup: &Supervisor, id: &str, tail: i32, follow: bool) -> Result<DataStream, Status> {
    let tail = usize::try_from(tail).ok();
    let (kept, mut rx) = sup.logs(id, tail).map_err(not_found)?;
    let first = futures::stream::iter((!kept.is_empty()).then(|| data(kept)));
    if !follow {
        return Ok(Box::pin(first));
    }
    let rest = crate::sys::async_stream(move |tx| async move {
        loop {
            match rx.recv().await {
                Ok(chunk) => {
                    if tx.send(data(chunk.to_vec())).await.is_err() {
                        break;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
    });
    Ok(Box::pin(futures::StreamExt::chain(first, rest)))
}

/// A CRI container's log file: the messages of its last `tail` lines (all when negative),
/// then, when following, what is appended (the file is polled; a rotated file is reopened).
pub fn container_logs(path: std::path::PathBuf, tail: i32, follow: bool) -> DataStream {
    Box::pin(crate::sys::async_stream(move |tx| async move {
        let messages = |text: &str| -> Vec<u8> {
            text.lines()
                .flat_map(|l| [crate::sys::cri::cri_log_message(l).as_bytes(), b"\n"])
                .flatten()
                .copied()
                .collect()
        };
        let text = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) => {
                let _ = tx
                    .send(Err(Status::not_found(format!("{}: {e}", path.display()))))
                    .await;
                return;
            }
        };
        let mut read = text.len() as u64;
        // Only whole lines are sent; a partial last line waits for its end.
        let complete = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let whole = String::from_utf8_lossy(&text[..complete]);
        let lines: Vec<&str> = whole.lines().collect();
        let from = usize::try_from(tail).map_or(0, |t| lines.len().saturating_sub(t));
        let first = messages(&lines[from..].join("\n"));
        if !first.is_empty() && tx.send(data(first)).await.is_err() {
            return;
        }
        if !follow {
            return;
        }
        read -= (text.len() - complete) as u64;
        let mut pending = Vec::new();
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let Ok(bytes) = tokio::fs::read(&path).await else {
                continue;
            };
            if (bytes.len() as u64) < read {
                read = 0; // rotated
            }
            pending.extend_from_slice(&bytes[read as usize..]);
            read = bytes.len() as u64;
            let Some(end) = pending.iter().rposition(|b| *b == b'\n') else {
                continue;
            };
            let chunk: Vec<u8> = pending.drain(..=end).collect();
            if tx
                .send(data(messages(&String::from_utf8_lossy(&chunk))))
                .await
                .is_err()
            {
                return;
            }
        }
    }))
}
