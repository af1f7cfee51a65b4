//! Evaluation on sentiment / coarse-emotion TSVs (the Chinese contact-center set, SMP2020-EWECT),
//! through the same serving path as [`super::evaluate`].
//!
//! Input: a TSV with a header line naming its columns; `text` is required, then `sentiment`
//! (negative / neutral / positive) and/or `emotion` (a coarse emotion: anger, disgust, fear, joy,
//! sadness, surprise, neutral, or SMP2020's happy, angry, sad, fear, surprise, neutral). Other
//! columns are ignored except `form` and `speaker`, which break the accuracy down.
//!
//! Readings of a turn's scores:
//! - sentiment: negative when its text valence is at or below `-neutral_band` (emotion.json),
//!   positive at or above `+neutral_band`, neutral between; the text valence as a conversation
//!   counts it (in an agent's turn that apologises, an apology's emotions aside:
//!   `crate::assist::apology`);
//! - sign accuracy: on negative and positive rows, whether the valence has the gold sign;
//! - emotion: among the classes the file uses, the one whose GoEmotions label (anger, disgust,
//!   fear, joy, sadness, surprise, neutral) has the highest probability.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, bail};
use futures::StreamExt;

use crate::assist::{APOLOGY_EMOTIONS, apology};
use crate::inference::Batcher;
use crate::lang::normalize;

/// The coarse emotions and the GoEmotions label that stands for each.
pub const COARSE: [&str; 7] = [
    "anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral",
];

/// SMP2020-EWECT's names for the same classes.
fn coarse_name(value: &str) -> Option<&'static str> {
    Some(match value {
        "happy" => "joy",
        "angry" => "anger",
        "sad" => "sadness",
        other => COARSE.iter().find(|c| **c == other)?,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Sentiment {
    Negative,
    Neutral,
    Positive,
}

impl Sentiment {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "negative" => Some(Self::Negative),
            "neutral" => Some(Self::Neutral),
            "positive" => Some(Self::Positive),
            _ => None,
        }
    }

    pub fn of_valence(valence: f32, band: f32) -> Self {
        if valence <= -band {
            Self::Negative
        } else if valence >= band {
            Self::Positive
        } else {
            Self::Neutral
        }
    }
}

#[derive(Debug, Clone)]
pub struct Row {
    pub text: String,
    pub sentiment: Option<Sentiment>,
    pub emotion: Option<&'static str>,
    /// `form` and `speaker` values, for the breakdown.
    pub groups: Vec<String>,
}

/// Whether `path` is a sentiment TSV (a header line with a `text` and a `sentiment` or
/// `emotion` column) rather than a GoEmotions-format one.
pub fn is_sentiment_tsv(path: &Path) -> anyhow::Result<bool> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let head: Vec<&str> = text.lines().next().unwrap_or("").split('\t').collect();
    Ok(head.contains(&"text") && (head.contains(&"sentiment") || head.contains(&"emotion")))
}

pub fn read(path: &Path) -> anyhow::Result<Vec<Row>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines().enumerate();
    let head: Vec<&str> = lines
        .next()
        .map(|(_, l)| l)
        .unwrap_or("")
        .split('\t')
        .collect();
    let col = |name: &str| head.iter().position(|h| *h == name);
    let Some(text_col) = col("text") else {
        bail!("{}: the header has no `text` column", path.display());
    };
    let (sent_col, emo_col) = (col("sentiment"), col("emotion"));
    if sent_col.is_none() && emo_col.is_none() {
        bail!(
            "{}: the header has neither a `sentiment` nor an `emotion` column",
            path.display()
        );
    }
    let group_cols: Vec<(&str, usize)> = ["form", "speaker"]
        .iter()
        .filter_map(|n| col(n).map(|c| (*n, c)))
        .collect();
    let mut rows = Vec::new();
    for (i, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split('\t').collect();
        let at = |c: usize| cells.get(c).copied().unwrap_or("");
        let where_ = || format!("{} line {}", path.display(), i + 1);
        let sentiment = match sent_col.map(at) {
            None | Some("") => None,
            Some(s) => Some(Sentiment::parse(s).with_context(|| {
                format!(
                    "{}: sentiment {s:?} is not negative, neutral or positive",
                    where_()
                )
            })?),
        };
        let emotion = match emo_col.map(at) {
            None | Some("") => None,
            Some(e) => Some(coarse_name(e).with_context(|| {
                format!("{}: emotion {e:?} is not one of {COARSE:?}", where_())
            })?),
        };
        if sentiment.is_none() && emotion.is_none() {
            continue; // e.g. agent turns without a label
        }
        rows.push(Row {
            text: at(text_col).to_string(),
            sentiment,
            emotion,
            groups: group_cols
                .iter()
                .map(|(n, c)| format!("{n}={}", at(*c)))
                .collect(),
        });
    }
    if rows.is_empty() {
        bail!("{}: no labelled rows", path.display());
    }
    Ok(rows)
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub n: u64,
    pub sentiment_n: u64,
    pub sentiment_correct: u64,
    pub polar_n: u64,
    pub sign_correct: u64,
    pub emotion_n: u64,
    pub emotion_correct: u64,
}

