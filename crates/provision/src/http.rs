//! What a provisioner serves its machines over HTTP: their configs (`talos.config=` URLs), as
//! a read-only registry (OCI distribution API, pulls only) the installer image they install
//! from, and POST handlers (the key service of encrypted disks).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use oci::Image;

#[derive(Default)]
struct Content {
    files: HashMap<String, Vec<u8>>,
    /// Folders served as they are at each request: (path prefix, folder).
    dirs: Vec<(String, std::path::PathBuf)>,
    /// Images by repository: their tags (to manifest digests) and the image.
    images: HashMap<String, (HashMap<String, String>, Image)>,
    /// POST handlers by path prefix: given the rest of the path and the body, the answer
    /// (JSON) or why not (a 400 with that text).
    posts: Vec<(String, Handler)>,
}

type Handler = Arc<dyn Fn(&str, &[u8]) -> Result<Vec<u8>, String> + Send + Sync>;

/// A server running on its own threads for as long as the process lives.
#[derive(Clone)]
pub struct Server {
    pub addr: SocketAddr,
    content: Arc<Mutex<Content>>,
}

impl Server {
    /// Listen on `addr` and serve.
    pub fn start(addr: SocketAddr) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let server = Server {
            addr: listener.local_addr()?,
            content: Arc::default(),
        };
        let content = server.content.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let content = content.clone();
                std::thread::spawn(move || {
                    let _ = answer(conn, &content);
                });
            }
        });
        Ok(server)
    }

    /// Serve `data` at `path` (`/config/node-1.yaml`), or stop serving it (`None`).
    pub fn file(&self, path: &str, data: Option<Vec<u8>>) {
        let mut c = self.content.lock().expect("content");
        match data {
            Some(d) => c.files.insert(path.to_string(), d),
            None => c.files.remove(path),
        };
    }

    /// Serve the files of `folder` under `prefix` (`/configs/`), read at each request, so that
    /// what is written there later is served too. Only the folder's own files: no subfolders.
    pub fn dir(&self, prefix: &str, folder: &std::path::Path) {
        let mut c = self.content.lock().expect("content");
        c.dirs.push((prefix.to_string(), folder.to_path_buf()));
    }

    /// Answer POSTs under `prefix` (`/kms/`) with `handler`.
    pub fn post(&self, prefix: &str, handler: Handler) {
        let mut c = self.content.lock().expect("content");
        c.posts.push((prefix.to_string(), handler));
    }

    /// Serve `image` as `<repository>:<tag>` (the registry's host is this server's).
    pub fn image(&self, repository: &str, tag: &str, image: Image) {
        let digest = oci::sha256(&image.manifest);
        let mut c = self.content.lock().expect("content");
        let mut tags = c
            .images
            .remove(repository)
            .map(|(tags, _)| tags)
            .unwrap_or_default();
        tags.insert(tag.to_string(), digest);
        c.images.insert(repository.to_string(), (tags, image));
    }
}

