//! Load generator: N concurrent conversations over M StreamTurns streams against a running server,
//! with turn texts drawn from a real corpus.
//!
//! - Closed loop (default): each conversation has one turn outstanding at a time, like a person who
//!   waits for the answer; N conversations keep N turns in flight, as fast as the server allows.
//! - Open loop (`rate`): turns are issued on a fixed schedule, round-robin over the conversations,
//!   whatever the server's pace; latency is measured from the scheduled send time, so a server
//!   that falls behind is not flattered by the generator waiting for it.
//!
//! Every turn must come back exactly once: the report counts lost, duplicated and failed turns.
//! [`soak`] is the long-run variant that survives cancellations and server restarts.

pub mod soak;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::pb;
use crate::pb::emotion_analysis_client::EmotionAnalysisClient;

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub server: crate::client::Server,
    pub conversations: usize,
    pub streams: usize,
    pub duration: Duration,
    /// Open loop at this many turns per second; `None` for closed loop.
    pub rate: Option<f64>,
    /// Stop after this many turns (or at `duration`, whichever comes first).
    pub max_turns: Option<u64>,
    /// How long to wait for outstanding results after the last send.
    pub drain: Duration,
    /// Conversations are served by this many agents (`context.agent_id` `lg-agent-N`, round
    /// robin); 0: no context at all.
    pub agents: usize,
    /// With agents: one `SubscribeAssist` per agent, and the delay from each turn's result to its
    /// guidance events reaching the agent's stream measured.
    pub assist: bool,
    /// Conversations belong to this many customers (`context.customer_id` `lg-customer-N`,
    /// round robin, on the first turn); 0: none.
    pub customers: usize,
}

#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub sent: u64,
    pub answered: u64,
    /// Sent but not answered by the end of the drain period.
    pub lost: u64,
    pub duplicated: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Latencies in microseconds, sorted.
    latencies_us: Vec<u64>,
    /// Guidance events received (with `assist`), and how many arrived before their turn's
    /// result did (published before the result is sent: delay 0).
    pub guidance: u64,
    pub guidance_before_result: u64,
    /// Delay from a turn's result to each of its guidance events, microseconds, sorted.
    guidance_us: Vec<u64>,
}

impl LoadReport {
    pub fn turns_per_sec(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The q-quantile of client-observed latency (q in [0, 1]).
    pub fn latency(&self, q: f64) -> Duration {
        if self.latencies_us.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        Duration::from_micros(self.latencies_us[i])
    }

    /// The q-quantile of the delay from a turn's result to its guidance on the agent's stream.
    pub fn guidance_delay(&self, q: f64) -> Duration {
        if self.guidance_us.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.guidance_us.len() - 1) as f64 * q).round() as usize;
        Duration::from_micros(self.guidance_us[i])
    }

    pub fn summary(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let guidance = if self.guidance == 0 {
            String::new()
        } else {
            format!(
                "; guidance events {} ({} before their result), delay after the result ms p50 {:.1} p99 {:.1} max {:.1}",
                self.guidance,
                self.guidance_before_result,
                ms(self.guidance_delay(0.5)),
                ms(self.guidance_delay(0.99)),
                ms(self.guidance_delay(1.0)),
            )
        };
        format!(
            "sent {} answered {} unanswered (lost) {} duplicated {} errors {} in {:.1} s: {:.0} turns/s; latency ms p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}",
            self.sent,
            self.answered,
            self.lost,
            self.duplicated,
            self.errors,
            self.elapsed.as_secs_f64(),
            self.turns_per_sec(),
            ms(self.latency(0.5)),
            ms(self.latency(0.9)),
            ms(self.latency(0.99)),
            ms(self.latency(1.0)),
        ) + &guidance
    }
}

/// When each turn's result arrived, and guidance seen before its result, for the delay from a
/// result to its guidance.
#[derive(Default)]
struct GuidanceClock {
    results: HashMap<(String, u64), Instant>,
    early: HashMap<(String, u64), u32>,
    delays_us: Vec<u64>,
    received: u64,
    before_result: u64,
}

impl GuidanceClock {
    fn result(&mut self, conversation: &str, turn: u64, at: Instant) {
        let key = (conversation.to_string(), turn);
        if let Some(n) = self.early.remove(&key) {
            self.delays_us.extend(std::iter::repeat_n(0, n as usize));
        }
        self.results.insert(key, at);
    }

