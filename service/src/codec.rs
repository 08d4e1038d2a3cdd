//! The protobuf codec of the generated client and server: prost's, except that a message
//! that does not decode is `INVALID_ARGUMENT` (the caller sent something malformed) rather
//! than prost's default `INTERNAL`.

use std::marker::PhantomData;

use tonic::{
    Status,
    codec::{Codec as TonicCodec, DecodeBuf, Decoder as TonicDecoder},
};
use tonic_prost::{ProstCodec, ProstEncoder};

use crate::status;

/// A prost codec that reports undecodable messages as `INVALID_ARGUMENT`.
#[derive(Debug, Clone, Default)]
pub struct Codec<T, U>(ProstCodec<T, U>);

impl<T, U> TonicCodec for Codec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = Decoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        Decoder(PhantomData)
    }
}

/// Decodes with prost; a decode error becomes `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct Decoder<U>(PhantomData<U>);

impl<U: prost::Message + Default> TonicDecoder for Decoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(status::malformed)
    }
}
