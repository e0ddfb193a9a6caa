//! ImageService: the images of the node's containerd namespaces.

use tonic::{Request, Response, Status};

use crate::sys::cri;

pub struct Images {
    pub node: std::sync::Arc<crate::node::Node>,
}

#[tonic::async_trait]
impl api::machine::image_service_server::ImageService for Images {
    type ListStream = cri::ListStream;

    async fn list(
        &self,
        req: Request<api::machine::ImageServiceListRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let c = req.into_inner().containerd.unwrap_or_default();
        let (socket, ns) = cri::instance(c.namespace, c.driver);
        Ok(Response::new(cri::list_images(socket, ns).await?))
    }

    type PullStream = cri::PullStream;

    async fn pull(
        &self,
        req: Request<api::machine::ImageServicePullRequest>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let r = req.into_inner();
        let c = r.containerd.unwrap_or_default();
        let (socket, ns) = cri::instance(c.namespace, c.driver);
        if ns == cri::SYSTEM_NS {
            // The system namespace pulls with the node's own registry client.
            let cfg = self.node.active_config().map_err(Status::unavailable)?;
            let registries = machinery::cri::Registries::from_config(&cfg)
                .map_err(Status::failed_precondition)?;
            return Ok(Response::new(crate::sys::ctrd::pull_stream(
                registries,
                r.image_ref,
            )));
        }
        Ok(Response::new(cri::pull(socket, &r.image_ref).await?))
    }

    async fn remove(
        &self,
        req: Request<api::machine::ImageServiceRemoveRequest>,
    ) -> Result<Response<()>, Status> {
        let r = req.into_inner();
        let c = r.containerd.unwrap_or_default();
        let (socket, ns) = cri::instance(c.namespace, c.driver);
        cri::remove_image(socket, ns, &r.image_ref).await?;
        Ok(Response::new(()))
    }
}
