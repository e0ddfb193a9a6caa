//! `talosctl bootstrap` and `talosctl etcd ...`.

use api::machine::{
    BootstrapRequest, EtcdForfeitLeadershipRequest, EtcdLeaveClusterRequest, EtcdMemberListRequest,
    EtcdRemoveMemberByIdRequest, EtcdSnapshotRequest,
};
use clap::{Args, Subcommand};
use machinery::{Error, Result};

use crate::client::{self, call_error};
use crate::config_cmd::ConnArgs;
use crate::system::table_of;
use crate::util::human;

#[derive(Args)]
pub struct BootstrapArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Recover etcd from this snapshot (taken with `talosctl etcd snapshot`).
    #[arg(long, default_value = "")]
    recover_from: String,
    /// Do not check the snapshot's hash (for a copied data directory).
    #[arg(long)]
    recover_skip_hash_check: bool,
}

#[derive(Args)]
pub struct EtcdArgs {
    #[command(subcommand)]
    command: EtcdCommand,
}

#[derive(Args)]
pub struct MemberIdArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The member's id (hexadecimal, as `etcd members` shows it).
    member_id: String,
}

#[derive(Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Where to write the snapshot.
    path: String,
}

#[derive(Subcommand)]
enum EtcdCommand {
    /// List the etcd cluster's members.
    #[command(visible_alias = "member")]
    Members(crate::system::NodeArgs),
    /// Remove a member (one that is shut down) from the etcd cluster.
    #[command(name = "remove-member")]
    RemoveMember(MemberIdArgs),
    /// Make the node leave the etcd cluster (its etcd stops and its data goes).
    Leave(crate::system::NodeArgs),
    /// Make the node hand etcd leadership to another member.
    #[command(name = "forfeit-leadership")]
    ForfeitLeadership(crate::system::NodeArgs),
    /// Stream a consistent snapshot of the etcd database to a file.
    Snapshot(SnapshotArgs),
    /// Show each member's status.
    Status(crate::system::NodeArgs),
    /// List or disarm etcd alarms.
    Alarm(AlarmArgs),
    /// Defragment the node's etcd database.
    Defrag(crate::system::NodeArgs),
    /// Downgrade etcd's storage to an earlier minor version (validate, enable, cancel).
    Downgrade(DowngradeArgs),
}

#[derive(Args)]
pub struct DowngradeArgs {
    #[command(subcommand)]
    command: DowngradeCommand,
}

#[derive(Args)]
pub struct VersionArg {
    #[command(flatten)]
    conn: ConnArgs,
    /// The etcd version to downgrade the storage to (e.g. 3.5).
    version: String,
}

#[derive(Subcommand)]
enum DowngradeCommand {
    /// Check whether the cluster's storage can be downgraded to the version.
    Validate(VersionArg),
    /// Start downgrading the cluster's storage to the version.
    Enable(VersionArg),
    /// Cancel a downgrade under way.
    Cancel(crate::system::NodeArgs),
}

#[derive(Args)]
pub struct AlarmArgs {
    #[command(subcommand)]
    command: AlarmCommand,
}

#[derive(Subcommand)]
enum AlarmCommand {
    /// List active alarms.
    List(crate::system::NodeArgs),
    /// Disarm active alarms.
    Disarm(crate::system::NodeArgs),
}

pub async fn bootstrap(a: BootstrapArgs) -> Result<()> {
    let targets = client::connect(&a.conn).await?;
    if targets.len() != 1 {
        return Err(Error::msg(
            "bootstrap is done on exactly one control plane node: pass one with -n",
        ));
    }
    let t = &targets[0];
    let recover = !a.recover_from.is_empty();
    if recover {
        let data = std::fs::read(&a.recover_from)
            .map_err(|e| Error::msg(format!("{}: {e}", a.recover_from)))?;
        let chunks: Vec<api::common::Data> = data
            .chunks(1 << 20)
            .map(|c| api::common::Data {
                metadata: None,
                bytes: c.to_vec(),
            })
            .collect();
        client::machine(t)
            .etcd_recover(futures::stream::iter(chunks))
            .await
            .map_err(|s| call_error(&t.node, s))?;
        eprintln!("recovering from snapshot \"{}\": uploaded", a.recover_from);
    }
    client::machine(t)
        .bootstrap(BootstrapRequest {
            recover_etcd: recover,
            recover_skip_hash_check: a.recover_skip_hash_check,
        })
        .await
        .map_err(|s| call_error(&t.node, s))?;
    Ok(())
}

