//! Agent assist over the real server and the shipped models: a bot conversation that turns
//! angry and is handed to an agent gives the agent the brief (evidence, requests, the approach
//! for the customer's mood) and the mood's turn and recovery, in the conversation's language;
//! supervisors never see guidance; agents see only their own; strain across an agent's
//! conversations suggests a break.

mod common;

use common::{TestServer, config, conversation, stream_all, token, with};
use emotion_service::auth::Role;
use emotion_service::config::AuthMode;
use emotion_service::pb;

/// The agent's guidance from the start of the log until an event of `last` kind (or 15 s).
async fn guidance_until(server: &TestServer, agent_id: &str, last: &str) -> Vec<pb::Alert> {
    common::guidance_after(server, agent_id, 0, last).await
}

fn kinds(events: &[pb::Alert]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

struct Expect {
    file: &'static str,
    agent: &'static str,
    /// The start of the customer's first request (asked again later).
    asked: &'static str,
    phrase: &'static str,
    approach: &'static str,
    /// Words only the conversation's language has, in the guidance's details.
    language_word: &'static str,
}

async fn hand_off(server: &TestServer, x: &Expect) {
    let mut client = server.client().await;
    let turns = conversation(x.file, x.file);
    let results = stream_all(&mut client, turns).await;
    assert!(results.iter().all(|r| r.error.is_none()), "{results:?}");
    let events = guidance_until(server, x.agent, "mood_recovered").await;
    let k = kinds(&events);
    eprintln!("{}: {k:?}", x.file);
    for e in &events {
        eprintln!(
            "  {} turn {} {:?}: {} | {}",
            e.kind,
            e.turn_id,
            e.state(),
            e.detail,
            e.suggestion
        );
    }
    assert_eq!(
        k.first(),
        Some(&"handoff_brief"),
        "the brief comes first: {k:?}"
    );
    assert!(events.iter().all(|e| e.audience() == pb::Audience::Agent
        && e.context.as_ref().unwrap().agent_id == x.agent
        && e.conversation_id == x.file));
    // Nothing was told while the bot served: the brief is at the agent's first turn (7).
    assert_eq!(events[0].turn_id, 7);
    let brief = events[0]
        .brief
        .as_ref()
        .expect("the brief rides on its event");
    eprintln!("  brief: {brief:#?}");
    assert_eq!(brief.bot_turns, 3);
    assert_eq!(brief.customer_turns, 3);
    assert!(brief.customer_rolling_valence < -0.2, "{brief:?}");
    assert_eq!(brief.trend, "falling");
    let asked = &brief.requests[0];
    assert!(asked.excerpt.starts_with(x.asked), "{asked:?}");
    assert_eq!(
        (asked.times, asked.first_turn_id, asked.last_turn_id),
        (2, 2, 4)
    );
    assert_eq!(brief.escalation_phrases, [x.phrase]);
    assert!(
        brief
            .mood_drops
            .iter()
            .any(|d| d.turn_id == 6 && d.valence < -0.3),
        "the angry turn is evidence: {:?}",
        brief.mood_drops
    );
    assert_eq!(brief.approach, x.approach, "the approach for anger");
    assert!(!brief.opening_line.is_empty());
    assert_eq!(events[0].suggestion, x.approach);

    // The mood turned before the agent came: they hear it right after the brief.
    assert_eq!(k.get(1), Some(&"mood_turned"), "{k:?}");
    let turned = &events[1];
    assert!(turned.detail.contains(x.language_word), "{}", turned.detail);
    // Turn 8 asks the first question a third time.
    let repeated = events
        .iter()
        .find(|e| e.kind == "repeated_question")
        .expect("the repeated question is pointed out");
    assert_eq!(repeated.turn_id, 8);
    let evidence: Vec<u64> = repeated.evidence.iter().map(|e| e.turn_id).collect();
    assert_eq!(evidence, [2, 8], "the first ask and this one");
    assert!(repeated.evidence[0].excerpt.starts_with(x.asked));
    // The thanks at turn 10 recovers the mood, on the same alert id.
    let recovered = events.last().unwrap();
    assert_eq!(recovered.kind, "mood_recovered");
    assert_eq!(recovered.turn_id, 10);
    assert_eq!(recovered.alert_id, turned.alert_id);
    assert_eq!(recovered.state(), pb::AlertState::Resolved);
    assert!(!recovered.suggestion.is_empty());

    // GetHandoffBrief answers from the live state (now recovered, rising).
    let now = server
        .assist()
        .await
        .get_handoff_brief(pb::GetHandoffBriefRequest {
            conversation_id: x.file.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.customer_turns, 5);
    assert_eq!(now.requests[0].times, 3);
    assert!(now.customer_rolling_valence > brief.customer_rolling_valence);
}

#[tokio::test]
async fn a_bot_conversation_handed_to_an_agent_briefs_them_in_its_language() {
    let mut server = TestServer::start(config()).await;
    server.ready().await;
    hand_off(
        &server,
        &Expect {
            file: "examples/bot-handoff.jsonl",
            agent: "agent-sam",
            asked: "Where is my order?",
            phrase: "speak to a human",
            approach: "Apologise first, then explain what happened and what you will do.",
            language_word: "mood",
        },
    )
    .await;
    hand_off(
        &server,
        &Expect {
            file: "examples/bot-handoff-zh.jsonl",
            agent: "agent-wang",
            asked: "我的快递什么时候到",
            phrase: "转人工",
            approach: "先真诚道歉，再说明发生了什么、接下来你会怎么处理。",
            language_word: "情绪",
        },
    )
    .await;
    // Supervisors see none of it: every event of AlertFeed is theirs, and a supervisor resuming
    // from the start gets exactly those, in order; every number the log gave is someone's.
    let history = server
        .alerts()
        .await
        .list_alerts(pb::ListAlertsRequest {
            page_size: 1_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .alerts;
    assert!(!history.is_empty(), "the angry turns alerted supervisors");
    for a in &history {
        assert_eq!(a.audience(), pb::Audience::Supervisor, "{a:?}");
        assert!(
            [
                "rolling_valence",
                "escalation_request",
                "repetition",
                "sustained_negativity",
                "agent_strain"
            ]
            .contains(&a.kind.as_str()),
            "{}",
            a.kind
        );
    }
    let last = history.first().map_or(0, |a| a.sequence);
    let mut resumed = server.feed(Some(0)).await;
    let mut supervisors = Vec::new();
    while supervisors.last() != Some(&last) {
        supervisors.push(common::next_alert(&mut resumed).await.sequence);
    }
    let listed: Vec<u64> = history.iter().rev().map(|a| a.sequence).collect();
    assert_eq!(supervisors, listed);
    let mut every: Vec<u64> = supervisors;
    for agent in ["agent-sam", "agent-wang"] {
        every.extend(
            guidance_until(&server, agent, "mood_recovered")
                .await
                .iter()
                .map(|e| e.sequence),
        );
    }
    every.sort_unstable();
    let top = *every.last().unwrap();
    assert_eq!(
        every,
        (1..=top).collect::<Vec<_>>(),
        "no number lost, none twice"
    );
    let missing = server
        .assist()
        .await
        .get_handoff_brief(pb::GetHandoffBriefRequest {
            conversation_id: "nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_handoff_call_briefs_the_agent_at_once_and_a_transfer_briefs_the_next() {
    let mut server = TestServer::start(config()).await;
    server.ready().await;
    let id = "explicit-handoff";
    let mut turns = conversation("examples/bot-handoff.jsonl", id);
    let later = turns.split_off(6); // the bot served turns 1-6
    let mut client = server.client().await;
    let results = stream_all(&mut client, turns).await;
    assert!(results.iter().all(|r| r.error.is_none()), "{results:?}");
    let mut assist = server.assist().await;
    let handoff = |agent: &str| pb::HandoffRequest {
        conversation_id: id.into(),
        agent_id: agent.into(),
    };

    // The platform routes the conversation to agent-kim before she has said a word.
    let brief = assist
        .handoff(handoff("agent-kim"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((brief.bot_turns, brief.customer_turns), (3, 3));
    assert_eq!(brief.context.as_ref().unwrap().agent_id, "agent-kim");
    assert_eq!(brief.escalation_phrases, ["speak to a human"]);
    assert_eq!(
        brief.approach,
        "Apologise first, then explain what happened and what you will do."
    );
    let kim = common::guidance_after(&server, "agent-kim", 0, "mood_turned").await;
    assert_eq!(kinds(&kim), ["handoff_brief", "mood_turned"], "{kim:#?}");
    assert_eq!(
        kim[0].turn_id, 6,
        "the brief is at the hand-off, not a turn"
    );
    assert!(
        kim[0].detail.contains("after 3 bot turns"),
        "{}",
        kim[0].detail
    );
    assert_eq!(kim[0].brief.as_ref().unwrap().requests[0].times, 2);
    assert!(kim.iter().all(|e| e.conversation_id == id));

    // A retried call sends nothing again; a transfer to agent-lee briefs him, and he hears of
    // the mood that turned before him (the same alert, to be resolved on his stream). Nothing
    // else is logged in between, so his events follow hers directly.
    let again = assist
        .handoff(handoff("agent-kim"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.customer_turns, 3);
    let last_kim = kim.last().unwrap().sequence;
    assist.handoff(handoff("agent-lee")).await.unwrap();
    let lee = common::guidance_after(&server, "agent-lee", 0, "mood_turned").await;
    assert_eq!(kinds(&lee), ["handoff_brief", "mood_turned"], "{lee:#?}");
    assert_eq!(
        [lee[0].sequence, lee[1].sequence],
        [last_kim + 1, last_kim + 2],
        "no second brief for agent-kim"
    );
    assert!(lee[0].detail.contains("another agent"), "{}", lee[0].detail);
    assert_eq!(lee[1].alert_id, kim[1].alert_id);

    // Lee's own turns (the platform's context still names the agent it knew): no brief again,
    // the repeated question and the recovery reach him.
    let later: Vec<pb::TurnRequest> = later
        .into_iter()
        .map(|mut t| {
            if let Some(c) = t.context.as_mut() {
                c.agent_id = "agent-lee".into();
            }
            t
        })
        .collect();
    let results = stream_all(&mut client, later).await;
    assert!(results.iter().all(|r| r.error.is_none()), "{results:?}");
    let rest =
        common::guidance_after(&server, "agent-lee", lee[1].sequence, "mood_recovered").await;
    assert_eq!(
        kinds(&rest),
        ["repeated_question", "mood_recovered"],
        "{rest:#?}"
    );
    assert_eq!(rest[1].alert_id, kim[1].alert_id);
    let view = server
        .client()
        .await
        .get_conversation(pb::GetConversationRequest {
            conversation_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(view.context.unwrap().agent_id, "agent-lee");

    // Bad calls: named fields, nothing else touched.
    let err = assist.handoff(handoff("")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("agent_id"), "{}", err.message());
    let err = assist
        .handoff(handoff(&"x".repeat(5_000)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("agent_id"), "{}", err.message());
    let err = assist
        .handoff(pb::HandoffRequest {
            conversation_id: "nobody".into(),
            agent_id: "agent-lee".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_agent_reads_only_its_own_guidance() {
    let mut c = config();
    c.auth.mode = AuthMode::On;
    let mut sam = token("sam", Role::Agent, &[]);
    sam.agent_id = "agent-sam".into();
    c.auth.tokens = vec![
        sam,
        token("ingest", Role::Ingest, &[]),
        token("boss", Role::Supervisor, &[]),
    ];
    let mut server = TestServer::start(c.clone()).await;
    server.ready().await;
    let mut assist = server.assist().await;
    let ask = |token: &str, agent: &str| {
        with(
            token,
            pb::SubscribeAssistRequest {
                agent_id: agent.into(),
                after_sequence: Some(0),
            },
        )
    };
    let denied = assist
        .subscribe_assist(ask("tok-sam", "agent-wang"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert!(
        denied.message().contains("agent-wang"),
        "{}",
        denied.message()
    );
    let denied = assist
        .subscribe_assist(ask("tok-ingest", "agent-sam"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let empty = assist
        .subscribe_assist(ask("tok-sam", ""))
        .await
        .unwrap_err();
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);
    assert!(empty.message().contains("agent_id"));
    let long = assist
        .subscribe_assist(ask("tok-sam", &"x".repeat(129)))
        .await
        .unwrap_err();
    assert_eq!(long.code(), tonic::Code::InvalidArgument, "{long:?}");
    assert!(
        assist
            .subscribe_assist(ask("tok-sam", "agent-sam"))
            .await
            .is_ok()
    );
    assert!(
        assist
            .subscribe_assist(ask("tok-boss", "agent-sam"))
            .await
            .is_ok()
    );
    // Handing a conversation over is the platform's (or a supervisor's), not an agent's.
    let handoff = assist
        .handoff(with(
            "tok-sam",
            pb::HandoffRequest {
                conversation_id: "any".into(),
                agent_id: "agent-sam".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(handoff.code(), tonic::Code::PermissionDenied, "{handoff:?}");
    // An agent token is not a supervisor's.
    let feed = server
        .alerts()
        .await
        .subscribe_alerts(with("tok-sam", pb::SubscribeAlertsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(feed.code(), tonic::Code::PermissionDenied);
    server.stop().await.unwrap();

    // An agent token must name its agent, and only an agent token may.
    let mut bad = c.clone();
    bad.auth.tokens[0].agent_id.clear();
    let err = bad
        .validate()
        .and_then(|_| emotion_service::auth::Authenticator::new(&bad.auth, true).map(|_| ()));
    assert!(format!("{:?}", err.err()).contains("agent_id"));
    let mut bad = c;
    bad.auth.tokens[1].agent_id = "agent-x".into();
    let err = emotion_service::auth::Authenticator::new(&bad.auth, true).err();
    assert!(format!("{err:?}").contains("role agent only"), "{err:?}");
}

#[tokio::test]
async fn strained_conversations_of_one_agent_suggest_a_break_once() {
    let mut server = TestServer::start(config()).await;
    server.ready().await;
    let mut client = server.client().await;
    for i in 1..=4 {
        let turns = conversation("examples/agent-strain.jsonl", &format!("strain-{i}"));
        let results = stream_all(&mut client, turns).await;
        assert!(results.iter().all(|r| r.error.is_none()));
    }
    let events = guidance_until(&server, "agent-3", "never").await;
    let breaks: Vec<&pb::Alert> = events
        .iter()
        .filter(|e| e.kind == "break_suggested")
        .collect();
    assert_eq!(breaks.len(), 1, "{:?}", kinds(&events));
    assert_eq!(
        breaks[0].conversation_id, "strain-3",
        "at the third strained conversation"
    );
    assert!(
        breaks[0].detail.starts_with("3 of your conversations"),
        "{}",
        breaks[0].detail
    );
    assert!(
        breaks[0]
            .evidence
            .iter()
            .all(|e| e.speaker() == pb::Speaker::Agent)
    );
    server.stop().await.unwrap();
}
