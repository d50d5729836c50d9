//! Compiles proto/ into Rust with tonic-prost-build and writes the descriptor
//! set that server reflection serves.
//!
//! Two passes: the messages and the server, whose codec answers an
//! undecodable request with INVALID_ARGUMENT (src/codec.rs); then the client
//! alone, into `OUT_DIR/client/`, reusing those messages and keeping tonic's
//! codec, since a response it cannot decode is no fault of its caller.

use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &["proto/user/v1/user.proto"];
const INCLUDES: &[&str] = &["proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_client(false)
        .codec_path("crate::codec::RequestCodec")
        .file_descriptor_set_path(out_dir.join("user_descriptor.bin"))
        .compile_protos(PROTOS, INCLUDES)?;

    let client_dir = out_dir.join("client");
    fs::create_dir_all(&client_dir)?;
    tonic_prost_build::configure()
        .build_server(false)
        .extern_path(".user.v1", "crate::pb::user::v1")
        .out_dir(&client_dir)
        .compile_protos(PROTOS, INCLUDES)?;
    Ok(())
}
