//! Config files and model directories, mutated.
//!
//! Configs: the README's documented config (the one users copy), mutated line by line (values
//! replaced by hostile ones of every type, lines deleted or repeated, unknown keys, broken
//! section headers, cut short, bytes that are not UTF-8) with hostile `EMOTION__*` overrides.
//! Each is loaded in-process: `Config::load` must answer Ok or an error that says what is
//! wrong, never panic. Some of those that load are then started as a real server (a child
//! process): it must serve, or exit with an error, and stop on SIGTERM, never panic.
//!
//! Model directories: a copy of a shipped model directory with one file mutated (JSON cut short,
//! keys removed or given values of the wrong type, unknown labels, a tokenizer or graph that is
//! truncated, flipped or empty, a file missing or a directory in its place), read in-process by
//! `ModelSpec::load` (no panic), then offered to a live server by `LoadModel`: it must be loaded
//! (and is rolled back) or refused with FAILED_PRECONDITION and a reason, within the check
//! timeout, and the server must go on scoring with the model it had.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tonic::Code;
use tonic::transport::Channel;

use super::Rng;
use crate::config::Config;
use crate::inference::model_dir::ModelSpec;
use crate::pb;

const README: &str = include_str!("../../README.md");

/// The config block of the README's Configuration section.
pub fn documented_config() -> &'static str {
    let start = README
        .find("```toml\n[server]")
        .expect("the README documents the config")
        + "```toml\n".len();
    let len = README[start..].find("```").expect("the block ends");
    &README[start..start + len]
}

/// What the files got.
#[derive(Debug, Default, Clone)]
pub struct FilesReport {
    pub configs: u64,
    pub configs_loaded: u64,
    pub configs_refused: u64,
    pub servers_started: u64,
    pub servers_served: u64,
    pub servers_refused: u64,
    pub model_dirs: u64,
    pub models_loaded: u64,
    pub models_refused: u64,
    pub violations: Vec<String>,
}

fn hostile_value(rng: &mut Rng) -> String {
    match rng.below(24) {
        0 => "-1".into(),
        1 => "0".into(),
        2 => "18446744073709551615".into(),
        3 => "18446744073709551616".into(),
        4 => "9223372036854775807".into(),
        5 => "1e999".into(),
        6 => "nan".into(),
        7 => "-inf".into(),
        8 => "0.0000001".into(),
        9 => "\"\"".into(),
        10 => "\"\\u0000\"".into(),
        11 => format!("\"{}\"", "x".repeat(100_000)),
        12 => "[1, 2]".into(),
        13 => "{ a = 1 }".into(),
        14 => "true".into(),
        15 => "\"127.0.0.1:99999\"".into(),
        16 => "\"::::\"".into(),
        17 => "\"我要投诉\"".into(),
        18 => "1979-05-27T07:32:00Z".into(),
        19 => "\"/dev/null\"".into(),
        20 => "\"/\"".into(),
        21 => "4294967296".into(),
        22 => rng.below(100_000).to_string(),
        _ => format!("{}.{}", rng.below(3), rng.below(100)),
    }
}

/// The documented config with models at `models` and data files under `data`, then mutated.
fn mutated_config(rng: &mut Rng, models: &Path, data: &Path) -> Vec<u8> {
    let base = documented_config()
        .replace("\"models/", &format!("\"{}/", models.display()))
        .replace("\"data/", &format!("\"{}/", data.display()));
    let mut lines: Vec<String> = base.lines().map(String::from).collect();
    for _ in 0..1 + rng.below(3) {
        let i = rng.below(lines.len() as u64) as usize;
        match rng.below(10) {
            0..=4 => {
                // A value replaced.
                if let Some(eq) = lines[i].find('=') {
                    let key = lines[i][..eq].to_string();
                    lines[i] = format!("{key}= {}", hostile_value(rng));
                }
            }
            5 => {
                lines.remove(i);
            }
            6 => {
                let line = lines[i].clone();
                lines.insert(i, line);
            }
            7 => lines.insert(i, format!("no_such_key = {}", hostile_value(rng))),
            8 => {
                lines[i] = ["[server", "[[alerts]]", "[nowhere]", "= 1", "[]"]
                    [rng.below(5) as usize]
                    .into()
            }
            _ => {
                // A line with a commented-out key switched on, or a comment made code.
                let line = lines[i].trim_start_matches("# ").to_string();
                lines[i] = line;
            }
        }
    }
    let mut text = lines.join("\n").into_bytes();
    match rng.below(12) {
        0 => {
            let cut = rng.below(text.len() as u64) as usize;
            text.truncate(cut);
        }
        1 => {
            let i = rng.below(text.len() as u64) as usize;
            text.insert(i, 0xff);
        }
        2 => {
            let i = rng.below(text.len() as u64) as usize;
            text[i] ^= 1 << rng.below(8);
        }
        _ => {}
    }
    text
}

