//! META: the small raw partition that keeps what a machine needs before STATE is open (the
//! encryption of STATE), as named values.
//!
//! The partition holds two copies, one in each half; a write goes to the older copy and
//! carries a sequence number one higher, so a write cut short leaves the other copy whole.
//! Each copy: magic, sequence (u64), length (u32), SHA-256 of the body, then the body (a JSON
//! object of strings).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::Result;

const MAGIC: &[u8; 8] = b"TALOSMD1";
const HEAD: usize = 8 + 8 + 4 + 32;

/// The values, by name.
pub type Values = BTreeMap<String, String>;

/// What is kept under this name: STATE's encryption (the config's
/// `machine.systemDiskEncryption.state`, as JSON).
pub const STATE_ENCRYPTION: &str = "state-encryption";

/// How an I/O error on `dev` reads.
fn failed(dev: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("META {}: {e}", dev.display())
}

/// The size of one copy's half of the partition.
fn half(dev: &Path) -> Result<u64> {
    let size = OpenOptions::new()
        .read(true)
        .open(dev)
        .and_then(|mut f| f.seek(SeekFrom::End(0)))
        .map_err(failed(dev))?;
    Ok(size / 2 / 512 * 512)
}

/// The newest whole copy: (sequence, values); (0, none) on a zeroed partition.
fn newest(dev: &Path) -> Result<(u64, Values)> {
    let half = half(dev)?;
    let mut f = std::fs::File::open(dev).map_err(failed(dev))?;
    let mut best = (0, Values::new());
    for i in 0..2 {
        let mut buf = vec![0u8; half as usize];
        f.seek(SeekFrom::Start(i * half))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(failed(dev))?;
        if &buf[..8] != MAGIC {
            continue;
        }
        let seq = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(buf[16..20].try_into().expect("4 bytes")) as usize;
        let Some(body) = buf.get(HEAD..HEAD + len) else {
            continue;
        };
        if ring::digest::digest(&ring::digest::SHA256, body).as_ref() != &buf[20..52] {
            continue;
        }
        if let Ok(values) = serde_json::from_slice(body) {
            if seq > best.0 {
                best = (seq, values);
            }
        }
    }
    Ok(best)
}

/// The newest whole copy's values (none on a zeroed partition).
pub fn read(dev: &Path) -> Result<Values> {
    newest(dev).map(|(_, values)| values)
}

/// Write `values` as copy `seq + 1`, over the copy older than the newest, `seq` (synced
/// before this returns).
fn write_after(dev: &Path, seq: u64, values: &Values) -> Result<()> {
    let half = half(dev)?;
    let seq = seq + 1;
    let body = serde_json::to_vec(values).map_err(|e| e.to_string())?;
    if (HEAD + body.len()) as u64 > half {
        return Err(format!(
            "META {}: {} bytes do not fit in {half}",
            dev.display(),
            body.len()
        ));
    }
    let mut copy = Vec::with_capacity(HEAD + body.len());
    copy.extend_from_slice(MAGIC);
    copy.extend_from_slice(&seq.to_le_bytes());
    copy.extend_from_slice(&(body.len() as u32).to_le_bytes());
    copy.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, &body).as_ref());
    copy.extend_from_slice(&body);
    let mut f = OpenOptions::new()
        .write(true)
        .open(dev)
        .map_err(failed(dev))?;
    f.seek(SeekFrom::Start((seq % 2) * half))
        .and_then(|_| f.write_all(&copy))
        .and_then(|_| f.sync_all())
        .map_err(failed(dev))
}

/// Set (`Some`) or remove (`None`) one value.
pub fn set(dev: &Path, name: &str, value: Option<&str>) -> Result<()> {
    let (seq, mut values) = newest(dev)?;
    let before = values.clone();
    match value {
        Some(v) => values.insert(name.to_string(), v.to_string()),
        None => values.remove(name),
    };
    if values == before {
        return Ok(());
    }
    write_after(dev, seq, &values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_survive_a_torn_write_of_the_other_copy() {
        let p = std::env::temp_dir().join(format!("meta-{}.img", std::process::id()));
        std::fs::File::create(&p)
            .and_then(|f| f.set_len(1 << 20))
            .unwrap();
        assert!(read(&p).unwrap().is_empty());
        set(&p, STATE_ENCRYPTION, Some("{\"provider\":\"luks2\"}")).unwrap();
        set(&p, "other", Some("x")).unwrap();
        assert_eq!(read(&p).unwrap()["other"], "x");
        set(&p, "other", None).unwrap();
        let now = read(&p).unwrap();
        assert_eq!(now.len(), 1);
        // Tear the newest copy (sequence 3, in the second half): the one before is read.
        let mut f = OpenOptions::new().write(true).open(&p).unwrap();
        f.seek(SeekFrom::Start((1 << 19) + HEAD as u64)).unwrap();
        f.write_all(b"garbage").unwrap();
        drop(f);
        let back = read(&p).unwrap();
        assert_eq!(back["other"], "x");
        assert_eq!(back[STATE_ENCRYPTION], "{\"provider\":\"luks2\"}");
        std::fs::remove_file(&p).unwrap();
    }
}
