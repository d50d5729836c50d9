//! Calls that bypass the generated client: arbitrary bytes as the request
//! message, sent to any method path with tonic's generic client and a codec
//! that passes bytes through unchanged. For hostile-input tests: bodies that
//! are not protobuf, strings that are not UTF-8, methods that do not exist.

use prost::bytes::{Buf, BufMut, Bytes};
use tonic::{
    Status,
    client::Grpc,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    transport::Channel,
};

/// A codec whose messages are the raw bytes of the gRPC frame's payload.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// Sends `body` as the request message of `path` (`/package.Service/Method`)
/// and returns the response message's bytes or the status.
pub async fn call(channel: Channel, path: &str, body: Bytes) -> Result<Bytes, Status> {
    let path = PathAndQuery::try_from(path.to_owned())
        .unwrap_or_else(|err| panic!("{path:?} is not a valid method path: {err}"));
    let mut grpc = Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|err| Status::unavailable(format!("channel not ready: {err}")))?;
    grpc.unary(tonic::Request::new(body), path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// A protobuf length-delimited field (wire type 2) holding `value`, which
/// need not be UTF-8: the building block of requests prost would refuse to encode.
pub fn bytes_field(number: u8, value: &[u8]) -> Vec<u8> {
    assert!((1..16).contains(&number), "one-byte tags only");
    let mut field = vec![(number << 3) | 2];
    let mut len = value.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            field.push(byte);
            break;
        }
        field.push(byte | 0x80);
    }
    field.extend_from_slice(value);
    field
}
