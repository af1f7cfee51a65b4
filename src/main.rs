use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use emotion_service::{Config, Listeners, client, inference, loadgen, metrics::Metrics, pb};
use tracing_subscriber::EnvFilter;

/// Streaming emotion and sentiment analysis for contact centers.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC service.
    Serve(ServeArgs),
    /// Score texts given as arguments (or one per line on stdin) with the model, no server.
    Score(ScoreArgs),
    /// Stream a conversation file (JSON lines) to a server and print each turn's result.
    Stream(StreamArgs),
    /// Print the alert feed of a server, live; reconnects and resumes without missing an alert.
    Watch(WatchArgs),
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
}

#[derive(Args)]
struct LoadgenArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Corpus: a GoEmotions TSV (first column) or one text per line.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value_t = 64)]
    conversations: usize,
    #[arg(long, default_value_t = 4)]
    streams: usize,
    #[arg(long, default_value_t = 10.0)]
    duration_secs: f64,
    /// Open loop at this many turns per second; without it, closed loop (one turn in flight per
    /// conversation, as fast as the server answers).
    #[arg(long)]
    rate: Option<f64>,
    /// Stop after this many turns.
    #[arg(long)]
    turns: Option<u64>,
    /// After the last send, how long to wait for outstanding results before counting them lost.
    #[arg(long, default_value_t = 30.0)]
    drain_secs: f64,
    /// The server's process id, to report its resident memory and CPU use.
    #[arg(long)]
    server_pid: Option<u32>,
}

/// Where a client command connects.
#[derive(Args)]
struct ServerArgs {
    /// The server's gRPC address.
    #[arg(long = "server", default_value = "http://127.0.0.1:50051")]
    url: String,
    /// Bearer token, when the server requires one.
    #[arg(long, env = "EMOTION_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl ServerArgs {
    fn server(&self) -> client::Server {
        client::Server {
            url: self.url.clone(),
            token: self.token.clone(),
        }
    }
}

#[derive(Args)]
struct ModelArgs {
    /// TOML config file (values there override defaults; EMOTION__* variables override it).
    #[arg(long, env = "EMOTION_CONFIG")]
    config: Option<PathBuf>,
    /// Model directory.
    #[arg(long)]
    model: Option<PathBuf>,
    /// libonnxruntime.so to load.
    #[arg(long)]
    onnxruntime: Option<PathBuf>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// gRPC listen address [default 127.0.0.1:50051].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Prometheus listen address, or "" to disable [default 127.0.0.1:9464].
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Supervisor dashboard listen address, or "" to disable [default 127.0.0.1:8080].
    #[arg(long)]
    web_listen: Option<String>,
}

#[derive(Args)]
struct ScoreArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Texts to score; none: read one text per line from stdin.
    texts: Vec<String>,
    /// How many labels to print per text.
    #[arg(long, default_value_t = 3)]
    top: usize,
}

#[derive(Args)]
struct StreamArgs {
    /// Conversation file: JSON lines with conversation_id, turn_id, speaker, text
    /// (optional: acoustic_valence, tenant, queue, agent_id, language).
    file: PathBuf,
    #[command(flatten)]
    server: ServerArgs,
    /// Pause between turns, in milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum MinSeverity {
    Warning,
    Critical,
    Urgent,
}

#[derive(Args)]
struct WatchArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[arg(long = "tenant")]
    tenants: Vec<String>,
    #[arg(long = "queue")]
    queues: Vec<String>,
    #[arg(long = "agent")]
    agent_ids: Vec<String>,
    #[arg(long)]
    min_severity: Option<MinSeverity>,
    /// Start by replaying every alert event after this sequence (0: all retained).
    #[arg(long)]
    after: Option<u64>,
    /// Remember the last printed sequence in this file and resume after it on the next start.
    #[arg(long)]
    state_file: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Args)]
