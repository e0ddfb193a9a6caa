//! Compile the project's .proto files (pure Rust: protox, no protoc needed).

fn main() {
    let files = [
        "machine/machine.proto",
        "machine/image.proto",
        "machine/storage.proto",
        "cosi/state.proto",
        "inspect/inspect.proto",
        "security/security.proto",
        "time/time.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed=proto/{f}");
    }
    println!("cargo:rerun-if-changed=proto/common/common.proto");
    println!("cargo:rerun-if-changed=proto/cosi/resource.proto");
    let fds = protox::compile(files, ["proto"]).expect("protos compile");
    tonic_prost_build::configure()
        .compile_fds(fds)
        .expect("code generation");
}
