//! What a turn costs on the runtime thread before inference, side by side with what moved to
//! the inference threads: text signals (normalisation for the triggers, the redacted excerpt,
//! script detection: `TextSignal::of`, still on the runtime thread) and tokenisation (with each
//! shipped model's tokenizer, now on the inference threads). Per text, on a real corpus and on
//! texts at the 8 KiB limit.
//!
//!     cargo bench --bench text_signals -- [corpus.tsv] [zh corpus: one text per line or TSV]

use std::hint::black_box;
use std::time::Instant;

use emotion_service::config::AlertConfig;
use emotion_service::conversation::{Speaker, TextSignal};
use emotion_service::inference::model_dir::ModelSpec;
use emotion_service::inference::text::TextEncoder;
use emotion_service::loadgen;

fn per_text_us(texts: &[String], mut f: impl FnMut(&str)) -> f64 {
    for t in texts.iter().take(200) {
        f(t); // warm
    }
    let rounds = (20_000 / texts.len()).clamp(1, 20);
    let started = Instant::now();
    for _ in 0..rounds {
        for t in texts {
            f(t);
        }
    }
    started.elapsed().as_secs_f64() * 1e6 / (rounds * texts.len()) as f64
}

/// The `text` column of a TSV with a header naming it, else the first column.
fn text_column(path: &str) -> anyhow::Result<Vec<String>> {
    let data = std::fs::read_to_string(path)?;
    let mut lines = data.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split('\t').collect();
    let Some(col) = header.iter().position(|h| *h == "text") else {
        return loadgen::read_corpus(path.as_ref());
    };
    Ok(lines
        .filter_map(|l| l.split('\t').nth(col).map(str::to_string))
        .filter(|t| !t.is_empty())
        .collect())
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let en = args
        .next()
        .unwrap_or_else(|| "tests/data/goemotions/test.tsv".into());
    let zh = args
        .next()
        .unwrap_or_else(|| "eval/zh-contact-center/test.tsv".into());
    let alerts = AlertConfig::default();
    let encoders: Vec<(String, TextEncoder)> =
        ["models/goemotions-minilm-l6", "models/emotion-e5-zh-en"]
            .iter()
            .map(|d| {
                let spec = ModelSpec::load(d.as_ref())?;
                Ok((spec.tag.clone(), TextEncoder::load(&spec)?))
            })
            .collect::<anyhow::Result<_>>()?;
    let long: Vec<String> = (0..50)
        .map(|i| {
            let base = "My card 4111 1111 1111 1111 was charged twice, call me at +1 415 555 0100, email a.b@example.com. 我要投诉，马上给我转人工！ ";
            base.repeat(8192 / base.len()).chars().skip(i).collect::<String>()
        })
        .collect();
    println!(
        "| texts | n | mean bytes | text signals µs/text | {} |",
        encoders
            .iter()
            .map(|(t, _)| format!("tokenise {t} µs/text"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|---:|---:|---:|{}", "---:|".repeat(encoders.len()));
    for (name, texts) in [
        (en.clone(), loadgen::read_corpus(en.as_ref())?),
        (zh.clone(), text_column(&zh)?),
        ("8 KiB texts (PII, mixed scripts)".to_string(), long),
    ] {
        let bytes = texts.iter().map(String::len).sum::<usize>() as f64 / texts.len() as f64;
        let signals = per_text_us(&texts, |t| {
            black_box(TextSignal::of(t, Speaker::Customer, &alerts));
        });
        let tokenise: Vec<String> = encoders
            .iter()
            .map(|(_, e)| {
                format!(
                    "{:.1}",
                    per_text_us(&texts, |t| {
                        black_box(e.encode(t).ok());
                    })
                )
            })
            .collect();
        println!(
            "| {name} | {} | {bytes:.0} | {signals:.1} | {} |",
            texts.len(),
            tokenise.join(" | ")
        );
    }
    Ok(())
}
