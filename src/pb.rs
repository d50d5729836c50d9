//! Generated protobuf and gRPC code for `user.v1`, and the descriptor set
//! that server reflection serves.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// Package `user.v1`.
pub mod user {
    /// Version 1 of the user API.
    pub mod v1 {
        tonic::include_proto!("user.v1");
        // The client, generated on its own (see build.rs).
        include!(concat!(env!("OUT_DIR"), "/client/user.v1.rs"));
    }
}

/// Encoded `FileDescriptorSet` of proto/, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("user_descriptor");
