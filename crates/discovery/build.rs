//! Compile the discovery protos (pure Rust: protox).

fn main() {
    let files = ["server.proto", "client.proto"];
    for f in files {
        println!("cargo:rerun-if-changed=proto/{f}");
    }
    let fds = protox::compile(files, ["proto"]).expect("protos compile");
    tonic_prost_build::configure()
        .compile_fds(fds)
        .expect("code generation");
}
