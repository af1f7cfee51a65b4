//! The model directory contract (docs/models.md): `model.onnx`, `tokenizer.json`, `config.json`
//! (Hugging Face: `id2label`, `problem_type`) and an optional `emotion.json` with what we add
//! (per-label thresholds, valence weights, max length, name, version). A directory exported by
//! Hugging Face Optimum for text classification is valid as it is; absent fields take documented
//! defaults.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::ModelError;

/// How logits become probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ProblemType {
    /// Independent sigmoid per label; a label is predicted at or above its threshold.
    MultiLabel,
    /// Softmax over labels; the predicted label is the most probable one.
    SingleLabel,
}

impl ProblemType {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemType::MultiLabel => "multi_label_classification",
            ProblemType::SingleLabel => "single_label_classification",
        }
    }
}

/// Everything the service knows about a model besides the ONNX graph itself. Persisted with the
/// conversations whose turns it scored, so their results read the same after a restart.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelSpec {
    pub dir: PathBuf,
    pub name: String,
    pub version: String,
    pub labels: Vec<String>,
    pub problem_type: ProblemType,
    /// Per label, in label order.
    pub thresholds: Vec<f32>,
    /// Per label, in [-1, 1], in label order.
    pub valence_weights: Vec<f32>,
    pub max_length: usize,
    /// A turn whose valence is within +-this reads as neutral where a 3-class sentiment is
    /// wanted (`emotion eval` on a sentiment TSV).
    pub neutral_band: f32,
    /// Hex SHA-256 of model.onnx.
    pub sha256: String,
    /// `name@version`, the string every result and alert carries.
    pub tag: String,
}

#[derive(Deserialize)]
struct HfConfig {
    id2label: Option<BTreeMap<String, String>>,
    problem_type: Option<String>,
    max_position_embeddings: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EmotionJson {
    name: Option<String>,
    version: Option<String>,
    max_length: Option<usize>,
    #[serde(default)]
    thresholds: BTreeMap<String, f32>,
    #[serde(default)]
    valence_weights: BTreeMap<String, f32>,
    neutral_band: Option<f32>,
}

/// Default maximum tokens per text when neither emotion.json nor the tokenizer says.
pub const DEFAULT_MAX_LENGTH: usize = 128;
/// Default neutral band of the 3-class sentiment reading.
pub const DEFAULT_NEUTRAL_BAND: f32 = 0.2;
/// Default decision threshold of a multi-label model.
pub const DEFAULT_THRESHOLD: f32 = 0.5;

impl ModelSpec {
    pub fn model_path(&self) -> PathBuf {
        self.dir.join("model.onnx")
    }

    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join("tokenizer.json")
    }

