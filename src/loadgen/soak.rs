//! The soak load: open loop over many conversations and streams for a long time, as a platform
//! that must never lose a turn drives the service. Unlike [`super::run`] it survives what a
//! long run meets:
//!
//! - streams are cancelled at random (mean `cancel_every` per stream) and reopened;
//! - a server restart (or any broken stream) is retried with back-off until it serves again;
//! - on every reopened stream the turns still unanswered are re-sent first, in order, then the
//!   new ones: a re-sent turn the server had scored before the break comes back as a duplicate
//!   (counted as recovered, not lost); a turn answered twice as scored is counted duplicated;
//! - with `failover` servers (replicas in cluster mode), streams are spread over all of them
//!   and a broken stream reopens on the next one, where its unanswered turns are re-sent: what
//!   a client of a cluster does when a replica dies (the conversation's state is shared, so any
//!   replica answers a re-sent turn as the one that scored it would);
//! - conversations end: after `turns_per_conversation` turns, once the last is answered, the
//!   conversation is ended (EndConversation) and its slot starts a new one, so the server's
//!   conversations turn over as calls do.
//!
//! Every `report_every` it prints one line: turns sent and answered in the interval, latency
//! percentiles of the interval (from the scheduled send time), recovered duplicates, and
//! reconnects. The totals at the end count lost (never answered), duplicated (scored twice) and
//! failed turns, which must all be 0.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::fuzz::Rng;
use crate::pb;
use crate::pb::emotion_analysis_client::EmotionAnalysisClient;

#[derive(Debug, Clone)]
pub struct SoakConfig {
    pub server: crate::client::Server,
    pub conversations: usize,
    pub streams: usize,
    pub duration: Duration,
    pub rate: f64,
    /// Mean seconds between random cancellations of each stream (`None`: never).
    pub cancel_every: Option<f64>,
    pub turns_per_conversation: u64,
    pub report_every: Duration,
    /// After the last send, how long to wait for outstanding results.
    pub drain: Duration,
    /// More replicas: streams start on `server` and these in turn, and move to the next on a
    /// break.
    pub failover: Vec<crate::client::Server>,
    /// Stop after this many turns (else at `duration`).
    pub total_turns: Option<u64>,
    /// Names the run's conversations (`sk{run_id}g{generation}-{slot}`); default: the start
    /// time. The same id, configuration and texts send the same turns.
    pub run_id: Option<String>,
    /// Conversations belong to this many customers (`context.customer_id` `lg-customer-N` on
    /// the first turn; a slot's next conversation is the next customer's); 0: none.
    pub customers: usize,
}

impl SoakConfig {
    fn servers(&self) -> Vec<crate::client::Server> {
        std::iter::once(self.server.clone())
            .chain(self.failover.iter().cloned())
            .collect()
    }
}

/// One turn in flight: its request (to re-send) and when it was scheduled.
struct InFlight {
    request: pb::TurnRequest,
    scheduled: Instant,
    resent: bool,
    /// Whether the conversation ends with it.
    last: bool,
}

#[derive(Default)]
struct Shared {
    /// Per stream: turns sent and not yet answered, by send order.
    outstanding: Vec<BTreeMap<u64, InFlight>>,
    /// (conversation, turn) -> its send order, per stream.
    index: Vec<HashMap<(String, u64), u64>>,
    /// Turns answered (scored or recovered).
    answered: HashSet<(String, u64)>,
    window_us: Vec<u64>,
    window_answered: u64,
    total_us: Vec<u64>,
    recovered: u64,
    duplicated: u64,
    errors: u64,
    reconnects: u64,
    cancels: u64,
    ended: u64,
    first_errors: Vec<String>,
}

/// What the whole run saw.
#[derive(Debug, Clone, Default)]
pub struct SoakReport {
    pub sent: u64,
    pub answered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub errors: u64,
    pub recovered: u64,
    pub reconnects: u64,
    pub cancels: u64,
    pub conversations_ended: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub first_errors: Vec<String>,
}

fn quantile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize] as f64 / 1e3
}

