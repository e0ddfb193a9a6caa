//! Secrets sealed by the machine's TPM 2.0, through Debian's tpm2-tools (`tpm2`).
//!
//! A secret is sealed as a data object under the TPM's storage primary key (an ECC P-256 key
//! the TPM derives from its owner seed: the same at every boot, never stored), bound by a
//! policy to the current values of the chosen SHA-256 PCRs (none: only this TPM is needed).
//! What is kept (in a LUKS2 token) is the object's public and encrypted private parts; only
//! the same TPM, with the same PCR values, unseals them.
//!
//! The TPM is reached through the kernel's resource manager (`/dev/tpmrm0`) unless
//! `TPM2TOOLS_TCTI` names another (tests use a `swtpm` socket:
//! `swtpm:host=127.0.0.1,port=N`). Transient objects are flushed after each step, so a TPM
//! without a resource manager does not fill up.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::luks::KeyFiles;
use crate::{run, run_out, Result};

/// The device of the kernel's TPM resource manager.
pub const DEVICE: &str = "/dev/tpmrm0";

/// A sealed secret: the TPM object's public and private parts (as `TPM2B` blobs).
#[derive(Debug, Clone, PartialEq)]
pub struct Sealed {
    pub public: Vec<u8>,
    pub private: Vec<u8>,
}

/// Whether a TPM 2.0 can be reached.
pub fn available() -> bool {
    std::env::var_os("TPM2TOOLS_TCTI").is_some() || Path::new(DEVICE).exists()
}

fn tpm2(tool: &str) -> Command {
    let mut cmd = Command::new("tpm2");
    cmd.arg(tool);
    if std::env::var_os("TPM2TOOLS_TCTI").is_none() {
        cmd.env("TPM2TOOLS_TCTI", format!("device:{DEVICE}"));
    }
    cmd
}

/// Run one tool, then flush what it left loaded (transient objects and sessions); what it
/// printed.
fn step(cmd: &mut Command) -> Result<Vec<u8>> {
    let out = run_out(cmd);
    for kind in ["-t", "-s"] {
        let _ = run(tpm2("flushcontext").arg(kind));
    }
    out
}

