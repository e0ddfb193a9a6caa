//! `talosctl image list|pull|remove` and `talosctl containers`.

use api::common::{ContainerDriver, ContainerdInstance, ContainerdNamespace};
use clap::{Args, Subcommand};
use machinery::Result;

use crate::client;
use crate::config_cmd::ConnArgs;
use crate::system::{table_of, Rows};
use crate::util::{human, rfc3339};

#[derive(Args)]
pub struct ImageArgs {
    /// Containerd namespace: cri (Kubernetes') or system (Talos's own).
    #[arg(long, global = true, default_value = "cri", value_parser = ["cri", "system"])]
    namespace: String,
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Subcommand)]
enum ImageCommand {
    /// List the images of a namespace.
    #[command(visible_aliases = ["l", "ls"])]
    List {
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Pull an image through the node's registry configuration (mirrors, credentials, TLS).
    #[command(visible_alias = "p")]
    Pull {
        #[command(flatten)]
        conn: ConnArgs,
        /// The image reference.
        image: String,
    },
    /// Print the default Kubernetes component images for these versions (what an air-gapped
    /// cluster needs in its registry).
    #[command(name = "k8s-bundle", visible_alias = "default")]
    K8sBundle(K8sBundleArgs),
    /// Remove an image.
    #[command(visible_alias = "rm")]
    Remove {
        #[command(flatten)]
        conn: ConnArgs,
        /// The image reference.
        image: String,
    },
}

fn instance(namespace: &str) -> Option<ContainerdInstance> {
    let (driver, ns) = if namespace == "system" {
        (ContainerDriver::Containerd, ContainerdNamespace::NsSystem)
    } else {
        (ContainerDriver::Cri, ContainerdNamespace::NsCri)
    };
    Some(ContainerdInstance {
        driver: driver as i32,
        namespace: ns as i32,
    })
}

fn size(bytes: i64) -> String {
    human(bytes.max(0) as u64)
}

#[derive(Args)]
pub struct K8sBundleArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Kubernetes (API server, controller manager, scheduler, proxy, kubelet).
    #[arg(long = "k8s-version", default_value = machinery::generate::DEFAULT_KUBERNETES_VERSION)]
    k8s_version: String,
    /// etcd.
    #[arg(long = "etcd-version", default_value = "3.7.1")]
    etcd_version: String,
    /// CoreDNS.
    #[arg(long = "coredns-version", default_value = machinery::kubernetes::DEFAULT_COREDNS_VERSION)]
    coredns_version: String,
    /// Flannel.
    #[arg(long = "flannel-version", default_value = machinery::kubernetes::DEFAULT_FLANNEL_VERSION)]
    flannel_version: String,
    /// kube-network-policies.
    #[arg(long = "kube-network-policies-version", default_value = machinery::kubernetes::DEFAULT_KUBE_NETWORK_POLICIES_VERSION)]
    kube_network_policies_version: String,
}

/// `v1.2.3` from `1.2.3` or `v1.2.3`, refusing what is not a version.
fn v(version: &str, flag: &str) -> Result<String> {
    let bare = version.trim_start_matches('v');
    let ok = bare
        .split(['.', '-', '+'])
        .next()
        .is_some_and(|m| m.parse::<u64>().is_ok())
        && bare.contains('.');
    match ok {
        true => Ok(format!("v{bare}")),
        false => Err(machinery::Error::msg(format!(
            "--{flag} {version:?} is not a version like v1.2.3"
        ))),
    }
}

/// The images a cluster of these versions runs, one per line.
pub fn k8s_bundle(a: &K8sBundleArgs) -> Result<Vec<String>> {
    let k8s = v(&a.k8s_version, "k8s-version")?;
    let mut out = vec![
        format!(
            "{}:{}",
            machinery::kubernetes::COREDNS_REPOSITORY,
            v(&a.coredns_version, "coredns-version")?
        ),
        format!(
            "gcr.io/etcd-development/etcd:{}",
            v(&a.etcd_version, "etcd-version")?
        ),
        format!(
            "{}:{}",
            machinery::kubernetes::FLANNEL_REPOSITORY,
            v(&a.flannel_version, "flannel-version")?
        ),
    ];
    for c in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kube-proxy",
    ] {
        out.push(format!("registry.k8s.io/{c}:{k8s}"));
    }
    out.push(format!("ghcr.io/siderolabs/kubelet:{k8s}"));
    out.push(machinery::cri::DEFAULT_SANDBOX_IMAGE.to_string());
    out.push(format!(
        "{}:{}",
        machinery::kubernetes::KUBE_NETWORK_POLICIES_REPOSITORY,
        v(
            &a.kube_network_policies_version,
            "kube-network-policies-version"
        )?
    ));
    Ok(out)
}

