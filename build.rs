//! Compiles proto/ into Rust with tonic-prost-build and writes the descriptor
//! set that server reflection serves.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("user_descriptor.bin"))
        .compile_protos(&["proto/user/v1/user.proto"], &["proto"])?;
    Ok(())
}
