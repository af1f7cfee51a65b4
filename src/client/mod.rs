//! Client commands: stream a conversation file to a server ([`stream_file`]); watch, list and
//! acknowledge alerts ([`alerts`]); model administration output ([`admin`]).

pub mod admin;
pub mod alerts;
pub mod customers;
pub mod report;

pub use alerts::{
    Feed, WatchOptions, acknowledge, format_alert, format_alert_styled, format_brief, hand_off,
    list_alerts, watch,
};

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;

use crate::pb;
use crate::pb::emotion_analysis_client::EmotionAnalysisClient;
use tonic::transport::Channel;

/// Where a client command connects, and the bearer token it presents (when the server wants one).
#[derive(Debug, Clone)]
pub struct Server {
    pub url: String,
    pub token: Option<String>,
}

impl Server {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: None,
        }
    }

    pub async fn channel(&self) -> anyhow::Result<Channel> {
        tonic::transport::Endpoint::from_shared(self.url.clone())
            .with_context(|| format!("server address {:?}", self.url))?
            .connect()
            .await
            .with_context(|| format!("connecting to {}", self.url))
    }

    /// `message` as a request carrying the token.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token
            && let Ok(value) = format!("Bearer {token}").parse()
        {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }
}

/// One line of a conversation file (JSON lines).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnLine {
    pub conversation_id: String,
    pub turn_id: u64,
    /// customer, agent or bot
    pub speaker: String,
    pub text: String,
    #[serde(default)]
    pub acoustic_valence: Option<f32>,
    #[serde(default)]
    pub tenant: String,
    #[serde(default)]
    pub queue: String,
    #[serde(default)]
    pub agent_id: String,
    #[serde(default)]
    pub language: String,
    /// The platform's customer id (pseudonymised by the server).
    #[serde(default)]
    pub customer_id: String,
}

impl TurnLine {
    pub fn to_request(&self) -> anyhow::Result<pb::TurnRequest> {
        let speaker = match self.speaker.to_ascii_lowercase().as_str() {
            "customer" => pb::Speaker::Customer,
            "agent" => pb::Speaker::Agent,
            "bot" => pb::Speaker::Bot,
            other => bail!("speaker {other:?} is not customer, agent or bot"),
        };
        let context = pb::Context {
            tenant: self.tenant.clone(),
            queue: self.queue.clone(),
            agent_id: self.agent_id.clone(),
            language: self.language.clone(),
            customer_id: self.customer_id.clone(),
            customer_key: String::new(),
        };
        Ok(pb::TurnRequest {
            acoustic_valence: self.acoustic_valence,
            context: Some(context.into()),
            ..pb::TurnRequest::new(
                self.conversation_id.clone(),
                self.turn_id,
                speaker,
                self.text.clone(),
            )
        })
    }
}

/// One line of a conversation file; an error names the field that is wrong (`turn_id: invalid
/// type: string "1", expected u64`), or the column for a line that is not JSON.
fn parse_turn_line(line: &str) -> anyhow::Result<TurnLine> {
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(line)).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            anyhow!("not a JSON object of a turn: {inner}")
        } else if field == "." {
            anyhow!("{inner}")
        } else {
            anyhow!("field {field}: {inner}")
        }
    })
}

pub fn read_conversation_file(path: &Path) -> anyhow::Result<Vec<pb::TurnRequest>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            let turn = parse_turn_line(line)
                .with_context(|| format!("{} line {}", path.display(), i + 1))?;
            turn.to_request()
                .with_context(|| format!("{} line {}", path.display(), i + 1))
        })
        .collect()
}

