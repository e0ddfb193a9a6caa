//! A small key service for the `kms` keys of encrypted disks, served by a cluster's helper on
//! the gateway (`http://<gateway>:8080/kms`).
//!
//! Protocol (JSON over HTTP, what machined speaks):
//! - `POST <endpoint>/seal` with `{"nodeUUID": "<uuid>", "data": "<base64 key>"}` answers
//!   `{"data": "<base64 sealed key>"}`;
//! - `POST <endpoint>/unseal` with `{"nodeUUID": "<uuid>", "data": "<base64 sealed key>"}`
//!   answers `{"data": "<base64 key>"}`;
//! - anything wrong is a 400 with the reason as text.
//!
//! A sealed key is a random 96-bit nonce and the key encrypted with AES-256-GCM under the
//! service's own key, with the machine's UUID as associated data: only the service can unseal
//! it, and only for the machine it was sealed for.

use std::path::Path;

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use crate::Result;

pub struct Kms {
    key: LessSafeKey,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl Kms {
    /// The service whose key is in `path` (made there, readable by its owner only, when
    /// missing).
    pub fn open(path: &Path) -> Result<Kms> {
        let raw = match std::fs::read(path) {
            Ok(k) => k,
            Err(_) => {
                let mut k = vec![0u8; 32];
                SystemRandom::new()
                    .fill(&mut k)
                    .map_err(|_| "no randomness".to_string())?;
                machinery::fsutil::write_atomic(path, &k, 0o600)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                k
            }
        };
        let key = UnboundKey::new(&AES_256_GCM, &raw)
            .map_err(|_| format!("{}: not a 256-bit key", path.display()))?;
        Ok(Kms {
            key: LessSafeKey::new(key),
        })
    }

    pub fn seal(&self, node: &str, data: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| "no randomness".to_string())?;
        let mut sealed = data.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(node.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| "sealing failed".to_string())?;
        Ok([nonce.to_vec(), sealed].concat())
    }

    pub fn unseal(&self, node: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return Err("the sealed key is too short".into());
        }
        let (nonce, data) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce")?;
        let mut data = data.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(node.as_bytes()), &mut data)
            .map_err(|_| format!("the key was not sealed by this service for machine {node}"))?;
        Ok(plain.to_vec())
    }

    /// Answer a request: `op` is `seal` or `unseal`, `body` the request's JSON.
    pub fn answer(&self, op: &str, body: &[u8]) -> Result<Vec<u8>> {
        let req: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("the request: {e}"))?;
        let node = req["nodeUUID"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or("the request has no nodeUUID")?;
        let data = b64()
            .decode(req["data"].as_str().ok_or("the request has no data")?)
            .map_err(|e| format!("data: {e}"))?;
        let out = match op {
            "seal" => self.seal(node, &data)?,
            "unseal" => self.unseal(node, &data)?,
            _ => return Err(format!("unknown operation {op:?}: seal or unseal")),
        };
        Ok(serde_json::json!({"data": b64().encode(out)})
            .to_string()
            .into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_unseal_only_for_their_machine_over_http() {
        let dir = std::env::temp_dir().join(format!("kms-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kms = std::sync::Arc::new(Kms::open(&dir.join("kms.key")).unwrap());
        let server = crate::http::Server::start("127.0.0.1:0".parse().unwrap()).unwrap();
        let k = kms.clone();
        server.post(
            "/kms/",
            std::sync::Arc::new(move |op, body| k.answer(op, body)),
        );
        let call = |op: &str, node: &str, data: &str| {
            ureq::post(&format!("http://{}/kms/{op}", server.addr))
                .send_string(&serde_json::json!({"nodeUUID": node, "data": data}).to_string())
                .map(|r| {
                    let v: serde_json::Value =
                        serde_json::from_str(&r.into_string().unwrap()).unwrap();
                    v["data"].as_str().unwrap().to_string()
                })
                .map_err(|e| match e {
                    ureq::Error::Status(code, r) => format!("{code} {}", r.into_string().unwrap()),
                    e => e.to_string(),
                })
        };
        let key = b64().encode(b"the disk key");
        let sealed = call("seal", "uuid-1", &key).unwrap();
        assert_ne!(sealed, key);
        assert_eq!(call("unseal", "uuid-1", &sealed).unwrap(), key);
        let err = call("unseal", "uuid-2", &sealed).unwrap_err();
        assert!(
            err.starts_with("400 the key was not sealed by this service for machine uuid-2"),
            "{err}"
        );
        // The service's key is kept: a service started again unseals what it sealed.
        let again = Kms::open(&dir.join("kms.key")).unwrap();
        let raw = b64().decode(&sealed).unwrap();
        assert_eq!(again.unseal("uuid-1", &raw).unwrap(), b"the disk key");
        assert!(call("rotate", "uuid-1", &key)
            .unwrap_err()
            .contains("unknown operation"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