    fn guidance(&mut self, conversation: &str, turn: u64, at: Instant) {
        self.received += 1;
        let key = (conversation.to_string(), turn);
        match self.results.get(&key) {
            Some(r) => self
                .delays_us
                .push(at.duration_since(*r).as_micros() as u64),
            None => {
                self.before_result += 1;
                *self.early.entry(key).or_default() += 1;
            }
        }
    }
}

/// One `SubscribeAssist` per agent, live, recording each event's arrival.
async fn subscribe_agents(
    config: &LoadConfig,
    clock: &Arc<Mutex<GuidanceClock>>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for a in 0..config.agents {
        let channel = config.server.channel().await?;
        let mut client = pb::agent_assist_client::AgentAssistClient::new(channel);
        let request = config.server.request(pb::SubscribeAssistRequest {
            agent_id: agent_id(a),
            after_sequence: None,
        });
        let mut stream = client.subscribe_assist(request).await?.into_inner();
        let clock = clock.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(event)) = stream.next().await {
                let at = Instant::now();
                clock
                    .lock()
                    .unwrap()
                    .guidance(&event.conversation_id, event.turn_id, at);
            }
        }));
    }
    Ok(tasks)
}

fn agent_id(a: usize) -> String {
    format!("lg-agent-{a}")
}

/// The context of conversation `c`'s first turn: its agent and customer (round robin over
/// `agents` and `customers`; 0: none); None when neither.
pub(crate) fn first_context(
    c: usize,
    agents: usize,
    customers: usize,
) -> Option<crate::grpc::wire::TurnContext> {
    if agents == 0 && customers == 0 {
        return None;
    }
    let id = |n: usize, name: &str| match n {
        0 => Vec::new(),
        n => format!("lg-{name}-{}", c % n).into_bytes(),
    };
    Some(crate::grpc::wire::TurnContext {
        agent_id: id(agents, "agent"),
        customer_id: id(customers, "customer"),
        ..Default::default()
    })
}

/// Texts from a GoEmotions-style TSV (first column) or a plain file (one text per line).
pub fn read_corpus(path: &Path) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let texts: Vec<String> = text
        .lines()
        .map(|l| l.split('\t').next().unwrap_or("").trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    anyhow::ensure!(!texts.is_empty(), "{} has no texts", path.display());
    Ok(texts)
}

/// Per stream: when each outstanding (conversation, turn) was (or was scheduled to be) sent.
type Outstanding = Arc<Mutex<HashMap<(usize, u64), Instant>>>;

struct Tally {
    answered: u64,
    duplicated: u64,
    errors: u64,
    latencies_us: Vec<u64>,
}