fn hostile_env(rng: &mut Rng) -> Vec<(String, String)> {
    const NAMES: &[&str] = &[
        "EMOTION__BATCHING__MAX_BATCH",
        "EMOTION__ALERTS__COOLDOWN_SECS",
        "EMOTION__LIMITS__CONVERSATION_TTL_SECS",
        "EMOTION__MODEL__WATCH_INTERVAL_SECS",
        "EMOTION__SERVER__SHUTDOWN_GRACE_SECS",
        "EMOTION__STATE__PERSIST_INTERVAL_MS",
        "EMOTION__MODEL__LANGUAGES__ZH",
        "EMOTION__SCORING__HALF_LIFE_TURNS",
        "EMOTION__",
        "EMOTION____X",
        "EMOTION__SERVER",
        "EMOTION__SERVER__LISTEN__DEEPER",
        "EMOTION__AUTH__TOKENS",
    ];
    (0..rng.below(3))
        .map(|_| {
            let value = match rng.below(4) {
                0 => "[1, 2".into(),
                1 => "\u{7}".into(),
                _ => hostile_value(rng).trim_matches('"').to_string(),
            };
            (
                NAMES[rng.below(NAMES.len() as u64) as usize].to_string(),
                value,
            )
        })
        .collect()
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts `exe serve --config file` in `dir` and sees it serve (or refuse), then stops it.
async fn start_server(
    exe: &Path,
    dir: &Path,
    file: &Path,
    env: &[(String, String)],
) -> Result<bool, String> {
    let (grpc, web) = (
        free_port().map_err(|e| e.to_string())?,
        free_port().map_err(|e| e.to_string())?,
    );
    let stderr_path = dir.join("serve.stderr");
    let stderr = std::fs::File::create(&stderr_path).map_err(|e| e.to_string())?;
    let mut child = tokio::process::Command::new(exe)
        .arg("serve")
        .arg("--config")
        .arg(file)
        .args(["--listen", &format!("127.0.0.1:{grpc}")])
        .args(["--web-listen", &format!("127.0.0.1:{web}")])
        .args(["--metrics-listen", ""])
        .current_dir(dir)
        .env_remove("EMOTION_CONFIG")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", exe.display()))?;
    let panicked = |path: &Path| {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.contains("panicked at").then(|| {
            let at = text.find("panicked at").unwrap_or(0);
            text[at..].chars().take(400).collect::<String>()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let served = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            if let Some(p) = panicked(&stderr_path) {
                return Err(format!("the server panicked at start: {p}"));
            }
            let text = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            if status.success() || !text.contains("Error: ") {
                return Err(format!(
                    "the server ended ({status}) without an error: {}",
                    text.trim()
                ));
            }
            break false;
        }
        // Its own word that it listens (a connect could be the kernel connecting a port in the
        // ephemeral range to itself while nothing listens).
        if std::fs::read_to_string(&stderr_path).is_ok_and(|t| t.contains("serving gRPC")) {
            break true;
        }
        if Instant::now() > deadline {
            return Err("the server neither served nor exited within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if served {
        // Serves for real: a turn scored, then a graceful stop.
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{grpc}"))
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        let mut client = pb::emotion_analysis_client::EmotionAnalysisClient::new(channel);
        if let Err(s) = client
            .score_texts(pb::ScoreTextsRequest {
                texts: vec!["我要投诉".into(), "thanks".into()],
            })
            .await
        {
            return Err(format!("the started server did not score: {s:?}"));
        }
        // A conversation that turns angry: rolling scores, alert rules, cooldowns, the log.
        let turns: Vec<pb::TurnRequest> = [
            "I have been waiting for an hour",
            "This is useless, I'm furious",
            "我要投诉你们，马上给我转人工！",
            "Nobody helps, this is the worst service ever",
        ]
        .iter()
        .enumerate()
        .map(|(i, t)| pb::TurnRequest::new("fc-1", i as u64 + 1, pb::Speaker::Customer, *t))
        .collect();
        let streamed = async {
            let mut results = client
                .stream_turns(tokio_stream::iter(turns))
                .await?
                .into_inner();
            let mut n = 0;
            while let Some(r) = results.message().await? {
                if let Some(e) = r.error {
                    return Err(tonic::Status::new(e.code.into(), e.message));
                }
                n += 1;
            }
            Ok(n)
        };
        match tokio::time::timeout(Duration::from_secs(30), streamed).await {
            Ok(Ok(4)) => {}
            other => return Err(format!("the started server's StreamTurns: {other:?}")),
        }
        let pid = child.id().ok_or("no pid")?;
        let sent = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .map_err(|e| format!("kill: {e}"))?;
        if !sent.success() {
            return Err(format!("kill -TERM {pid}: {sent}"));
        }
        match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
            Err(_) => return Err("the server did not stop within 30 s of SIGTERM".into()),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(_)) => {}
        }
        if let Some(p) = panicked(&stderr_path) {
            return Err(format!("the server panicked: {p}"));
        }
    }
    Ok(served)
}

/// `cases` mutated configs, of which up to `starts` that load are started with `exe` as a
/// server; models come from `models`, every file is written under `work`.
pub async fn run_configs(
    seed: u64,
    cases: u64,
    starts: u64,
    exe: &Path,
    models: &Path,
    work: &Path,
) -> FilesReport {
    let mut rng = Rng::new(seed ^ 0x0000_636f_6e66_6967);
    let mut report = FilesReport::default();
    for n in 0..cases {
        let dir = work.join(format!("config-{seed}-{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            report
                .violations
                .push(format!("creating {}: {e}", dir.display()));
            break;
        }
        let text = mutated_config(&mut rng, models, &dir);
        let env = hostile_env(&mut rng);
        let file = dir.join("emotion.toml");
        if let Err(e) = std::fs::write(&file, &text) {
            report
                .violations
                .push(format!("writing {}: {e}", file.display()));
            break;
        }
        report.configs += 1;
        let what = || format!("config {n} (seed {seed}) with env {env:?}");
        let loaded = std::panic::catch_unwind(|| {
            let c = Config::load(Some(&file), env.clone())?;
            // What start-up derives from it must not panic either.
            c.metrics_addr()?;
            c.web_addr()?;
            let _ = c.max_wait();
            Ok::<_, crate::config::ConfigError>(c)
        });
        let started = match loaded {
            Err(p) => {
                report.violations.push(format!(
                    "{}: Config::load panicked: {}",
                    what(),
                    panic_message(p)
                ));
                false
            }
            Ok(Err(e)) => {
                report.configs_refused += 1;
                if e.to_string().trim().is_empty() {
                    report
                        .violations
                        .push(format!("{}: an error with no message", what()));
                }
                false
            }
            Ok(Ok(_)) => {
                report.configs_loaded += 1;
                report.servers_started < starts
            }
        };
        if started {
            report.servers_started += 1;
            // The env overrides apply to the child's load too.
            match start_server(exe, &dir, &file, &env).await {
                Ok(true) => report.servers_served += 1,
                Ok(false) => report.servers_refused += 1,
                Err(v) => report.violations.push(format!("{}: {v}", what())),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        if report.violations.len() > 20 {
            break;
        }
    }
    report
}

const MODEL_FILES: &[&str] = &[
    "config.json",
    "emotion.json",
    "tokenizer.json",
    "model.onnx",
];

/// A JSON file mutated: cut short, bytes flipped, a key's value replaced, emptied.
fn mutated_json(rng: &mut Rng, text: &[u8]) -> Vec<u8> {
    let mut out = text.to_vec();
    match rng.below(8) {
        0 => out.truncate(rng.below(out.len() as u64) as usize),
        1 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(out.len() as u64) as usize;
                out[i] ^= 1 << rng.below(8);
            }
        }
        2 => out = b"{}".to_vec(),
        3 => out = Vec::new(),
        4 => out = b"[1e999, \"\xff\"]".to_vec(),
        _ => {
            // The value after one `":` replaced by something of another type.
            let colons: Vec<usize> = out
                .windows(2)
                .enumerate()
                .filter(|(_, w)| w == b"\":")
                .map(|(i, _)| i + 2)
                .collect();
            if let Some(&at) = colons.get(rng.below(colons.len() as u64) as usize) {
                let end = out[at..]
                    .iter()
                    .position(|&b| b == b',' || b == b'}' || b == b'\n')
                    .map_or(out.len(), |p| at + p);
                let value: &[u8] = [
                    &b" -1"[..],
                    b" 1e300",
                    b" null",
                    b" \"x\"",
                    b" {\"999999999999\": \"joy\"}",
                    b" [[]]",
                    b" 18446744073709551616",
                ][rng.below(7) as usize];
                out.splice(at..end, value.iter().copied());
            }
        }
    }
    out
}

/// A copy of `base` (the graph linked unless it is the mutated file) with one file mutated.
fn mutated_model_dir(rng: &mut Rng, base: &Path, dir: &Path) -> std::io::Result<String> {
    std::fs::create_dir_all(dir)?;
    let target = MODEL_FILES[rng.below(MODEL_FILES.len() as u64) as usize];
    for file in MODEL_FILES {
        let from = base.join(file);
        if *file != target && from.exists() {
            if *file == "model.onnx" {
                std::os::unix::fs::symlink(&from, dir.join(file))?;
            } else {
                std::fs::copy(&from, dir.join(file))?;
            }
        }
    }
    let path = dir.join(target);
    let how = match rng.below(10) {
        0 => "missing".to_string(),
        1 => {
            std::fs::create_dir_all(&path)?;
            "a directory".to_string()
        }
        _ if target == "model.onnx" => {
            let graph = std::fs::read(base.join(target))?;
            let (bytes, how) = match rng.below(4) {
                0 => {
                    let cut = rng.below(graph.len() as u64) as usize;
                    (graph[..cut].to_vec(), format!("cut at {cut}"))
                }
                1 => {
                    let mut g = graph;
                    for _ in 0..1 + rng.below(16) {
                        // In the first 64 KiB: the header and the graph's structure.
                        let i = rng.below(g.len().min(65_536) as u64) as usize;
                        g[i] ^= 1 << rng.below(8);
                    }
                    (g, "bits flipped".into())
                }
                2 => (Vec::new(), "empty".into()),
                _ => (
                    (0..rng.below(4096)).map(|_| rng.below(256) as u8).collect(),
                    "random bytes".into(),
                ),
            };
            std::fs::write(&path, bytes)?;
            how
        }
        _ => {
            let text = std::fs::read(base.join(target)).unwrap_or_default();
            std::fs::write(&path, mutated_json(rng, &text))?;
            "mutated".to_string()
        }
    };
    Ok(format!("{target} {how}"))
}

/// `cases` mutated copies of the model directory `base`, read in-process and offered to the
/// server on `channel` by LoadModel; files are written under `work`.
pub async fn run_model_dirs(
    channel: Channel,
    seed: u64,
    cases: u64,
    base: &Path,
    work: &Path,
) -> FilesReport {
    let mut rng = Rng::new(seed ^ 0x006d_6f64_656c);
    let mut report = FilesReport::default();
    let mut admin = pb::model_admin_client::ModelAdminClient::new(channel.clone());
    let mut scorer = pb::emotion_analysis_client::EmotionAnalysisClient::new(channel);
    let live = match admin.get_model(pb::GetModelRequest {}).await {
        Ok(m) => m.into_inner().version,
        Err(s) => {
            report
                .violations
                .push(format!("GetModel before the run: {s:?}"));
            return report;
        }
    };
    for n in 0..cases {
        let dir: PathBuf = work.join(format!("model-{seed}-{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        let what = match mutated_model_dir(&mut rng, base, &dir) {
            Ok(how) => format!("model dir {n} (seed {seed}): {how}"),
            Err(e) => {
                report
                    .violations
                    .push(format!("writing {}: {e}", dir.display()));
                break;
            }
        };
        report.model_dirs += 1;
        if let Err(p) = std::panic::catch_unwind(|| ModelSpec::load(&dir).map(|_| ())) {
            report.violations.push(format!(
                "{what}: ModelSpec::load panicked: {}",
                panic_message(p)
            ));
        }
        let answer = admin
            .load_model(pb::LoadModelRequest {
                path: dir.display().to_string(),
                skip_quality_gate: true,
            })
            .await;
        match answer {
            Ok(_) => {
                report.models_loaded += 1;
                if let Err(s) = admin.rollback_model(pb::RollbackModelRequest {}).await {
                    report
                        .violations
                        .push(format!("{what}: loaded, then RollbackModel: {s:?}"));
                }
            }
            Err(s) if s.code() == Code::FailedPrecondition && !s.message().trim().is_empty() => {
                report.models_refused += 1
            }
            Err(s) => report
                .violations
                .push(format!("{what}: LoadModel answered {s:?}")),
        }
        match admin.get_model(pb::GetModelRequest {}).await {
            Ok(m) if m.get_ref().version == live => {}
            other => report.violations.push(format!(
                "{what}: the live model is now {other:?}, not {live}"
            )),
        }
        if let Err(s) = scorer
            .score_texts(pb::ScoreTextsRequest {
                texts: vec!["still scoring?".into()],
            })
            .await
        {
            report
                .violations
                .push(format!("{what}: ScoreTexts afterwards: {s:?}"));
        }
        let _ = std::fs::remove_dir_all(&dir);
        if report.violations.len() > 20 {
            break;
        }
    }
    report
}