/// One stream's life: open, re-send what is unanswered, forward new turns, read results; on a
/// break or a cancellation, open again.
async fn stream_task(
    s: usize,
    config: SoakConfig,
    shared: Arc<Mutex<Shared>>,
    mut turns: mpsc::Receiver<InFlight>,
    ends: mpsc::UnboundedSender<String>,
) {
    let mut rng = Rng::new(0x50a4 + s as u64);
    let mut order = 0u64;
    let mut inputs_done = false;
    let servers = config.servers();
    let mut at = s % servers.len();
    loop {
        let server = &servers[at];
        let channel = match server.channel().await {
            Ok(c) => c,
            Err(_) => {
                at = (at + 1) % servers.len();
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut sh = shared.lock().unwrap();
            for t in sh.outstanding[s].values_mut() {
                t.resent = true;
                let _ = tx.send(t.request.clone());
            }
        }
        let mut client = EmotionAnalysisClient::new(channel);
        let mut results = match client
            .stream_turns(server.request(UnboundedReceiverStream::new(rx)))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(_) => {
                at = (at + 1) % servers.len();
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let cancel_at = config.cancel_every.map(|mean| {
            // Exponential with the given mean.
            let u = (rng.below(1_000_000) as f64 + 1.0) / 1_000_001.0;
            tokio::time::Instant::now() + Duration::from_secs_f64(-mean * u.ln())
        });
        let cancel = async {
            match cancel_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(cancel);
        let broke = loop {
            tokio::select! {
                turn = turns.recv(), if !inputs_done => match turn {
                    Some(turn) => {
                        // Outstanding from the moment it is on a call: a break re-sends it.
                        let request = turn.request.clone();
                        let mut sh = shared.lock().unwrap();
                        let key = (
                            String::from_utf8_lossy(&request.conversation_id).into_owned(),
                            request.turn_id,
                        );
                        sh.index[s].insert(key, order);
                        sh.outstanding[s].insert(order, turn);
                        order += 1;
                        let _ = tx.send(request);
                    }
                    None => inputs_done = true,
                },
                result = results.message() => match result {
                    Ok(Some(r)) => {
                        let mut sh = shared.lock().unwrap();
                        answer(&mut sh, s, r, &ends);
                        if inputs_done && sh.outstanding[s].is_empty() {
                            return;
                        }
                    }
                    // The server ended the stream (graceful stop) or it broke.
                    Ok(None) | Err(_) => break true,
                },
                () = &mut cancel => break false,
            }
            if inputs_done && shared.lock().unwrap().outstanding[s].is_empty() {
                return;
            }
        };
        {
            let mut sh = shared.lock().unwrap();
            if broke {
                sh.reconnects += 1;
            } else {
                sh.cancels += 1;
            }
        }
        if broke {
            at = (at + 1) % servers.len();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn answer(sh: &mut Shared, s: usize, r: pb::TurnResult, ends: &mpsc::UnboundedSender<String>) {
    let key = (r.conversation_id.clone(), r.turn_id);
    let Some(order) = sh.index[s].remove(&key) else {
        // Not outstanding on this stream: answered before (a re-send of a turn already
        // answered cannot happen, as only unanswered turns are re-sent).
        if sh.answered.contains(&key) {
            sh.duplicated += 1;
        } else {
            sh.errors += 1;
            if sh.first_errors.len() < 10 {
                sh.first_errors
                    .push(format!("a result for a turn never sent: {r:?}"));
            }
        }
        return;
    };
    let turn = sh.outstanding[s].remove(&order).expect("indexed");
    let waited = turn.scheduled.elapsed().as_micros() as u64;
    if let Some(e) = &r.error {
        sh.errors += 1;
        if sh.first_errors.len() < 10 {
            sh.first_errors.push(format!("{key:?}: {e:?}"));
        }
    } else if r.duplicate {
        if turn.resent {
            sh.recovered += 1; // scored before the break; its answer was lost with the stream
        } else {
            sh.duplicated += 1; // the server took a first send for a re-send
        }
    }
    if !sh.answered.insert(key.clone()) {
        sh.duplicated += 1;
    }
    sh.window_us.push(waited);
    sh.window_answered += 1;
    sh.total_us.push(waited);
    if turn.last {
        let _ = ends.send(key.0);
    }
}

pub async fn run(config: SoakConfig, texts: Arc<Vec<String>>) -> anyhow::Result<SoakReport> {
    anyhow::ensure!(
        config.conversations > 0 && config.streams > 0 && config.rate > 0.0,
        "conversations, streams and rate must be positive"
    );
    let run_id = config.run_id.clone().unwrap_or_else(|| {
        format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        )
    });
    let shared = Arc::new(Mutex::new(Shared {
        outstanding: (0..config.streams).map(|_| BTreeMap::new()).collect(),
        index: (0..config.streams).map(|_| HashMap::new()).collect(),
        ..Default::default()
    }));
    let (ends_tx, mut ends_rx) = mpsc::unbounded_channel::<String>();
    let ender = {
        let (servers, shared) = (config.servers(), shared.clone());
        tokio::spawn(async move {
            let mut at = 0;
            while let Some(id) = ends_rx.recv().await {
                // Retried across restarts (and replicas); a conversation already gone is ended
                // all the same.
                for attempt in 0..50 {
                    if attempt > 0 {
                        at = (at + 1) % servers.len();
                    }
                    let server = &servers[at];
                    let Ok(channel) = server.channel().await else {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    };
                    let answer = EmotionAnalysisClient::new(channel)
                        .end_conversation(server.request(pb::EndConversationRequest {
                            conversation_id: id.clone(),
                        }))
                        .await;
                    match answer {
                        Ok(_) => {
                            shared.lock().unwrap().ended += 1;
                            break;
                        }
                        Err(s) if s.code() == tonic::Code::NotFound => break,
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            }
        })
    };
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    for s in 0..config.streams {
        let (tx, rx) = mpsc::channel(4096);
        senders.push(tx);
        tasks.push(tokio::spawn(stream_task(
            s,
            config.clone(),
            shared.clone(),
            rx,
            ends_tx.clone(),
        )));
    }
    drop(ends_tx);
    let start = Instant::now();
    let deadline = start + config.duration;
    let mut next_report = start + config.report_every;
    let mut generation = vec![0u64; config.conversations];
    let mut next_turn = vec![0u64; config.conversations];
    let mut sent = 0u64;
    let mut window_sent = 0u64;
    let print_window = |sh: &mut Shared, window_sent: u64, elapsed: Duration| {
        sh.window_us.sort_unstable();
        let outstanding: usize = sh.outstanding.iter().map(BTreeMap::len).sum();
        println!(
            "t={:>5.0}s sent {window_sent} answered {} outstanding {outstanding}; latency ms p50 {:.1} p99 {:.1} max {:.1}; recovered {} duplicated {} errors {} reconnects {} cancels {} ended {}",
            elapsed.as_secs_f64(),
            sh.window_answered,
            quantile(&sh.window_us, 0.5),
            quantile(&sh.window_us, 0.99),
            quantile(&sh.window_us, 1.0),
            sh.recovered,
            sh.duplicated,
            sh.errors,
            sh.reconnects,
            sh.cancels,
            sh.ended,
        );
        sh.window_us.clear();
        sh.window_answered = 0;
    };
    while Instant::now() < deadline && config.total_turns.is_none_or(|n| sent < n) {
        let at = start + Duration::from_secs_f64(sent as f64 / config.rate);
        tokio::time::sleep_until(at.into()).await;
        if Instant::now() >= next_report {
            print_window(&mut shared.lock().unwrap(), window_sent, start.elapsed());
            window_sent = 0;
            next_report += config.report_every;
        }
        let c = sent as usize % config.conversations;
        if next_turn[c] == config.turns_per_conversation {
            // Its last turn was sent; a new conversation takes the slot.
            generation[c] += 1;
            next_turn[c] = 0;
        }
        next_turn[c] += 1;
        let id = format!("sk{run_id}g{}-{c}", generation[c]);
        let text = &texts[(c * 7919 + sent as usize * 104_729) % texts.len()];
        let speaker = if next_turn[c] % 2 == 1 {
            pb::Speaker::Customer
        } else {
            pb::Speaker::Agent
        };
        let mut request = pb::TurnRequest::new(id, next_turn[c], speaker, text.clone());
        if next_turn[c] == 1 {
            let n = generation[c] as usize * config.conversations + c;
            request.context = super::first_context(n, 0, config.customers);
        }
        let s = c % config.streams;
        let turn = InFlight {
            request,
            scheduled: at,
            resent: false,
            last: next_turn[c] == config.turns_per_conversation,
        };
        // Backpressure: while a stream is down its turns wait here (latency counts it).
        if senders[s].send(turn).await.is_err() {
            anyhow::bail!("stream task {s} ended early");
        }
        sent += 1;
        window_sent += 1;
    }
    drop(senders);
    let drained = tokio::time::timeout(config.drain, futures::future::join_all(tasks)).await;
    if drained.is_err() {
        println!("drain: outstanding turns after {:?}", config.drain);
    }
    // Let the last ends go out.
    let _ = tokio::time::timeout(Duration::from_secs(5), ender).await;
    let mut sh = shared.lock().unwrap();
    print_window(&mut sh, window_sent, start.elapsed());
    sh.total_us.sort_unstable();
    let lost = sh.outstanding.iter().map(|o| o.len() as u64).sum();
    Ok(SoakReport {
        sent,
        answered: sh.answered.len() as u64,
        lost,
        duplicated: sh.duplicated,
        errors: sh.errors,
        recovered: sh.recovered,
        reconnects: sh.reconnects,
        cancels: sh.cancels,
        conversations_ended: sh.ended,
        p50_ms: quantile(&sh.total_us, 0.5),
        p99_ms: quantile(&sh.total_us, 0.99),
        max_ms: quantile(&sh.total_us, 1.0),
        first_errors: std::mem::take(&mut sh.first_errors),
    })
}