fn answer(conn: TcpStream, content: &Mutex<Content>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Of the headers only the body's length is needed.
    let mut h = String::new();
    let mut length = 0usize;
    while reader.read_line(&mut h)? > 2 {
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        h.clear();
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    // (status, content type, digest, body)
    let (status, kind, digest, body) = if method == "POST" {
        let handler = content
            .lock()
            .expect("content")
            .posts
            .iter()
            .find_map(|(prefix, h)| Some((path.strip_prefix(prefix.as_str())?, h.clone())));
        let mut body = vec![0u8; length.min(1 << 20)];
        std::io::Read::read_exact(&mut reader, &mut body)?;
        match handler.map(|(rest, h)| h(rest, &body)) {
            Some(Ok(r)) => ("200 OK", Some("application/json".to_string()), None, r),
            Some(Err(e)) => (
                "400 Bad Request",
                Some("text/plain".to_string()),
                None,
                e.into_bytes(),
            ),
            None => (
                "404 Not Found",
                Some("text/plain".to_string()),
                None,
                Vec::new(),
            ),
        }
    } else {
        let found = if method == "GET" || method == "HEAD" {
            lookup(content, path)
        } else {
            None
        };
        match found {
            Some((kind, digest, body)) => ("200 OK", Some(kind), digest, body),
            None => ("404 Not Found", None, None, Vec::new()),
        }
    };
    let mut out = std::io::BufWriter::new(conn);
    write!(out, "HTTP/1.1 {status}\r\n")?;
    if let Some(kind) = kind {
        write!(out, "Content-Type: {kind}\r\n")?;
    }
    write!(
        out,
        "Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    )?;
    if let Some(d) = digest {
        write!(out, "Docker-Content-Digest: {d}\r\n")?;
    }
    write!(out, "\r\n")?;
    if method != "HEAD" {
        out.write_all(&body)?;
    }
    out.flush()
}

/// What `path` names: (content type, digest, body).
fn lookup(content: &Mutex<Content>, path: &str) -> Option<(String, Option<String>, Vec<u8>)> {
    let c = content.lock().expect("content");
    if let Some(f) = c.files.get(path) {
        return Some(("application/octet-stream".into(), None, f.clone()));
    }
    for (prefix, folder) in &c.dirs {
        let Some(name) = path.strip_prefix(prefix.as_str()) else {
            continue;
        };
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return None;
        }
        let data = std::fs::read(folder.join(name)).ok()?;
        return Some(("application/octet-stream".into(), None, data));
    }
    let rest = path.strip_prefix("/v2/")?;
    if rest.is_empty() {
        return Some(("application/json".into(), None, b"{}".to_vec()));
    }
    let (repo, kind, name) = ["/manifests/", "/blobs/"].iter().find_map(|sep| {
        let (repo, name) = rest.rsplit_once(sep)?;
        Some((repo, *sep, name))
    })?;
    let (tags, image) = c.images.get(repo)?;
    let digest = tags.get(name).map(String::as_str).unwrap_or(name);
    if kind == "/manifests/" {
        if digest != oci::sha256(&image.manifest) {
            return None;
        }
        let media = image.manifest().ok()?.media_type;
        return Some((media, Some(digest.to_string()), image.manifest.clone()));
    }
    let blob = image.blobs.get(digest)?;
    Some((
        "application/octet-stream".into(),
        Some(digest.to_string()),
        blob.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_images_are_served_and_pulled() {
        let s = Server::start("127.0.0.1:0".parse().unwrap()).unwrap();
        s.file("/config/a.yaml", Some(b"version: v1alpha1\n".to_vec()));
        let layer = oci::layer(&[oci::Entry::File {
            path: "usr/install/amd64/vmlinuz".into(),
            data: b"kernel".to_vec(),
            mode: 0o644,
        }]);
        s.image(
            "talos/installer",
            "v1",
            Image::build(&[layer], Default::default()),
        );
        let got = ureq::get(&format!("http://{}/config/a.yaml", s.addr))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        assert_eq!(got, "version: v1alpha1\n");
        assert!(ureq::get(&format!("http://{}/config/b.yaml", s.addr))
            .call()
            .is_err());

        // A folder's files as they are when asked for, and nothing outside it.
        let dir = std::env::temp_dir().join(format!("http-pull-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("configs")).unwrap();
        s.dir("/configs/", &dir.join("configs"));
        std::fs::write(dir.join("secret"), "no").unwrap();
        let get = |p: &str| {
            ureq::get(&format!("http://{}{p}", s.addr))
                .call()
                .ok()
                .map(|r| r.into_string().unwrap())
        };
        assert!(get("/configs/n1.yaml").is_none());
        std::fs::write(dir.join("configs/n1.yaml"), "machine: {}\n").unwrap();
        assert_eq!(get("/configs/n1.yaml").unwrap(), "machine: {}\n");
        assert!(get("/configs/../secret").is_none());
        assert!(get("/configs/").is_none());

        // The registry client pulls through a mirror pointing here.
        let host = s.addr.to_string();
        let mut registries = machinery::cri::Registries::default();
        registries.mirrors.insert(
            host.clone(),
            machinery::cri::Mirror {
                endpoints: vec![machinery::cri::Endpoint {
                    url: format!("http://{host}"),
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        let client = oci::registry::Client::new(registries);
        let r = oci::Reference::parse(&format!("{host}/talos/installer:v1")).unwrap();
        client
            .fetch_files(&r, &[("usr/install/amd64/vmlinuz", &dir.join("k"))])
            .unwrap();
        assert_eq!(std::fs::read(dir.join("k")).unwrap(), b"kernel");
        let err = client
            .fetch_files(&r, &[("usr/install/amd64/initramfs.img", &dir.join("i"))])
            .unwrap_err();
        assert!(
            err.contains("has no usr/install/amd64/initramfs.img"),
            "{err}"
        );
        let missing = oci::Reference::parse(&format!("{host}/talos/installer:v2")).unwrap();
        let err = client.fetch_files(&missing, &[]).unwrap_err();
        assert!(err.contains("404"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
