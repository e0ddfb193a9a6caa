//! `machine.StorageService`: a file system's size and use, as statfs(2) sees it.

use api::machine::storage_service_server::StorageService;
use api::machine::{StorageServiceStatfsRequest, StorageServiceStatfsResponse};
use tonic::{Request, Response, Status};

pub struct Storage;

/// The figures of the file system holding `path`.
pub fn statfs(path: &str) -> Result<StorageServiceStatfsResponse, Status> {
    let st = nix::sys::statvfs::statvfs(path)
        .map_err(|e| Status::not_found(format!("statfs {path}: {e}")))?;
    let unit = st.fragment_size() as u64;
    let (blocks, free, avail) = (
        st.blocks() as u64,
        st.blocks_free() as u64,
        st.blocks_available() as u64,
    );
    let (files, files_free) = (st.files() as u64, st.files_free() as u64);
    Ok(StorageServiceStatfsResponse {
        size: blocks * unit,
        used: blocks.saturating_sub(free) * unit,
        available: avail * unit,
        inodes: files,
        inodes_used: files.saturating_sub(files_free),
        inodes_free: files_free,
    })
}

#[tonic::async_trait]
impl StorageService for Storage {
    async fn statfs(
        &self,
        req: Request<StorageServiceStatfsRequest>,
    ) -> Result<Response<StorageServiceStatfsResponse>, Status> {
        let path = req.into_inner().path;
        if !path.starts_with('/') {
            return Err(Status::invalid_argument(format!(
                "{path:?}: an absolute path is needed"
            )));
        }
        statfs(&path).map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_root_file_system_has_a_size() {
        let st = super::statfs("/").unwrap();
        assert!(st.size > 0 && st.used <= st.size && st.inodes_free <= st.inodes);
        assert!(super::statfs("/definitely/not/here").is_err());
    }
}