/// Streams the file's turns (pausing `delay` between them) and prints each result as it arrives;
/// with `end`, then ends each of the file's conversations and prints its summary.
pub async fn stream_file(
    server: &Server,
    path: &Path,
    delay: Duration,
    end: bool,
) -> anyhow::Result<()> {
    let turns = read_conversation_file(path)?;
    let expected = turns.len();
    let mut conversations: Vec<String> = Vec::new();
    for t in &turns {
        let id = String::from_utf8_lossy(&t.conversation_id);
        if !conversations.iter().any(|c| *c == id) {
            conversations.push(id.into_owned());
        }
    }
    let mut client = EmotionAnalysisClient::new(server.channel().await?);
    let outbound = async_stream(turns, delay);
    let mut results = client
        .stream_turns(server.request(outbound))
        .await?
        .into_inner();
    let mut out = tokio::io::stdout();
    let mut received = 0;
    while let Some(result) = results.next().await {
        let result = result?;
        received += 1;
        out.write_all(format_result(&result).as_bytes()).await?;
        out.flush().await?;
    }
    if received != expected {
        bail!("sent {expected} turns but received {received} results");
    }
    for id in conversations.into_iter().filter(|_| end) {
        let s = client
            .end_conversation(server.request(pb::EndConversationRequest {
                conversation_id: id,
            }))
            .await?
            .into_inner();
        let emotions: Vec<&str> = (s.customer_emotions.iter().take(3))
            .map(|e| e.label.as_str())
            .collect();
        let line = format!(
            "{} ended: {} turns, lowest customer rolling {:+.2}, {} alert event(s), customer emotions [{}]\n",
            s.conversation_id,
            s.turns,
            s.min_customer_rolling_valence,
            s.alert_events,
            emotions.join(", ")
        );
        out.write_all(line.as_bytes()).await?;
    }
    out.flush().await?;
    Ok(())
}

fn async_stream(
    turns: Vec<pb::TurnRequest>,
    delay: Duration,
) -> impl tokio_stream::Stream<Item = pb::TurnRequest> {
    tokio_stream::iter(turns).then(move |turn| async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        turn
    })
}

pub fn format_result(r: &pb::TurnResult) -> String {
    if let Some(e) = &r.error {
        return format!(
            "{} #{}  ERROR {:?}: {}\n",
            r.conversation_id,
            r.turn_id,
            tonic::Code::from(e.code),
            e.message
        );
    }
    let speaker = pb::Speaker::try_from(r.speaker)
        .map_or("?", |s| s.as_str_name().trim_start_matches("SPEAKER_"));
    let level = pb::Severity::try_from(r.alert_level)
        .map_or("?", |s| s.as_str_name().trim_start_matches("SEVERITY_"));
    let top: Vec<String> = r
        .emotions
        .iter()
        .take(3)
        .map(|e| format!("{} {:.2}", e.label, e.probability))
        .collect();
    format!(
        "{} #{:<3} {:<8} valence {:+.2}  rolling {:+.2}  alert {:<8} labels [{}]  top: {}{}\n",
        r.conversation_id,
        r.turn_id,
        speaker,
        r.valence,
        r.rolling_valence,
        level,
        r.labels.join(", "),
        top.join(", "),
        if r.duplicate { "  (duplicate)" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_turn_line_names_its_field() {
        let ok = parse_turn_line(
            r#"{"conversation_id":"c1","turn_id":3,"speaker":"customer","text":"转人工"}"#,
        )
        .unwrap();
        assert_eq!((ok.turn_id, ok.text.as_str()), (3, "转人工"));
        let message = |line: &str| parse_turn_line(line).unwrap_err().to_string();
        let e = message(r#"{"conversation_id":"c1","turn_id":"3","speaker":"agent","text":"hi"}"#);
        assert!(e.starts_with("field turn_id: invalid type: string"), "{e}");
        let e = message(
            r#"{"conversation_id":"c1","turn_id":1,"speaker":"agent","text":"hi","acoustic_valence":"low"}"#,
        );
        assert!(e.starts_with("field acoustic_valence:"), "{e}");
        let e = message(r#"{"conversation_id":"c1","turn_id":1,"speaker":"agent"}"#);
        assert!(e.starts_with("missing field `text`"), "{e}");
        let e = message(
            r#"{"conversation_id":"c1","turn_id":1,"speaker":"agent","text":"hi","txet":1}"#,
        );
        assert!(e.contains("unknown field `txet`"), "{e}");
        let e = message(r#"{"conversation_id":"c1","#);
        assert!(e.starts_with("not a JSON object of a turn:"), "{e}");
    }
}
