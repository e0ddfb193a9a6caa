//! The Talos API: this project's .proto files (same packages, services, methods and field
//! numbers as upstream for what is implemented) and the tonic code built from them.

pub mod common {
    tonic::include_proto!("common");
}

pub mod machine {
    tonic::include_proto!("machine");
}

pub mod cosi {
    tonic::include_proto!("cosi.resource");
}

pub mod inspect {
    tonic::include_proto!("inspect");
}

pub mod security {
    tonic::include_proto!("securityapi");
}

pub mod time {
    tonic::include_proto!("time");
}
