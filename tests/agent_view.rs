//! The agent view (`/agent/{id}`) in a real headless Chromium, against the real server and
//! models, with auth on: an ingest token is refused at sign-in; the agent signs in; a bot
//! conversation that turns angry and is handed to them shows its brief (what they asked and how
//! often, the approach for anger, the first sentence to say), the mood turning and recovering,
//! and the same for a Chinese conversation, in Chinese; another agent's view is refused.
//! A screenshot is kept under `target/test-artifacts/`.

mod common;

use std::time::Duration;

use common::browser::Browser;
use common::{TestServer, config, conversation, repo_path, token, with};
use emotion_service::auth::Role;
use emotion_service::config::AuthMode;
use emotion_service::pb;
use emotion_service::pb::emotion_analysis_client::EmotionAnalysisClient;
use serde_json::json;
use tokio_stream::StreamExt;

const ENTER: &str = "\u{E007}";

/// The turns of a sample hand-off, handed to `agent`.
fn handed_to(file: &str, id: &str, agent: &str) -> Vec<pb::TurnRequest> {
    conversation(file, id)
        .into_iter()
        .map(|mut t| {
            if let Some(c) = t.context.as_mut().filter(|c| c.agent_id != b"bot") {
                c.agent_id = agent.as_bytes().to_vec();
            }
            t
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_agent_view_in_a_real_browser() {
    let mut c = config();
    c.auth.mode = AuthMode::On;
    let mut sam = token("sam", Role::Agent, &[]);
    sam.agent_id = "agent-sam".into();
    c.auth.tokens = vec![token("feeder", Role::Ingest, &[]), sam];
    let mut server = TestServer::start(c).await;
    server.ready().await;
    let base = format!("http://{}", server.web_addr);
    let browser = Browser::start().await;

    browser.goto(&format!("{base}/agent/agent-sam")).await;
    browser
        .wait_for(
            "the sign-in form",
            Duration::from_secs(10),
            "return !document.getElementById('signin').hidden",
            json!([]),
        )
        .await;
    browser
        .type_into("#token", &format!("tok-feeder{ENTER}"))
        .await;
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
    browser
        .eval("document.getElementById('token').value = ''", json!([]))
        .await;
    browser
        .type_into("#token", &format!("tok-sam{ENTER}"))
        .await;
    browser
        .wait_for(
            "the live guidance feed",
            Duration::from_secs(10),
            "return document.body.dataset.feed === 'live'",
            json!([]),
        )
        .await;

    let mut client = EmotionAnalysisClient::new(server.channel().await);
    let send = |turns: Vec<pb::TurnRequest>| with("tok-feeder", tokio_stream::iter(turns));
    for (file, id) in [
        ("examples/bot-handoff.jsonl", "web-handoff-en"),
        ("examples/bot-handoff-zh.jsonl", "web-handoff-zh"),
    ] {
        let results: Vec<pb::TurnResult> = client
            .stream_turns(send(handed_to(file, id, "agent-sam")))
            .await
            .unwrap()
            .into_inner()
            .map(|r| r.unwrap())
            .collect()
            .await;
        assert!(results.iter().all(|r| r.error.is_none()), "{results:?}");
    }

    // Each conversation's card: the brief, then the repeated question, and the mood recovered.
    let card = |id: &str| format!("[data-conversation=\"{id}\"]");
    for (id, asked, approach, lang) in [
        (
            "web-handoff-en",
            "Where is my order?",
            "Apologise first",
            "en",
        ),
        (
            "web-handoff-zh",
            "我的快递什么时候到？",
            "先真诚道歉",
            "zh-CN",
        ),
    ] {
        let seen = browser
            .wait_for(
                "the card, recovered",
                Duration::from_secs(10),
                "const c = document.querySelector(arguments[0]); \
                 if (!c || c.dataset.mood !== 'recovered') return null; \
                 const req = c.querySelector('.requests li'); \
                 return [c.getAttribute('lang'), c.querySelector('.approach').textContent, \
                         req.textContent, req.dataset.times, \
                         c.querySelector('.opening q').textContent, \
                         [...c.querySelectorAll('.events [data-kind]')].map(e => e.dataset.kind), \
                         c.querySelector('[data-kind=repeated_question] .evidence').textContent, \
                         c.querySelector('.drops [data-turn=\"6\"]') !== null]",
                json!([card(id)]),
            )
            .await;
        println!("{id}: {seen}");
        assert_eq!(seen[0], lang);
        assert!(seen[1].as_str().unwrap().contains(approach), "{seen}");
        assert!(seen[2].as_str().unwrap().contains(asked), "{seen}");
        assert_eq!(seen[3], "2", "asked twice before the hand-off");
        assert!(!seen[4].as_str().unwrap().is_empty(), "an opening line");
        assert_eq!(
            seen[5],
            json!(["mood_turned", "repeated_question", "mood_recovered"])
        );
        assert!(seen[6].as_str().unwrap().contains(asked), "{seen}");
        assert_eq!(seen[7], true, "the angry turn is where the mood dropped");
    }
    let artifacts = repo_path("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    browser.screenshot(&artifacts.join("agent-view.png")).await;

    // A reload rebuilds the same cards from the log.
    browser.refresh().await;
    let cards = browser
        .wait_for(
            "the cards after a reload",
            Duration::from_secs(10),
            "const n = document.querySelectorAll('[data-conversation]').length; \
             return n === 2 ? n : null",
            json!([]),
        )
        .await;
    assert_eq!(cards, 2);

    // The page in Chinese (`?lang=zh`, or a browser whose first language is Chinese): its own
    // labels in Chinese around what the service wrote in the conversation's language.
    browser
        .goto(&format!("{base}/agent/agent-sam?lang=zh"))
        .await;
    let zh = browser
        .wait_for(
            "the cards in Chinese",
            Duration::from_secs(10),
            "const c = document.querySelector('[data-conversation=\"web-handoff-zh\"]');              if (!c) return null;              return [document.documentElement.lang,                      document.getElementById('guidance-title-text').textContent,                      c.querySelector('h3 .mood').textContent,                      c.querySelector('.score strong').textContent,                      c.querySelector('.approach strong').textContent,                      c.querySelector('.events [data-kind=mood_recovered] strong').textContent,                      document.querySelector('[data-conversation=\"web-handoff-en\"] .approach').textContent, \
                     c.querySelector('.drops [data-turn=\"6\"]').textContent]",
            json!([]),
        )
        .await;
    println!("in Chinese: {zh}");
    assert_eq!(zh[0], "zh-CN");
    assert_eq!(zh[1], "您的会话");
    assert_eq!(zh[2], " 情绪：好转");
    assert!(zh[3].as_str().unwrap().starts_with("客户情绪分"), "{zh}");
    assert_eq!(zh[4], "应对方式：");
    assert_eq!(zh[5], "情绪好转");
    // The English conversation's advice stays English.
    assert!(zh[6].as_str().unwrap().contains("Apologise first"), "{zh}");
    // Turns and the model's emotion labels in Chinese too.
    let drop = zh[7].as_str().unwrap();
    assert!(
        drop.starts_with("第 6 轮") && drop.contains("愤怒"),
        "{drop}"
    );
    browser
        .screenshot(&artifacts.join("agent-view-zh.png"))
        .await;

    // Another agent's view is refused, naming why.
    browser.goto(&format!("{base}/agent/agent-wang")).await;
    let refused = browser
        .wait_for(
            "the refusal",
            Duration::from_secs(10),
            "const t = document.getElementById('assist-error').textContent; \
             return t ? t : null",
            json!([]),
        )
        .await;
    assert!(
        refused.as_str().unwrap().contains("may not read"),
        "{refused}"
    );
    let none = browser
        .eval(
            "return document.querySelectorAll('[data-conversation]').length",
            json!([]),
        )
        .await;
    assert_eq!(none, 0);
    browser.quit().await;
    server.stop().await.unwrap();
}