    /// Reads and checks the directory's JSON files and hashes model.onnx. Does not load the graph.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let invalid = |file: &str, message: String| ModelError::Invalid {
            path: dir.join(file),
            message,
        };
        for file in ["model.onnx", "tokenizer.json", "config.json"] {
            if !dir.join(file).is_file() {
                return Err(invalid(file, "missing".into()));
            }
        }
        let config: HfConfig = read_json(&dir.join("config.json"))?;
        let id2label = config
            .id2label
            .ok_or_else(|| invalid("config.json", "no `id2label`".into()))?;
        let labels = labels_in_order(&id2label).map_err(|m| invalid("config.json", m))?;
        let problem_type = match config.problem_type.as_deref() {
            Some("multi_label_classification") => ProblemType::MultiLabel,
            Some("single_label_classification") | None => ProblemType::SingleLabel,
            Some(other) => {
                return Err(invalid(
                    "config.json",
                    format!(
                        "`problem_type` {other:?} is not multi_label_classification or single_label_classification"
                    ),
                ));
            }
        };
        let extra_path = dir.join("emotion.json");
        let extra: EmotionJson = if extra_path.is_file() {
            read_json(&extra_path)?
        } else {
            EmotionJson::default()
        };
        let per_label =
            |map: &BTreeMap<String, f32>, field: &str, default: &dyn Fn(&str) -> f32| {
                if let Some(unknown) = map.keys().find(|k| !labels.contains(k)) {
                    return Err(invalid(
                        "emotion.json",
                        format!("`{field}` names unknown label {unknown:?}"),
                    ));
                }
                Ok(labels
                    .iter()
                    .map(|l| map.get(l).copied().unwrap_or_else(|| default(l)))
                    .collect::<Vec<f32>>())
            };
        let thresholds = per_label(&extra.thresholds, "thresholds", &|_| DEFAULT_THRESHOLD)?;
        if let Some(t) = thresholds.iter().find(|t| !(0.0..=1.0).contains(*t)) {
            return Err(invalid(
                "emotion.json",
                format!("threshold {t} is outside [0, 1]"),
            ));
        }
        let valence_weights =
            per_label(&extra.valence_weights, "valence_weights", &default_valence)?;
        if let Some(w) = valence_weights.iter().find(|w| !(-1.0..=1.0).contains(*w)) {
            return Err(invalid(
                "emotion.json",
                format!("valence weight {w} is outside [-1, 1]"),
            ));
        }
        let tokenizer_max = tokenizer_truncation(&dir.join("tokenizer.json"))?;
        let max_length = extra
            .max_length
            .or(tokenizer_max)
            .unwrap_or(DEFAULT_MAX_LENGTH)
            .min(config.max_position_embeddings.unwrap_or(usize::MAX));
        if max_length < 2 {
            return Err(invalid(
                "emotion.json",
                format!("`max_length` {max_length} is below 2"),
            ));
        }
        let neutral_band = extra.neutral_band.unwrap_or(DEFAULT_NEUTRAL_BAND);
        if !(0.0..1.0).contains(&neutral_band) {
            return Err(invalid(
                "emotion.json",
                format!("`neutral_band` {neutral_band} is outside [0, 1)"),
            ));
        }
        let sha256 = sha256_file(&dir.join("model.onnx"))?;
        let name = extra.name.unwrap_or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into())
        });
        let version = extra.version.unwrap_or_else(|| sha256[..12].to_string());
        Ok(Self {
            tag: format!("{name}@{version}"),
            dir: dir.to_path_buf(),
            name,
            version,
            labels,
            problem_type,
            thresholds,
            valence_weights,
            max_length,
            neutral_band,
            sha256,
        })
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::Invalid {
        path: path.into(),
        message: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Invalid {
        path: path.into(),
        message: e.to_string(),
    })
}

fn labels_in_order(id2label: &BTreeMap<String, String>) -> Result<Vec<String>, String> {
    let mut labels = vec![None; id2label.len()];
    for (id, label) in id2label {
        let i: usize = id
            .parse()
            .map_err(|_| format!("`id2label` key {id:?} is not an index"))?;
        let slot = labels
            .get_mut(i)
            .ok_or_else(|| format!("`id2label` index {i} out of range 0..{}", id2label.len()))?;
        *slot = Some(label.clone());
    }
    if labels.is_empty() {
        return Err("`id2label` is empty".into());
    }
    Ok(labels
        .into_iter()
        .map(|l| l.expect("every index filled"))
        .collect())
}

/// `truncation.max_length` of a tokenizer.json, if it sets one.
fn tokenizer_truncation(path: &Path) -> Result<Option<usize>, ModelError> {
    let value: serde_json::Value = read_json(path)?;
    Ok(value
        .get("truncation")
        .and_then(|t| t.get("max_length"))
        .and_then(|m| m.as_u64())
        .map(|m| m as usize))
}

fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let mut file = std::fs::File::open(path).map_err(|e| ModelError::Invalid {
        path: path.into(),
        message: e.to_string(),
    })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| ModelError::Invalid {
            path: path.into(),
            message: e.to_string(),
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Valence of well-known label names when emotion.json gives none: the GoEmotions sentiment
/// groups (positive +1, negative -1, ambiguous 0), Ekman's six, and plain sentiment labels.
/// Anything else is 0.
pub fn default_valence(label: &str) -> f32 {
    match label.to_ascii_lowercase().as_str() {
        "admiration" | "amusement" | "approval" | "caring" | "desire" | "excitement"
        | "gratitude" | "joy" | "love" | "optimism" | "pride" | "relief" | "positive" => 1.0,
        "anger" | "annoyance" | "disappointment" | "disapproval" | "disgust" | "embarrassment"
        | "fear" | "grief" | "nervousness" | "remorse" | "sadness" | "negative" => -1.0,
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_dir(config: &str, emotion: Option<&str>) -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "emotion-modeldir-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("model.onnx"), b"not really onnx").unwrap();
        std::fs::write(dir.join("tokenizer.json"), r#"{"truncation": null}"#).unwrap();
        std::fs::write(dir.join("config.json"), config).unwrap();
        if let Some(e) = emotion {
            std::fs::write(dir.join("emotion.json"), e).unwrap();
        }
        dir
    }

    #[test]
    fn labels_left_out_count_neither_way_in_the_valence() {
        let dir = write_dir(
            r#"{"id2label": {"0": "remorse", "1": "sadness", "2": "caring", "3": "anger"}}"#,
            None,
        );
        let spec = ModelSpec::load(&dir).unwrap();
        let probs = [0.9, 0.6, 0.3, 0.0];
        let all = crate::inference::engine::valence_of(&spec, &probs, &[]);
        assert!((all - (-1.5 + 0.3) / 1.8).abs() < 1e-6, "{all}");
        let aside = crate::inference::engine::valence_of(&spec, &probs, &["remorse", "sadness"]);
        assert_eq!(aside, 1.0);
        let with_anger = [0.9, 0.6, 0.3, 0.3];
        let aside =
            crate::inference::engine::valence_of(&spec, &with_anger, &["remorse", "sadness"]);
        assert_eq!(aside, 0.0);
    }

    #[test]
    fn optimum_layout_gets_defaults() {
        let dir = write_dir(
            r#"{"id2label": {"1": "joy", "0": "anger", "2": "neutral"}}"#,
            None,
        );
        let spec = ModelSpec::load(&dir).unwrap();
        assert_eq!(spec.labels, ["anger", "joy", "neutral"]);
        assert_eq!(spec.problem_type, ProblemType::SingleLabel);
        assert_eq!(spec.valence_weights, [-1.0, 1.0, 0.0]);
        assert_eq!(spec.thresholds, [0.5; 3]);
        assert_eq!(spec.max_length, DEFAULT_MAX_LENGTH);
        assert_eq!(spec.version, &spec.sha256[..12]);
        assert_eq!(spec.name, dir.file_name().unwrap().to_str().unwrap());
    }

    #[test]
    fn emotion_json_overrides_and_is_checked() {
        let config =
            r#"{"id2label": {"0": "a", "1": "b"}, "problem_type": "multi_label_classification"}"#;
        let dir = write_dir(
            config,
            Some(
                r#"{"name": "m", "version": "7", "max_length": 64, "thresholds": {"b": 0.3}, "valence_weights": {"a": -0.5}}"#,
            ),
        );
        let spec = ModelSpec::load(&dir).unwrap();
        assert_eq!(spec.problem_type, ProblemType::MultiLabel);
        assert_eq!(spec.thresholds, [0.5, 0.3]);
        assert_eq!(spec.valence_weights, [-0.5, 0.0]);
        assert_eq!((spec.max_length, spec.tag.as_str()), (64, "m@7"));

        let dir = write_dir(config, Some(r#"{"thresholds": {"c": 0.3}}"#));
        let err = ModelSpec::load(&dir).unwrap_err().to_string();
        assert!(err.contains("unknown label \"c\""), "{err}");
        let dir = write_dir(config, Some(r#"{"valence_weights": {"a": 2}}"#));
        assert!(
            ModelSpec::load(&dir)
                .unwrap_err()
                .to_string()
                .contains("outside [-1, 1]")
        );
    }

    #[test]
    fn missing_files_and_labels_are_named() {
        let dir = write_dir(r#"{"num_labels": 2}"#, None);
        let err = ModelSpec::load(&dir).unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("id2label"),
            "{err}"
        );
        std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
        let err = ModelSpec::load(&dir).unwrap_err().to_string();
        assert!(
            err.contains("tokenizer.json") && err.contains("missing"),
            "{err}"
        );
    }
}
