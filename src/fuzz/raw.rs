//! A gRPC client that sends frames as raw bytes (the fuzzer's, and the hostile-input tests'): what a buggy or hostile client puts on the wire
//! (invalid UTF-8 in string fields, unknown enum values, frames that are not protobuf at all).

use std::marker::PhantomData;

use bytes::BufMut;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::transport::Channel;

/// Encodes `Vec<u8>` frames as they are; decodes responses as `U`.
pub struct RawCodec<U>(PhantomData<U>);

impl<U> Default for RawCodec<U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

pub struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl<U: prost::Message + Default + Send + 'static> Codec for RawCodec<U> {
    type Encode = Vec<u8>;
    type Decode = U;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<U>;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(BufferSettings::default())
    }
}

/// `StreamTurns` with raw frames.
pub async fn stream_turns(
    channel: Channel,
    frames: Vec<Vec<u8>>,
) -> Result<tonic::Streaming<crate::pb::TurnResult>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/emotion.v1.EmotionAnalysis/StreamTurns",
    );
    let response = grpc
        .streaming(
            tonic::Request::new(tokio_stream::iter(frames)),
            path,
            RawCodec::default(),
        )
        .await?;
    Ok(response.into_inner())
}

/// A unary call with a raw request frame.
pub async fn unary<U: prost::Message + Default + Send + 'static>(
    channel: Channel,
    path: &'static str,
    frame: Vec<u8>,
) -> Result<U, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(e.to_string()))?;
    let response = grpc
        .unary(
            tonic::Request::new(frame),
            tonic::codegen::http::uri::PathAndQuery::from_static(path),
            RawCodec::<U>::default(),
        )
        .await?;
    Ok(response.into_inner())
}

/// A server-streaming call with a raw request frame.
pub async fn server_streaming<U: prost::Message + Default + Send + 'static>(
    channel: Channel,
    path: &'static str,
    frame: Vec<u8>,
) -> Result<tonic::Streaming<U>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(e.to_string()))?;
    let response = grpc
        .server_streaming(
            tonic::Request::new(frame),
            tonic::codegen::http::uri::PathAndQuery::from_static(path),
            RawCodec::<U>::default(),
        )
        .await?;
    Ok(response.into_inner())
}
