//! The command line: every subcommand and its flags (clap), and the small parsers they use.
//! `main.rs` dispatches on it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use emotion_service::{client, pb};

/// Streaming emotion and sentiment analysis for contact centers.
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the gRPC service.
    Serve(ServeArgs),
    /// Score texts given as arguments (or one per line on stdin) with the model, no server.
    Score(ScoreArgs),
    /// Stream a conversation file (JSON lines) to a server and print each turn's result.
    Stream(StreamArgs),
    /// Print the alert feed of a server, live; reconnects and resumes without missing an alert.
    Watch(WatchArgs),
    /// Print one agent's live guidance (briefs at hand-off, mood turned / recovered, transfer
    /// asked, repeated questions, break suggestions); reconnects and resumes like `watch`.
    Assist(AssistArgs),
    /// Hand a conversation to an agent now (the platform's transfer, or a supervisor's): the
    /// agent's guidance stream gets the brief at once; prints it.
    Handoff(HandoffArgs),
    /// Customer memory on a running server: the silent list (also as CSV), one customer's
    /// contacts, record a call-back, erase a customer.
    #[command(subcommand)]
    Customers(CustomersCmd),
    /// The QA report over the last days (contacts and how they ended, alerts by kind and
    /// severity, frustrated bot hand-offs, time to recover, strained agents, repeat contacts),
    /// beside the period before it.
    Report(ReportArgs),
    /// Print alert history (newest first).
    Alerts(AlertsArgs),
    /// Acknowledge an alert: record who takes it.
    Ack(AckArgs),
    /// Validate a model directory (what LoadModel runs in a child process): graph inputs and
    /// outputs, labels, tokenizer, a smoke inference, and with --gate-data both models' macro-F1.
    /// Prints one JSON line; exits non-zero with the reason otherwise.
    CheckModel(CheckModelArgs),
    /// Evaluate a model on a labelled TSV through the serving inference path: macro/micro-F1
    /// and a per-label table.
    Eval(EvalArgs),
    /// Model administration on a running server: show, load (validated), roll back, shadow.
    #[command(subcommand)]
    Model(ModelCmd),
    /// Replay recorded conversations (JSON lines, as for `stream`) through the model and the
    /// alert rules; list the alerts that would have fired, and with --compare-model and/or
    /// --compare-config what a new model or new rules would change.
    Backtest(BacktestArgs),
    /// Create a bearer token: prints the token (give it to the client) and the [[auth.tokens]]
    /// entry with its SHA-256 (put it in the server's config).
    Token(TokenArgs),
    /// Load a running server: concurrent conversations over several streams, texts from a corpus;
    /// reports throughput, latency percentiles, and lost / duplicated / failed turns.
    Loadgen(LoadgenArgs),
    /// Ask a running server's grpc.health.v1 whether it serves (the container health check);
    /// prints the status, exits 0 only when SERVING.
    Health(HealthArgs),
    /// Fuzz a running server (auth off, loopback): StreamTurns with random malformed, duplicate,
    /// out-of-order, garbage and cancelled streams, every other call, the dashboard's HTTP
    /// endpoints (--web-port), model directories (--model-dir) and config files, checking every
    /// answer against the contract.
    Fuzz(FuzzArgs),
}