impl Counts {
    fn ratio(a: u64, b: u64) -> f64 {
        if b == 0 {
            f64::NAN
        } else {
            a as f64 / b as f64
        }
    }
    pub fn accuracy3(&self) -> f64 {
        Self::ratio(self.sentiment_correct, self.sentiment_n)
    }
    pub fn sign_accuracy(&self) -> f64 {
        Self::ratio(self.sign_correct, self.polar_n)
    }
    pub fn emotion_accuracy(&self) -> f64 {
        Self::ratio(self.emotion_correct, self.emotion_n)
    }
}

#[derive(Debug, Clone)]
pub struct SentimentReport {
    pub model: String,
    pub band: f32,
    pub all: Counts,
    pub groups: BTreeMap<String, Counts>,
    /// Per emotion class the file uses: (precision, recall, F1, support).
    pub emotion_f1: BTreeMap<&'static str, (f64, f64, f64, u64)>,
    /// Agent rows whose text apologises (their valence read without an apology's emotions).
    pub apologies: u64,
    pub seconds: f64,
}

impl SentimentReport {
    pub fn emotion_macro_f1(&self) -> f64 {
        let n = self.emotion_f1.len().max(1) as f64;
        self.emotion_f1.values().map(|v| v.2).sum::<f64>() / n
    }

    pub fn table(&self) -> String {
        let a = &self.all;
        let mut out = format!(
            "model {}: {} texts in {:.1} s; neutral band +-{:.2}\n",
            self.model, a.n, self.seconds, self.band
        );
        if a.sentiment_n > 0 {
            out.push_str(&format!(
                "sentiment 3-class accuracy {:.4} ({} texts); valence sign accuracy {:.4} ({} negative/positive); {} agent turns apologise (remorse, sadness, embarrassment aside)\n",
                a.accuracy3(),
                a.sentiment_n,
                a.sign_accuracy(),
                a.polar_n,
                self.apologies
            ));
        }
        if a.emotion_n > 0 {
            out.push_str(&format!(
                "emotion accuracy {:.4}, macro-F1 {:.4} over {} classes ({} texts)\n",
                a.emotion_accuracy(),
                self.emotion_macro_f1(),
                self.emotion_f1.len(),
                a.emotion_n
            ));
            for (c, (p, r, f, s)) in &self.emotion_f1 {
                out.push_str(&format!(
                    "  {c:<9} precision {p:.4} recall {r:.4} f1 {f:.4} support {s}\n"
                ));
            }
        }
        for (g, c) in &self.groups {
            out.push_str(&format!(
                "  {g:<22} {:>4} texts  3-class {:.4}  sign {:.4}  emotion {:.4}\n",
                c.n,
                c.accuracy3(),
                c.sign_accuracy(),
                c.emotion_accuracy()
            ));
        }
        out
    }
}

