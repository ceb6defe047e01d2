//! Compiles the API's protobuf services with protox (pure Rust: no `protoc` needed),
//! and keeps the encoded descriptors for gRPC server reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let file = root.join("sluice/v1/api.proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile([&file], [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("sluice_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .extern_path(".sluice.log.v1", "::sluice_store::codec::v1")
        .compile_fds(fds)?;
    Ok(())
}
