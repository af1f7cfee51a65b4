//! Client commands: stream a conversation file to a server; watch, list and acknowledge alerts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;

use crate::pb;
use crate::pb::alert_feed_client::AlertFeedClient;
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
        };
        Ok(pb::TurnRequest {
            conversation_id: self.conversation_id.clone(),
            turn_id: self.turn_id,
            speaker: speaker.into(),
            text: self.text.clone(),
            acoustic_valence: self.acoustic_valence,
            context: Some(context),
        })
    }
}

pub fn read_conversation_file(path: &Path) -> anyhow::Result<Vec<pb::TurnRequest>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            let turn: TurnLine = serde_json::from_str(line)
                .with_context(|| format!("{} line {}", path.display(), i + 1))?;
            turn.to_request()
                .with_context(|| format!("{} line {}", path.display(), i + 1))
        })
        .collect()
}

/// Streams the file's turns (pausing `delay` between them) and prints each result as it arrives.
pub async fn stream_file(server: &Server, path: &Path, delay: Duration) -> anyhow::Result<()> {
    let turns = read_conversation_file(path)?;
    let expected = turns.len();
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

pub fn format_alert(a: &pb::Alert) -> String {
    format_alert_styled(a, false)
}

/// One line per alert event; with `color`, ANSI colours by severity and state.
pub fn format_alert_styled(a: &pb::Alert, color: bool) -> String {
    let severity = pb::Severity::try_from(a.severity)
        .map_or("?", |s| s.as_str_name().trim_start_matches("SEVERITY_"));
    let state = pb::AlertState::try_from(a.state)
        .map_or("?", |s| s.as_str_name().trim_start_matches("ALERT_STATE_"));
    let (on, off) = match (
        color,
        pb::AlertState::try_from(a.state),
        pb::Severity::try_from(a.severity),
    ) {
        (false, _, _) => ("", ""),
        (true, Ok(pb::AlertState::Resolved), _) => ("\x1b[32m", "\x1b[0m"),
        (true, Ok(pb::AlertState::Acknowledged), _) => ("\x1b[36m", "\x1b[0m"),
        (true, _, Ok(pb::Severity::Critical)) => ("\x1b[1;31m", "\x1b[0m"),
        (true, _, _) => ("\x1b[33m", "\x1b[0m"),
    };
    let taken = if a.acknowledged_by.is_empty() {
        String::new()
    } else if a.note.is_empty() {
        format!("  taken by {:?}", a.acknowledged_by)
    } else {
        format!("  taken by {:?}: {:?}", a.acknowledged_by, a.note)
    };
    let ctx = a.context.clone().unwrap_or_default();
    let evidence: Vec<String> = a
        .evidence
        .iter()
        .map(|e| {
            let top = e.top_emotions.first().map_or("", |t| t.label.as_str());
            match e.excerpt.as_str() {
                "" => format!("#{} {:+.2} {}", e.turn_id, e.valence, top),
                text => format!("#{} {:+.2} {} {:?}", e.turn_id, e.valence, top, text),
            }
        })
        .collect();
    let dominant: Vec<&str> = a
        .dominant_emotions
        .iter()
        .map(|e| e.label.as_str())
        .collect();
    let explain = if a.detail.is_empty() {
        String::new()
    } else {
        format!(
            "\n      why: {} [{}; {:+.2} -> {:+.2}]{}",
            a.detail,
            dominant.join(", "),
            a.trend_start,
            a.trend_now,
            if a.suggestion.is_empty() {
                String::new()
            } else {
                format!("\n      next: {}", a.suggestion)
            }
        )
    };
    format!(
        "{on}[{}] {:<12} {:<8}{off} {} {} (tenant {:?}, queue {:?}, agent {:?}) rolling {:+.2}{} at turn {}  evidence: {}  model {}  id {}{taken}{explain}\n",
        a.sequence,
        state,
        severity,
        a.kind,
        a.conversation_id,
        ctx.tenant,
        ctx.queue,
        ctx.agent_id,
        a.rolling_valence,
        match a.kind.as_str() {
            // Phrase and repetition triggers have no threshold.
            "escalation_request" | "repetition" => String::new(),
            _ => format!(" vs {:+.2}", a.threshold),
        },
        a.turn_id,
        evidence.join("; "),
        a.model_version,
        a.alert_id
    )
}

/// How `watch` runs.
pub struct WatchOptions {
    pub server: Server,
    pub request: pb::SubscribeAlertsRequest,
    /// Keeps the last printed sequence here, and starts after it when the file exists.
    pub state_file: Option<PathBuf>,
    pub color: bool,
}

/// Prints alert events matching the filters, forever. After a disconnect (or a server restart) it
/// reconnects with backoff and resumes after the last sequence it printed, so nothing is missed
/// or printed twice.
pub async fn watch(options: WatchOptions) -> anyhow::Result<()> {
    let mut last = options.request.after_sequence;
    if let Some(path) = &options.state_file
        && let Ok(text) = std::fs::read_to_string(path)
    {
        last =
            Some(text.trim().parse().with_context(|| {
                format!("{}: expected the last printed sequence", path.display())
            })?);
    }
    let mut out = tokio::io::stdout();
    let mut backoff = Duration::from_millis(250);
    loop {
        let result: Result<(), tonic::Status> = async {
            let channel = options
                .server
                .channel()
                .await
                .map_err(|e| tonic::Status::unavailable(format!("{e:#}")))?;
            let mut client = AlertFeedClient::new(channel);
            let request = pb::SubscribeAlertsRequest {
                after_sequence: last,
                ..options.request.clone()
            };
            let mut alerts = client
                .subscribe_alerts(options.server.request(request))
                .await?
                .into_inner();
            backoff = Duration::from_millis(250);
            while let Some(alert) = alerts.next().await {
                let alert = alert?;
                let line = format_alert_styled(&alert, options.color);
                out.write_all(line.as_bytes()).await?;
                out.flush().await?;
                last = Some(alert.sequence);
                if let Some(path) = &options.state_file {
                    save_sequence(path, alert.sequence)?;
                }
            }
            Err(tonic::Status::unavailable("the server ended the feed"))
        }
        .await;
        let Err(status) = result else { continue };
        match status.code() {
            tonic::Code::OutOfRange => {
                // Ahead of the server's log (a new database) or behind its retention: say so and
                // go on from what the server has.
                eprintln!(
                    "watch: {}; continuing from the server's oldest retained alert",
                    status.message()
                );
                last = Some(0);
                if status.message().contains("beyond the newest") {
                    last = None;
                }
            }
            tonic::Code::InvalidArgument
            | tonic::Code::Unauthenticated
            | tonic::Code::PermissionDenied => {
                bail!("{}: {}", status.code(), status.message())
            }
            _ => {
                eprintln!(
                    "watch: disconnected ({}: {}); resuming after sequence {} in {:.1} s",
                    status.code(),
                    status.message(),
                    last.map_or("(live)".to_string(), |s| s.to_string()),
                    backoff.as_secs_f64()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn save_sequence(path: &Path, sequence: u64) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{sequence}\n"))?;
    std::fs::rename(tmp, path)
}

/// Prints up to `limit` alert events matching `request`, newest first, paging as needed.
pub async fn list_alerts(
    server: &Server,
    mut request: pb::ListAlertsRequest,
    limit: usize,
) -> anyhow::Result<()> {
    let mut client = AlertFeedClient::new(server.channel().await?);
    let mut out = tokio::io::stdout();
    let mut printed = 0;
    while printed < limit {
        request.page_size = (limit - printed).min(1000) as u32;
        let page = client
            .list_alerts(server.request(request.clone()))
            .await?
            .into_inner();
        for alert in &page.alerts {
            out.write_all(format_alert(alert).as_bytes()).await?;
        }
        printed += page.alerts.len();
        if page.next_before_sequence == 0 {
            break;
        }
        request.before_sequence = page.next_before_sequence;
    }
    out.flush().await?;
    if printed == 0 {
        eprintln!("no alert events match");
    }
    Ok(())
}

/// Acknowledges an alert and prints the ACKNOWLEDGED event.
pub async fn acknowledge(
    server: &Server,
    request: pb::AcknowledgeAlertRequest,
) -> anyhow::Result<()> {
    let mut client = AlertFeedClient::new(server.channel().await?);
    let ack = client
        .acknowledge_alert(server.request(request))
        .await?
        .into_inner();
    print!("{}", format_alert(&ack));
    Ok(())
}
