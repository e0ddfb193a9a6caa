//! The node's API certificate as a resource (`ApiCertificates.secrets.talos.dev`, id `api`):
//! issued from the machine config's CA on a control plane, by trustd (with the machine token)
//! on a node without the CA key, for the node's hostname and addresses; issued again when
//! those change, and renewed once two thirds of its validity have passed. apid serves whatever
//! this resource holds, without restarting.

use resources::ResourceType;
use types::network::HostnameStatusSpec;
pub use types::secrets::ApiCertsSpec;

use std::net::IpAddr;
use std::time::Duration;

use crate::sys::pki::{now, two_thirds, validity};
use machinery::Config;
use resources::{Controller, ControllerError, Input, Output, ReconcileContext};

use crate::controllers::inputs::{self, machine_config};

pub const API_ID: &str = "api";

/// When to issue a new API certificate: after two thirds of its validity.
pub fn api_renew_at(c: &ApiCertsSpec) -> u64 {
    two_thirds(c.not_before, c.not_after)
}

pub struct ApiCertController {
    /// Validity of locally issued certificates (trustd decides for the ones it signs).
    pub ttl: Duration,
}

impl ApiCertController {
    /// Names and addresses: the node's every address so far (accumulative, so that a shared IP
    /// coming and going does not re-issue it each time).
    fn sans(cfg: &Config, hostname: &str, addresses: &[IpAddr]) -> (Vec<String>, Vec<IpAddr>) {
        let mut dns = vec!["localhost".to_string(), hostname.to_string()];
        let mut ips: Vec<IpAddr> =
            vec!["127.0.0.1".parse().expect("ip"), "::1".parse().expect("ip")];
        ips.extend_from_slice(addresses);
        for san in cfg
            .pointer("/machine/certSANs")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
        {
            match san.parse::<IpAddr>() {
                Ok(ip) => ips.push(ip),
                Err(_) => dns.push(san.to_string()),
            }
        }
        dns.sort();
        dns.dedup();
        ips.sort();
        ips.dedup();
        (dns, ips)
    }
}

#[async_trait::async_trait]
impl Controller for ApiCertController {
    fn name(&self) -> &str {
        "secrets.APIController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            inputs::config(&[
                "/machine/ca",
                "/machine/acceptedCAs",
                "/machine/certSANs",
                "/machine/token",
                "/cluster/controlPlane/endpoint",
            ]),
            Input::of::<types::network::HostnameStatusSpec>(),
            Input::of::<types::network::NodeAddressSpec>().id("accumulative"),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<types::secrets::ApiCertsSpec>()]
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        // A node in maintenance mode has no CA at all: nothing to issue.
        let Some(cfg) = machine_config(ctx)?.filter(|c| c.pointer("/machine/ca/crt").is_some())
        else {
            return Ok(());
        };
        let Some(hostname) = ctx
            .get(&HostnameStatusSpec::pointer("hostname"))?
            .and_then(|r| r.spec::<HostnameStatusSpec>().map(|h| h.hostname.clone()))
        else {
            return Ok(());
        };
        let addresses = crate::controllers::inputs::node_ips(ctx, "accumulative")?;
        let (dns, ips) = Self::sans(&cfg, &hostname, &addresses);
        let sans: Vec<String> = dns
            .iter()
            .cloned()
            .chain(ips.iter().map(IpAddr::to_string))
            .collect();
        let current = ctx
            .get(&ApiCertsSpec::pointer(API_ID))?
            .and_then(|r| r.spec::<ApiCertsSpec>().cloned());
        // A new machine CA or accepted CA (a rotation) means a new certificate at once.
        let cas = crate::sys::pki::client_cas(&cfg).unwrap_or_default();
        if let Some(cur) =
            current.filter(|c| c.sans == sans && c.ca == cas && now() < api_renew_at(c))
        {
            ctx.requeue_after(Duration::from_secs(api_renew_at(&cur) - now()));
            return Ok(());
        }
        let local = machinery::secrets::machine_ca(&cfg).is_ok();
        if !local && addresses.is_empty() {
            // trustd is reached over the node's network: wait for its address.
            return Ok(());
        }
        let issued = if local {
            crate::sys::pki::issue_local(&cfg, &hostname, &dns, &ips, self.ttl)?
        } else {
            crate::sys::pki::issue_via_trustd(&cfg, &hostname, &dns, &ips).await?
        };
        let (not_before, not_after) = validity(&issued.crt)?;
        let spec = ApiCertsSpec {
            ca: issued.client_ca.unwrap_or_default(),
            crt: issued.crt,
            key: issued.key,
            sans,
            not_before,
            not_after,
        };
        tracing::info!(hostname, not_after, "issued the API certificate");
        let renew_in = api_renew_at(&spec).saturating_sub(now()).max(1);
        ctx.put::<ApiCertsSpec>(API_ID, spec)?;
        ctx.requeue_after(Duration::from_secs(renew_in));
        Ok(())
    }
}

