//! The admit stage's checks: every field of a turn as it came off the wire (string fields arrive
//! as bytes, see `grpc::wire`), and the same checks for the other calls that take ids and texts.

use crate::config::LimitsConfig;
use crate::conversation::TurnInput;
use crate::error::RequestError;
use crate::grpc::convert;
use crate::pb;

pub fn validate_conversation_id(id: &str, limits: &LimitsConfig) -> Result<(), RequestError> {
    if id.is_empty() {
        return Err(RequestError::Missing {
            field: "conversation_id",
        });
    }
    check_identifier("conversation_id", id, limits.max_conversation_id_bytes)
}

/// An id or context field: at most `limit` bytes, no control characters (they end up in logs,
/// SQLite rows, dashboard cells and metrics labels).
pub fn check_identifier(
    field: &'static str,
    value: &str,
    limit: usize,
) -> Result<(), RequestError> {
    if value.len() > limit {
        return Err(RequestError::TooLong {
            field,
            actual: value.len(),
            limit,
        });
    }
    match value.char_indices().find(|(_, c)| c.is_control()) {
        Some((offset, c)) => Err(RequestError::ControlCharacter {
            field,
            code: c as u32,
            offset,
        }),
        None => Ok(()),
    }
}

/// The bytes of a string field as text, or INVALID_ARGUMENT naming the field.
fn utf8(field: &'static str, bytes: Vec<u8>) -> Result<String, RequestError> {
    String::from_utf8(bytes).map_err(|e| RequestError::NotUtf8 {
        field,
        offset: e.utf8_error().valid_up_to(),
    })
}

pub fn validate_text(
    text: &str,
    field: &'static str,
    limits: &LimitsConfig,
) -> Result<(), RequestError> {
    if text.trim().is_empty() {
        return Err(RequestError::Missing { field });
    }
    if text.len() > limits.max_text_bytes {
        return Err(RequestError::TooLong {
            field,
            actual: text.len(),
            limit: limits.max_text_bytes,
        });
    }
    Ok(())
}

/// The context, and the raw customer id (pseudonymised by the pipeline, never kept).
fn validate_context(
    c: pb::TurnContext,
    limits: &LimitsConfig,
) -> Result<(crate::conversation::Context, Option<String>), RequestError> {
    let limit = limits.max_context_field_bytes;
    let field = |name: &'static str, bytes: Vec<u8>| {
        let value = utf8(name, bytes)?;
        check_identifier(name, &value, limit)?;
        Ok::<_, RequestError>(value)
    };
    let context = crate::conversation::Context {
        tenant: field("context.tenant", c.tenant)?,
        queue: field("context.queue", c.queue)?,
        agent_id: field("context.agent_id", c.agent_id)?,
        language: field("context.language", c.language)?,
        customer: String::new(),
    };
    let customer_id = field("context.customer_id", c.customer_id)?;
    Ok((context, (!customer_id.is_empty()).then_some(customer_id)))
}

/// A turn that passed validation: what the store admits, and the text to score.
pub struct ValidTurn {
    pub input: TurnInput,
    /// `context.customer_id` as sent: the pipeline turns it into the context's pseudonym.
    pub customer_id: Option<String>,
    pub text: String,
}

/// Checks every field of a turn as it came off the wire. On failure, the conversation id (as
/// far as it is readable) and turn id to answer with, and what was wrong.
pub fn validate_turn(
    turn: pb::TurnRequest,
    limits: &LimitsConfig,
) -> Result<ValidTurn, (String, u64, RequestError)> {
    let turn_id = turn.turn_id;
    let conversation_id = match utf8("conversation_id", turn.conversation_id) {
        Ok(id) => id,
        // Not readable: answered with an empty id (results come in request order).
        Err(e) => return Err((String::new(), turn_id, e)),
    };
    let checked = (|| {
        validate_conversation_id(&conversation_id, limits)?;
        let speaker = match convert::speaker_from(turn.speaker) {
            Some(s) => s,
            None if turn.speaker == 0 => return Err(RequestError::Missing { field: "speaker" }),
            None => {
                return Err(RequestError::UnknownValue {
                    field: "speaker",
                    value: turn.speaker,
                    known: "1 customer, 2 agent, 3 bot",
                });
            }
        };
        let text = utf8("text", turn.text)?;
        validate_text(&text, "text", limits)?;
        if let Some(a) = turn.acoustic_valence
            && !(a.is_finite() && (-1.0..=1.0).contains(&a))
        {
            return Err(RequestError::OutOfRange {
                field: "acoustic_valence",
                actual: a,
                min: -1.0,
                max: 1.0,
            });
        }
        let context = turn
            .context
            .map(|c| validate_context(c, limits))
            .transpose()?;
        Ok((speaker, text, context))
    })();
    match checked {
        Ok((speaker, text, context)) => {
            let (context, customer_id) = match context {
                Some((c, id)) => (Some(c), id),
                None => (None, None),
            };
            Ok(ValidTurn {
                input: TurnInput {
                    conversation_id,
                    turn_id,
                    speaker,
                    acoustic_valence: turn.acoustic_valence,
                    context,
                    signal: None,
                },
                customer_id,
                text,
            })
        }
        Err(e) => Err((conversation_id, turn_id, e)),
    }
}