#[derive(Args)]
pub struct FuzzArgs {
    #[arg(long = "server", default_value = "http://127.0.0.1:50051")]
    pub url: String,
    /// The run's seed (a violation names the seed and case that shows it).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 60.0)]
    pub duration_secs: f64,
    /// The server's process id: its resident memory is printed every minute.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The server's dashboard port: its HTTP endpoints are fuzzed too.
    #[arg(long)]
    pub web_port: Option<u16>,
    /// A model directory on the server's file system: mutated copies of it are offered to
    /// LoadModel (the server must have the same file system; it swaps and rolls back).
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
    /// Mutated configs per round loaded in-process; some that load are started as servers.
    #[arg(long, default_value_t = 200)]
    pub configs: u64,
    /// Of those, how many per round are started as servers (this executable).
    #[arg(long, default_value_t = 2)]
    pub config_starts: u64,
    /// Where mutated configs and model directories are written [default: a temporary dir].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct LoadgenArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Corpus: a GoEmotions TSV (first column) or one text per line.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value_t = 64)]
    pub conversations: usize,
    #[arg(long, default_value_t = 4)]
    pub streams: usize,
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Open loop at this many turns per second; without it, closed loop (one turn in flight per
    /// conversation, as fast as the server answers).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Stop after this many turns.
    #[arg(long)]
    pub turns: Option<u64>,
    /// After the last send, how long to wait for outstanding results before counting them lost.
    #[arg(long, default_value_t = 30.0)]
    pub drain_secs: f64,
    /// The server's process id, to report its resident memory and CPU use.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Threads of the load generator's async runtime. One keeps up with thousands of turns a
    /// second and leaves the rest of the machine to the server it measures (on 2 cores, 2-4 %
    /// more turns/s at 64 conversations than with one per core; BENCHMARKS.md).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Conversations are served by this many agents (`context.agent_id` lg-agent-N); 0: none.
    #[arg(long, default_value_t = 0)]
    pub agents: usize,
    /// With --agents: subscribe to every agent's guidance (SubscribeAssist) and report the delay
    /// from each turn's result to its guidance on the agent's stream.
    #[arg(long, requires = "agents")]
    pub assist: bool,
    /// Conversations belong to this many customers (`context.customer_id` lg-customer-N on
    /// each conversation's first turn; in soak mode a slot's next conversation is the next
    /// customer's, so customers come back); 0: none. The server needs customer memory on
    /// (`customers.enabled`) for the ids to be kept.
    #[arg(long, default_value_t = 0)]
    pub customers: usize,
    /// Soak mode (needs --rate): survive stream cancellations and server restarts (unanswered
    /// turns re-sent on the reopened stream), end conversations after --turns-per-conversation,
    /// print a line every --report-every-secs.
    #[arg(long, requires = "rate")]
    pub soak: bool,
    /// Soak: mean seconds between random cancellations of each stream (0: none).
    #[arg(long, default_value_t = 0.0)]
    pub cancel_every_secs: f64,
    /// Soak: turns per conversation before it ends and a new one takes its place.
    #[arg(long, default_value_t = 40)]
    pub turns_per_conversation: u64,
    #[arg(long, default_value_t = 30.0)]
    pub report_every_secs: f64,
    /// Soak: more replicas of the service (URLs, comma-separated): streams are spread over
    /// --server and these, and a broken stream reopens on the next one (cluster mode failover).
    #[arg(long, value_delimiter = ',')]
    pub failover: Vec<String>,
}

/// Where a client command connects.
#[derive(Args)]
pub struct ServerArgs {
    /// The server's gRPC address.
    #[arg(long = "server", default_value = "http://127.0.0.1:50051")]
    pub url: String,
    /// Bearer token, when the server requires one.
    #[arg(long, env = "EMOTION_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ServerArgs {
    pub fn server(&self) -> client::Server {
        client::Server {
            url: self.url.clone(),
            token: self.token.clone(),
        }
    }
}

#[derive(Args)]
pub struct ModelArgs {
    /// TOML config file (values there override defaults; EMOTION__* variables override it).
    #[arg(long, env = "EMOTION_CONFIG")]
    pub config: Option<PathBuf>,
    /// Model directory.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// libonnxruntime.so to load.
    #[arg(long)]
    pub onnxruntime: Option<PathBuf>,
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// gRPC listen address [default 127.0.0.1:50051].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Prometheus listen address, or "" to disable [default 127.0.0.1:9464].
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Supervisor dashboard listen address, or "" to disable [default 127.0.0.1:8080].
    #[arg(long)]
    pub web_listen: Option<String>,
    /// Cluster mode: NATS server URL(s), comma-separated (sets `cluster.nats`; docs/cluster.md).
    #[arg(long, value_delimiter = ',')]
    pub nats: Vec<String>,
}

#[derive(Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Texts to score; none: read one text per line from stdin.
    pub texts: Vec<String>,
    /// How many labels to print per text.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
}

