//! Secret material: the API's certificate (`api`), etcd's PKI (`etcd`) and Kubernetes's
//! (`kubernetes`).

pub mod api;
pub mod etcd;
pub mod kubernetes;
