//! The system disk's volumes STATE and EPHEMERAL on an installed machine: opened with the keys
//! of `machine.systemDiskEncryption` (LUKS2) or used as they are, formatted (and encrypted, as
//! configured) when empty, their key slots kept in line with the config on every apply, and
//! their state published as `VolumeStatus` resources.
//!
//! STATE is opened before anything else, so its encryption is also kept in META (the config
//! on STATE is the one that counts: META follows it). Key kinds: `static` (a passphrase),
//! `nodeID` (derived from the machine's UUID and the partition's label), `kms` (a random key
//! sealed by a key service over HTTP, the sealed key kept in a LUKS2 token; see the README for
//! the protocol), `tpm` (a random key sealed by the machine's TPM, bound to PCR 7 or the PCRs
//! the config names, kept in a LUKS2 token: [`disk::tpm`]). A key locked to STATE also needs
//! a random salt kept on STATE. The config sets a partition's encryption in
//! `machine.systemDiskEncryption` or in a `VolumeConfig` document of the partition's name.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use disk::luks;
use machinery::config::Config;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sys::console;

/// A partition's encryption, as the config has it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Encryption {
    #[serde(default)]
    pub provider: String,
    #[serde(default)]
    pub keys: Vec<Key>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Key {
    #[serde(default)]
    pub slot: u32,
    #[serde(rename = "static", default, skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<StaticKey>,
    #[serde(rename = "nodeID", default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms: Option<KmsKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<TpmKey>,
    /// The key also needs STATE's salt (v1alpha1 spells it `lockToSTATE`).
    #[serde(
        alias = "lockToSTATE",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub lock_to_state: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StaticKey {
    #[serde(default)]
    pub passphrase: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct KmsKey {
    #[serde(default)]
    pub endpoint: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TpmKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_secureboot_status_on_enroll: Option<bool>,
    /// VolumeConfig's `options.pcrs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<TpmOptions>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TpmOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcrs: Option<Vec<u32>>,
}

impl TpmKey {
    /// The PCRs the key is bound to: 7, the Secure Boot policy (what upgrades leave alone),
    /// unless the config names others (an empty list binds it to none).
    fn pcrs(&self) -> Vec<u32> {
        self.options
            .as_ref()
            .and_then(|o| o.pcrs.clone())
            .unwrap_or_else(|| vec![7])
    }
}

/// The LUKS2 tokens `kms` and `tpm` keys keep their sealed keys in.
const KMS_TOKEN: &str = "talos-kms";
const TPM_TOKEN: &str = "talos-tpm";

impl Key {
    pub fn kind(&self) -> &'static str {
        if self.passphrase.is_some() {
            "static"
        } else if self.node_id.is_some() {
            "nodeID"
        } else if self.kms.is_some() {
            "kms"
        } else {
            "tpm"
        }
    }

    /// How the key slot derives its key: a passphrase is stretched (Argon2id); nodeID, kms
    /// and tpm keys are 256 random-looking bits already, so one quick PBKDF2 pass will do (and a
    /// small machine opens its partitions without a second's wait each).
    fn kdf(&self) -> Vec<String> {
        if self.passphrase.is_some() {
            return luks::default_kdf();
        }
        luks::quick_kdf()
    }

    fn describe(&self) -> String {
        format!("slot {} ({})", self.slot, self.kind())
    }

    /// This key's secret for `label`; a `kms` or `tpm` key unseals the key its slot's token
    /// keeps; a key locked to STATE mixes in STATE's salt.
    fn secret(&self, label: &str, header: &luks::Header) -> Result<Vec<u8>, String> {
        self.lock(self.own_secret(label, header)?)
    }

    fn own_secret(&self, label: &str, header: &luks::Header) -> Result<Vec<u8>, String> {
        if let Some(s) = &self.passphrase {
            return Ok(s.passphrase.as_bytes().to_vec());
        }
        if self.node_id.is_some() {
            return node_id_key(&node_uuid()?, label);
        }
        if let Some(k) = &self.kms {
            let token = header
                .token(KMS_TOKEN, self.slot)
                .ok_or_else(|| format!("slot {} has no sealed key to unseal", self.slot))?;
            let sealed = token["sealed"].as_str().unwrap_or_default();
            return kms_call(&k.endpoint, "unseal", sealed).and_then(|k| decode(&k));
        }
        let token = header
            .token(TPM_TOKEN, self.slot)
            .ok_or_else(|| format!("slot {} has no sealed key to unseal", self.slot))?;
        let field = |name: &str| decode(token[name].as_str().unwrap_or_default());
        let sealed = disk::tpm::Sealed {
            public: field("sealedPublic")?,
            private: field("sealedPrivate")?,
        };
        // The PCRs it was sealed with.
        let pcrs: Vec<u32> = serde_json::from_value(token["pcrs"].clone()).unwrap_or_default();
        disk::tpm::unseal(&sealed, &pcrs)
    }

    /// A new secret for this key, and the token to keep with its slot.
    fn enroll(&self, label: &str) -> Result<(Vec<u8>, Option<Value>), String> {
        let mut raw = [0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut raw);
        let key = b64(&raw).into_bytes();
        let token = match (&self.kms, &self.tpm) {
            (Some(k), _) => {
                let sealed = kms_call(&k.endpoint, "seal", &b64(&key))?;
                serde_json::json!({"type": KMS_TOKEN, "endpoint": k.endpoint, "sealed": sealed})
            }
            (None, Some(t)) => {
                if t.check_secureboot_status_on_enroll == Some(true) && !disk::tpm::secure_boot() {
                    return Err("Secure Boot is not enabled in the firmware: the tpm key (checkSecurebootStatusOnEnroll) is not enrolled".into());
                }
                let pcrs = t.pcrs();
                let sealed = disk::tpm::seal(&key, &pcrs)?;
                serde_json::json!({
                    "type": TPM_TOKEN,
                    "pcrs": pcrs,
                    "sealedPublic": b64(&sealed.public),
                    "sealedPrivate": b64(&sealed.private),
                })
            }
            (None, None) => {
                return self
                    .secret(label, &luks::Header::default())
                    .map(|s| (s, None))
            }
        };
        Ok((self.lock(key)?, Some(token)))
    }

    /// `secret`, locked to STATE when the key says so: mixed with the random salt STATE keeps,
    /// so that the partition does not open without this machine's STATE.
    fn lock(&self, secret: Vec<u8>) -> Result<Vec<u8>, String> {
        if self.lock_to_state != Some(true) {
            return Ok(secret);
        }
        let salt = state_salt(Path::new(crate::sys::STATE_DIR))?;
        Ok(salted(&salt, &secret))
    }
}

fn salted(salt: &[u8], secret: &[u8]) -> Vec<u8> {
    let digest = oci::sha256(&[salt, secret].concat());
    digest.trim_start_matches("sha256:").as_bytes().to_vec()
}

/// The salt keys locked to STATE mix in, kept in STATE (mounted at `state`): made at first
/// use, written atomically; gone when STATE is wiped, and with it every locked key.
fn state_salt(state: &Path) -> Result<Vec<u8>, String> {
    let path = state.join("volume-salt");
    match std::fs::read(&path) {
        Ok(salt) if salt.len() == 32 => Ok(salt),
        Ok(_) => Err(format!("{}: not a salt of 32 bytes", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut salt = [0u8; 32];
            rand::Rng::fill(&mut rand::thread_rng(), &mut salt);
            machinery::fsutil::write_atomic(&path, &salt, 0o600)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(salt.to_vec())
        }
        Err(e) => Err(format!("STATE's salt {}: {e}", path.display())),
    }
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn decode(text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("not base64: {e}"))
}

/// The machine's UUID (SMBIOS), lower case.
pub fn node_uuid() -> Result<String, String> {
    std::fs::read_to_string("/sys/class/dmi/id/product_uuid")
        .map(|u| u.trim().to_lowercase())
        .map_err(|e| format!("the machine's UUID (/sys/class/dmi/id/product_uuid): {e}"))
}

/// Bits of entropy per hex digit of a UUID (Shannon).
fn entropy(uuid: &str) -> f64 {
    let digits: Vec<char> = uuid.chars().filter(char::is_ascii_hexdigit).collect();
    let n = digits.len() as f64;
    let mut counts = std::collections::HashMap::new();
    for c in &digits {
        *counts.entry(c.to_ascii_lowercase()).or_insert(0usize) += 1;
    }
    counts
        .values()
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// The `nodeID` key of partition `label`: SHA-256 of the machine's UUID and the label (hex),
/// refused for a UUID made up of few digits (all zeros, a repeated pattern).
fn node_id_key(uuid: &str, label: &str) -> Result<Vec<u8>, String> {
    if entropy(uuid) < 3.0 {
        return Err(format!(
            "the machine's UUID {uuid} has too little entropy to derive a key from (nodeID keys need a random UUID)"
        ));
    }
    let digest = oci::sha256(format!("{uuid}{label}").as_bytes());
    Ok(digest.trim_start_matches("sha256:").as_bytes().to_vec())
}

/// One call of the key service: `POST <endpoint>/<op>` with `{"nodeUUID", "data"}` (base64),
/// answered with `{"data"}`.
fn kms_call(endpoint: &str, op: &str, data: &str) -> Result<String, String> {
    let url = format!("{}/{op}", endpoint.trim_end_matches('/'));
    let body = serde_json::json!({"nodeUUID": node_uuid()?, "data": data}).to_string();
    let reply = ureq::post(&url)
        .timeout(Duration::from_secs(10))
        .set("Content-Type", "application/json")
        .send_string(&body)
        .map_err(|e| match e {
            ureq::Error::Status(code, r) => format!(
                "{url}: {code} {}",
                r.into_string().unwrap_or_default().trim()
            ),
            // The transport error names the URL already.
            e => e.to_string(),
        })?
        .into_string()
        .map_err(|e| format!("{url}: {e}"))?;
    let v: Value = serde_json::from_str(&reply).map_err(|e| format!("{url}: {e}"))?;
    v["data"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{url}: the answer has no data"))
}

/// Where the config sets the encryption of partition `label` (`STATE` or `EPHEMERAL`), and
/// what it says: `machine.systemDiskEncryption`, or else a `VolumeConfig` document of that
/// name (validation refuses both at once).
fn source<'a>(config: &'a Config, label: &str) -> Option<(String, &'a Value)> {
    let part = label.to_lowercase();
    if let Some(v) = config.pointer(&format!("/machine/systemDiskEncryption/{part}")) {
        return Some((format!("machine.systemDiskEncryption.{part}"), v));
    }
    let doc = config
        .kind("VolumeConfig")
        .find(|d| d.value["name"] == label)?;
    let v = doc.value.get("encryption")?;
    let provider = v["provider"].as_str().unwrap_or_default();
    (!provider.is_empty()).then(|| (format!("VolumeConfig {label}: encryption"), v))
}

/// The encryption the config gives partition `label` (`STATE` or `EPHEMERAL`).
pub fn configured(config: &Config, label: &str) -> Option<Encryption> {
    let (_, v) = source(config, label)?;
    serde_json::from_value(v.clone()).ok()
}

fn options(enc: &Encryption) -> luks::Options {
    luks::Options {
        cipher: enc.cipher.clone().filter(|c| !c.is_empty()),
        key_size: enc.key_size.filter(|k| *k > 0),
        sector_size: enc.block_size.filter(|b| *b > 0),
        ..luks::Options::default()
    }
}

/// The name of a partition's open mapping.
pub fn mapping(label: &str) -> String {
    format!("luks2-{label}")
}

/// Encrypt `dev` with every key of `enc`; the first key's secret.
fn encrypt(dev: &Path, label: &str, enc: &Encryption) -> Result<Vec<u8>, String> {
    if enc.keys.is_empty() {
        return Err(format!("{label}: an encryption config needs keys"));
    }
    let mut first: Option<Vec<u8>> = None;
    for key in &enc.keys {
        let opts = luks::Options {
            kdf: key.kdf(),
            ..options(enc)
        };
        let (secret, token) = key
            .enroll(label)
            .map_err(|e| format!("{label} {}: {e}", key.describe()))?;
        match &first {
            None => luks::format(dev, label, &opts, key.slot, &secret)?,
            Some(f) => luks::add_key(dev, &key.kdf(), f, key.slot, &secret)?,
        }
        if let Some(t) = token {
            luks::set_token(dev, key.slot, &t)?;
        }
        first.get_or_insert(secret);
    }
    Ok(first.unwrap_or_default())
}

/// Open the encrypted `dev` with the first key of `enc` that opens it.
fn open(dev: &Path, label: &str, enc: &Encryption) -> Result<PathBuf, String> {
    if let Some(m) = luks::mapped(&mapping(label)) {
        return Ok(m);
    }
    let header = luks::dump(dev)?;
    let mut why = Vec::new();
    for key in &enc.keys {
        if !header.slots.contains(&key.slot) {
            why.push(format!("{}: no such key slot", key.describe()));
            continue;
        }
        match key.secret(label, &header) {
            Ok(s) => match luks::open(dev, &mapping(label), Some(key.slot), &s, &enc.options) {
                Ok(m) => {
                    console(&format!("boot: {label} opened with {}", key.describe()));
                    return Ok(m);
                }
                Err(e) => why.push(format!("{}: {e}", key.describe())),
            },
            Err(e) => why.push(format!("{}: {e}", key.describe())),
        }
    }
    Err(format!(
        "{label} is encrypted and no key of its config opens it: {}",
        why.join("; ")
    ))
}

/// A key of `enc` that opens slot its own slot of `dev`: its secret.
fn authorising(dev: &Path, label: &str, keys: &[&Key]) -> Result<Vec<u8>, String> {
    let header = luks::dump(dev)?;
    let mut why = Vec::new();
    for key in keys {
        match key.secret(label, &header) {
            Ok(s) if luks::test_key(dev, Some(key.slot), &s) => return Ok(s),
            Ok(_) => why.push(format!("{}: does not open its slot", key.describe())),
            Err(e) => why.push(format!("{}: {e}", key.describe())),
        }
    }
    Err(format!(
        "{label}: none of the keys kept by the change opens the partition: {}",
        why.join("; ")
    ))
}

/// Make `dev` (partition `label`) ready to mount: opened when encrypted, formatted (and
/// encrypted when `enc` says so) when empty. The device to mount.
pub fn prepare(dev: &Path, label: &str, enc: Option<&Encryption>) -> Result<PathBuf, String> {
    let (_, part) = disk::part(label).ok_or_else(|| format!("{label}: not a partition"))?;
    match disk::content(dev)? {
        disk::Content::Luks => {
            let enc = enc.ok_or_else(|| {
                format!("{label} is encrypted, but there is no encryption config to open it with")
            })?;
            open(dev, label, enc)
        }
        disk::Content::Empty => match enc {
            Some(enc) => {
                console(&format!("boot: {label} is empty: encrypting it (LUKS2)"));
                let key = encrypt(dev, label, enc)?;
                let mapped = luks::open(dev, &mapping(label), None, &key, &enc.options)?;
                disk::format(&mapped, &part)?;
                Ok(mapped)
            }
            None => {
                console(&format!("boot: {label} is empty: formatting it"));
                disk::format(dev, &part)?;
                Ok(dev.to_path_buf())
            }
        },
        disk::Content::Xfs => {
            if enc.is_some() {
                console(&format!(
                    "boot: {label} is not encrypted; its encryption config takes effect when it is wiped (talosctl reset --system-labels-to-wipe {label})"
                ));
            }
            Ok(dev.to_path_buf())
        }
        disk::Content::Other => Err(format!(
            "{label} ({}) holds neither XFS nor LUKS2; wipe it with talosctl reset --system-labels-to-wipe {label}",
            dev.display()
        )),
    }
}

/// Make `dev` empty again (closing its mapping first).
pub fn erase(dev: &Path, label: &str) -> Result<(), String> {
    if luks::mapped(&mapping(label)).is_some() {
        luks::close(&mapping(label))?;
    }
    disk::erase(dev)
}

/// The keys `old` and `new` share (same slot, same key).
fn unchanged<'a>(old: &Encryption, new: &'a Encryption) -> Vec<&'a Key> {
    new.keys.iter().filter(|k| old.keys.contains(k)).collect()
}

/// Whether the encryption change from `old` to `new` can be applied to the partitions: every
/// change of keys must keep one key as it was (it opens the partition to change the others).
pub fn check(old: &Config, new: &Config) -> Result<(), String> {
    for label in [disk::STATE, disk::EPHEMERAL] {
        let path = source(new, label)
            .or_else(|| source(old, label))
            .map(|(path, _)| path)
            .unwrap_or_default();
        match (configured(old, label), configured(new, label)) {
            (Some(o), Some(n)) if o.keys != n.keys && unchanged(&o, &n).is_empty() => {
                return Err(format!(
                    "{path}.keys: the change leaves no key as it was, so nothing could open {label} to change its key slots; rotate keys in two applies (add the new keys, then remove the old ones)"
                ))
            }
            (Some(_), None) => {
                return Err(format!(
                    "{path}: {label} stays encrypted without its keys; to stop encrypting it, apply the config with --mode=staged and wipe it (talosctl reset --system-labels-to-wipe {label})"
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Bring the key slots of the encrypted `dev` in line with `new`: new and changed keys are
/// enrolled, slots the config no longer has are removed. What was done.
fn sync(
    dev: &Path,
    label: &str,
    old: &Encryption,
    new: &Encryption,
) -> Result<Vec<String>, String> {
    let kept = unchanged(old, new);
    if kept.is_empty() {
        return Err(format!("{label}: no key is kept by the change"));
    }
    let auth = authorising(dev, label, &kept)?;
    let header = luks::dump(dev)?;
    let mut done = Vec::new();
    for key in &new.keys {
        if kept.contains(&key) && header.slots.contains(&key.slot) {
            continue;
        }
        if header.slots.contains(&key.slot) {
            luks::kill_slot(dev, key.slot, &auth)?;
        }
        let (secret, token) = key
            .enroll(label)
            .map_err(|e| format!("{label} {}: {e}", key.describe()))?;
        luks::add_key(dev, &key.kdf(), &auth, key.slot, &secret)?;
        if let Some(t) = token {
            luks::set_token(dev, key.slot, &t)?;
        }
        done.push(format!("{label}: {} enrolled", key.describe()));
    }
    for slot in header.slots {
        if !new.keys.iter().any(|k| k.slot == slot) {
            luks::kill_slot(dev, slot, &auth)?;
            done.push(format!("{label}: slot {slot} removed"));
        }
    }
    luks::prune_tokens(dev)?;
    Ok(done)
}

/// Keep STATE's encryption in META (or none).
fn remember_state(enc: Option<&Encryption>) -> Result<(), String> {
    let meta = disk::find(disk::META).ok_or("the META partition is missing")?;
    remember_state_at(&meta, enc)
}

/// Keep STATE's encryption in the META partition `meta`.
pub fn remember_state_at(meta: &Path, enc: Option<&Encryption>) -> Result<(), String> {
    let json = enc.map(|e| serde_json::to_string(e).expect("json"));
    disk::meta::set(meta, disk::meta::STATE_ENCRYPTION, json.as_deref())
}

/// STATE's encryption as META keeps it.
pub fn state_encryption_in_meta() -> Option<Encryption> {
    let meta = disk::find(disk::META)?;
    let values = disk::meta::read(&meta).ok()?;
    serde_json::from_str(values.get(disk::meta::STATE_ENCRYPTION)?).ok()
}

/// Apply the encryption change from `old` to `new` to the encrypted partitions of this
/// installed machine (partitions not encrypted yet take the config when next formatted).
pub fn sync_all(old: &Config, new: &Config) -> Result<Vec<String>, String> {
    let mut done = Vec::new();
    for label in [disk::STATE, disk::EPHEMERAL] {
        let (o, n) = (configured(old, label), configured(new, label));
        if o == n {
            continue;
        }
        let Some(dev) = disk::find(label) else {
            continue;
        };
        if let (Some(o), Some(n)) = (&o, &n) {
            if disk::content(&dev)? == disk::Content::Luks {
                done.extend(sync(&dev, label, o, n)?);
            }
        }
        if label == disk::STATE {
            remember_state(n.as_ref())?;
        }
    }
    Ok(done)
}

/// META follows the config's STATE encryption (the config is preferred).
pub fn remember_config(config: &Config) -> Result<(), String> {
    let enc = configured(config, disk::STATE);
    if state_encryption_in_meta() != enc {
        remember_state(enc.as_ref())?;
    }
    Ok(())
}

/// On a machine that applies its first config in maintenance mode after STATE was wiped:
/// encrypt STATE as the config asks (it is empty), and mount it again. Nothing to do when the
/// config does not encrypt STATE or STATE is encrypted already.
pub fn encrypt_state(config: &Config) -> Result<(), String> {
    let Some(enc) = configured(config, disk::STATE) else {
        return Ok(());
    };
    let dev = disk::find(disk::STATE).ok_or("the STATE partition is missing")?;
    if disk::content(&dev)? == disk::Content::Luks {
        return Ok(());
    }
    let at = crate::sys::STATE_DIR;
    nix::mount::umount2(at, nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| format!("unmount {at}: {e}"))?;
    disk::erase(&dev)?;
    let mapped = prepare(&dev, disk::STATE, Some(&enc))?;
    crate::sys::mount_xfs(&mapped, at)?;
    remember_state(Some(&enc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(keys: &str) -> Config {
        Config::parse(&format!(
            "version: v1alpha1\nmachine:\n  type: worker\n  systemDiskEncryption:\n    ephemeral:\n      provider: luks2\n      keys:\n{keys}"
        ))
        .unwrap()
    }

    #[test]
    fn the_config_gives_each_partition_its_keys() {
        let c = cfg("        - slot: 0\n          nodeID: {}\n        - slot: 2\n          static:\n            passphrase: p\n        - slot: 3\n          kms:\n            endpoint: http://kms\n");
        let e = configured(&c, "EPHEMERAL").unwrap();
        assert_eq!(e.provider, "luks2");
        let kinds: Vec<_> = e.keys.iter().map(|k| (k.slot, k.kind())).collect();
        assert_eq!(kinds, vec![(0, "nodeID"), (2, "static"), (3, "kms")]);
        assert!(configured(&c, "STATE").is_none());
    }

    #[test]
    fn a_rotation_must_keep_one_key_as_it_was() {
        let a = cfg("        - slot: 0\n          nodeID: {}\n");
        let both = cfg("        - slot: 0\n          nodeID: {}\n        - slot: 1\n          static:\n            passphrase: new\n");
        let b = cfg("        - slot: 1\n          static:\n            passphrase: new\n");
        let changed = cfg("        - slot: 0\n          static:\n            passphrase: other\n");
        assert!(check(&a, &both).is_ok());
        assert!(check(&both, &b).is_ok());
        let err = check(&a, &b).unwrap_err();
        assert!(
            err.contains(
                "machine.systemDiskEncryption.ephemeral.keys: the change leaves no key as it was"
            ),
            "{err}"
        );
        // The same slot with another key is a change, not a kept key.
        assert!(check(&a, &changed).is_err());
        let none = Config::parse("version: v1alpha1\nmachine:\n  type: worker\n").unwrap();
        assert!(check(&a, &none).unwrap_err().contains("--mode=staged"));
        assert!(check(&none, &a).is_ok());
    }

    #[test]
    fn node_id_keys_need_a_random_uuid_and_differ_by_partition() {
        let uuid = "8c4d1b52-3e7f-4a96-b1d0-5f2a97c6e3b8";
        let s = node_id_key(uuid, "STATE").unwrap();
        let e = node_id_key(uuid, "EPHEMERAL").unwrap();
        assert_ne!(s, e);
        assert_eq!(s, node_id_key(uuid, "STATE").unwrap());
        for weak in [
            "00000000-0000-0000-0000-000000000000",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
            "deadbeef-dead-beef-dead-beefdeadbeef",
        ] {
            let err = node_id_key(weak, "STATE").unwrap_err();
            assert!(err.contains("too little entropy"), "{err}");
        }
    }

    fn statics(keys: &[(u32, &str)]) -> Encryption {
        Encryption {
            provider: "luks2".into(),
            keys: keys
                .iter()
                .map(|(slot, p)| Key {
                    slot: *slot,
                    passphrase: Some(StaticKey {
                        passphrase: p.to_string(),
                    }),
                    ..Key::default()
                })
                .collect(),
            ..Encryption::default()
        }
    }

    #[test]
    fn key_slots_follow_the_config_authorised_by_a_kept_key() {
        // Other tests of this process start the reaper, which collects every child: the tools
        // are waited for through it, as machined does.
        disk::set_runner(crate::sys::reaper::output);
        if crate::sys::reaper::output(std::process::Command::new("cryptsetup").arg("--version"))
            .is_err()
        {
            eprintln!("cryptsetup is missing (Debian: cryptsetup-bin)");
            return;
        }
        let img = std::env::temp_dir().join(format!("volumes-sync-{}.img", std::process::id()));
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(32 << 20))
            .unwrap();
        let label = "EPHEMERAL";
        let a = statics(&[(0, "a")]);
        encrypt(&img, label, &a).unwrap();
        let ab = statics(&[(0, "a"), (1, "b")]);
        assert_eq!(
            sync(&img, label, &a, &ab).unwrap(),
            vec!["EPHEMERAL: slot 1 (static) enrolled"]
        );
        assert_eq!(luks::dump(&img).unwrap().slots, vec![0, 1]);
        // The second step of a rotation drops the old key.
        let b = statics(&[(1, "b")]);
        assert_eq!(
            sync(&img, label, &ab, &b).unwrap(),
            vec!["EPHEMERAL: slot 0 removed"]
        );
        assert!(!luks::test_key(&img, None, b"a"));
        assert!(luks::test_key(&img, Some(1), b"b"));
        // A slot whose key changes gets the new key, authorised by the kept one.
        let bc = statics(&[(1, "b"), (2, "c")]);
        sync(&img, label, &b, &bc).unwrap();
        let bc2 = statics(&[(1, "b"), (2, "c2")]);
        sync(&img, label, &bc, &bc2).unwrap();
        assert!(luks::test_key(&img, Some(2), b"c2"));
        assert!(!luks::test_key(&img, Some(2), b"c"));
        // A kept key that does not open the partition authorises nothing.
        let wrong = statics(&[(1, "zzz")]);
        let err = sync(&img, label, &wrong, &statics(&[(1, "zzz"), (3, "d")])).unwrap_err();
        assert!(
            err.contains("none of the keys kept by the change opens"),
            "{err}"
        );
        assert_eq!(luks::dump(&img).unwrap().slots, vec![1, 2]);
        std::fs::remove_file(&img).unwrap();
    }

    #[test]
    fn a_volume_config_document_sets_encryption_too() {
        let c = Config::parse("version: v1alpha1\nmachine:\n  type: worker\n---\napiVersion: v1alpha1\nkind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  provider: luks2\n  keys:\n    - slot: 0\n      tpm:\n        options:\n          pcrs: [0, 7]\n    - slot: 1\n      tpm: {}\n    - slot: 2\n      tpm:\n        options:\n          pcrs: []\n    - slot: 3\n      nodeID: {}\n      lockToState: true\n").unwrap();
        let e = configured(&c, "EPHEMERAL").unwrap();
        let pcrs: Vec<_> = e.keys[..3]
            .iter()
            .map(|k| k.tpm.as_ref().unwrap().pcrs())
            .collect();
        assert_eq!(pcrs, vec![vec![0, 7], vec![7], vec![]]);
        assert_eq!(e.keys[3].lock_to_state, Some(true));
        assert!(configured(&c, "STATE").is_none());
        // Dropping the document's only key is named where it is set.
        let none = Config::parse("version: v1alpha1\nmachine:\n  type: worker\n").unwrap();
        let err = check(&c, &none).unwrap_err();
        assert!(
            err.starts_with("VolumeConfig EPHEMERAL: encryption: "),
            "{err}"
        );
        // A VolumeConfig without a provider encrypts nothing.
        let mount = Config::parse("version: v1alpha1\nmachine:\n  type: worker\n---\napiVersion: v1alpha1\nkind: VolumeConfig\nname: EPHEMERAL\nmount:\n  secure: true\n").unwrap();
        assert!(configured(&mount, "EPHEMERAL").is_none());
        // v1alpha1 spells it lockToSTATE.
        let legacy = cfg("        - slot: 0\n          nodeID: {}\n          lockToSTATE: true\n");
        let e = configured(&legacy, "EPHEMERAL").unwrap();
        assert_eq!(e.keys[0].lock_to_state, Some(true));
    }

    #[test]
    fn a_key_locked_to_state_needs_the_salt_state_keeps() {
        let dir = std::env::temp_dir().join(format!("volumes-salt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let salt = state_salt(&dir).unwrap();
        assert_eq!(salt.len(), 32);
        assert_eq!(state_salt(&dir).unwrap(), salt, "made once, then kept");
        let locked = salted(&salt, b"secret");
        assert_ne!(locked, b"secret".to_vec());
        assert_eq!(locked, salted(&salt, b"secret"));
        // A wiped STATE has another salt: the same key gives another secret.
        std::fs::remove_file(dir.join("volume-salt")).unwrap();
        let other = state_salt(&dir).unwrap();
        assert_ne!(salted(&other, b"secret"), locked);
        std::fs::write(dir.join("volume-salt"), b"short").unwrap();
        assert!(state_salt(&dir)
            .unwrap_err()
            .contains("not a salt of 32 bytes"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