#[derive(Args)]
pub struct StreamArgs {
    /// Conversation file: JSON lines with conversation_id, turn_id, speaker, text
    /// (optional: acoustic_valence, tenant, queue, agent_id, language).
    pub file: PathBuf,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Pause between turns, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// End each conversation of the file (EndConversation) after its results, and print its
    /// summary: with customer memory on, each becomes one of its customer's contacts.
    #[arg(long)]
    pub end: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum MinSeverity {
    Warning,
    Critical,
    Urgent,
}

#[derive(Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[arg(long = "tenant")]
    pub tenants: Vec<String>,
    #[arg(long = "queue")]
    pub queues: Vec<String>,
    #[arg(long = "agent")]
    pub agent_ids: Vec<String>,
    #[arg(long)]
    pub min_severity: Option<MinSeverity>,
    /// Start by replaying every alert event after this sequence (0: all retained).
    #[arg(long)]
    pub after: Option<u64>,
    /// Remember the last printed sequence in this file and resume after it on the next start.
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

#[derive(Args)]
pub struct AssistArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The agent whose guidance to print (an agent token may only name its own).
    #[arg(long)]
    pub agent_id: String,
    /// Start by replaying every guidance event after this sequence (0: all retained).
    #[arg(long)]
    pub after: Option<u64>,
    /// Remember the last printed sequence in this file and resume after it on the next start.
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

#[derive(Args)]
pub struct HandoffArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    pub conversation_id: String,
    /// The agent taking over.
    #[arg(long)]
    pub agent_id: String,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Args)]
pub struct HealthArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The service to ask about (empty: the whole server).
    #[arg(long, default_value = "")]
    pub service: String,
}

#[derive(Args)]
pub struct AlertsArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[arg(long = "tenant")]
    pub tenants: Vec<String>,
    #[arg(long = "queue")]
    pub queues: Vec<String>,
    #[arg(long = "agent")]
    pub agent_ids: Vec<String>,
    #[arg(long)]
    pub min_severity: Option<MinSeverity>,
    /// Only events of the last ..., e.g. 30m, 2h, 7d.
    #[arg(long, value_parser = parse_age)]
    pub since: Option<Duration>,
    #[arg(long)]
    pub conversation: Option<String>,
    #[arg(long)]
    pub alert_id: Option<String>,
    /// Most events to print.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

#[derive(Args)]
pub struct AckArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    pub alert_id: String,
    /// Who takes the alert.
    #[arg(long)]
    pub by: String,
    #[arg(long, default_value = "")]
    pub note: String,
}

#[derive(Args)]
pub struct CheckModelArgs {
    pub dir: PathBuf,
    /// libonnxruntime.so to load.
    #[arg(long)]
    pub onnxruntime: Option<PathBuf>,
    /// Labelled TSV to evaluate the candidate and the live model on.
    #[arg(long, requires = "live")]
    pub gate_data: Option<PathBuf>,
    /// The live model's directory (with --gate-data).
    #[arg(long)]
    pub live: Option<PathBuf>,
}

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// GoEmotions-format TSV (text, comma-separated label ids), or a TSV with a header naming
    /// `text` and `sentiment` and/or `emotion` columns (eval/zh-contact-center, SMP2020-EWECT).
    #[arg(long)]
    pub data: PathBuf,
    /// Sentiment TSVs: valence within +-BAND reads as neutral (default: the model's
    /// `neutral_band`, else 0.2).
    #[arg(long)]
    pub band: Option<f32>,
}

