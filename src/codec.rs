//! The codec UserService reads requests with: tonic's prost codec, except
//! that a request body which is not a valid message (bytes that are not
//! protobuf, a string field that is not UTF-8) answers INVALID_ARGUMENT, the
//! caller's mistake, instead of tonic's INTERNAL. Only the server uses it
//! (build.rs): a client that cannot decode a response keeps tonic's codec.

use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// [`ProstCodec`] whose decode errors are INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct RequestCodec<T, U>(ProstCodec<T, U>);

// By hand: derive would demand `T: Default` and `U: Default` of the messages.
impl<T, U> Default for RequestCodec<T, U> {
    fn default() -> Self {
        Self(ProstCodec::new())
    }
}

impl<T, U> Codec for RequestCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder(self.0.decoder())
    }
}

/// Decodes a request with prost; see [`RequestCodec`].
#[derive(Debug, Clone)]
pub struct RequestDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // ProstDecoder fails only when the bytes are not a valid message; its
        // text names the field and the problem, never the field's content.
        self.0.decode(buf).map_err(|status| {
            Status::invalid_argument(format!("invalid request: {}", status.message()))
        })
    }

    fn buffer_settings(&self) -> tonic::codec::BufferSettings {
        self.0.buffer_settings()
    }
}