pub async fn image(a: ImageArgs) -> Result<()> {
    let containerd = instance(&a.namespace);
    match a.command {
        ImageCommand::K8sBundle(b) => {
            for i in k8s_bundle(&b)? {
                println!("{i}");
            }
            Ok(())
        }
        ImageCommand::List { conn } => {
            let targets = client::connect(&conn).await?;
            let header = ["NODE", "IMAGE", "DIGEST", "SIZE", "CREATED"].map(String::from);
            table_of(&targets, header.to_vec(), |t| async move {
                let mut s = client::images(&t)
                    .list(api::machine::ImageServiceListRequest { containerd })
                    .await
                    .map_err(|s| client::call_error(&t.node, s))?
                    .into_inner();
                let mut rows = Rows::new();
                while let Some(i) = s
                    .message()
                    .await
                    .map_err(|s| client::call_error(&t.node, s))?
                {
                    let created = i.created_at.as_ref().map(rfc3339).unwrap_or_default();
                    rows.push(vec![
                        t.node.clone(),
                        i.name,
                        i.digest,
                        size(i.size),
                        created,
                    ]);
                }
                Ok(rows)
            })
            .await
        }
        ImageCommand::Pull { conn, image } => {
            let targets = client::connect(&conn).await?;
            let image = &image;
            client::each(&targets, |t| async move {
                pull(&t, containerd, image)
                    .await
                    .map_err(|s| client::call_error(&t.node, s))
            })
            .await
        }
        ImageCommand::Remove { conn, image } => {
            let targets = client::connect(&conn).await?;
            let image = &image;
            client::each(&targets, |t| async move {
                client::images(&t)
                    .remove(api::machine::ImageServiceRemoveRequest {
                        containerd,
                        image_ref: image.clone(),
                    })
                    .await
                    .map_err(|s| client::call_error(&t.node, s))?;
                Ok(())
            })
            .await
        }
    }
}

/// Pull `image` on one node without progress (into the system containerd or the CRI's).
pub async fn pull_quietly(
    t: &client::Target,
    system: bool,
    image: &str,
) -> std::result::Result<(), tonic::Status> {
    let mut s = client::images(t)
        .pull(api::machine::ImageServicePullRequest {
            containerd: instance(if system { "system" } else { "cri" }),
            image_ref: image.to_string(),
        })
        .await?
        .into_inner();
    while s.message().await?.is_some() {}
    Ok(())
}

/// Pull on one node: each layer's progress on stderr as it changes, the image's name at the end.
async fn pull(
    t: &client::Target,
    containerd: Option<ContainerdInstance>,
    image: &str,
) -> std::result::Result<(), tonic::Status> {
    use api::machine::image_service_pull_layer_progress::Status as Layer;
    use api::machine::image_service_pull_response::Response as R;
    let mut s = client::images(t)
        .pull(api::machine::ImageServicePullRequest {
            containerd,
            image_ref: image.to_string(),
        })
        .await?
        .into_inner();
    while let Some(m) = s.message().await? {
        match m.response {
            Some(R::PullProgress(p)) => {
                let pr = p.progress.unwrap_or_default();
                let what = match Layer::try_from(pr.status) {
                    Ok(Layer::Downloading) => "downloading",
                    Ok(Layer::DownloadComplete) => "downloaded",
                    Ok(Layer::Extracting) => "extracting",
                    Ok(Layer::ExtractComplete) => "extracted",
                    Ok(Layer::AlreadyExists) => "already exists",
                    Err(_) => "?",
                };
                eprintln!(
                    "{}: {} {what} {} / {}",
                    t.node,
                    p.layer_id,
                    size(pr.offset),
                    size(pr.total)
                );
            }
            Some(R::Name(name)) => println!("{}: pulled {name}", t.node),
            None => {}
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct ContainersArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Kubernetes' containers (the CRI, namespace k8s.io) instead of the system's.
    #[arg(short, long)]
    kubernetes: bool,
    /// Ask the CRI rather than containerd.
    #[arg(long = "use-cri")]
    use_cri: bool,
}

/// Which containers `-k` and `--use-cri` mean: Kubernetes' (namespace k8s.io, through the
/// CRI), else the system's (through containerd, or the CRI when asked).
pub fn container_target(kubernetes: bool, use_cri: bool) -> (&'static str, ContainerDriver) {
    if kubernetes {
        ("k8s.io", ContainerDriver::Cri)
    } else if use_cri {
        ("system", ContainerDriver::Cri)
    } else {
        ("system", ContainerDriver::Containerd)
    }
}

pub async fn containers(a: ContainersArgs) -> Result<()> {
    let targets = client::connect(&a.conn).await?;
    let (namespace, driver) = container_target(a.kubernetes, a.use_cri);
    let header = ["NODE", "NAMESPACE", "ID", "IMAGE", "PID", "STATUS"].map(String::from);
    table_of(&targets, header.to_vec(), |t| async move {
        let resp = client::machine(&t)
            .containers(api::machine::ContainersRequest {
                namespace: namespace.into(),
                driver: driver as i32,
            })
            .await
            .map_err(|s| client::call_error(&t.node, s))?;
        let mut rows = Rows::new();
        for m in resp.into_inner().messages {
            let node = client::node_of(m.metadata.as_ref(), &t);
            for c in m.containers {
                // A pod's containers are shown under it.
                let id = if !c.pod_id.is_empty() && c.id != c.pod_id {
                    format!("└─ {}", c.id)
                } else {
                    c.id
                };
                rows.push(vec![
                    node.clone(),
                    c.namespace,
                    id,
                    c.image,
                    c.pid.to_string(),
                    c.status,
                ]);
            }
        }
        Ok(rows)
    })
    .await
}
