//! The config a node boots with: the persisted one (STATE), the given one (`--config`,
//! `USERDATA`), or one fetched from `talos.config=` in maintenance mode.

use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use machinery::Config;

use crate::boot::args::Args;
use crate::node;

/// The config to boot: the persisted one (STATE) when valid, else the given one (then written
/// to STATE). `None` sends the node to maintenance mode; why is logged.
pub fn boot_config(args: &Args, state_file: Option<&PathBuf>) -> Option<Config> {
    let usable = |cfg: Config, from: &str| -> Option<Config> {
        match machinery::validate::validate(&cfg, machinery::validate::Mode::Container)
            .into_result(false)
        {
            Ok(_) => Some(cfg),
            Err(e) => {
                log(&format!(
                    "machined: the config from {from} is invalid:\n{e}"
                ));
                None
            }
        }
    };
    if let Some(dir) = state_file.and_then(|p| p.parent()) {
        // Temporary files of writes a crash interrupted.
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(".config.yaml.tmp.")
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if let Some(path) = state_file.filter(|p| p.exists()) {
        match Config::load(path) {
            Ok(cfg) => {
                if let Some(cfg) = usable(cfg, "STATE") {
                    return Some(cfg);
                }
            }
            Err(e) => log(&format!("machined: the persisted config is unusable: {e}")),
        }
    }
    let cfg = match load_config(args) {
        Ok(cfg) => usable(cfg, "the given config")?,
        Err(e) => {
            log(&format!("machined: {e}"));
            return None;
        }
    };
    if let Some(path) = state_file {
        if let Err(e) = machinery::fsutil::write_atomic(path, cfg.encode().as_bytes(), 0o600) {
            log(&format!("machined: cannot persist the config: {e}"));
        }
    }
    Some(cfg)
}

pub fn load_config(args: &Args) -> Result<Config, String> {
    if let Some(path) = &args.config {
        return Config::load(path).map_err(|e| e.to_string());
    }
    let data = std::env::var("USERDATA")
        .map_err(|_| "no machine config: pass --config or set USERDATA".to_string())?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| format!("USERDATA is not base64: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| "USERDATA is not UTF-8".to_string())?;
    Config::parse(&text).map_err(|e| e.in_file("USERDATA").to_string())
}

/// A line on stderr and in machined's log.
pub fn log(line: &str) {
    crate::sys::selflog::line(line);
}

/// `talos.config=URL`: a machine in maintenance mode fetches its config (retrying until the
/// network and the server answer); a valid one is persisted and booted, an invalid one is
/// reported on the console and the machine stays in maintenance mode (tried again in case the
/// server's copy is fixed).
pub async fn fetch_config(node: Arc<node::Node>, url: String) {
    let mut last = String::new();
    loop {
        let u = url.clone();
        let got = crate::sys::blocking(move || -> Result<String, String> {
            let agent = ureq::AgentBuilder::new()
                .timeout(std::time::Duration::from_secs(10))
                .build();
            agent
                .get(&u)
                .call()
                .map_err(|e| format!("fetch {u}: {e}"))?
                .into_string()
                .map_err(|e| format!("fetch {u}: {e}"))
        })
        .await;
        let outcome = got.and_then(|text| {
            let cfg = Config::parse(&text).map_err(|e| format!("the config from {url}: {e}"))?;
            machinery::validate::validate(&cfg, machinery::validate::Mode::Metal)
                .into_result(false)
                .map_err(|e| format!("the config from {url} is invalid:\n{e}"))?;
            Ok(cfg)
        });
        match outcome {
            Ok(cfg) => match node.persist(&cfg) {
                Ok(()) => {
                    log(&format!("machined: booting the config from {url}"));
                    node.reboot.notify_one();
                    return;
                }
                Err(e) => log(&format!("machined: cannot keep the config from {url}: {e}")),
            },
            Err(e) if e != last => {
                log(&format!("machined: {e}"));
                last = e;
            }
            Err(_) => {}
        }
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    }
}
