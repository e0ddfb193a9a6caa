//! LUKS2 volumes through Debian's `cryptsetup`: format with a first key, add and remove keys
//! by slot, tokens (JSON the header keeps beside a slot), open and close the mapping.
//!
//! Keys never touch a file system: each is written to a sealed-off memory file that only the
//! `cryptsetup` child sees (as `/proc/self/fd/3`, `/proc/self/fd/4`).

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{run, run_out, Result};

/// How a volume is encrypted (`cryptsetup luksFormat`'s choices).
#[derive(Debug, Clone)]
pub struct Options {
    /// `aes-xts-plain64` unless set.
    pub cipher: Option<String>,
    /// Bits of the volume key (512 for AES-XTS-256).
    pub key_size: Option<u32>,
    /// The encryption sector size in bytes.
    pub sector_size: Option<u32>,
    /// The key derivation of new key slots (`--pbkdf ...` arguments).
    pub kdf: Vec<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            cipher: None,
            key_size: None,
            sector_size: None,
            kdf: default_kdf(),
        }
    }
}

/// Argon2id, bounded so that a small machine opens its volumes in about a second.
pub fn default_kdf() -> Vec<String> {
    [
        "--pbkdf",
        "argon2id",
        "--pbkdf-memory",
        "65536",
        "--pbkdf-parallel",
        "1",
        "--iter-time",
        "500",
    ]
    .map(String::from)
    .to_vec()
}

/// One quick PBKDF2 pass: for keys that are random already (256 bits need no stretching).
pub fn quick_kdf() -> Vec<String> {
    ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]
        .map(String::from)
        .to_vec()
}

/// A key in a memory file, dropped with this.
pub(crate) struct KeyFiles(Vec<OwnedFd>);

impl KeyFiles {
    pub(crate) fn new(keys: &[&[u8]]) -> Result<KeyFiles> {
        let mut fds = Vec::new();
        for key in keys {
            let fd =
                nix::sys::memfd::memfd_create(c"luks-key", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                    .map_err(|e| format!("memfd: {e}"))?;
            std::fs::File::from(fd.try_clone().map_err(|e| format!("memfd: {e}"))?)
                .write_all(key)
                .map_err(|e| format!("memfd: {e}"))?;
            fds.push(fd);
        }
        Ok(KeyFiles(fds))
    }

    /// Hand the keys to `cmd`'s process as descriptors 3, 4, ...; their paths there.
    pub(crate) fn pass(&self, cmd: &mut Command) -> Vec<String> {
        let raw: Vec<i32> = self.0.iter().map(AsRawFd::as_raw_fd).collect();
        let paths = (0..raw.len())
            .map(|i| format!("/proc/self/fd/{}", 3 + i))
            .collect();
        // SAFETY: between fork and exec only async-signal-safe calls are made.
        unsafe { cmd.pre_exec(move || crate::place_descriptors(&raw)) };
        paths
    }
}

fn cryptsetup() -> Command {
    Command::new("cryptsetup")
}

/// Whether `dev` holds a LUKS header.
pub fn is_luks(dev: &Path) -> bool {
    run(cryptsetup().arg("isLuks").arg(dev)).is_ok()
}

/// Make `dev` a LUKS2 volume labelled `label` whose slot `slot` opens with `key`. What was on
/// it is lost.
pub fn format(dev: &Path, label: &str, opts: &Options, slot: u32, key: &[u8]) -> Result<()> {
    let keys = KeyFiles::new(&[key])?;
    let mut cmd = cryptsetup();
    let paths = keys.pass(&mut cmd);
    cmd.args([
        "luksFormat",
        "--type",
        "luks2",
        "--batch-mode",
        "--label",
        label,
    ])
    .args(["--key-slot", &slot.to_string(), "--key-file", &paths[0]]);
    if let Some(c) = &opts.cipher {
        cmd.args(["--cipher", c]);
    }
    if let Some(k) = opts.key_size {
        cmd.args(["--key-size", &k.to_string()]);
    }
    if let Some(s) = opts.sector_size {
        cmd.args(["--sector-size", &s.to_string()]);
    }
    run(cmd.args(&opts.kdf).arg(dev))
}

/// Add `new` in slot `slot`, authorised by `existing` (a key of another slot).
pub fn add_key(dev: &Path, kdf: &[String], existing: &[u8], slot: u32, new: &[u8]) -> Result<()> {
    let keys = KeyFiles::new(&[existing, new])?;
    let mut cmd = cryptsetup();
    let paths = keys.pass(&mut cmd);
    run(cmd
        .args(["luksAddKey", "--batch-mode", "--key-file", &paths[0]])
        .args(["--key-slot", &slot.to_string()])
        .args(kdf)
        .arg(dev)
        .arg(&paths[1]))
}

/// Remove the key of slot `slot`; `remaining` must open another slot.
pub fn kill_slot(dev: &Path, slot: u32, remaining: &[u8]) -> Result<()> {
    let keys = KeyFiles::new(&[remaining])?;
    let mut cmd = cryptsetup();
    let paths = keys.pass(&mut cmd);
    run(cmd
        .args(["luksKillSlot", "--batch-mode", "--key-file", &paths[0]])
        .arg(dev)
        .arg(slot.to_string()))
}

/// Whether `key` opens slot `slot` (any slot when none).
pub fn test_key(dev: &Path, slot: Option<u32>, key: &[u8]) -> bool {
    let Ok(keys) = KeyFiles::new(&[key]) else {
        return false;
    };
    let mut cmd = cryptsetup();
    let paths = keys.pass(&mut cmd);
    cmd.args(["open", "--test-passphrase", "--key-file", &paths[0]]);
    if let Some(s) = slot {
        cmd.args(["--key-slot", &s.to_string()]);
    }
    run(cmd.arg(dev)).is_ok()
}

/// What a LUKS2 header says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Header {
    /// The key slots in use, in order.
    pub slots: Vec<u32>,
    /// Tokens: (id, the slots it belongs to, its JSON).
    pub tokens: Vec<(u32, Vec<u32>, serde_json::Value)>,
    /// The data's cipher.
    pub cipher: String,
}

