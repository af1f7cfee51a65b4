//! The supervisor dashboard in a real headless Chromium, against the real server and model, with
//! auth on: sign-in is required, the alert of the escalating sample call appears within a second
//! of the triggering turn's result, it is acknowledged from the keyboard, and a reload shows it
//! acknowledged; the conversation and the heatmap show the call. Screenshots are kept under
//! `target/test-artifacts/`. Without a browser: the API refuses callers without a token and the
//! SSE feed resumes from `Last-Event-ID`.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::browser::{Browser, http};
use common::{ChildServer, TestServer, config, conversation, repo_path, token, with};
use emotion_service::auth::Role;
use emotion_service::config::AuthMode;
use emotion_service::pb;
use emotion_service::pb::emotion_analysis_client::EmotionAnalysisClient;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_stream::StreamExt;

const ENTER: &str = "\u{E007}";

/// Every visible control has an accessible name and can take keyboard focus, and every visible
/// text has a contrast of at least 4.5:1 (WCAG AA) against its effective background. Returns the
/// problems found.
const ACCESSIBILITY: &str = r#"
const visible = (e) => e.offsetParent !== null && getComputedStyle(e).visibility !== 'hidden';
const problems = [];
for (const c of document.querySelectorAll('button, input, select, a[href]')) {
  if (!visible(c)) continue;
  const name = (c.getAttribute('aria-label') || (c.labels && c.labels[0] && c.labels[0].textContent)
    || c.textContent || c.getAttribute('placeholder') || '').trim();
  if (!name) problems.push('no accessible name: ' + c.outerHTML.slice(0, 80));
  if (c.tabIndex < 0 || c.disabled) problems.push('not focusable: ' + c.outerHTML.slice(0, 80));
}
const rgb = (s) => (s.match(/[\d.]+/g) || []).map(Number);
const lum = ([r, g, b]) => [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
  .reduce((acc, v, i) => acc + v * [0.2126, 0.7152, 0.0722][i], 0);
const background = (e) => {
  for (; e; e = e.parentElement) {
    const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] > 0.9)) return c.slice(0, 3);
  }
  return [255, 255, 255];
};
let checked = 0;
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let n = walker.nextNode(); n; n = walker.nextNode()) {
  const e = n.parentElement;
  if (!n.textContent.trim() || !e || !visible(e) || e.closest('.sr-only')) continue;
  const [a, b] = [lum(rgb(getComputedStyle(e).color)), lum(background(e))];
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  checked++;
  if (ratio < 4.5) problems.push(`contrast ${ratio.toFixed(2)}: "${n.textContent.trim().slice(0, 40)}"`);
}
return { checked, problems };
"#;

