//! How the server reads frames off the wire, so that one bad turn costs only that turn.
//!
//! - [`TurnRequest`] (and its [`TurnContext`]) is `emotion.v1.TurnRequest` with the proto's
//!   `string` fields read as `bytes`: the same field numbers and wire type (length-delimited), so
//!   every client generated from the published `.proto` is unchanged, but a turn whose text is not
//!   UTF-8 (a GBK string from an old IVR) decodes, and validation answers that turn alone with
//!   INVALID_ARGUMENT naming the field. `build.rs` maps the proto type onto this one
//!   (`extern_path`); the descriptor served by reflection still says `string`.
//! - [`WireCodec`] is tonic's prost codec, except that a frame which cannot be decoded at all is
//!   INVALID_ARGUMENT (the client sent it) instead of INTERNAL. A stream ends on such a frame only
//!   after every turn read before it has been answered (see `emotion.rs`).

use std::marker::PhantomData;

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// `emotion.v1.TurnRequest`, string fields as raw bytes (checked per turn).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TurnRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub conversation_id: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub turn_id: u64,
    #[prost(enumeration = "crate::pb::Speaker", tag = "3")]
    pub speaker: i32,
    #[prost(bytes = "vec", tag = "4")]
    pub text: Vec<u8>,
    #[prost(float, optional, tag = "5")]
    pub acoustic_valence: Option<f32>,
    #[prost(message, optional, tag = "6")]
    pub context: Option<TurnContext>,
}

/// `emotion.v1.Context` as it arrives on a turn, string fields as raw bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TurnContext {
    #[prost(bytes = "vec", tag = "1")]
    pub tenant: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub queue: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub agent_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    pub language: Vec<u8>,
    #[prost(bytes = "vec", tag = "5")]
    pub customer_id: Vec<u8>,
}

impl TurnRequest {
    /// A turn as a client writes it.
    pub fn new(
        conversation_id: impl Into<String>,
        turn_id: u64,
        speaker: crate::pb::Speaker,
        text: impl Into<String>,
    ) -> Self {
        Self {
            conversation_id: conversation_id.into().into_bytes(),
            turn_id,
            speaker: speaker.into(),
            text: text.into().into_bytes(),
            acoustic_valence: None,
            context: None,
        }
    }

    /// The conversation id as text, for messages (invalid UTF-8 shown lossily).
    pub fn conversation_id_lossy(&self) -> String {
        String::from_utf8_lossy(&self.conversation_id).into_owned()
    }
}

impl From<crate::pb::Context> for TurnContext {
    fn from(c: crate::pb::Context) -> Self {
        Self {
            tenant: c.tenant.into_bytes(),
            queue: c.queue.into_bytes(),
            agent_id: c.agent_id.into_bytes(),
            language: c.language.into_bytes(),
            customer_id: c.customer_id.into_bytes(),
        }
    }
}

/// tonic's prost codec with decode failures reported as the client's fault (INVALID_ARGUMENT).
#[derive(Debug, Clone)]
pub struct WireCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for WireCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for WireCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = WireDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        WireDecoder(ProstDecoder::new(BufferSettings::default()))
    }
}

/// Decodes `U`; a frame that is not a valid `U` is INVALID_ARGUMENT naming the message type.
#[derive(Debug)]
pub struct WireDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for WireDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            let message = std::any::type_name::<U>()
                .rsplit("::")
                .next()
                .unwrap_or("message");
            Status::invalid_argument(format!(
                "a {message} frame could not be decoded: {}",
                status.message()
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::pb;

    /// What a client generated from the published proto (string fields) puts on the wire.
    #[derive(Clone, PartialEq, prost::Message)]
    struct PublishedTurn {
        #[prost(string, tag = "1")]
        conversation_id: String,
        #[prost(uint64, tag = "2")]
        turn_id: u64,
        #[prost(int32, tag = "3")]
        speaker: i32,
        #[prost(string, tag = "4")]
        text: String,
        #[prost(float, optional, tag = "5")]
        acoustic_valence: Option<f32>,
        #[prost(message, optional, tag = "6")]
        context: Option<pb::Context>,
    }

    #[test]
    fn the_published_strings_and_the_wire_bytes_are_the_same_encoding() {
        let published = PublishedTurn {
            conversation_id: "c-1".into(),
            turn_id: 7,
            speaker: 1,
            text: "我要投诉".into(),
            acoustic_valence: Some(-0.5),
            context: Some(pb::Context {
                tenant: "acme".into(),
                queue: "billing".into(),
                agent_id: "a9".into(),
                language: "zh".into(),
                ..Default::default()
            }),
        };
        let bytes = published.encode_to_vec();
        let wire = TurnRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(wire.text, "我要投诉".as_bytes());
        assert_eq!(wire.context.as_ref().unwrap().queue, b"billing");
        assert_eq!(wire.encode_to_vec(), bytes);
        // Invalid UTF-8 decodes as bytes, where the published type refuses the frame.
        let mut bad = wire.clone();
        bad.text = vec![0xce, 0xd2, 0xd2, 0xaa]; // GBK
        let bytes = bad.encode_to_vec();
        assert!(PublishedTurn::decode(bytes.as_slice()).is_err());
        assert_eq!(TurnRequest::decode(bytes.as_slice()).unwrap(), bad);
    }
}