struct AlertsArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[arg(long = "tenant")]
    tenants: Vec<String>,
    #[arg(long = "queue")]
    queues: Vec<String>,
    #[arg(long = "agent")]
    agent_ids: Vec<String>,
    #[arg(long)]
    min_severity: Option<MinSeverity>,
    /// Only events of the last ..., e.g. 30m, 2h, 7d.
    #[arg(long, value_parser = parse_age)]
    since: Option<Duration>,
    #[arg(long)]
    conversation: Option<String>,
    #[arg(long)]
    alert_id: Option<String>,
    /// Most events to print.
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

#[derive(Args)]
struct AckArgs {
    #[command(flatten)]
    server: ServerArgs,
    alert_id: String,
    /// Who takes the alert.
    #[arg(long)]
    by: String,
    #[arg(long, default_value = "")]
    note: String,
}

#[derive(Args)]
struct CheckModelArgs {
    dir: PathBuf,
    /// libonnxruntime.so to load.
    #[arg(long)]
    onnxruntime: Option<PathBuf>,
    /// Labelled TSV to evaluate the candidate and the live model on.
    #[arg(long, requires = "live")]
    gate_data: Option<PathBuf>,
    /// The live model's directory (with --gate-data).
    #[arg(long)]
    live: Option<PathBuf>,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// GoEmotions-format TSV: text, comma-separated label ids (indexes into the model's labels).
    #[arg(long)]
    data: PathBuf,
}

#[derive(Subcommand)]
enum ModelCmd {
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
struct AdminArgs {
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Args)]
struct BacktestArgs {
    /// The model and rules to replay with (--config, --model, --onnxruntime).
    #[command(flatten)]
    model: ModelArgs,
    /// Conversations: JSON lines (conversation_id, turn_id, speaker, text, ...).
    #[arg(long)]
    data: PathBuf,
    /// Replay again with this model directory and compare.
    #[arg(long)]
    compare_model: Option<PathBuf>,
    /// Replay again with the rules of this config file and compare.
    #[arg(long)]
    compare_config: Option<PathBuf>,
}

#[derive(Args)]
struct TokenArgs {
    #[arg(long)]
    name: String,
    #[arg(long, value_enum)]
    role: RoleArg,
    /// Limit the token to these tenants (repeatable); none: all tenants.
    #[arg(long = "tenant")]
    tenants: Vec<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Ingest,
    Supervisor,
    Admin,
}

