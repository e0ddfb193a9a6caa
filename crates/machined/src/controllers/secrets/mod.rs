//! Secret material: the API's certificate (`api`) and etcd's PKI (`etcd`).

pub mod api;
pub mod etcd;
