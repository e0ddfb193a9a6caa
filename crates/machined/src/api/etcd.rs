//! The etcd and bootstrap RPCs of a control plane.

use std::sync::Arc;

use api::machine as pb;
use futures::StreamExt;
use tonic::Status;

use crate::node::Node;
use crate::services::etcd::{status as etcd_status, Etcd};
use types::etcd::{EtcdConfigSpec, ETCD_ID};

/// The node's etcd. A control plane that runs etcd (it has an EtcdConfig) may still be
/// preparing it (address, certificates): waited for a little.
async fn etcd(node: &Node) -> Result<Arc<Etcd>, Status> {
    let runs = node.state.spec_of::<EtcdConfigSpec>(ETCD_ID).is_some();
    if runs {
        crate::sys::wait_for(Some(std::time::Duration::from_secs(30)), || {
            node.etcd().is_some()
        })
        .await;
    }
    node.etcd().ok_or_else(|| {
        let control_plane = node.active_config().is_ok_and(|c| c.is_control_plane());
        if control_plane {
            Status::failed_precondition("etcd is not run by this node (only in container mode)")
        } else {
            Status::failed_precondition("etcd runs only on control plane nodes")
        }
    })
}

pub async fn bootstrap(
    node: &Node,
    r: pb::BootstrapRequest,
) -> Result<pb::BootstrapResponse, Status> {
    let ty = node.active_config().map_err(Status::internal)?;
    if !ty.is_control_plane() {
        return Err(Status::failed_precondition(
            "bootstrap can only be performed on a control plane node",
        ));
    }
    etcd(node)
        .await?
        .bootstrap(r.recover_etcd, r.recover_skip_hash_check)
        .await?;
    Ok(pb::BootstrapResponse {
        messages: vec![pb::Bootstrap { metadata: None }],
    })
}

pub async fn member_list(node: &Node, _local: bool) -> Result<pb::EtcdMemberListResponse, Status> {
    let mut c = etcd(node)
        .await?
        .client()
        .await
        .map_err(Status::unavailable)?;
    let list = c.member_list().await.map_err(etcd_status)?;
    let members = list
        .members()
        .iter()
        .map(|m| pb::EtcdMember {
            id: m.id(),
            hostname: m.name().into(),
            peer_urls: m.peer_urls().to_vec(),
            client_urls: m.client_urls().to_vec(),
            is_learner: m.is_learner(),
        })
        .collect();
    Ok(pb::EtcdMemberListResponse {
        messages: vec![pb::EtcdMembers {
            metadata: None,
            legacy_members: Vec::new(),
            members,
        }],
    })
}

pub async fn remove_member(
    node: &Node,
    id: u64,
) -> Result<pb::EtcdRemoveMemberByIdResponse, Status> {
    let e = etcd(node).await?;
    let mut c = e.client().await.map_err(Status::unavailable)?;
    let list = c.member_list().await.map_err(etcd_status)?;
    if !list.members().iter().any(|m| m.id() == id) {
        return Err(Status::not_found(format!("etcd member {id:x} not found")));
    }
    if id == e.member_id().await? {
        return Err(Status::failed_precondition(
            "cannot remove this node's own member: use talosctl etcd leave on it",
        ));
    }
    c.member_remove(id).await.map_err(etcd_status)?;
    Ok(pb::EtcdRemoveMemberByIdResponse {
        messages: vec![pb::EtcdRemoveMemberById { metadata: None }],
    })
}

pub async fn leave(node: &Node) -> Result<pb::EtcdLeaveClusterResponse, Status> {
    etcd(node).await?.leave(&node.services).await?;
    Ok(pb::EtcdLeaveClusterResponse {
        messages: vec![pb::EtcdLeaveCluster { metadata: None }],
    })
}

pub async fn forfeit_leadership(node: &Node) -> Result<pb::EtcdForfeitLeadershipResponse, Status> {
    let member = etcd(node)
        .await?
        .forfeit_leadership()
        .await?
        .unwrap_or_default();
    Ok(pb::EtcdForfeitLeadershipResponse {
        messages: vec![pb::EtcdForfeitLeadership {
            metadata: None,
            member,
        }],
    })
}

pub async fn recover(
    node: &Node,
    mut upload: tonic::Streaming<api::common::Data>,
) -> Result<pb::EtcdRecoverResponse, Status> {
    let e = etcd(node).await?;
    let mut data = Vec::new();
    while let Some(chunk) = upload.next().await {
        data.extend_from_slice(&chunk?.bytes);
    }
    if data.is_empty() {
        return Err(Status::invalid_argument("the uploaded snapshot is empty"));
    }
    e.store_snapshot(&data).map_err(Status::internal)?;
    Ok(pb::EtcdRecoverResponse {
        messages: vec![pb::EtcdRecover { metadata: None }],
    })
}