#[derive(Subcommand)]
pub enum ModelCmd {
    /// The model in service.
    Show(AdminArgs),
    /// Validate the model directory PATH (on the server's file system) and swap it in.
    Load {
        #[command(flatten)]
        admin: AdminArgs,
        path: String,
        #[arg(long)]
        skip_quality_gate: bool,
    },
    /// Back to the model before the last swap.
    Rollback(AdminArgs),
    /// Score SHARE of the conversations with the model at PATH beside the live one.
    ShadowStart {
        #[command(flatten)]
        admin: AdminArgs,
        path: String,
        #[arg(long, default_value_t = 0.1)]
        share: f64,
    },
    /// How the shadow compares with the live model.
    ShadowReport(AdminArgs),
    /// Put the shadow model in service.
    ShadowPromote(AdminArgs),
    /// End shadow scoring.
    ShadowStop(AdminArgs),
}

#[derive(Args)]
pub struct AdminArgs {
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Args)]
pub struct BacktestArgs {
    /// The model and rules to replay with (--config, --model, --onnxruntime).
    #[command(flatten)]
    pub model: ModelArgs,
    /// Conversations: JSON lines (conversation_id, turn_id, speaker, text, ...).
    #[arg(long)]
    pub data: PathBuf,
    /// Replay again with this model directory and compare.
    #[arg(long)]
    pub compare_model: Option<PathBuf>,
    /// Replay again with the rules of this config file and compare.
    #[arg(long)]
    pub compare_config: Option<PathBuf>,
}

#[derive(Args)]
pub struct TokenArgs {
    #[arg(long)]
    pub name: String,
    #[arg(long, value_enum)]
    pub role: RoleArg,
    /// Limit the token to these tenants (repeatable); none: all tenants.
    #[arg(long = "tenant")]
    pub tenants: Vec<String>,
    /// Role agent (required for it): the agent id whose guidance the token may read.
    #[arg(long)]
    pub agent_id: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Ingest,
    Supervisor,
    Agent,
    Admin,
}

pub fn parse_age(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected e.g. 30m, 2h or 7d"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(n * secs))
}

pub fn min_severity(choice: Option<MinSeverity>) -> pb::Severity {
    match choice {
        None => pb::Severity::None,
        Some(MinSeverity::Warning) => pb::Severity::Warning,
        Some(MinSeverity::Critical) => pb::Severity::Critical,
        Some(MinSeverity::Urgent) => pb::Severity::Urgent,
    }
}

/// How a command names a customer: the platform's id (with its tenant) or the pseudonym.
#[derive(Args)]
pub struct CustomerArg {
    /// The platform's customer id (as sent in context.customer_id).
    #[arg(long, conflicts_with = "key", required_unless_present = "key")]
    pub id: Option<String>,
    /// The tenant the id belongs to.
    #[arg(long, default_value = "")]
    pub tenant: String,
    /// The customer's pseudonym (customer_key, as the silent list shows it).
    #[arg(long)]
    pub key: Option<String>,
}

#[derive(Subcommand)]
pub enum CustomersCmd {
    /// Customers whose last contact ended badly and who have not come back, worst first.
    Silent {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long = "tenant")]
        tenants: Vec<String>,
        /// Evaluate the list this many days from now (e.g. 8: who will have been silent by then).
        #[arg(long, default_value_t = 0)]
        in_days: u32,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// CSV (header + one row per customer) instead of a table.
        #[arg(long)]
        csv: bool,
    },
    /// One customer's counts and newest contacts.
    Show {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        customer: CustomerArg,
    },
    /// Record that the customer was called back (off the silent list until their next contact).
    Called {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        customer: CustomerArg,
        /// Who called (with auth on, the token's name is recorded instead).
        #[arg(long, default_value = "")]
        by: String,
    },
    /// Erase everything held about the customer (admin).
    Delete {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        customer: CustomerArg,
    },
}

#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[arg(long, default_value = "")]
    pub tenant: String,
    #[arg(long, default_value = "")]
    pub queue: String,
    #[arg(long, default_value = "")]
    pub agent_id: String,
    /// The period: this many days up to now (compared with the same length before it).
    #[arg(long, default_value_t = 7)]
    pub days: u32,
    /// CSV (metric, current, previous, change) instead of a table.
    #[arg(long)]
    pub csv: bool,
}
