//! The supervisor's side of the alert feed: watch (resuming), history, acknowledgement, and the
//! one-line format they print.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;

use super::Server;
use crate::pb;
use crate::pb::alert_feed_client::AlertFeedClient;

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
            // Phrase and repetition triggers have no threshold (repeat_contact's is a count).
            "escalation_request" | "repetition" | "transfer_requested" | "repeated_question"
            | "handoff_brief" | "break_suggested" | "repeat_contact" => String::new(),
            _ => format!(" vs {:+.2}", a.threshold),
        },
        a.turn_id,
        evidence.join("; "),
        a.model_version,
        a.alert_id
    )
}

/// What `watch` follows: the supervisors' alert feed, or one agent's guidance (`assist`).
#[derive(Clone)]
pub enum Feed {
    Alerts(pb::SubscribeAlertsRequest),
    Assist(pb::SubscribeAssistRequest),
}

impl Feed {
    fn after(&self) -> Option<u64> {
        match self {
            Feed::Alerts(r) => r.after_sequence,
            Feed::Assist(r) => r.after_sequence,
        }
    }

    async fn open(
        &self,
        server: &Server,
        channel: tonic::transport::Channel,
        after: Option<u64>,
    ) -> Result<tonic::Streaming<pb::Alert>, tonic::Status> {
        Ok(match self {
            Feed::Alerts(r) => {
                let request = pb::SubscribeAlertsRequest {
                    after_sequence: after,
                    ..r.clone()
                };
                AlertFeedClient::new(channel)
                    .subscribe_alerts(server.request(request))
                    .await?
            }
            Feed::Assist(r) => {
                let request = pb::SubscribeAssistRequest {
                    after_sequence: after,
                    ..r.clone()
                };
                crate::pb::agent_assist_client::AgentAssistClient::new(channel)
                    .subscribe_assist(server.request(request))
                    .await?
            }
        }
        .into_inner())
    }
}

/// A hand-off brief as `emotion assist` prints it, under its event's line.
pub fn format_brief(b: &pb::HandoffBrief) -> String {
    let mut s = format!(
        "      brief: customer {:+.2}, {} (from {:+.2}); {} customer turns, {} with the bot\n",
        b.customer_rolling_valence, b.trend, b.trend_start, b.customer_turns, b.bot_turns
    );
    let feeling: Vec<String> = b
        .dominant_emotions
        .iter()
        .map(|e| format!("{} {:.0}%", e.label, e.probability * 100.0))
        .collect();
    if !feeling.is_empty() {
        s.push_str(&format!("      feeling: {}\n", feeling.join(", ")));
    }
    for r in &b.requests {
        s.push_str(&format!(
            "      asked: {:?} x{} (turns {}..{})\n",
            r.excerpt, r.times, r.first_turn_id, r.last_turn_id
        ));
    }
    if !b.escalation_phrases.is_empty() {
        s.push_str(&format!(
            "      escalation heard: {}\n",
            b.escalation_phrases.join(", ")
        ));
    }
    for d in &b.mood_drops {
        s.push_str(&format!(
            "      mood dropped at #{} {:+.2} {:?}\n",
            d.turn_id, d.valence, d.excerpt
        ));
    }
    for c in &b.earlier_contacts {
        s.push_str(&format!(
            "      earlier contact {}: {}, lowest {:+.2}, {} alert event(s){}\n",
            c.conversation_id,
            c.outcome,
            c.lowest_score,
            c.alert_events,
            match c.emotions.is_empty() {
                true => String::new(),
                false => format!(", {}", c.emotions.join(" ")),
            }
        ));
    }
    s.push_str(&format!(
        "      approach: {}\n      say first: {}\n",
        b.approach, b.opening_line
    ));
    s
}

/// How `watch` runs.
pub struct WatchOptions {
    pub server: Server,
    pub feed: Feed,
    /// Keeps the last printed sequence here, and starts after it when the file exists.
    pub state_file: Option<PathBuf>,
    pub color: bool,
}

/// Prints alert events matching the filters, forever. After a disconnect (or a server restart) it
/// reconnects with backoff and resumes after the last sequence it printed, so nothing is missed
/// or printed twice.
pub async fn watch(options: WatchOptions) -> anyhow::Result<()> {
    let mut last = options.feed.after();
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
            let mut alerts = options.feed.open(&options.server, channel, last).await?;
            backoff = Duration::from_millis(250);
            while let Some(alert) = alerts.next().await {
                let alert = alert?;
                let mut line = format_alert_styled(&alert, options.color);
                if let Some(brief) = &alert.brief {
                    line.push_str(&format_brief(brief));
                }
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

/// `emotion handoff`: hands a conversation to an agent (`AgentAssist.Handoff`) and prints the
/// brief the agent was sent.
pub async fn hand_off(server: &Server, request: pb::HandoffRequest) -> anyhow::Result<()> {
    use crate::pb::agent_assist_client::AgentAssistClient;
    let mut client = AgentAssistClient::new(server.channel().await?);
    let (conversation, agent) = (request.conversation_id.clone(), request.agent_id.clone());
    let brief = client.handoff(server.request(request)).await?.into_inner();
    println!("{conversation} handed to {agent}");
    print!("{}", format_brief(&brief));
    Ok(())
}
