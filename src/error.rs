//! Error types, one per boundary, and their one mapping to gRPC status codes.
//!
//! - [`ModelError`]: loading a model directory or ONNX Runtime (startup; never a request's fault).
//! - [`InferenceError`]: scoring a text (overload, a stopped engine, an ONNX Runtime failure).
//! - [`RequestError`]: a request or one turn that breaks the API's rules.

use std::path::PathBuf;

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("ONNX Runtime library {}: {message}", path.display())]
    Runtime { path: PathBuf, message: String },
    #[error("loading {}: {source}", path.display())]
    Session { path: PathBuf, source: ort::Error },
    #[error("model check failed: {0}")]
    Check(String),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum InferenceError {
    #[error("inference queue is full ({capacity} turns waiting); retry later")]
    QueueFull { capacity: usize },
    #[error("the inference engine has stopped")]
    Stopped,
    #[error("inference failed: {0}")]
    Runtime(String),
    /// Scored, but its conversation's shared state could not be written (cluster mode): not
    /// decided, so the client re-sends it.
    #[error("conversation state unavailable: {0}; re-send the turn")]
    Unavailable(String),
    /// Found not to be new only once its conversation's shared state was read (cluster mode).
    #[error(transparent)]
    Rejected(RequestError),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    #[error("{field} is required")]
    Missing { field: &'static str },
    #[error("{field} is {actual} bytes, over the limit of {limit}")]
    TooLong {
        field: &'static str,
        actual: usize,
        limit: usize,
    },
    #[error("{field} has {actual} entries, over the limit of {limit}")]
    TooMany {
        field: &'static str,
        actual: usize,
        limit: usize,
    },
    #[error("{field} is not valid UTF-8 (invalid byte at offset {offset}); send UTF-8 text")]
    NotUtf8 { field: &'static str, offset: usize },
    #[error("{field} contains a control character (U+{code:04X}) at byte {offset}")]
    ControlCharacter {
        field: &'static str,
        code: u32,
        offset: usize,
    },
    #[error("{field} {value} is not a known value ({known})")]
    UnknownValue {
        field: &'static str,
        value: i32,
        known: &'static str,
    },
    #[error("{field} must be in [{min}, {max}], got {actual}")]
    OutOfRange {
        field: &'static str,
        actual: f32,
        min: f32,
        max: f32,
    },
    #[error(
        "turn_id {turn_id} of conversation {conversation_id:?} is not after its last turn {last}"
    )]
    OutOfOrder {
        conversation_id: String,
        turn_id: u64,
        last: u64,
    },
    #[error("conversation {0:?} is not tracked (never seen, ended, or evicted after its TTL)")]
    UnknownConversation(String),
    #[error(
        "conversation {conversation_id:?} has {pending} turn(s) still being scored; retry when their results arrive"
    )]
    TurnsInFlight {
        conversation_id: String,
        pending: usize,
    },
    #[error(
        "{0} conversations are tracked, the configured maximum; end or let conversations expire first"
    )]
    TooManyConversations(usize),
    #[error("{0} turn streams are open, the configured maximum")]
    TooManyStreams(usize),
    #[error(
        "this token may not write tenant {tenant:?} (context.tenant; a token limited to tenants must name one)"
    )]
    TenantNotAllowed { tenant: String },
    #[error("conversation {conversation_id:?} belongs to another tenant")]
    TenantConflict { conversation_id: String },
    #[error("conversation state unavailable: {0}")]
    StateUnavailable(String),
    #[error("no customer {0} is recorded (no contact of theirs has ended, or it was deleted)")]
    UnknownCustomer(String),
    #[error(
        "customer memory is off (customers.path is empty, or the service runs in cluster mode)"
    )]
    CustomersOff,
    #[error("name the customer by customer_id (with its tenant) or by customer_key, not both")]
    AmbiguousCustomer,
    #[error("customer_key must be 32 lowercase hex digits (Context.customer_key), got {0:?}")]
    BadCustomerKey(String),
}

impl RequestError {
    pub fn code(&self) -> Code {
        match self {
            RequestError::Missing { .. }
            | RequestError::TooLong { .. }
            | RequestError::TooMany { .. }
            | RequestError::OutOfRange { .. }
            | RequestError::NotUtf8 { .. }
            | RequestError::ControlCharacter { .. }
            | RequestError::UnknownValue { .. }
            | RequestError::AmbiguousCustomer
            | RequestError::BadCustomerKey(_) => Code::InvalidArgument,
            RequestError::OutOfOrder { .. }
            | RequestError::TurnsInFlight { .. }
            | RequestError::TenantConflict { .. }
            | RequestError::CustomersOff => Code::FailedPrecondition,
            RequestError::TenantNotAllowed { .. } => Code::PermissionDenied,
            RequestError::UnknownConversation(_) | RequestError::UnknownCustomer(_) => {
                Code::NotFound
            }
            RequestError::TooManyConversations(_) | RequestError::TooManyStreams(_) => {
                Code::ResourceExhausted
            }
            RequestError::StateUnavailable(_) => Code::Unavailable,
        }
    }
}

impl InferenceError {
    pub fn code(&self) -> Code {
        match self {
            InferenceError::QueueFull { .. } => Code::ResourceExhausted,
            InferenceError::Stopped => Code::Unavailable,
            InferenceError::Runtime(_) => Code::Internal,
            InferenceError::Unavailable(_) => Code::Unavailable,
            InferenceError::Rejected(e) => e.code(),
        }
    }
}

impl From<RequestError> for Status {
    fn from(e: RequestError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

impl From<crate::customers::CustomerError> for Status {
    fn from(e: crate::customers::CustomerError) -> Self {
        match e {
            crate::customers::CustomerError::Store { .. } => Status::unavailable(e.to_string()),
            crate::customers::CustomerError::Key { .. } => Status::internal(e.to_string()),
        }
    }
}

impl From<InferenceError> for Status {
    fn from(e: InferenceError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}