pub async fn evaluate(
    batcher: &Batcher,
    rows: &[Row],
    band: Option<f32>,
) -> anyhow::Result<SentimentReport> {
    let spec = batcher.spec();
    let band = band.unwrap_or(spec.neutral_band);
    let classes: Vec<&'static str> = COARSE
        .iter()
        .copied()
        .filter(|c| rows.iter().any(|r| r.emotion == Some(*c)))
        .collect();
    let class_label: Vec<Option<usize>> = classes
        .iter()
        .map(|c| spec.labels.iter().position(|l| l == c))
        .collect();
    if !classes.is_empty() && class_label.iter().all(Option::is_none) {
        bail!(
            "model {} has none of the labels {classes:?} the emotion column uses",
            spec.tag
        );
    }
    let started = Instant::now();
    let mut all = Counts::default();
    let mut groups: BTreeMap<String, Counts> = BTreeMap::new();
    let mut confusion: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut scored = futures::stream::iter(rows)
        .map(|r| async move {
            let scores = batcher.submit(&r.text).await?.wait().await?;
            Ok::<_, crate::error::InferenceError>((r, scores))
        })
        .buffered(256);
    let mut apologies = 0;
    while let Some(result) = scored.next().await {
        let (row, scores) = result?;
        let agent = row.groups.iter().any(|g| g == "speaker=agent");
        let valence = match apology(&normalize(&row.text)).filter(|_| agent) {
            Some(_) => {
                apologies += 1;
                scores.valence_without(APOLOGY_EMOTIONS)
            }
            None => scores.valence,
        };
        let add = |c: &mut Counts| {
            c.n += 1;
            if let Some(gold) = row.sentiment {
                c.sentiment_n += 1;
                c.sentiment_correct += u64::from(Sentiment::of_valence(valence, band) == gold);
                if gold != Sentiment::Neutral {
                    c.polar_n += 1;
                    c.sign_correct += u64::from((valence > 0.0) == (gold == Sentiment::Positive));
                }
            }
            if let Some(gold) = row.emotion {
                c.emotion_n += 1;
                c.emotion_correct +=
                    u64::from(predict(&classes, &class_label, &scores.probs) == gold);
            }
        };
        add(&mut all);
        for g in &row.groups {
            add(groups.entry(g.clone()).or_default());
        }
        if let Some(gold) = row.emotion {
            *confusion
                .entry((gold, predict(&classes, &class_label, &scores.probs)))
                .or_default() += 1;
        }
    }
    let emotion_f1 = classes
        .iter()
        .map(|&c| {
            let tp = confusion.get(&(c, c)).copied().unwrap_or(0);
            let support: u64 = confusion
                .iter()
                .filter(|((g, _), _)| *g == c)
                .map(|(_, n)| n)
                .sum();
            let predicted: u64 = confusion
                .iter()
                .filter(|((_, p), _)| *p == c)
                .map(|(_, n)| n)
                .sum();
            let p = if predicted > 0 {
                tp as f64 / predicted as f64
            } else {
                0.0
            };
            let r = if support > 0 {
                tp as f64 / support as f64
            } else {
                0.0
            };
            let f = if p + r > 0.0 {
                2.0 * p * r / (p + r)
            } else {
                0.0
            };
            (c, (p, r, f, support))
        })
        .collect();
    Ok(SentimentReport {
        model: spec.tag.clone(),
        band,
        all,
        groups,
        emotion_f1,
        apologies,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn predict(classes: &[&'static str], class_label: &[Option<usize>], probs: &[f32]) -> &'static str {
    classes
        .iter()
        .zip(class_label)
        .filter_map(|(c, l)| l.map(|l| (*c, probs.get(l).copied().unwrap_or(0.0))))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map_or("neutral", |(c, _)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_chinese_formats() {
        let dir = std::env::temp_dir().join(format!("sentiment-tsv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cc = dir.join("cc.tsv");
        std::fs::write(
            &cc,
            "id\ttext\tsentiment\temotion\tspeaker\tform\n1\t我要投诉\tnegative\tanger\tcustomer\tsimplified\n2\t好的\tneutral\tneutral\tagent\tsimplified\n",
        )
        .unwrap();
        assert!(is_sentiment_tsv(&cc).unwrap());
        let rows = read(&cc).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].sentiment, Some(Sentiment::Negative));
        assert_eq!(rows[0].emotion, Some("anger"));
        assert_eq!(rows[0].groups, ["form=simplified", "speaker=customer"]);
        let smp = dir.join("smp.tsv");
        std::fs::write(&smp, "text\temotion\n开心\thappy\n气死了\tangry\n").unwrap();
        let rows = read(&smp).unwrap();
        assert_eq!(rows[0].emotion, Some("joy"));
        assert_eq!(rows[1].sentiment, None);
        let bad = dir.join("bad.tsv");
        std::fs::write(&bad, "text\tsentiment\nx\tangry\n").unwrap();
        let err = read(&bad).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("angry"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn band_reading() {
        assert_eq!(Sentiment::of_valence(-0.3, 0.2), Sentiment::Negative);
        assert_eq!(Sentiment::of_valence(0.1, 0.2), Sentiment::Neutral);
        assert_eq!(Sentiment::of_valence(0.2, 0.2), Sentiment::Positive);
    }
}
