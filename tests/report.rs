//! The QA report against a replayed set of conversations (every sample under examples/, each
//! ended after its turns): contacts and how they ended agree with what customer memory recorded,
//! alert counts with the alert history, hand-offs and frustrated hand-offs with the two bot
//! samples, strain with the strained agent, repeat contacts with the smartwatch customer; the
//! period before is empty; a queue narrows it; the dashboard's CSV says the same.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use common::{TestServer, config, repo_path};
use emotion_service::pb;
use emotion_service::pb::quality_report_client::QualityReportClient;
use tokio_stream::StreamExt;

const SAMPLES: &[&str] = &[
    "examples/agent-strain.jsonl",
    "examples/bot-handoff.jsonl",
    "examples/bot-handoff-zh.jsonl",
    "examples/calm-call.jsonl",
    "examples/escalating-call.jsonl",
    "examples/escalating-call-zh.jsonl",
    "examples/sustained-negativity.jsonl",
    "examples/customer-smartwatch-zh.jsonl",
];

fn day_request(queue: &str) -> pb::GetReportRequest {
    let until = SystemTime::now() + Duration::from_secs(60);
    pb::GetReportRequest {
        queue: queue.into(),
        since: Some((until - Duration::from_secs(86_400)).into()),
        until: Some(until.into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_report_counts_what_a_replayed_day_held() {
    let mut server = TestServer::start(config()).await;
    server.ready().await;
    let channel = server.channel().await;
    let mut client = server.client().await;
    let mut ended = Vec::new();
    for file in SAMPLES {
        let turns = emotion_service::client::read_conversation_file(&repo_path(file)).unwrap();
        let mut ids: Vec<String> = Vec::new();
        for t in &turns {
            let id = String::from_utf8(t.conversation_id.clone()).unwrap();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        // One conversation after another, as they would happen.
        for id in ids {
            let mine: Vec<_> = (turns.iter())
                .filter(|t| t.conversation_id == id.as_bytes())
                .cloned()
                .collect();
            let results: Vec<_> = client
                .stream_turns(tokio_stream::iter(mine))
                .await
                .unwrap()
                .into_inner()
                .collect()
                .await;
            assert!(results.iter().all(|r| r.as_ref().unwrap().error.is_none()));
            client
                .end_conversation(pb::EndConversationRequest {
                    conversation_id: id.clone(),
                })
                .await
                .unwrap();
            ended.push(id);
        }
    }

    // Contacts are written by the customer writer thread: wait until the report has them all.
    let mut reports = QualityReportClient::new(channel.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let report = loop {
        let r = reports
            .get_report(day_request(""))
            .await
            .unwrap()
            .into_inner();
        if r.current.as_ref().unwrap().contacts as usize == ended.len() {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} contacts, {} conversations ended",
            r.current.unwrap().contacts,
            ended.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(report.contacts_recorded);
    let now = report.current.clone().unwrap();
    eprintln!("{now:#?}");
    print!("{}", emotion_service::client::report::text(&report));

    // How the smartwatch customer's contacts ended, as customer memory recorded them.
    let record = pb::customer_memory_client::CustomerMemoryClient::new(channel.clone())
        .get_customer(pb::GetCustomerRequest {
            customer: Some(pb::CustomerRef {
                tenant: "xinhe-telecom".into(),
                customer_id: "C-20260412-0042".into(),
                customer_key: String::new(),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(now.ended_resigned >= 1, "the smartwatch customer gave up");
    assert!(now.ended_negative + now.ended_open_incident + now.ended_resigned <= now.contacts);
    let devices = reports
        .get_report(day_request("devices"))
        .await
        .unwrap()
        .into_inner()
        .current
        .unwrap();
    assert_eq!(devices.contacts, 3, "a queue narrows the report");
    let outcome = |o: &str| record.recent.iter().filter(|c| c.outcome == o).count() as u32;
    assert_eq!(
        (
            devices.ended_negative,
            devices.ended_open_incident,
            devices.ended_resigned
        ),
        (
            outcome("negative"),
            outcome("open_incident"),
            outcome("resigned")
        )
    );

    // Alerts raised, by kind and severity, as the alert history lists them.
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
    let mut expected: BTreeMap<(String, i32), u32> = BTreeMap::new();
    for a in history
        .iter()
        .filter(|a| a.state() == pb::AlertState::Raised)
    {
        *expected.entry((a.kind.clone(), a.severity)).or_default() += 1;
    }
    let got: BTreeMap<(String, i32), u32> = (now.alerts.iter())
        .map(|a| ((a.kind.clone(), a.severity), a.raised))
        .collect();
    assert_eq!(got, expected);
    assert!(got.keys().any(|(k, _)| k == "agent_strain"), "{got:?}");
    let raised = |kind: &str| {
        (history.iter())
            .filter(|a| a.kind == kind && a.state() == pb::AlertState::Raised)
            .count() as u32
    };
    assert_eq!(now.repeat_contacts, raised("repeat_contact"));
    assert!(now.repeat_contacts >= 1);
    // Every customer-mood incident either recovered in the period or did not.
    assert_eq!(
        now.recovered + now.not_recovered,
        raised("rolling_valence") + raised("sustained_negativity")
    );
    assert!(now.recovered == 0 || now.median_recovery_seconds >= 0.0);

    // The two bot samples: handed to a person after the customer asked for one.
    assert_eq!(now.handoffs, 2);
    assert_eq!(now.frustrated_handoffs, 2);
    let mut handed: Vec<&str> = (now.frustrated.iter())
        .map(|f| f.conversation_id.as_str())
        .collect();
    handed.sort();
    assert_eq!(handed, ["chat-handoff-1", "chat-handoff-zh-1"]);
    assert!(now.frustrated.iter().any(|f| f.language == "zh-CN"));

    // The strained agent.
    let strained = (now.strained_agents.iter())
        .find(|a| a.agent_id == "agent-3")
        .expect("agent-3 strained");
    assert_eq!(strained.strained_conversations, 1);

    // The day before: nothing.
    let before = report.previous.unwrap();
    assert_eq!(before.contacts, 0);
    assert!(before.alerts.is_empty() && before.handoffs == 0);

    // The dashboard's CSV export.
    let (status, csv) = common::browser::http(
        server.web_addr.port(),
        "GET",
        "/api/report?days=1&format=csv",
        &[],
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{csv}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "metric,current,previous,change");
    assert_eq!(lines[1], format!("contacts,{},0,new", ended.len()));
    assert!(csv.contains("frustrated hand-offs,2,0,new"), "{csv}");
    let (status, body) = common::browser::http(
        server.web_addr.port(),
        "GET",
        "/api/report?days=400",
        &[],
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 400, "{body}");

    let bad = reports
        .get_report(pb::GetReportRequest {
            since: Some(SystemTime::now().into()),
            until: Some((SystemTime::now() - Duration::from_secs(60)).into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    server.stop().await.unwrap();
}