async fn server() -> TestServer {
    let mut config = config();
    config.auth.mode = AuthMode::On;
    config.auth.tokens = vec![
        token("feeder", Role::Ingest, &[]),
        token("sam", Role::Supervisor, &[]),
        token("globex-lead", Role::Supervisor, &["globex"]),
    ];
    TestServer::start(config).await
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_in_a_real_browser() {
    let server = server().await;
    let web = server.web_addr.port();
    let base = format!("http://{}", server.web_addr);
    let browser = Browser::start().await;
    let artifacts = repo_path("target/test-artifacts");

    // Signed out: the page asks for a token and shows no data; a wrong token is refused.
    browser.goto(&base).await;
    browser
        .wait_for(
            "the sign-in form",
            Duration::from_secs(10),
            "return !document.getElementById('signin').hidden",
            json!([]),
        )
        .await;
    let hidden = browser
        .eval(
            "return [document.getElementById('dashboard').hidden, \
             document.querySelectorAll('.alert').length]",
            json!([]),
        )
        .await;
    assert_eq!(hidden, json!([true, 0]), "no dashboard before signing in");
    browser.type_into("#token", "tok-nobody").await;
    browser.click("#signin-form button[type=submit]").await;
    let error = browser
        .wait_for(
            "the sign-in error",
            Duration::from_secs(5),
            // The page's first status call is refused too ("missing ... token"); under load its
            // answer can land after the click, so wait for the sign-in's own message.
            "const t = document.getElementById('signin-error').textContent; \
             return t.includes('not known') ? t : null",
            json!([]),
        )
        .await;
    assert!(error.as_str().unwrap().contains("not known"), "{error}");
    browser
        .eval("document.getElementById('token').value = ''", json!([]))
        .await;
    browser.type_into("#token", "tok-feeder").await;
    browser.click("#signin-form button[type=submit]").await;
    let error = browser
        .wait_for(
            "the role error",
            Duration::from_secs(5),
            "const t = document.getElementById('signin-error').textContent; \
             return t.includes('role') ? t : null",
            json!([]),
        )
        .await;
    assert!(
        error.as_str().unwrap().contains("has role ingest"),
        "{error}"
    );

    // Signed in as a supervisor: the feed goes live.
    browser
        .eval("document.getElementById('token').value = ''", json!([]))
        .await;
    browser
        .type_into("#token", &format!("tok-sam{ENTER}"))
        .await;
    browser
        .wait_for(
            "the live feed",
            Duration::from_secs(10),
            "return document.body.dataset.feed === 'live'",
            json!([]),
        )
        .await;
    let health = browser
        .wait_for(
            "the health indicator",
            Duration::from_secs(10),
            "const h = document.getElementById('health'); \
             return h.dataset.health === 'SERVING' ? h.textContent : null",
            json!([]),
        )
        .await;
    assert!(
        health.as_str().unwrap().contains("goemotions-minilm-l6@"),
        "model version shown: {health}"
    );
    let who = browser
        .eval(
            "return document.getElementById('who').textContent",
            json!([]),
        )
        .await;
    assert!(who.as_str().unwrap().starts_with("sam"), "{who}");

    // Stream the escalating call turn by turn; time the alert from the triggering turn's result.
    let conversation_id = "web-escalating-1";
    let turns = conversation("examples/escalating-call.jsonl", conversation_id);
    let customer_turns = turns
        .iter()
        .filter(|t| t.speaker == pb::Speaker::Customer as i32)
        .count();
    let mut client = EmotionAnalysisClient::new(server.channel().await);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut results = client
        .stream_turns(with(
            "tok-feeder",
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .await
        .unwrap()
        .into_inner();
    let selector = format!(".alert[data-conversation=\"{conversation_id}\"]");
    let mut alert = None;
    for turn in turns.clone() {
        tx.send(turn).await.unwrap();
        let result = results.next().await.unwrap().unwrap();
        assert!(result.error.is_none(), "{result:?}");
        if alert.is_some() || result.alert_level == pb::Severity::None as i32 {
            continue;
        }
        let (result_at, result_ms) = (Instant::now(), now_ms());
        let found = browser
            .wait_for(
                "the alert on the page",
                Duration::from_secs(5),
                "const a = document.querySelector(arguments[0]); \
                 return a ? [a.dataset.alertId, Number(a.dataset.receivedAt), a.dataset.severity] : null",
                json!([selector]),
            )
            .await;
        let seen_after = result_at.elapsed();
        let rendered_after_ms = found[1].as_i64().unwrap() - result_ms as i64;
        println!(
            "turn {}: alert {} on the page {seen_after:?} after the result (rendered {rendered_after_ms} ms after it)",
            result.turn_id, found[0]
        );
        assert!(
            seen_after < Duration::from_secs(1),
            "the alert took {seen_after:?} to appear"
        );
        alert = Some(found[0].as_str().unwrap().to_string());
    }
    drop(tx);
    let alert_id = alert.expect("the escalating call raises an alert");
    let card = format!(".alert[data-alert-id=\"{alert_id}\"]");

    // Acknowledge from the keyboard: a note, then Enter in the note field submits.
    browser
        .type_into(
            &format!("{card} .ack input"),
            &format!("calling the customer back{ENTER}"),
        )
        .await;
    let status = browser
        .wait_for(
            "the acknowledged state",
            Duration::from_secs(5),
            "const a = document.querySelector(arguments[0]); \
             return a && a.dataset.acknowledged === 'true' ? a.querySelector('.status').textContent : null",
            json!([card]),
        )
        .await;
    assert!(
        status.as_str().unwrap().contains("Acknowledged by sam"),
        "{status}"
    );
    assert!(
        status
            .as_str()
            .unwrap()
            .contains("calling the customer back")
    );

    // The log recorded it, with the token's name.
    let mut feed = pb::alert_feed_client::AlertFeedClient::new(server.channel().await);
    let history = feed
        .list_alerts(with(
            "tok-sam",
            pb::ListAlertsRequest {
                alert_id: alert_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let ack = history
        .alerts
        .iter()
        .find(|a| a.state == pb::AlertState::Acknowledged as i32)
        .expect("an ACKNOWLEDGED event in the log");
    assert_eq!(ack.acknowledged_by, "sam");

    // The conversation ranks with its trajectory; a click opens its turns.
    let row = format!("#conv-rows tr[data-conversation-id=\"{conversation_id}\"]");
    let points = browser
        .wait_for(
            "the conversation row with its trajectory",
            Duration::from_secs(5),
            "const r = document.querySelector(arguments[0]); \
             const p = r && r.querySelector('svg polyline'); \
             return p ? p.getAttribute('points').split(' ').length : null",
            json!([row]),
        )
        .await;
    assert_eq!(points.as_u64().unwrap() as usize, customer_turns);
    browser.click(&format!("{row} button")).await;
    let rows = browser
        .wait_for(
            "the conversation's turns",
            Duration::from_secs(5),
            "const rows = document.querySelectorAll('#conv-dialog[open] #turns tbody tr'); \
             return rows.length ? [...rows].map(r => r.textContent) : null",
            json!([]),
        )
        .await;
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), turns.len(), "every turn listed");
    assert!(
        rows.iter()
            .any(|r| r.as_str().unwrap().contains("I am so angry right now")),
        "turn text shown under the masked policy"
    );
    browser
        .screenshot(&artifacts.join("conversation.png"))
        .await;
    browser.click("#conv-close").await;

    // The heatmap has the call's customer turns in the billing queue, with a dominant emotion.
    let cells = browser
        .wait_for(
            "heatmap cells",
            Duration::from_secs(15),
            "const cs = [...document.querySelectorAll('#heat-grid td.has[data-queue=\"billing\"]')]; \
             return cs.length ? cs.map(c => [c.dataset.turns, c.dataset.dominant, c.title]) : null",
            json!([]),
        )
        .await;
    let cells = cells.as_array().unwrap();
    let counted: usize = cells
        .iter()
        .map(|c| c[0].as_str().unwrap().parse::<usize>().unwrap())
        .sum();
    assert_eq!(counted, customer_turns, "{cells:?}");
    assert!(cells[0][2].as_str().unwrap().contains("dominant"));
    browser.screenshot(&artifacts.join("dashboard.png")).await;

    // A Chinese call: its alert card shows the Chinese detail, suggestion and excerpts.
    let zh_id = "web-escalating-zh";
    let mut zh_turns = conversation("examples/escalating-call-zh.jsonl", zh_id);
    zh_turns.truncate(12); // up to the escalation to CRITICAL: the card holds a suggestion
    for t in &mut zh_turns {
        let c = t.context.get_or_insert_with(Default::default);
        c.tenant = "acme".into();
        c.queue = "zh-billing".into();
    }
    // The card quotes the turns around the alert; which turn crosses the threshold is the
    // model's to say, so any of the call's turns (their first 8 characters) will do.
    let zh_openings: Vec<String> = zh_turns
        .iter()
        .map(|t| String::from_utf8_lossy(&t.text).chars().take(8).collect())
        .collect();
    let mut zh_client = EmotionAnalysisClient::new(server.channel().await);
    let zh_results: Vec<_> = zh_client
        .stream_turns(with("tok-feeder", tokio_stream::iter(zh_turns)))
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert!(
        zh_results
            .iter()
            .all(|r| r.as_ref().is_ok_and(|r| r.error.is_none()))
    );
    let zh_card = browser
        .wait_for(
            "the Chinese alert card",
            Duration::from_secs(10),
            "const a = document.querySelector(arguments[0]); return a ? a.textContent : null",
            json!([format!(".alert[data-conversation=\"{zh_id}\"]")]),
        )
        .await;
    let zh_card = zh_card.as_str().unwrap();
    assert!(zh_card.contains("客户的滚动情绪分"), "{zh_card}");
    assert!(
        zh_card.contains("先真诚道歉"),
        "suggestion in Chinese: {zh_card}"
    );
    assert!(
        zh_openings.iter().any(|t| zh_card.contains(t.as_str())),
        "a Chinese excerpt: {zh_card}"
    );
    let cjk_font = browser
        .eval(
            "return document.fonts.check('16px \"Noto Sans CJK SC\"', '客户')",
            json!([]),
        )
        .await;
    if std::path::Path::new("/usr/share/fonts/opentype/noto").exists() {
        assert_eq!(
            cjk_font,
            json!(true),
            "fonts-noto-cjk is installed: Chinese renders in it"
        );
    } else {
        println!("no CJK font installed (Debian fonts-noto-cjk): Chinese may render as boxes");
    }
    browser.screenshot(&artifacts.join("alert-zh.png")).await;

    // Accessibility of the populated page: names, focus, contrast.
    let report = browser.eval(ACCESSIBILITY, json!([])).await;
    assert!(report["checked"].as_u64().unwrap() > 30, "{report}");
    assert_eq!(report["problems"], json!([]), "{report}");

    // A reload (the cookie keeps the session) shows the alert acknowledged, from the log.
    browser.refresh().await;
    let status = browser
        .wait_for(
            "the acknowledged alert after a reload",
            Duration::from_secs(10),
            "const a = document.querySelector(arguments[0]); \
             return a && document.body.dataset.feed === 'live' && a.dataset.acknowledged === 'true' \
               ? a.querySelector('.status').textContent : null",
            json!([card]),
        )
        .await;
    assert!(status.as_str().unwrap().contains("Acknowledged by sam"));
    browser
        .screenshot(&artifacts.join("dashboard-reloaded.png"))
        .await;

    // The interface in Chinese (`?lang=zh`, or a browser whose first language is Chinese):
    // the page's own words, severities and alert kinds, around what the service wrote.
    browser.goto(&format!("{base}/?lang=zh")).await;
    let zh = browser
        .wait_for(
            "the dashboard in Chinese",
            Duration::from_secs(10),
            "const a = document.querySelector(arguments[0]), z = document.querySelector(arguments[1]);              if (!a || !z || document.body.dataset.feed !== 'live') return null;              return {lang: document.documentElement.lang, h1: document.querySelector('h1').textContent,                alerts: document.querySelector('#alerts-title').textContent,                switch: document.getElementById('language').textContent,                severity: z.querySelector('.sev').textContent, kind: z.querySelector('.alert-head strong').textContent,                status: a.querySelector('.status').textContent, feed: document.getElementById('feed-state').textContent,                heading: [...document.querySelectorAll('#conversations th')].map(t => t.textContent).join('|')}",
            json!([card.clone(), format!(".alert[data-conversation=\"{zh_id}\"]")]),
        )
        .await;
    eprintln!("{zh}");
    assert_eq!(zh["lang"], "zh-CN");
    assert_eq!(zh["h1"], "班长看板");
    assert!(
        zh["alerts"].as_str().unwrap().starts_with("实时告警"),
        "{zh}"
    );
    assert_eq!(zh["switch"], "English");
    assert!(
        ["严重", "紧急"].contains(&zh["severity"].as_str().unwrap()),
        "{zh}"
    );
    assert!(
        !zh["kind"].as_str().unwrap().is_ascii(),
        "the alert kind in Chinese: {zh}"
    );
    assert!(zh["status"].as_str().unwrap().contains("sam 于"), "{zh}");
    assert_eq!(zh["feed"], "推送：实时");
    assert!(
        zh["heading"]
            .as_str()
            .unwrap()
            .starts_with("会话|队列|滚动分"),
        "{zh}"
    );
    let report = browser.eval(ACCESSIBILITY, json!([])).await;
    assert_eq!(report["problems"], json!([]), "in Chinese: {report}");
    browser
        .screenshot(&artifacts.join("dashboard-zh.png"))
        .await;
    // The switch goes back to English, and is remembered.
    browser.click("#language").await;
    browser
        .wait_for(
            "the dashboard in English again",
            Duration::from_secs(10),
            "return document.querySelector('h1').textContent === 'Supervisor dashboard'                && document.body.dataset.feed === 'live'",
            json!([]),
        )
        .await;
    println!("screenshots in {}", artifacts.display());

    // Signing out ends the session: the page asks for a token again, the API refuses.
    browser.click("#sign-out").await;
    browser
        .wait_for(
            "the sign-in form after signing out",
            Duration::from_secs(5),
            "return !document.getElementById('signin').hidden",
            json!([]),
        )
        .await;
    let (status, _) = http(web, "GET", "/api/status", &[], None).await.unwrap();
    assert_eq!(status, 401);
    browser.quit().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_resumes_the_feed_after_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let env = [(
        "EMOTION__ALERT_LOG__PATH",
        dir.path().join("alerts.sqlite3").display().to_string(),
    )];
    let free = common::free_addr;
    let (addr, web) = (free(), free());
    let server = ChildServer::spawn_with_web(addr, Some(web), &env).await;
    let browser = Browser::start().await;
    browser.goto(&format!("http://{web}")).await;
    let live = "return document.body.dataset.feed === 'live'";
    browser
        .wait_for("the live feed", Duration::from_secs(10), live, json!([]))
        .await;
    let cards =
        "return [...document.querySelectorAll('.alert')].map(a => a.dataset.conversation).sort()";
    let raise = |id: &'static str| async move {
        let mut client = EmotionAnalysisClient::new(
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
        let results = common::stream_all(&mut client, common::angry_call(id)).await;
        assert!(
            results
                .iter()
                .any(|r| r.alert_level != pb::Severity::None as i32)
        );
    };
    raise("before-restart").await;
    browser
        .wait_for(
            "the first alert",
            Duration::from_secs(5),
            "return document.querySelectorAll('.alert').length === 1",
            json!([]),
        )
        .await;

    // kill -9: the page notices, keeps what it has, and retries.
    server.kill_9();
    browser
        .wait_for(
            "the feed to notice",
            Duration::from_secs(10),
            "return document.body.dataset.feed !== 'live'",
            json!([]),
        )
        .await;
    let server = ChildServer::spawn_with_web(addr, Some(web), &env).await;
    raise("after-restart").await;
    browser
        .wait_for("the feed back", Duration::from_secs(15), live, json!([]))
        .await;
    let shown = browser
        .wait_for(
            "the alert raised across the reconnect",
            Duration::from_secs(10),
            &format!("const c = (() => {{ {cards} }})(); return c.length === 2 ? c : null"),
            json!([]),
        )
        .await;
    assert_eq!(shown, json!(["after-restart", "before-restart"]));
    let sequences = browser
        .eval(
            "return [...document.querySelectorAll('.alert')].map(a => Number(a.dataset.sequence)).sort()",
            json!([]),
        )
        .await;
    assert_eq!(sequences, json!([1, 2]), "one event each, in log order");
    browser.quit().await;
    drop(server);
}

/// Reads SSE `alert` events from `path` until `n` arrived: (id, data JSON) each.
async fn sse_events(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> Vec<(u64, Value)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut lines = BufReader::new(stream).lines();
    let status = lines.next_line().await.unwrap().unwrap();
    assert!(status.contains(" 200 "), "{status}");
    let mut events = Vec::new();
    let (mut id, mut kind) = (None, None);
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // Chunked transfer: size lines come between events; the SSE fields are what count.
            if let Some(v) = line.strip_prefix("id: ") {
                id = v.parse::<u64>().ok();
            } else if let Some(v) = line.strip_prefix("event: ") {
                kind = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("data: ") {
                if kind.as_deref() == Some("alert") {
                    events.push((id.unwrap(), serde_json::from_str(v).unwrap()));
                    if events.len() == n {
                        return;
                    }
                }
                assert_ne!(kind.as_deref(), Some("reset"), "unexpected reset: {v}");
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("SSE events within 10 s");
    events
}

#[tokio::test]
async fn the_api_needs_a_token_and_the_feed_resumes_from_last_event_id() {
    let server = server().await;
    let web = server.web_addr.port();
    let sam = [("Authorization", "Bearer tok-sam")];

    // No token, a wrong one, the wrong role: refused with a reason; the page shell itself loads.
    for path in [
        "/api/status",
        "/api/alerts",
        "/api/alerts/stream",
        "/api/conversations",
        "/api/heatmap",
    ] {
        let (status, body) = http(web, "GET", path, &[], None).await.unwrap();
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body.contains("missing"), "{body}");
    }
    let (status, _) = http(
        web,
        "GET",
        "/api/status",
        &[("Authorization", "Bearer tok-x")],
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 401);
    let (status, body) = http(
        web,
        "GET",
        "/api/alerts",
        &[("Authorization", "Bearer tok-feeder")],
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        (status, body.contains("has role ingest")),
        (403, true),
        "{body}"
    );
    let (status, body) = http(
        web,
        "POST",
        "/api/session",
        &[],
        Some(r#"{"token":"tok-x"}"#),
    )
    .await
    .unwrap();
    assert_eq!(status, 401, "{body}");
    let (status, page) = http(web, "GET", "/", &[], None).await.unwrap();
    assert_eq!(status, 200);
    assert!(
        page.contains("/app.js") && !page.contains("http"),
        "no external assets"
    );

    // Bad input names the field.
    let (status, body) = http(web, "GET", "/api/alerts?min_severity=loud", &sam, None)
        .await
        .unwrap();
    assert_eq!(
        (status, body.contains("min_severity")),
        (400, true),
        "{body}"
    );
    let (status, body) = http(web, "GET", "/api/heatmap?hours=100", &sam, None)
        .await
        .unwrap();
    assert_eq!((status, body.contains("hours")), (400, true), "{body}");

    // Three calls, each raising alerts; the feed replays exactly what follows Last-Event-ID.
    let mut client = EmotionAnalysisClient::new(server.channel().await);
    for (i, tenant) in ["acme", "globex", "acme"].iter().enumerate() {
        let mut turns = common::angry_call(&format!("sse-{i}"));
        for t in &mut turns {
            t.context = Some(
                pb::Context {
                    tenant: tenant.to_string(),
                    queue: "billing".into(),
                    ..Default::default()
                }
                .into(),
            );
        }
        let results = client
            .stream_turns(with("tok-feeder", tokio_stream::iter(turns)))
            .await
            .unwrap()
            .into_inner();
        let results: Vec<_> = results.map(|r| r.unwrap()).collect().await;
        assert!(results.iter().all(|r| r.error.is_none()));
    }
    let (_, body) = http(web, "GET", "/api/alerts", &sam, None).await.unwrap();
    let history: Value = serde_json::from_str(&body).unwrap();
    let last = history["last_sequence"].as_u64().unwrap();
    assert!(last >= 3, "{body}");
    let all = sse_events(web, "/api/alerts/stream?after=0", &sam, last as usize).await;
    let ids: Vec<u64> = all.iter().map(|e| e.0).collect();
    assert_eq!(ids, (1..=last).collect::<Vec<_>>(), "everything, in order");
    let resumed = sse_events(
        web,
        "/api/alerts/stream?after=0",
        &[sam[0], ("Last-Event-ID", "1")],
        last as usize - 1,
    )
    .await;
    assert_eq!(resumed[0].0, 2, "Last-Event-ID wins over ?after");
    assert_eq!(resumed.last().unwrap().0, last);

    // A supervisor limited to globex sees only globex, and may not ask for acme.
    let globex = [("Authorization", "Bearer tok-globex-lead")];
    let only = sse_events(web, "/api/alerts/stream?after=0", &globex, 1).await;
    assert_eq!(only[0].1["tenant"], "globex");
    let (status, _) = http(web, "GET", "/api/alerts?tenant=acme", &globex, None)
        .await
        .unwrap();
    assert_eq!(status, 403);
    let (_, body) = http(web, "GET", "/api/conversations", &globex, None)
        .await
        .unwrap();
    let listed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed["matched"], 1, "{body}");
    let acme_alert = all.iter().find(|e| e.1["tenant"] == "acme").unwrap();
    let ack_path = format!(
        "/api/alerts/{}/ack",
        acme_alert.1["alert_id"].as_str().unwrap()
    );
    let (status, _) = http(web, "POST", &ack_path, &globex, Some("{}"))
        .await
        .unwrap();
    assert_eq!(status, 404, "another tenant's alert is not found");

    // A sequence beyond the log (a replaced log file) gets a reset event, not an error.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", web))
        .await
        .unwrap();
    stream
        .write_all(
            format!("GET /api/alerts/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-sam\r\nLast-Event-ID: {}\r\nConnection: close\r\n\r\n", last + 100)
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut text = String::new();
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut text),
    )
    .await
    .expect("the reset stream ends")
    .unwrap();
    assert!(
        text.contains("event: reset") && text.contains("beyond"),
        "{text}"
    );
    server.stop().await.unwrap();
}