pub async fn run(config: LoadConfig, texts: Arc<Vec<String>>) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(
        config.conversations > 0 && config.streams > 0,
        "conversations and streams must be positive"
    );
    // Conversation ids unique to this run, so that a second run against the same server is not
    // answered from the first one's history.
    let run_id = format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    );
    let mut senders = Vec::new();
    let mut readers = Vec::new();
    let outstanding: Vec<Outstanding> = (0..config.streams)
        .map(|_| Outstanding::default())
        .collect();
    // Closed loop: conversations whose last turn was answered, ready for their next one.
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<usize>();
    for c in 0..config.conversations {
        ready_tx.send(c)?;
    }
    let tally = Arc::new(Mutex::new(Tally {
        answered: 0,
        duplicated: 0,
        errors: 0,
        latencies_us: Vec::new(),
    }));
    let clock = Arc::new(Mutex::new(GuidanceClock::default()));
    let measure = config.assist && config.agents > 0;
    let subscribers = if measure {
        subscribe_agents(&config, &clock).await?
    } else {
        Vec::new()
    };
    for pending in &outstanding {
        let mut client = EmotionAnalysisClient::new(config.server.channel().await?);
        let server = config.server.clone();
        let (tx, rx) = mpsc::channel::<pb::TurnRequest>(1024);
        senders.push(tx);
        let (pending, tally, ready) = (pending.clone(), tally.clone(), ready_tx.clone());
        let clock = measure.then(|| clock.clone());
        // The call is opened inside the task: some servers (grpcio) send response headers only
        // with the first result, so the first turns must be sendable before the call returns.
        readers.push(tokio::spawn(async move {
            let outbound = server.request(ReceiverStream::new(rx));
            let mut results = match client.stream_turns(outbound).await {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    tracing::error!(%status, "opening a turn stream failed");
                    return;
                }
            };
            while let Some(result) = results.next().await {
                let Ok(result) = result else { break };
                let now = Instant::now();
                if let Some(clock) = &clock {
                    clock
                        .lock()
                        .unwrap()
                        .result(&result.conversation_id, result.turn_id, now);
                }
                if result.duplicate {
                    // The server took it for a re-send: ids collided, the turn was not scored.
                    tally.lock().unwrap().duplicated += 1;
                }
                let conversation = parse_conversation(&result.conversation_id);
                let sent =
                    conversation.and_then(|c| pending.lock().unwrap().remove(&(c, result.turn_id)));
                let mut t = tally.lock().unwrap();
                match sent {
                    Some(at) => {
                        t.answered += 1;
                        if result.error.is_some() {
                            t.errors += 1;
                        }
                        t.latencies_us
                            .push(now.duration_since(at).as_micros() as u64);
                        if let Some(c) = conversation {
                            let _ = ready.send(c);
                        }
                    }
                    None => t.duplicated += 1,
                }
            }
        }));
    }

    let start = Instant::now();
    let deadline = start + config.duration;
    let mut next_turn = vec![0u64; config.conversations];
    let mut sent = 0u64;
    while Instant::now() < deadline && config.max_turns.is_none_or(|max| sent < max) {
        let (c, scheduled) = match config.rate {
            Some(rate) => {
                let at = start + Duration::from_secs_f64(sent as f64 / rate);
                tokio::time::sleep_until(at.into()).await;
                (sent as usize % config.conversations, at)
            }
            None => match tokio::time::timeout_at(deadline.into(), ready_rx.recv()).await {
                Ok(Some(c)) => (c, Instant::now()),
                _ => break,
            },
        };
        next_turn[c] += 1;
        let s = c % config.streams;
        let text = &texts[(c * 7919 + next_turn[c] as usize * 104_729) % texts.len()];
        outstanding[s]
            .lock()
            .unwrap()
            .insert((c, next_turn[c]), scheduled);
        let speaker = if next_turn[c] % 2 == 1 {
            pb::Speaker::Customer
        } else {
            pb::Speaker::Agent
        };
        let mut turn = pb::TurnRequest::new(
            format!("lg{run_id}-{c}"),
            next_turn[c],
            speaker,
            text.clone(),
        );
        if next_turn[c] == 1 {
            turn.context = first_context(c, config.agents, config.customers);
        }
        if senders[s].send(turn).await.is_err() {
            anyhow::bail!("stream {s} closed by the server");
        }
        sent += 1;
    }
    let sending_stopped = Instant::now();
    // Drain: wait for outstanding results, then close the streams.
    let drain_deadline = sending_stopped + config.drain;
    while outstanding.iter().any(|o| !o.lock().unwrap().is_empty())
        && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = start.elapsed();
    drop(senders);
    let _ = tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(readers)).await;
    if measure {
        // Guidance is published before the result it belongs to: little can still be on its way.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for s in subscribers {
        s.abort();
    }
    let mut g = std::mem::take(&mut *clock.lock().unwrap());
    g.delays_us.sort_unstable();
    let mut t = tally.lock().unwrap();
    t.latencies_us.sort_unstable();
    Ok(LoadReport {
        sent,
        answered: t.answered,
        lost: outstanding
            .iter()
            .map(|o| o.lock().unwrap().len() as u64)
            .sum(),
        duplicated: t.duplicated,
        errors: t.errors,
        elapsed,
        latencies_us: std::mem::take(&mut t.latencies_us),
        guidance: g.received,
        guidance_before_result: g.before_result,
        guidance_us: g.delays_us,
    })
}

fn parse_conversation(id: &str) -> Option<usize> {
    id.rsplit('-').next()?.parse().ok()
}

/// Resident memory (bytes) and CPU time used (seconds) of a process, from /proc.
pub fn process_usage(pid: u32) -> anyhow::Result<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th there.
    let after = stat.rsplit_once(')').context("bad /proc stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // USER_HZ is 100 on Linux for every architecture this runs on.
    Ok((rss_kb * 1024, ticks as f64 / 100.0))
}