fn parse_age(s: &str) -> Result<Duration, String> {
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

fn min_severity(choice: Option<MinSeverity>) -> pb::Severity {
    match choice {
        None => pb::Severity::None,
        Some(MinSeverity::Warning) => pb::Severity::Warning,
        Some(MinSeverity::Critical) => pb::Severity::Critical,
        Some(MinSeverity::Urgent) => pb::Severity::Urgent,
    }
}

fn load_config(args: &ModelArgs) -> anyhow::Result<Config> {
    let mut config = Config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(dir) = &args.model {
        config.model.dir.clone_from(dir);
    }
    if let Some(lib) = &args.onnxruntime {
        config.model.onnxruntime = Some(lib.clone());
    }
    Ok(config)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,ort=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
        Command::Score(args) => score(args).await,
        Command::Stream(args) => {
            client::stream_file(
                &args.server.server(),
                &args.file,
                Duration::from_millis(args.delay_ms),
            )
            .await
        }
        Command::Loadgen(args) => loadgen(args).await,
        Command::Watch(args) => {
            use std::io::IsTerminal;
            let color = match args.color {
                ColorChoice::Always => true,
                ColorChoice::Never => false,
                ColorChoice::Auto => std::io::stdout().is_terminal(),
            };
            client::watch(client::WatchOptions {
                server: args.server.server(),
                request: pb::SubscribeAlertsRequest {
                    tenants: args.tenants,
                    queues: args.queues,
                    agent_ids: args.agent_ids,
                    min_severity: min_severity(args.min_severity).into(),
                    after_sequence: args.after,
                },
                state_file: args.state_file,
                color,
            })
            .await
        }
        Command::Alerts(args) => {
            let request = pb::ListAlertsRequest {
                tenants: args.tenants,
                queues: args.queues,
                agent_ids: args.agent_ids,
                min_severity: min_severity(args.min_severity).into(),
                since: args
                    .since
                    .map(|age| (std::time::SystemTime::now() - age).into()),
                conversation_id: args.conversation.unwrap_or_default(),
                alert_id: args.alert_id.unwrap_or_default(),
                ..Default::default()
            };
            client::list_alerts(&args.server.server(), request, args.limit).await
        }
        Command::CheckModel(args) => {
            let mut config = Config::default();
            config.model.onnxruntime = args.onnxruntime;
            let gate = args.gate_data.as_deref().zip(args.live.as_deref());
            let report =
                emotion_service::inference::swap::check_model(config, &args.dir, gate).await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Backtest(args) => backtest(args).await,
        Command::Model(cmd) => model_admin(cmd).await,
        Command::Eval(args) => {
            let config = load_config(&args.model)?;
            let batcher =
                tokio::task::spawn_blocking(move || inference::start(&config, Metrics::new()))
                    .await??;
            let examples =
                emotion_service::eval::read_tsv(&args.data, batcher.spec().labels.len())?;
            let report = emotion_service::eval::evaluate(&batcher, &examples).await?;
            print!("{}", report.table());
            Ok(())
        }
        Command::Token(args) => {
            let token = emotion_service::auth::new_token()?;
            let role = match args.role {
                RoleArg::Ingest => "ingest",
                RoleArg::Supervisor => "supervisor",
                RoleArg::Admin => "admin",
            };
            println!(
                "token (shown once; clients pass it with --token or EMOTION_TOKEN):\n  {token}\n"
            );
            println!("server config:\n[[auth.tokens]]");
            println!("name = {:?}\nrole = {role:?}", args.name);
            println!("sha256 = {:?}", emotion_service::auth::token_hash(&token));
            if !args.tenants.is_empty() {
                println!("tenants = {:?}", args.tenants);
            }
            Ok(())
        }
        Command::Ack(args) => {
            client::acknowledge(
                &args.server.server(),
                pb::AcknowledgeAlertRequest {
                    alert_id: args.alert_id,
                    supervisor: args.by,
                    note: args.note,
                },
            )
            .await
        }
    }
}

async fn model_admin(cmd: ModelCmd) -> anyhow::Result<()> {
    use emotion_service::pb::model_admin_client::ModelAdminClient;
    let admin = match &cmd {
        ModelCmd::Show(a)
        | ModelCmd::Rollback(a)
        | ModelCmd::ShadowReport(a)
        | ModelCmd::ShadowPromote(a)
        | ModelCmd::ShadowStop(a) => a,
        ModelCmd::Load { admin, .. } | ModelCmd::ShadowStart { admin, .. } => admin,
    };
    let server = admin.server.server();
    let mut client = ModelAdminClient::new(server.channel().await?);
    use client::admin::{model_info as info, shadow_report as report};
    let out = match cmd {
        ModelCmd::Show(_) => info(
            client
                .get_model(server.request(pb::GetModelRequest {}))
                .await?
                .into_inner(),
        ),
        ModelCmd::Load {
            path,
            skip_quality_gate,
            ..
        } => info(
            client
                .load_model(server.request(pb::LoadModelRequest {
                    path,
                    skip_quality_gate,
                }))
                .await?
                .into_inner(),
        ),
        ModelCmd::Rollback(_) => info(
            client
                .rollback_model(server.request(pb::RollbackModelRequest {}))
                .await?
                .into_inner(),
        ),
        ModelCmd::ShadowStart { path, share, .. } => report(
            client
                .start_shadow(server.request(pb::StartShadowRequest { path, share }))
                .await?
                .into_inner(),
        ),
        ModelCmd::ShadowReport(_) => report(
            client
                .get_shadow_report(server.request(pb::GetShadowReportRequest {}))
                .await?
                .into_inner(),
        ),
        ModelCmd::ShadowPromote(_) => info(
            client
                .promote_shadow(server.request(pb::PromoteShadowRequest {}))
                .await?
                .into_inner(),
        ),
        ModelCmd::ShadowStop(_) => report(
            client
                .stop_shadow(server.request(pb::StopShadowRequest {}))
                .await?
                .into_inner(),
        ),
    };
    println!("{out}");
    Ok(())
}

async fn backtest(args: BacktestArgs) -> anyhow::Result<()> {
    let turns = client::read_conversation_file(&args.data)?;
    let config = load_config(&args.model)?;
    let compare_config = match &args.compare_config {
        Some(file) => Some(Config::load(Some(file), std::env::vars())?),
        None => None,
    };
    let report = emotion_service::backtest::compare(
        config,
        &turns,
        args.compare_model.as_deref(),
        compare_config,
    )
    .await?;
    print!("{report}");
    Ok(())
}

async fn loadgen(args: LoadgenArgs) -> anyhow::Result<()> {
    let texts = std::sync::Arc::new(loadgen::read_corpus(&args.data)?);
    let config = loadgen::LoadConfig {
        server: args.server.server(),
        conversations: args.conversations,
        streams: args.streams,
        duration: Duration::from_secs_f64(args.duration_secs),
        rate: args.rate,
        max_turns: args.turns,
        drain: Duration::from_secs_f64(args.drain_secs),
    };
    let mode = match config.rate {
        Some(rate) => format!("open loop at {rate} turns/s"),
        None => "closed loop".into(),
    };
    println!(
        "{} conversations over {} streams, {mode}, {:.0} s, {} texts",
        config.conversations,
        config.streams,
        args.duration_secs,
        texts.len()
    );
    let before = args.server_pid.map(loadgen::process_usage).transpose()?;
    let started = std::time::Instant::now();
    let report = loadgen::run(config, texts).await?;
    println!("{}", report.summary());
    if let (Some(pid), Some((_, cpu_before))) = (args.server_pid, before) {
        let (rss, cpu_after) = loadgen::process_usage(pid)?;
        println!(
            "server pid {pid}: RSS {:.1} MiB, CPU {:.0}% of one core over the run",
            rss as f64 / (1024.0 * 1024.0),
            100.0 * (cpu_after - cpu_before) / started.elapsed().as_secs_f64()
        );
    }
    if report.lost + report.duplicated + report.errors > 0 {
        anyhow::bail!("turns lost, duplicated or failed");
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = load_config(&args.model)?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(metrics) = args.metrics_listen {
        config.server.metrics_listen = metrics;
    }
    if let Some(web) = args.web_listen {
        config.server.web_listen = web;
    }
    config.validate()?;
    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))
    };
    let grpc = bind(config.server.listen).await?;
    let metrics = match config.metrics_addr()? {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let web = match config.web_addr()? {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let listeners = Listeners { grpc, metrics, web };
    emotion_service::run(config, listeners, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

async fn score(args: ScoreArgs) -> anyhow::Result<()> {
    let config = load_config(&args.model)?;
    let texts: Vec<String> = if args.texts.is_empty() {
        std::io::stdin()
            .lock()
            .lines()
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|l| !l.trim().is_empty())
            .collect()
    } else {
        args.texts
    };
    let batcher =
        tokio::task::spawn_blocking(move || inference::start(&config, Metrics::new())).await??;
    let mut pending = Vec::with_capacity(texts.len());
    for text in &texts {
        pending.push(batcher.submit(text).await?);
    }
    for (text, p) in texts.iter().zip(pending) {
        let scores = p.wait().await?;
        let model = &scores.model;
        let labels: Vec<&str> = model
            .predicted(&scores.probs)
            .into_iter()
            .map(|i| model.labels[i].as_str())
            .collect();
        let top: Vec<String> = model
            .ranked(&scores.probs)
            .into_iter()
            .take(args.top)
            .map(|i| format!("{} {:.2}", model.labels[i], scores.probs[i]))
            .collect();
        println!(
            "valence {:+.2}  labels [{}]  top: {}  | {}",
            scores.valence,
            labels.join(", "),
            top.join(", "),
            text
        );
    }
    Ok(())
}
