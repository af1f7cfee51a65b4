use std::io::BufRead;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use emotion_service::{Config, Listeners, client, inference, loadgen, metrics::Metrics, pb};
use tracing_subscriber::EnvFilter;

mod cli;

use cli::*;

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

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,ort=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let command = Cli::parse().command;
    // The async runtime's threads: the server's from its config (`server.runtime_threads`: the
    // inference threads are its own), the load generator's from `--threads` (it shares the
    // machine with the server it measures); any other command one per core.
    let threads = match &command {
        Command::Serve(args) => Some(serve_config(args)?.runtime_threads()),
        Command::Loadgen(args) => Some(args.threads.max(1)),
        _ => None,
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = threads {
        runtime.worker_threads(threads);
    }
    runtime.enable_all().build()?.block_on(run(command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(args).await,
        Command::Score(args) => score(args).await,
        Command::Stream(args) => {
            client::stream_file(
                &args.server.server(),
                &args.file,
                Duration::from_millis(args.delay_ms),
                args.end,
            )
            .await
        }
        Command::Customers(cmd) => customers(cmd).await,
        Command::Report(args) => {
            let (since, until) = client::report::last_days(args.days);
            let request = pb::GetReportRequest {
                tenant: args.tenant,
                queue: args.queue,
                agent_id: args.agent_id,
                since: Some(since),
                until: Some(until),
            };
            client::report::print(&args.server.server(), request, args.csv).await
        }
        Command::Loadgen(args) => loadgen(args).await,
        Command::Fuzz(args) => fuzz(args).await,
        Command::Health(args) => {
            let server = args.server.server();
            let mut health =
                tonic_health::pb::health_client::HealthClient::new(server.channel().await?);
            let status = health
                .check(server.request(tonic_health::pb::HealthCheckRequest {
                    service: args.service,
                }))
                .await?
                .into_inner()
                .status();
            println!("{}", status.as_str_name());
            if status != tonic_health::pb::health_check_response::ServingStatus::Serving {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Watch(args) => {
            let color = use_color(args.color);
            client::watch(client::WatchOptions {
                server: args.server.server(),
                feed: client::Feed::Alerts(pb::SubscribeAlertsRequest {
                    tenants: args.tenants,
                    queues: args.queues,
                    agent_ids: args.agent_ids,
                    min_severity: min_severity(args.min_severity).into(),
                    after_sequence: args.after,
                }),
                state_file: args.state_file,
                color,
            })
            .await
        }
        Command::Assist(args) => {
            let color = use_color(args.color);
            client::watch(client::WatchOptions {
                server: args.server.server(),
                feed: client::Feed::Assist(pb::SubscribeAssistRequest {
                    agent_id: args.agent_id,
                    after_sequence: args.after,
                }),
                state_file: args.state_file,
                color,
            })
            .await
        }
        Command::Handoff(args) => {
            client::hand_off(
                &args.server.server(),
                pb::HandoffRequest {
                    conversation_id: args.conversation_id,
                    agent_id: args.agent_id,
                },
            )
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
            let mut config = load_config(&args.model)?;
            // The model given is the one evaluated, whatever the text's language.
            config.model.languages.clear();
            let batcher =
                tokio::task::spawn_blocking(move || inference::start(&config, Metrics::new()))
                    .await??;
            use emotion_service::eval::{self, sentiment};
            if sentiment::is_sentiment_tsv(&args.data)? {
                let rows = sentiment::read(&args.data)?;
                let report = sentiment::evaluate(&batcher, &rows, args.band).await?;
                print!("{}", report.table());
                return Ok(());
            }
            let examples = eval::read_tsv(&args.data, batcher.spec().labels.len())?;
            let report = eval::evaluate(&batcher, &examples).await?;
            print!("{}", report.table());
            Ok(())
        }
        Command::Token(args) => {
            match (&args.agent_id, args.role) {
                (None, RoleArg::Agent) => anyhow::bail!(
                    "--role agent needs --agent-id (the agent whose guidance the token reads)"
                ),
                (Some(_), r) if !matches!(r, RoleArg::Agent) => {
                    anyhow::bail!("--agent-id is for --role agent only")
                }
                _ => {}
            }
            let token = emotion_service::auth::new_token()?;
            let role = match args.role {
                RoleArg::Ingest => "ingest",
                RoleArg::Supervisor => "supervisor",
                RoleArg::Agent => "agent",
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
            if let Some(id) = &args.agent_id {
                println!("agent_id = {id:?}");
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
    if args.soak {
        let config = loadgen::soak::SoakConfig {
            server: args.server.server(),
            conversations: args.conversations,
            streams: args.streams,
            duration: Duration::from_secs_f64(args.duration_secs),
            rate: args.rate.unwrap_or_default(),
            cancel_every: (args.cancel_every_secs > 0.0).then_some(args.cancel_every_secs),
            turns_per_conversation: args.turns_per_conversation.max(1),
            report_every: Duration::from_secs_f64(args.report_every_secs.max(1.0)),
            drain: Duration::from_secs_f64(args.drain_secs),
            failover: (args.failover.iter())
                .map(|url| client::Server {
                    url: url.clone(),
                    token: args.server.token.clone(),
                })
                .collect(),
            total_turns: args.turns,
            run_id: None,
            customers: args.customers,
        };
        println!(
            "soak: {} conversations over {} streams, open loop at {} turns/s, {:.0} s, {} turns per conversation, cancel every {:?} s per stream",
            config.conversations,
            config.streams,
            config.rate,
            args.duration_secs,
            config.turns_per_conversation,
            config.cancel_every
        );
        let r = loadgen::soak::run(config, texts).await?;
        println!(
            "total: sent {} answered {} lost {} duplicated {} errors {}; recovered (scored before a break, answered as duplicate on re-send) {}; reconnects {} cancels {} conversations ended {}; latency ms p50 {:.1} p99 {:.1} max {:.1}",
            r.sent,
            r.answered,
            r.lost,
            r.duplicated,
            r.errors,
            r.recovered,
            r.reconnects,
            r.cancels,
            r.conversations_ended,
            r.p50_ms,
            r.p99_ms,
            r.max_ms
        );
        for e in &r.first_errors {
            println!("  error: {e}");
        }
        anyhow::ensure!(
            r.lost + r.duplicated + r.errors == 0,
            "turns lost, duplicated or failed"
        );
        return Ok(());
    }
    let config = loadgen::LoadConfig {
        server: args.server.server(),
        conversations: args.conversations,
        streams: args.streams,
        duration: Duration::from_secs_f64(args.duration_secs),
        rate: args.rate,
        max_turns: args.turns,
        drain: Duration::from_secs_f64(args.drain_secs),
        agents: args.agents,
        assist: args.assist,
        customers: args.customers,
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

/// Runs the fuzzer in one-minute rounds (seed, seed+1, ...), printing each round and the
/// server's RSS, until the duration is used up; fails on any violation.
async fn fuzz(args: FuzzArgs) -> anyhow::Result<()> {
    use emotion_service::fuzz;
    let channel = tonic::transport::Endpoint::from_shared(args.url.clone())?
        .connect()
        .await?;
    let work = args
        .work_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("emotion-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let exe = std::env::current_exe()?;
    let models = std::path::absolute("models")?;
    let model_dir = args
        .model_dir
        .as_deref()
        .map(std::path::absolute)
        .transpose()?;
    let deadline = std::time::Instant::now() + Duration::from_secs_f64(args.duration_secs);
    let mut total = fuzz::FuzzReport::default();
    let (mut unary, mut web) = (
        fuzz::unary::UnaryReport::default(),
        fuzz::web::WebReport::default(),
    );
    let mut files = fuzz::files::FilesReport::default();
    let mut violations = Vec::new();
    let mut seed = args.seed;
    while std::time::Instant::now() < deadline {
        let round = deadline
            .saturating_duration_since(std::time::Instant::now())
            .min(Duration::from_secs(60));
        let r = fuzz::run(channel.clone(), seed, round, u64::MAX).await;
        // And the other calls: as many as a tenth of the streams' frames.
        let u = fuzz::unary::run(channel.clone(), seed, (r.frames / 10).max(20)).await;
        let w = match args.web_port {
            Some(port) => fuzz::web::run(port, seed, (r.frames / 10).max(20)).await,
            None => Default::default(),
        };
        let mut f =
            fuzz::files::run_configs(seed, args.configs, args.config_starts, &exe, &models, &work)
                .await;
        if let Some(base) = &model_dir {
            let m = fuzz::files::run_model_dirs(channel.clone(), seed, 4, base, &work).await;
            f.model_dirs += m.model_dirs;
            f.models_loaded += m.models_loaded;
            f.models_refused += m.models_refused;
            f.violations.extend(m.violations);
        }
        let rss = args
            .server_pid
            .map(loadgen::process_usage)
            .transpose()?
            .map(|(rss, _)| format!(", server RSS {:.1} MiB", rss as f64 / 1048576.0))
            .unwrap_or_default();
        println!(
            "seed {seed}: {r}; other calls: {} ({} ok, {} refused); web: {} ({} ok, {} 4xx, {} short bodies closed); configs: {} ({} loaded, {} refused; {} started: {} served, {} refused); model dirs: {} ({} loaded, {} refused); {} violations{rss}",
            u.calls,
            u.ok,
            u.refused,
            w.requests,
            w.ok,
            w.refused,
            w.closed_short_body,
            f.configs,
            f.configs_loaded,
            f.configs_refused,
            f.servers_started,
            f.servers_served,
            f.servers_refused,
            f.model_dirs,
            f.models_loaded,
            f.models_refused,
            r.violations.len() + u.violations.len() + w.violations.len() + f.violations.len(),
        );
        for v in r
            .violations
            .iter()
            .chain(&u.violations)
            .chain(&w.violations)
            .chain(&f.violations)
        {
            println!("  VIOLATION {v}");
        }
        unary.calls += u.calls;
        unary.ok += u.ok;
        unary.refused += u.refused;
        web.requests += w.requests;
        files.configs += f.configs;
        files.servers_started += f.servers_started;
        files.model_dirs += f.model_dirs;
        total.cases += r.cases;
        total.frames += r.frames;
        total.results += r.results;
        violations.extend(
            r.violations
                .into_iter()
                .chain(u.violations)
                .chain(w.violations)
                .chain(f.violations),
        );
        seed += 1;
    }
    println!(
        "total: {} cases, {} frames, {} results; other calls: {} ({} ok, {} refused); web requests: {}; configs: {} ({} started); model dirs: {}; {} violations",
        total.cases,
        total.frames,
        total.results,
        unary.calls,
        unary.ok,
        unary.refused,
        web.requests,
        files.configs,
        files.servers_started,
        files.model_dirs,
        violations.len()
    );
    let _ = std::fs::remove_dir_all(&work);
    anyhow::ensure!(violations.is_empty(), "the contract was broken");
    Ok(())
}

/// The server's config: the file and environment, then the command line's overrides, checked.
fn serve_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut config = load_config(&args.model)?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(metrics) = &args.metrics_listen {
        config.server.metrics_listen.clone_from(metrics);
    }
    if let Some(web) = &args.web_listen {
        config.server.web_listen.clone_from(web);
    }
    if !args.nats.is_empty() {
        config.cluster.nats.clone_from(&args.nats);
    }
    config.validate()?;
    Ok(config)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = serve_config(&args)?;
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
        let lang = emotion_service::lang::Lang::of_text(text);
        pending.push(batcher.submit_in(lang, text).await?);
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

/// Whether to print ANSI colours: as asked, or when stdout is a terminal.
fn use_color(choice: ColorChoice) -> bool {
    use std::io::IsTerminal;
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => std::io::stdout().is_terminal(),
    }
}

async fn customers(cmd: cli::CustomersCmd) -> anyhow::Result<()> {
    use client::customers as c;
    let customer = |a: cli::CustomerArg| pb::CustomerRef {
        tenant: a.tenant,
        customer_id: a.id.unwrap_or_default(),
        customer_key: a.key.unwrap_or_default(),
    };
    match cmd {
        cli::CustomersCmd::Silent {
            server,
            tenants,
            in_days,
            limit,
            csv,
        } => c::silent(&server.server(), tenants, in_days, limit, csv).await,
        cli::CustomersCmd::Show {
            server,
            customer: a,
        } => c::show(&server.server(), customer(a)).await,
        cli::CustomersCmd::Called {
            server,
            customer: a,
            by,
        } => c::called(&server.server(), customer(a), by).await,
        cli::CustomersCmd::Delete {
            server,
            customer: a,
        } => c::delete(&server.server(), customer(a)).await,
    }
}