impl Header {
    /// The token of `kind` that belongs to `slot`.
    pub fn token(&self, kind: &str, slot: u32) -> Option<&serde_json::Value> {
        self.tokens
            .iter()
            .find(|(_, slots, t)| slots.contains(&slot) && t["type"] == kind)
            .map(|(_, _, t)| t)
    }
}

/// Read the header of `dev`.
pub fn dump(dev: &Path) -> Result<Header> {
    let out = run_out(
        cryptsetup()
            .args(["luksDump", "--dump-json-metadata"])
            .arg(dev),
    )?;
    let v: serde_json::Value = serde_json::from_slice(&out)
        .map_err(|e| format!("{}: the LUKS2 header: {e}", dev.display()))?;
    let numbers = |m: &serde_json::Value| -> Vec<u32> {
        let mut n: Vec<u32> = m
            .as_object()
            .map(|o| o.keys().filter_map(|k| k.parse().ok()).collect())
            .unwrap_or_default();
        n.sort_unstable();
        n
    };
    let tokens = numbers(&v["tokens"])
        .into_iter()
        .map(|id| {
            let t = v["tokens"][id.to_string()].clone();
            let slots = t["keyslots"]
                .as_array()
                .map(|a| a.iter().filter_map(|s| s.as_str()?.parse().ok()).collect())
                .unwrap_or_default();
            (id, slots, t)
        })
        .collect();
    Ok(Header {
        slots: numbers(&v["keyslots"]),
        tokens,
        cipher: v["segments"]["0"]["encryption"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    })
}

/// Keep `token` (JSON with a `type`) for slot `slot`, in place of any token of that type the
/// slot had.
pub fn set_token(dev: &Path, slot: u32, token: &serde_json::Value) -> Result<()> {
    let kind = token["type"].as_str().unwrap_or_default();
    for (id, slots, t) in dump(dev)?.tokens {
        if slots.contains(&slot) && t["type"] == kind {
            remove_token(dev, id)?;
        }
    }
    let mut token = token.clone();
    token["keyslots"] = serde_json::json!([slot.to_string()]);
    let json = serde_json::to_vec(&token).map_err(|e| e.to_string())?;
    let keys = KeyFiles::new(&[&json])?;
    let mut cmd = cryptsetup();
    let paths = keys.pass(&mut cmd);
    run(cmd
        .args(["token", "import", "--json-file", &paths[0]])
        .arg(dev))
}

/// Remove every token of the slots not in use any more.
pub fn prune_tokens(dev: &Path) -> Result<()> {
    let h = dump(dev)?;
    for (id, slots, _) in &h.tokens {
        if slots.iter().all(|s| !h.slots.contains(s)) {
            remove_token(dev, *id)?;
        }
    }
    Ok(())
}

fn remove_token(dev: &Path, id: u32) -> Result<()> {
    run(cryptsetup()
        .args(["token", "remove", "--token-id", &id.to_string()])
        .arg(dev))
}

/// Open `dev` with `key` (of slot `slot`, or any) as the mapping `name`; its device. `flags`
/// are cryptsetup's `--perf-*` options without the dashes (`no_read_workqueue`).
pub fn open(
    dev: &Path,
    name: &str,
    slot: Option<u32>,
    key: &[u8],
    flags: &[String],
) -> Result<PathBuf> {
    let keys = KeyFiles::new(&[key])?;
    let mut cmd = cryptsetup();
    let paths = keys.pass(&mut cmd);
    cmd.args(["open", "--type", "luks2", "--key-file", &paths[0]]);
    if let Some(s) = slot {
        cmd.args(["--key-slot", &s.to_string()]);
    }
    for f in flags {
        cmd.arg(format!("--perf-{f}"));
    }
    run(cmd.arg(dev).arg(name))?;
    mapped(name).ok_or_else(|| format!("{name}: opened, but the kernel shows no such mapping"))
}

/// The device of the open mapping `name` (found through the kernel, whether or not
/// `/dev/mapper` has it).
pub fn mapped(name: &str) -> Option<PathBuf> {
    let by_name = Path::new("/dev/mapper").join(name);
    if by_name.exists() {
        return Some(by_name);
    }
    std::fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .find_map(|e| {
            let n = std::fs::read_to_string(e.path().join("dm/name")).ok()?;
            (n.trim() == name).then(|| Path::new("/dev").join(e.file_name()))
        })
}

/// Close the mapping `name`.
pub fn close(name: &str) -> Result<()> {
    run(cryptsetup().arg("close").arg(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(name: &str) -> Option<PathBuf> {
        if Command::new("cryptsetup")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("cryptsetup is missing (Debian: cryptsetup-bin)");
            return None;
        }
        let p = std::env::temp_dir().join(format!("luks-{name}-{}.img", std::process::id()));
        std::fs::File::create(&p)
            .and_then(|f| f.set_len(32 << 20))
            .unwrap();
        Some(p)
    }

    #[test]
    fn slots_are_added_removed_and_tested_by_their_keys() {
        let Some(img) = volume("slots") else { return };
        let opts = Options {
            kdf: quick_kdf(),
            ..Options::default()
        };
        assert!(!is_luks(&img));
        format(&img, "STATE", &opts, 0, b"first").unwrap();
        assert!(is_luks(&img));
        add_key(&img, &opts.kdf, b"first", 3, b"second").unwrap();
        let h = dump(&img).unwrap();
        assert_eq!(h.slots, vec![0, 3]);
        assert_eq!(h.cipher, "aes-xts-plain64");
        assert!(test_key(&img, Some(3), b"second"));
        assert!(!test_key(&img, Some(0), b"second"));
        assert!(test_key(&img, None, b"first"));
        // A wrong key authorises nothing.
        assert!(add_key(&img, &opts.kdf, b"wrong", 4, b"third").is_err());
        kill_slot(&img, 0, b"second").unwrap();
        assert_eq!(dump(&img).unwrap().slots, vec![3]);
        assert!(!test_key(&img, None, b"first"));
        std::fs::remove_file(&img).unwrap();
    }

    #[test]
    fn tokens_belong_to_a_slot_and_go_with_it() {
        let Some(img) = volume("tokens") else { return };
        let opts = Options {
            kdf: quick_kdf(),
            ..Options::default()
        };
        format(&img, "EPHEMERAL", &opts, 1, b"k1").unwrap();
        add_key(&img, &opts.kdf, b"k1", 2, b"k2").unwrap();
        let token = |sealed: &str| serde_json::json!({"type": "talos-kms", "sealed": sealed});
        set_token(&img, 2, &token("a")).unwrap();
        set_token(&img, 2, &token("b")).unwrap();
        let h = dump(&img).unwrap();
        assert_eq!(h.tokens.len(), 1, "{h:?}");
        assert_eq!(h.token("talos-kms", 2).unwrap()["sealed"], "b");
        assert!(h.token("talos-kms", 1).is_none());
        kill_slot(&img, 2, b"k1").unwrap();
        prune_tokens(&img).unwrap();
        assert!(dump(&img).unwrap().tokens.is_empty());
        std::fs::remove_file(&img).unwrap();
    }
}