/// A new machine CA or set of accepted CAs (`talosctl rotate-ca`) restarts apid and trustd,
/// which read them when they start (the proxy's identity, trustd's signer), a moment after the
/// apply that brought it has answered. The first config seen is the one they started with.
pub struct RestartOnNewCa {
    pub services: crate::services::supervisor::Supervisor,
    pub seen: Option<String>,
}

#[async_trait::async_trait]
impl Controller for RestartOnNewCa {
    fn name(&self) -> &str {
        "secrets.RestartOnNewCaController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![inputs::config(&["/machine/ca", "/machine/acceptedCAs"])]
    }
    fn outputs(&self) -> Vec<Output> {
        Vec::new()
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let Some(cfg) = machine_config(ctx)? else {
            return Ok(());
        };
        let cas = crate::sys::pki::client_cas(&cfg).unwrap_or_default();
        let changed = self.seen.as_ref().is_some_and(|seen| *seen != cas);
        self.seen = Some(cas);
        if changed {
            tracing::info!("the machine CA changed: restarting apid and trustd");
            let services = self.services.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                for id in ["trustd", "apid"] {
                    let _ = services.restart(id);
                }
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::MachineConfigSpec;
    use resources::{Runtime, State};
    use types::config::MACHINE_CONFIG_ID;
    use types::network::NodeAddressSpec;

    #[tokio::test]
    async fn the_api_certificate_is_issued_and_renewed_before_it_expires() {
        let secrets = machinery::secrets::SecretsBundle::generate().unwrap();
        let opts = machinery::generate::GenOptions::new("renew", "https://10.5.0.2:6443");
        let cfg = machinery::generate::generate(
            &secrets,
            &opts,
            machinery::generate::MachineType::ControlPlane,
        )
        .unwrap();
        let state = State::new();
        state
            .create(MachineConfigSpec::resource(
                MACHINE_CONFIG_ID,
                MachineConfigSpec(cfg.encode_canonical()),
            ))
            .unwrap();
        state
            .create(HostnameStatusSpec::resource(
                "hostname",
                HostnameStatusSpec {
                    hostname: "node-1".into(),
                    domainname: String::new(),
                },
            ))
            .unwrap();
        let mut rt = Runtime::new(state.clone());
        state
            .create(NodeAddressSpec::resource(
                "accumulative",
                types::network::NodeAddressSpec {
                    addresses: vec!["10.5.0.2/24".into()],
                    sort_algorithm: "v1".into(),
                },
            ))
            .unwrap();
        rt.register(ApiCertController {
            ttl: Duration::from_secs(3),
        })
        .unwrap();
        let _h = rt.start();
        let ptr = ApiCertsSpec::pointer(API_ID);
        let read = || {
            state
                .get(&ptr)
                .ok()
                .and_then(|r| r.spec::<ApiCertsSpec>().cloned())
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let first = loop {
            if let Some(s) = read() {
                break s;
            }
            assert!(tokio::time::Instant::now() < deadline, "never issued");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(first.sans.contains(&"node-1".to_string()));
        assert!(first.sans.contains(&"10.5.0.2".to_string()));
        assert!(first.ca.contains("BEGIN CERTIFICATE"));
        // Two thirds into its 3 s validity it is replaced by a fresh one.
        let renewed = loop {
            if let Some(s) = read().filter(|s| s.crt != first.crt) {
                break s;
            }
            assert!(tokio::time::Instant::now() < deadline, "never renewed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(renewed.not_after > first.not_after);
    }
}
