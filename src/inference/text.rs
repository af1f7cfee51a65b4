//! Text to token ids with the model's own `tokenizer.json`, truncated to the model's max length.
//! Padding is the engine's job (per batch), so the tokenizer's own padding is switched off.

use tokenizers::{Tokenizer, TruncationParams};

use super::model_dir::ModelSpec;
use crate::error::ModelError;

pub struct TextEncoder {
    tokenizer: Tokenizer,
}

impl TextEncoder {
    pub fn load(spec: &ModelSpec) -> Result<Self, ModelError> {
        let path = spec.tokenizer_path();
        let invalid = |message: String| ModelError::Invalid {
            path: path.clone(),
            message,
        };
        let mut tokenizer = Tokenizer::from_file(&path).map_err(|e| invalid(e.to_string()))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: spec.max_length,
                ..Default::default()
            }))
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Self { tokenizer })
    }

    /// Token ids with the model's special tokens, at most the model's max length.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, tokenizers::Error> {
        let encoding = self.tokenizer.encode(text, true)?;
        Ok(encoding.get_ids().to_vec())
    }
}
