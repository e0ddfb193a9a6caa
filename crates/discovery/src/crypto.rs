//! What the service stores is ciphertext only. The key is the cluster secret itself (32 bytes,
//! base64 in the config); the cluster ID travels in the clear.
//!
//! - Affiliate data: `nonce (12 random bytes) || AES-256-GCM(plaintext) || tag (16)`.
//! - Endpoints: `len (1 byte) || Endpoint message`, zero-padded to whole 16-byte blocks, each
//!   block encrypted alone: the same endpoint always gives the same bytes.

use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use prost::Message;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use crate::pb::client::{Affiliate, Endpoint};

#[derive(Clone)]
pub struct Cipher {
    gcm: std::sync::Arc<LessSafeKey>,
    block: aes::Aes256,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(..)")
    }
}

impl Cipher {
    /// From the cluster secret as the config holds it (standard base64 of 32 bytes).
    pub fn from_secret(secret_b64: &str) -> Result<Cipher, String> {
        use base64::Engine;
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret_b64.trim())
            .map_err(|e| format!("the cluster secret is not base64: {e}"))?;
        Cipher::new(&key)
    }

    pub fn new(key: &[u8]) -> Result<Cipher, String> {
        if key.len() != 32 {
            return Err(format!(
                "the cluster secret must be 32 bytes, it is {}",
                key.len()
            ));
        }
        let gcm = UnboundKey::new(&AES_256_GCM, key).map_err(|_| "bad key")?;
        Ok(Cipher {
            gcm: std::sync::Arc::new(LessSafeKey::new(gcm)),
            block: aes::Aes256::new_from_slice(key).map_err(|_| "bad key")?,
        })
    }

    pub fn seal_affiliate(&self, a: &Affiliate) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).expect("random");
        let mut buf = a.encode_to_vec();
        self.gcm
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
            .expect("seal");
        let mut out = nonce.to_vec();
        out.extend(buf);
        out
    }

    /// None for data that is not ours to read (empty, foreign key, damaged).
    pub fn open_affiliate(&self, data: &[u8]) -> Option<Affiliate> {
        if data.len() < NONCE_LEN {
            return None;
        }
        let (nonce, rest) = data.split_at(NONCE_LEN);
        let mut buf = rest.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let plain = self.gcm.open_in_place(nonce, Aad::empty(), &mut buf).ok()?;
        Affiliate::decode(&*plain).ok()
    }

    pub fn seal_endpoint(&self, e: &Endpoint) -> Vec<u8> {
        let body = e.encode_to_vec();
        let mut buf = vec![body.len() as u8];
        buf.extend(body);
        buf.resize(buf.len().div_ceil(16) * 16, 0);
        for block in buf.chunks_mut(16) {
            self.block.encrypt_block(block.into());
        }
        buf
    }

    pub fn open_endpoint(&self, data: &[u8]) -> Option<Endpoint> {
        if data.is_empty() || !data.len().is_multiple_of(16) {
            return None;
        }
        let mut buf = data.to_vec();
        for block in buf.chunks_mut(16) {
            self.block.decrypt_block(block.into());
        }
        let len = *buf.first()? as usize;
        Endpoint::decode(buf.get(1..1 + len)?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affiliates_and_endpoints_round_trip_and_endpoints_are_deterministic() {
        let c = Cipher::from_secret("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        let a = Affiliate {
            node_id: "n1".into(),
            hostname: "cp-1".into(),
            addresses: vec![vec![10, 5, 0, 2]],
            ..Default::default()
        };
        let sealed = c.seal_affiliate(&a);
        assert_ne!(sealed, c.seal_affiliate(&a), "a fresh nonce each time");
        assert_eq!(c.open_affiliate(&sealed), Some(a));
        assert_eq!(c.open_affiliate(&sealed[..10]), None);
        let other = Cipher::new(&[7; 32]).unwrap();
        assert_eq!(other.open_affiliate(&sealed), None);
        let e = Endpoint {
            ip: vec![10, 5, 0, 2],
            port: 51820,
        };
        let v4 = c.seal_endpoint(&e);
        assert_eq!(v4.len(), 16);
        assert_eq!(v4, c.seal_endpoint(&e));
        assert_eq!(c.open_endpoint(&v4), Some(e));
        let v6 = c.seal_endpoint(&Endpoint {
            ip: vec![0xfd; 16],
            port: 1,
        });
        assert_eq!(v6.len(), 32);
        assert!(Cipher::new(&[1; 16]).unwrap_err().contains("32 bytes"));
    }
}