pub async fn run(a: EtcdArgs) -> Result<()> {
    match a.command {
        EtcdCommand::Members(n) => {
            let targets = client::connect(&n.conn).await?;
            let header = [
                "NODE",
                "ID",
                "HOSTNAME",
                "PEER URLS",
                "CLIENT URLS",
                "LEARNER",
            ];
            table_of(
                &targets,
                header.map(String::from).to_vec(),
                |t| async move {
                    let r = client::machine(&t)
                        .etcd_member_list(EtcdMemberListRequest { query_local: false })
                        .await
                        .map_err(|s| call_error(&t.node, s))?;
                    let mut rows = Vec::new();
                    for m in r.into_inner().messages {
                        let node = client::node_of(m.metadata.as_ref(), &t);
                        for x in m.members {
                            rows.push(vec![
                                node.clone(),
                                format!("{:016x}", x.id),
                                x.hostname,
                                x.peer_urls.join(","),
                                x.client_urls.join(","),
                                x.is_learner.to_string(),
                            ]);
                        }
                    }
                    Ok(rows)
                },
            )
            .await
        }
        EtcdCommand::RemoveMember(m) => {
            let id = u64::from_str_radix(m.member_id.trim_start_matches("0x"), 16).map_err(|_| {
                Error::msg(format!(
                    "invalid member id \"{}\": expected a hexadecimal id as `talosctl etcd members` shows",
                    m.member_id
                ))
            })?;
            for t in client::connect(&m.conn).await? {
                client::machine(&t)
                    .etcd_remove_member_by_id(EtcdRemoveMemberByIdRequest { member_id: id })
                    .await
                    .map_err(|s| call_error(&t.node, s))?;
            }
            Ok(())
        }
        EtcdCommand::Leave(n) => {
            let mut errors = Vec::new();
            for t in client::connect(&n.conn).await? {
                if let Err(s) = client::machine(&t)
                    .etcd_leave_cluster(EtcdLeaveClusterRequest {})
                    .await
                {
                    errors.push(call_error(&t.node, s).to_string());
                }
            }
            client::per_node(errors)
        }
        EtcdCommand::ForfeitLeadership(n) => {
            let mut errors = Vec::new();
            for t in client::connect(&n.conn).await? {
                match client::machine(&t)
                    .etcd_forfeit_leadership(EtcdForfeitLeadershipRequest {})
                    .await
                {
                    Ok(r) => {
                        for m in r.into_inner().messages {
                            if !m.member.is_empty() {
                                println!(
                                    "{}: leadership moved away from {}",
                                    client::node_of(m.metadata.as_ref(), &t),
                                    m.member
                                );
                            }
                        }
                    }
                    Err(s) => errors.push(call_error(&t.node, s).to_string()),
                }
            }
            client::per_node(errors)
        }
        EtcdCommand::Snapshot(s) => snapshot(s).await,
        EtcdCommand::Status(n) => {
            let targets = client::connect(&n.conn).await?;
            let header = [
                "NODE",
                "MEMBER",
                "DB SIZE",
                "IN USE",
                "LEADER",
                "RAFT INDEX",
                "RAFT TERM",
                "RAFT APPLIED INDEX",
                "LEARNER",
                "ERRORS",
            ];
            table_of(
                &targets,
                header.map(String::from).to_vec(),
                |t| async move {
                    let r = client::machine(&t)
                        .etcd_status(())
                        .await
                        .map_err(|s| call_error(&t.node, s))?;
                    Ok(r.into_inner()
                        .messages
                        .into_iter()
                        .map(|m| {
                            let st = m.member_status.clone().unwrap_or_default();
                            let pct = if st.db_size > 0 {
                                st.db_size_in_use as f64 * 100.0 / st.db_size as f64
                            } else {
                                0.0
                            };
                            vec![
                                client::node_of(m.metadata.as_ref(), &t),
                                format!("{:016x}", st.member_id),
                                human(st.db_size.max(0) as u64),
                                format!("{} ({pct:.2}%)", human(st.db_size_in_use.max(0) as u64)),
                                format!("{:016x}", st.leader),
                                st.raft_index.to_string(),
                                st.raft_term.to_string(),
                                st.raft_applied_index.to_string(),
                                st.is_learner.to_string(),
                                st.errors.join(", "),
                            ]
                        })
                        .collect())
                },
            )
            .await
        }
        EtcdCommand::Alarm(a) => {
            let (n, disarm) = match a.command {
                AlarmCommand::List(n) => (n, false),
                AlarmCommand::Disarm(n) => (n, true),
            };
            let targets = client::connect(&n.conn).await?;
            let header = ["NODE", "MEMBER", "ALARM"].map(String::from).to_vec();
            table_of(&targets, header, |t| async move {
                let mut m = client::machine(&t);
                // Both answers carry (metadata, member alarms) per node.
                let alarms: Vec<_> = if disarm {
                    m.etcd_alarm_disarm(())
                        .await
                        .map_err(|s| call_error(&t.node, s))?
                        .into_inner()
                        .messages
                        .into_iter()
                        .map(|m| (m.metadata, m.member_alarms))
                        .collect()
                } else {
                    m.etcd_alarm_list(())
                        .await
                        .map_err(|s| call_error(&t.node, s))?
                        .into_inner()
                        .messages
                        .into_iter()
                        .map(|m| (m.metadata, m.member_alarms))
                        .collect()
                };
                Ok(alarm_rows(&t, alarms.into_iter()))
            })
            .await
        }
        EtcdCommand::Downgrade(d) => {
            let (conn, version, action) = match &d.command {
                DowngradeCommand::Validate(v) => (&v.conn, v.version.clone(), "validate"),
                DowngradeCommand::Enable(v) => (&v.conn, v.version.clone(), "enable"),
                DowngradeCommand::Cancel(n) => (&n.conn, String::new(), "cancel"),
            };
            let targets = client::connect(conn).await?;
            let header = ["NODE", "CLUSTER VERSION"].map(String::from).to_vec();
            table_of(&targets, header, |t| {
                let version = version.clone();
                async move {
                    let mut m = client::machine(&t);
                    let fail = |s| call_error(&t.node, s);
                    // The three answers alike: per node, the cluster's version.
                    macro_rules! versions {
                        ($call:expr) => {
                            $call
                                .await
                                .map_err(fail)?
                                .into_inner()
                                .messages
                                .into_iter()
                                .map(|m| m.cluster_downgrade)
                                .collect()
                        };
                    }
                    let downgrades: Vec<_> = match action {
                        "validate" => versions!(m.etcd_downgrade_validate(
                            api::machine::EtcdDowngradeValidateRequest { version }
                        )),
                        "enable" => versions!(m.etcd_downgrade_enable(
                            api::machine::EtcdDowngradeEnableRequest { version }
                        )),
                        _ => versions!(m.etcd_downgrade_cancel(())),
                    };
                    Ok(downgrades
                        .into_iter()
                        .map(|d| vec![t.node.clone(), d.unwrap_or_default().cluster_version])
                        .collect())
                }
            })
            .await
        }
        EtcdCommand::Defrag(n) => {
            let mut errors = Vec::new();
            for t in client::connect(&n.conn).await? {
                if let Err(s) = client::machine(&t).etcd_defragment(()).await {
                    errors.push(call_error(&t.node, s).to_string());
                }
            }
            client::per_node(errors)
        }
    }
}

