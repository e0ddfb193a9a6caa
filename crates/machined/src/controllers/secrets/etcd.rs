//! secrets.EtcdController: etcd's PKI on a control plane, issued from the etcd CA of the
//! config for the node's hostname and address: server and peer certificates (both usable by
//! servers and clients, as etcd wants) and machined's own client certificate. Issued again
//! when the hostname or address changes and after two thirds of their validity.

use std::net::IpAddr;
use std::time::Duration;

use machinery::pki::{self, CertAndKey, Key, KeyKind, LeafSpec};
use machinery::secrets::unb64;
use machinery::Config;
use resources::{Controller, ControllerError, Input, Output, ReconcileContext};
use types::etcd::{EtcdSpecSpec, ETCD_ID};
use types::secrets::EtcdCertsSpec;

use crate::controllers::inputs;
use crate::sys::pki::{now, renew_at};

/// Remembers whom the current certificates were issued for.
#[derive(Default)]
pub struct EtcdController {
    issued_for: Option<(String, IpAddr)>,
}

fn etcd_ca(cfg: &Config) -> Result<CertAndKey, String> {
    let get = |k: &str| {
        cfg.pointer(&format!("/cluster/etcd/ca/{k}"))
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("the machine config has no cluster.etcd.ca.{k}"))
            .and_then(|s| unb64(s).map_err(|e| format!("cluster.etcd.ca.{k}: {e}")))
    };
    Ok(CertAndKey {
        crt: get("crt")?,
        key: get("key")?,
    })
}

/// A certificate for `spec` signed by the etcd CA: (certificate, PKCS#8 key).
fn issue(ca: &CertAndKey, spec: &LeafSpec) -> Result<(String, String), String> {
    let key = Key::generate(KeyKind::EcdsaP256).map_err(|e| e.to_string())?;
    let crt = pki::sign_leaf(ca, &key, spec).map_err(|e| e.to_string())?;
    Ok((crt, key.to_pkcs8_pem()))
}

/// The member's certificates for `name` at `ip` (and loopback), and machined's client one.
pub fn issue_all(ca: &CertAndKey, name: &str, ip: IpAddr) -> Result<EtcdCertsSpec, String> {
    let mut ips = vec![ip];
    for l in ["127.0.0.1", "::1"] {
        let l: IpAddr = l.parse().expect("ip");
        if l != ip {
            ips.push(l);
        }
    }
    let member = LeafSpec {
        common_name: name.into(),
        dns_names: vec!["localhost".to_string(), name.to_string()],
        ip_addresses: ips,
        server: true,
        client: true,
        ..Default::default()
    };
    let (server_crt, server_key) = issue(ca, &member)?;
    let (peer_crt, peer_key) = issue(ca, &member)?;
    let (client_crt, client_key) = issue(
        ca,
        &LeafSpec {
            common_name: "talos".into(),
            client: true,
            ..Default::default()
        },
    )?;
    Ok(EtcdCertsSpec {
        ca: ca.crt.clone(),
        renew_at: renew_at(&server_crt)?,
        server_crt,
        server_key,
        peer_crt,
        peer_key,
        client_crt,
        client_key,
    })
}

#[async_trait::async_trait]
impl Controller for EtcdController {
    fn name(&self) -> &str {
        "secrets.EtcdController"
    }
    fn inputs(&self) -> Vec<Input> {
        vec![
            inputs::config(&["/cluster/etcd/ca"]),
            Input::of::<EtcdSpecSpec>().id(ETCD_ID),
        ]
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::exclusive_of::<EtcdCertsSpec>()]
    }
    fn cleanup_untouched(&self) -> bool {
        true
    }
    async fn reconcile(&mut self, ctx: &mut ReconcileContext) -> Result<(), ControllerError> {
        let (Some(cfg), Some(spec)) = (
            inputs::machine_config(ctx)?,
            ctx.spec_of::<EtcdSpecSpec>(ETCD_ID)?,
        ) else {
            return Ok(());
        };
        let ca = etcd_ca(&cfg)?;
        let ip: IpAddr = spec
            .advertised_addresses
            .first()
            .and_then(|a| a.parse().ok())
            .ok_or("etcd has no address")?;
        let current = ctx.spec_of::<EtcdCertsSpec>(ETCD_ID)?;
        let wanted = (spec.name.clone(), ip);
        let fits = current
            .as_ref()
            .is_some_and(|c| c.ca == ca.crt && now() < c.renew_at)
            && self.issued_for.as_ref() == Some(&wanted);
        let certs = match current.filter(|_| fits) {
            Some(c) => c,
            None => {
                let certs = issue_all(&ca, &spec.name, ip)?;
                tracing::info!(name = %spec.name, %ip, "issued the etcd certificates");
                self.issued_for = Some(wanted);
                certs
            }
        };
        ctx.requeue_after(Duration::from_secs(
            certs.renew_at.saturating_sub(now()).max(1),
        ));
        ctx.put(ETCD_ID, certs)?;
        Ok(())
    }
}