pub async fn snapshot(node: &Node) -> Result<crate::api::services::DataStream, Status> {
    let mut c = etcd(node)
        .await?
        .client()
        .await
        .map_err(Status::unavailable)?;
    let stream = c.snapshot().await.map_err(etcd_status)?;
    let out = futures::stream::unfold(stream, |mut s| async move {
        match s.message().await {
            Ok(Some(m)) => Some((
                Ok(api::common::Data {
                    metadata: None,
                    bytes: m.blob().to_vec(),
                }),
                s,
            )),
            Ok(None) => None,
            Err(e) => Some((Err(etcd_status(e)), s)),
        }
    });
    Ok(Box::pin(out))
}

fn alarms(list: &[etcd_client::AlarmMember]) -> Vec<pb::EtcdMemberAlarm> {
    list.iter()
        .map(|a| pb::EtcdMemberAlarm {
            member_id: a.member_id(),
            alarm: a.alarm() as i32,
        })
        .collect()
}

pub async fn alarm_list(node: &Node) -> Result<pb::EtcdAlarmListResponse, Status> {
    use etcd_client::{AlarmAction, AlarmType};
    let mut c = etcd(node)
        .await?
        .client()
        .await
        .map_err(Status::unavailable)?;
    let r = c
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .map_err(etcd_status)?;
    Ok(pb::EtcdAlarmListResponse {
        messages: vec![pb::EtcdAlarm {
            metadata: None,
            member_alarms: alarms(r.alarms()),
        }],
    })
}

pub async fn alarm_disarm(node: &Node) -> Result<pb::EtcdAlarmDisarmResponse, Status> {
    use etcd_client::{AlarmAction, AlarmOptions, AlarmType};
    let mut c = etcd(node)
        .await?
        .client()
        .await
        .map_err(Status::unavailable)?;
    let active = c
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .map_err(etcd_status)?;
    let mut disarmed = Vec::new();
    for a in active.alarms() {
        let mut opts = AlarmOptions::new();
        opts.with_member(a.member_id());
        let r = c
            .alarm(AlarmAction::Deactivate, a.alarm(), Some(opts))
            .await
            .map_err(etcd_status)?;
        disarmed.extend(alarms(r.alarms()));
    }
    Ok(pb::EtcdAlarmDisarmResponse {
        messages: vec![pb::EtcdAlarmDisarm {
            metadata: None,
            member_alarms: disarmed,
        }],
    })
}

pub async fn defragment(node: &Node) -> Result<pb::EtcdDefragmentResponse, Status> {
    let mut c = etcd(node)
        .await?
        .client()
        .await
        .map_err(Status::unavailable)?;
    c.defragment().await.map_err(etcd_status)?;
    Ok(pb::EtcdDefragmentResponse {
        messages: vec![pb::EtcdDefragment { metadata: None }],
    })
}

pub async fn status(node: &Node) -> Result<pb::EtcdStatusResponse, Status> {
    let mut c = etcd(node)
        .await?
        .client()
        .await
        .map_err(Status::unavailable)?;
    let st = c.status().await.map_err(etcd_status)?;
    Ok(pb::EtcdStatusResponse {
        messages: vec![pb::EtcdStatus {
            metadata: None,
            member_status: Some(pb::EtcdMemberStatus {
                protocol_version: st.version().into(),
                db_size: st.db_size(),
                db_size_in_use: st.raft_used_db_size(),
                leader: st.leader(),
                raft_index: st.raft_index(),
                raft_term: st.raft_term(),
                raft_applied_index: st.raft_applied_index(),
                errors: st.errors().to_vec(),
                is_learner: st.is_learner(),
                member_id: st.header().map(|h| h.member_id()).unwrap_or_default(),
                storage_version: st.storage_version().into(),
            }),
        }],
    })
}

/// etcd's storage downgrade (validate, enable, cancel). An etcd without that API (before 3.5)
/// is named, with its version, rather than answered with a bare "unimplemented".
pub async fn downgrade(
    node: &Node,
    options: etcd_client::DowngradeOptions,
) -> Result<String, Status> {
    let mut c = etcd(node)
        .await?
        .client()
        .await
        .map_err(Status::unavailable)?;
    match c.maintenance_client().downgrade(options).await {
        Ok(r) => Ok(r.version().to_string()),
        Err(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::Unimplemented => {
            let version = c
                .status()
                .await
                .map(|st| st.version().to_string())
                .unwrap_or_else(|_| "?".into());
            Err(Status::failed_precondition(format!(
                "etcd {version} on this node has no storage downgrade (etcd 3.5 added it): upgrade etcd first"
            )))
        }
        Err(e) => Err(etcd_status(e)),
    }
}