fn alarm_rows(
    t: &client::Target,
    messages: impl Iterator<
        Item = (
            Option<api::common::Metadata>,
            Vec<api::machine::EtcdMemberAlarm>,
        ),
    >,
) -> Vec<Vec<String>> {
    use api::machine::etcd_member_alarm::AlarmType;
    let mut rows = Vec::new();
    for (md, alarms) in messages {
        for a in alarms {
            let name = AlarmType::try_from(a.alarm)
                .map(|x| x.as_str_name().to_string())
                .unwrap_or_else(|_| a.alarm.to_string());
            rows.push(vec![
                client::node_of(md.as_ref(), t),
                format!("{:016x}", a.member_id),
                name,
            ]);
        }
    }
    rows
}

async fn snapshot(a: SnapshotArgs) -> Result<()> {
    let targets = client::connect(&a.conn).await?;
    if targets.len() != 1 {
        return Err(Error::msg(
            "etcd snapshot is taken from exactly one node: pass one with -n",
        ));
    }
    let t = &targets[0];
    let mut stream = client::machine(t)
        .etcd_snapshot(EtcdSnapshotRequest {})
        .await
        .map_err(|s| call_error(&t.node, s))?
        .into_inner();
    let mut data = Vec::new();
    while let Some(d) = stream.message().await.map_err(|s| call_error(&t.node, s))? {
        data.extend_from_slice(&d.bytes);
    }
    if data.is_empty() {
        return Err(Error::msg(format!("{}: the snapshot is empty", t.node)));
    }
    machinery::fsutil::write_atomic(std::path::Path::new(&a.path), &data, 0o600)
        .map_err(|e| Error::msg(format!("{}: {e}", a.path)))?;
    println!(
        "etcd snapshot saved to \"{}\" ({} bytes)",
        a.path,
        data.len()
    );
    Ok(())
}
