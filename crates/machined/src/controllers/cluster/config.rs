//! cluster.ConfigController: discovery's settings from `cluster.discovery` or the
//! DiscoveryServiceConfig and DiscoveryIdentityConfig documents, as DiscoveryConfig.

use std::time::Duration;

use machinery::Config;
use resources::{Controller, ControllerError, Input, Output, ReconcileContext};
use types::cluster::{DiscoveryConfigSpec, DISCOVERY_ID};

use crate::controllers::inputs;
use crate::sys::discovery::DEFAULT_TTL;

/// The discovery settings of a config, or why there are none.
pub fn settings(cfg: &Config) -> Result<(String, Duration, String, String), String> {
    let service = cfg.kind("DiscoveryServiceConfig").next().map(|d| &d.value);
    let v1 = |p: &str| cfg.pointer(&format!("/cluster/discovery{p}"));
    let enabled = service.is_some() || v1("/enabled").and_then(|v| v.as_bool()) == Some(true);
    if !enabled || v1("/registries/service/disabled").and_then(|v| v.as_bool()) == Some(true) {
        return Err("discovery is disabled".into());
    }
    let field = |k: &str| {
        service
            .and_then(|s| s.get(k))
            .or_else(|| v1(&format!("/registries/service/{k}")))
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
    };
    let endpoint = field("endpoint")
        .unwrap_or(machinery::generate::DISCOVERY_ENDPOINT)
        .to_string();
    let ttl = match field("ttl") {
        Some(t) => machinery::duration::parse(t).map_err(|e| e.to_string())?,
        None => DEFAULT_TTL,
    };
    let identity = cfg.kind("DiscoveryIdentityConfig").next().map(|d| &d.value);
    let pick = |doc: &str, v1: &str| {
        identity
            .and_then(|i| i.get(doc))
            .or_else(|| cfg.pointer(v1))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let cluster_id = pick("clusterID", "/cluster/id");
    let secret = pick("clusterSecret", "/cluster/secret");
    if cluster_id.is_empty() || secret.is_empty() {
        return Err("the config has no cluster ID and secret".into());
    }
    Ok((endpoint, ttl, cluster_id, secret))
}

pub struct ConfigController;

#[async_trait::async_trait]
impl Controller for ConfigController {
    fn name(&self) -> &str {
        "cluster.ConfigController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![inputs::config(&[
            "/cluster/id",
            "/cluster/secret",
            "/cluster/discovery",
            "kind:DiscoveryIdentityConfig",
            "kind:DiscoveryServiceConfig",
        ])]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<DiscoveryConfigSpec>()]
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let Some(cfg) = inputs::machine_config(ctx)? else {
            return Ok(());
        };
        let spec = match settings(&cfg) {
            Ok((endpoint, ttl, cluster_id, secret)) => DiscoveryConfigSpec {
                discovery_enabled: true,
                registry_service_enabled: true,
                service_endpoint: endpoint,
                service_cluster_id: cluster_id,
                service_encryption_key: secret,
                ttl_seconds: ttl.as_secs(),
            },
            Err(why) => {
                tracing::debug!(why, "no cluster discovery");
                DiscoveryConfigSpec {
                    discovery_enabled: false,
                    registry_service_enabled: false,
                    service_endpoint: String::new(),
                    service_cluster_id: String::new(),
                    service_encryption_key: String::new(),
                    ttl_seconds: 0,
                }
            }
        };
        ctx.put(DISCOVERY_ID, spec)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_from_v1alpha1_and_documents() {
        let v1 = "version: v1alpha1\nmachine:\n  type: worker\ncluster:\n  id: abc\n  secret: c2VjcmV0\n  discovery:\n    enabled: true\n    registries:\n      service:\n        endpoint: http://10.5.0.1:3000\n        ttl: 40s\n";
        let cfg = Config::parse(v1).unwrap();
        let (endpoint, ttl, id, secret) = settings(&cfg).unwrap();
        assert_eq!(
            (endpoint.as_str(), ttl, id.as_str(), secret.as_str()),
            (
                "http://10.5.0.1:3000",
                Duration::from_secs(40),
                "abc",
                "c2VjcmV0"
            )
        );
        let off = Config::parse(&v1.replace("enabled: true", "enabled: false")).unwrap();
        assert!(settings(&off).unwrap_err().contains("disabled"));
        let docs = "version: v1alpha1\nmachine:\n  type: worker\n---\napiVersion: v1alpha1\nkind: DiscoveryServiceConfig\nname: default\nendpoint: http://127.0.0.1:3000\n---\napiVersion: v1alpha1\nkind: DiscoveryIdentityConfig\nclusterID: xyz\nclusterSecret: c2VjcmV0\n";
        let (endpoint, ttl, id, _) = settings(&Config::parse(docs).unwrap()).unwrap();
        assert_eq!(
            (endpoint.as_str(), ttl, id.as_str()),
            ("http://127.0.0.1:3000", DEFAULT_TTL, "xyz")
        );
    }
}