/// A scratch folder for the tools' context files (no secret goes there), removed with this.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tpm-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Scratch(dir))
    }

    fn file(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `sha256:7,11` for PCRs 7 and 11.
fn selection(pcrs: &[u32]) -> String {
    let list: Vec<String> = pcrs.iter().map(u32::to_string).collect();
    format!("sha256:{}", list.join(","))
}

/// The storage primary key, loaded, its context in `dir` (the first step of sealing and of
/// unsealing).
fn primary(dir: &Scratch) -> Result<String> {
    if !available() {
        return Err(format!("no TPM 2.0 on this machine ({DEVICE} is missing)"));
    }
    let ctx = dir.file("primary.ctx");
    step(tpm2("createprimary").args(["-Q", "-C", "o", "-g", "sha256", "-G", "ecc", "-c", &ctx]))?;
    Ok(ctx)
}

/// Seal `secret` (at most 128 bytes) to this TPM and the current values of `pcrs`.
pub fn seal(secret: &[u8], pcrs: &[u32]) -> Result<Sealed> {
    let dir = Scratch::new()?;
    let parent = primary(&dir)?;
    let (public, private) = (dir.file("sealed.pub"), dir.file("sealed.priv"));
    let mut create = tpm2("create");
    create.args([
        "-Q", "-C", &parent, "-g", "sha256", "-u", &public, "-r", &private,
    ]);
    if pcrs.is_empty() {
        create.args(["-a", "fixedtpm|fixedparent|noda|userwithauth"]);
    } else {
        // Only the PCR policy opens it (no userwithauth: an empty password does not).
        let policy = dir.file("policy.digest");
        step(tpm2("createpolicy").args([
            "-Q",
            "--policy-pcr",
            "-l",
            &selection(pcrs),
            "-L",
            &policy,
        ]))?;
        create.args(["-L", &policy, "-a", "fixedtpm|fixedparent|noda"]);
    }
    let keys = KeyFiles::new(&[secret])?;
    let paths = keys.pass(&mut create);
    step(create.args(["-i", &paths[0]]))?;
    let read = |p: &str| std::fs::read(p).map_err(|e| format!("{p}: {e}"));
    Ok(Sealed {
        public: read(&public)?,
        private: read(&private)?,
    })
}

/// The secret `sealed` holds, if this TPM sealed it and `pcrs` have the values they had.
pub fn unseal(sealed: &Sealed, pcrs: &[u32]) -> Result<Vec<u8>> {
    let dir = Scratch::new()?;
    let parent = primary(&dir)?;
    let (public, private, object) = (
        dir.file("sealed.pub"),
        dir.file("sealed.priv"),
        dir.file("sealed.ctx"),
    );
    for (p, data) in [(&public, &sealed.public), (&private, &sealed.private)] {
        std::fs::write(p, data).map_err(|e| format!("{p}: {e}"))?;
    }
    step(tpm2("load").args([
        "-Q", "-C", &parent, "-u", &public, "-r", &private, "-c", &object,
    ]))
    .map_err(|e| format!("this TPM cannot load the sealed key (sealed by another TPM?): {e}"))?;
    let mut cmd = tpm2("unseal");
    cmd.args(["-c", &object]);
    if !pcrs.is_empty() {
        cmd.args(["-p", &format!("pcr:{}", selection(pcrs))]);
    }
    step(&mut cmd).map_err(|e| {
        if e.contains("policy check failed") {
            format!(
                "the TPM refused to unseal the key: PCRs {pcrs:?} differ from when it was sealed"
            )
        } else {
            e
        }
    })
}

/// Whether the firmware booted with Secure Boot on (UEFI's `SecureBoot` variable).
pub fn secure_boot() -> bool {
    std::fs::read("/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c")
        .is_ok_and(|v| v.last() == Some(&1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A software TPM on loopback for this test, stopped with it (swtpm and tpm2-tools:
    /// scripts/setup installs them).
    struct Swtpm {
        child: std::process::Child,
        _state: PathBuf,
        port: u16,
    }

    impl Drop for Swtpm {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self._state);
        }
    }

    fn free_port() -> u16 {
        // Two consecutive free ports: the TPM's and its control channel's.
        loop {
            let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = a.local_addr().unwrap().port();
            if port < 65535 && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
                return port;
            }
        }
    }

    fn swtpm() -> Swtpm {
        let state = std::env::temp_dir().join(format!("swtpm-test-{}", std::process::id()));
        std::fs::create_dir_all(&state).unwrap();
        let port = free_port();
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
            .spawn()
            .expect("swtpm (Debian: swtpm; scripts/setup installs it)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "swtpm did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Swtpm {
            child,
            _state: state,
            port,
        }
    }

    #[test]
    fn a_sealed_key_unseals_only_while_its_pcrs_are_unchanged() {
        let tpm = swtpm();
        std::env::set_var(
            "TPM2TOOLS_TCTI",
            format!("swtpm:host=127.0.0.1,port={}", tpm.port),
        );
        let secret = b"a 32-byte key for a LUKS2 slot..";
        let bound = seal(secret, &[7]).unwrap();
        let free = seal(secret, &[]).unwrap();
        assert_ne!(bound.private, free.private);
        assert_eq!(unseal(&bound, &[7]).unwrap(), secret);
        assert_eq!(unseal(&free, &[]).unwrap(), secret);
        // The bound key does not open without its policy.
        assert!(unseal(&bound, &[]).is_err());

        // Something else measured into PCR 7: the bound key stays sealed, the other opens.
        run(tpm2("pcrextend").arg(format!("7:sha256={}", "11".repeat(32)))).unwrap();
        let e = unseal(&bound, &[7]).unwrap_err();
        assert!(e.contains("PCRs [7] differ from when it was sealed"), "{e}");
        assert_eq!(unseal(&free, &[]).unwrap(), secret);

        // Blobs that are not this TPM's do not load.
        let mut broken = free.clone();
        let n = broken.private.len();
        broken.private[n - 1] ^= 1;
        let e = unseal(&broken, &[]).unwrap_err();
        assert!(e.contains("cannot load the sealed key"), "{e}");
    }
}
