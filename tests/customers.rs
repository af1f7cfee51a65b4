//! Customer memory over the real server and the shipped models: a customer with three contacts,
//! the last ending in 算了，不折腾了 (examples/customer-smartwatch-zh.jsonl), is remembered by
//! pseudonym, ends resigned, reaches the silent list once `silent_after_days` have passed (the
//! list's clock is the request's `as_of`), leaves it when called back, raises `repeat_contact`
//! on a new contact, and DeleteCustomer leaves nothing of them in any database file.

mod common;

use std::time::{Duration, SystemTime};

use common::{TestServer, authorized, config, files_holding, token, with};
use emotion_service::auth::Role;
use emotion_service::config::AuthMode;
use emotion_service::pb;
use emotion_service::pb::customer_memory_client::CustomerMemoryClient;
use tonic::Code;

use common::smartwatch::{self, CUSTOMER_ID, FILE, TENANT, by_id, by_key};

fn days_from_now(days: u64) -> Option<prost_types::Timestamp> {
    Some((SystemTime::now() + Duration::from_secs(days * 86_400)).into())
}

/// The silent list as `token` (None: auth off) sees it, `days` from now.
async fn silent_page(
    client: &mut CustomerMemoryClient<tonic::transport::Channel>,
    token: Option<&str>,
    days: u64,
) -> pb::ListSilentCustomersResponse {
    let message = pb::ListSilentCustomersRequest {
        as_of: days_from_now(days),
        ..Default::default()
    };
    client
        .list_silent_customers(authorized(token, message))
        .await
        .unwrap()
        .into_inner()
}

async fn silent_keys(
    client: &mut CustomerMemoryClient<tonic::transport::Channel>,
    days: u64,
) -> Vec<pb::SilentCustomer> {
    silent_page(client, None, days).await.customers
}

#[tokio::test]
async fn a_customer_who_gave_up_is_remembered_listed_raised_again_and_erased() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    c.alert_log.path = dir.path().join("alerts.sqlite3");
    c.state.persist_interval_ms = 100;
    let mut server = TestServer::start(c).await;
    server.ready().await;
    let channel = server.channel().await;
    let mut client = server.client().await;
    let mut customers = CustomerMemoryClient::new(channel.clone());

    let ids = ["watch-contact-1", "watch-contact-2", "watch-contact-3"];
    common::contacts(FILE, channel.clone(), None, &ids).await;

    // Contacts are written by the customer writer thread: wait for the third.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let record = loop {
        match customers
            .get_customer(pb::GetCustomerRequest {
                customer: Some(by_id()),
            })
            .await
        {
            Ok(r) if r.get_ref().contacts == 3 => break r.into_inner(),
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "three contacts not recorded: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    eprintln!("{record:#?}");
    let key = record.customer_key.clone();
    assert_eq!(key.len(), 32, "a pseudonym: {key}");
    assert_ne!(key, CUSTOMER_ID);
    assert_eq!(record.tenant, TENANT);
    let newest = &record.recent[0];
    assert_eq!(newest.conversation_id, "watch-contact-3");
    assert_eq!(newest.outcome, "resigned", "{newest:?}");
    assert!(record.bad_contacts >= 1);
    // The same record by pseudonym.
    let again = customers
        .get_customer(pb::GetCustomerRequest {
            customer: Some(by_key(&key)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, record);

    // Silent only once `silent_after_days` (7) have passed since the last contact.
    assert!(silent_keys(&mut customers, 0).await.is_empty());
    assert!(silent_keys(&mut customers, 6).await.is_empty());
    let silent = silent_keys(&mut customers, 8).await;
    assert_eq!(silent.len(), 1, "{silent:?}");
    assert_eq!(silent[0].customer_key, key);
    assert_eq!(silent[0].contacts, 3);
    let last = silent[0].last.clone().unwrap();
    assert_eq!(
        (last.conversation_id.as_str(), last.outcome.as_str()),
        ("watch-contact-3", "resigned")
    );

    // The dashboard's CSV export: the same list.
    let (status, csv) = common::browser::http(
        server.web_addr.port(),
        "GET",
        "/api/customers/silent?in_days=8&format=csv",
        &[],
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{csv}");
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 2, "{csv}");
    assert!(rows[0].starts_with("customer_key,tenant,rank,"), "{csv}");
    assert!(rows[1].starts_with(&format!("{key},{TENANT},")), "{csv}");
    assert!(
        rows[1].contains(",resigned,") && rows[1].contains(",watch-contact-3,"),
        "{csv}"
    );
    let (status, _) = common::browser::http(
        server.web_addr.port(),
        "GET",
        "/api/customers/silent?in_days=99999",
        &[],
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 400);

    // Called back: off the list.
    let called = customers
        .mark_customer_called(pb::MarkCustomerCalledRequest {
            customer: Some(by_key(&key)),
            called_by: "sup-wu".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(called.called_by, "sup-wu");
    assert!(called.called_at.is_some());
    assert!(silent_keys(&mut customers, 8).await.is_empty());

    // A new contact: its first customer turn raises repeat_contact.
    smartwatch::repeat_contact(&server, &mut client, &key).await;
    // Whoever takes the new contact sees the earlier ones in the brief.
    let brief = server
        .assist()
        .await
        .get_handoff_brief(pb::GetHandoffBriefRequest {
            conversation_id: "watch-contact-4".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let earlier: Vec<(&str, &str)> = (brief.earlier_contacts.iter())
        .map(|c| (c.conversation_id.as_str(), c.outcome.as_str()))
        .collect();
    assert_eq!(earlier.len(), 3, "{earlier:?}");
    assert_eq!(earlier[0], ("watch-contact-3", "resigned"));

    // The customer's words are in the files before the erasure (so the check below can fail).
    let words = common::smartwatch::WORDS;
    let before: Vec<_> = words
        .iter()
        .flat_map(|w| files_holding(dir.path(), w))
        .collect();
    eprintln!("before the erasure, the words are in {before:?}");
    assert!(!before.is_empty(), "no excerpt stored at all?");
    assert!(!files_holding(dir.path(), &key).is_empty());

    common::smartwatch::erase(&mut customers, &key).await;

    let gone = customers
        .get_customer(pb::GetCustomerRequest {
            customer: Some(by_key(&key)),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
    assert!(silent_keys(&mut customers, 8).await.is_empty());
    let live = client
        .get_conversation(pb::GetConversationRequest {
            conversation_id: "watch-contact-4".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(live.code(), Code::NotFound);
    for needle in words.iter().copied().chain([key.as_str(), CUSTOMER_ID]) {
        assert_eq!(
            files_holding(dir.path(), needle),
            Vec::<String>::new(),
            "{needle:?} is still on disk"
        );
    }
    // The supervisors' history keeps the events, without the customer's words.
    let history = server
        .alerts()
        .await
        .list_alerts(pb::ListAlertsRequest {
            conversation_id: "watch-contact-4".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .alerts;
    assert!(history.iter().any(|a| a.kind == "repeat_contact"));
    assert!(history.iter().all(|a| {
        a.context.as_ref().unwrap().customer_key.is_empty()
            && a.evidence.iter().all(|e| e.excerpt.is_empty())
    }));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn customer_calls_check_roles_tenants_and_arguments() {
    let mut c = config();
    c.auth.mode = AuthMode::On;
    c.auth.tokens = vec![
        token("ingest", Role::Ingest, &[]),
        token("sup", Role::Supervisor, &[]),
        token("sup-other", Role::Supervisor, &["other-tenant"]),
        token("admin", Role::Admin, &[]),
    ];
    let mut server = TestServer::start(c).await;
    server.ready().await;
    let channel = server.channel().await;
    let mut customers = CustomerMemoryClient::new(channel.clone());
    common::contacts(FILE, channel, Some("tok-ingest"), &["watch-contact-3"]).await;
    let get =
        |tok: &str, r: pb::CustomerRef| with(tok, pb::GetCustomerRequest { customer: Some(r) });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while customers
        .get_customer(get("tok-sup", by_id()))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "contact not recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let code = |r: Result<tonic::Response<pb::CustomerRecord>, tonic::Status>| {
        let e = r.unwrap_err();
        (e.code(), e.message().to_string())
    };
    let (c, m) = code(customers.get_customer(get("tok-ingest", by_id())).await);
    assert_eq!(c, Code::PermissionDenied, "{m}");
    // Another tenant's supervisor does not learn the customer exists.
    let (c, m) = code(customers.get_customer(get("tok-sup-other", by_id())).await);
    assert_eq!(c, Code::NotFound, "{m}");
    let (c, m) = code(
        customers
            .get_customer(get("tok-sup", pb::CustomerRef::default()))
            .await,
    );
    assert_eq!(c, Code::InvalidArgument);
    assert!(
        m.contains("customer.customer_id or customer.customer_key"),
        "{m}"
    );
    let both = pb::CustomerRef {
        customer_key: "0".repeat(32),
        ..by_id()
    };
    let (c, m) = code(customers.get_customer(get("tok-sup", both)).await);
    assert_eq!(c, Code::InvalidArgument, "{m}");
    let (c, m) = code(
        customers
            .get_customer(get("tok-sup", by_key("not-a-key")))
            .await,
    );
    assert_eq!(c, Code::InvalidArgument);
    assert!(m.contains("customer_key"), "{m}");
    let long = pb::CustomerRef {
        customer_id: "x".repeat(10_000),
        ..by_id()
    };
    let (c, m) = code(customers.get_customer(get("tok-sup", long)).await);
    assert_eq!(c, Code::InvalidArgument);
    assert!(m.contains("customer.customer_id"), "{m}");
    let (c, _) = code(
        customers
            .get_customer(get("tok-sup", by_key(&"a".repeat(32))))
            .await,
    );
    assert_eq!(c, Code::NotFound);

    let page = customers
        .list_silent_customers(with(
            "tok-sup",
            pb::ListSilentCustomersRequest {
                page_size: 5_000,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(page.code(), Code::InvalidArgument);
    assert!(page.message().contains("page_size"), "{page:?}");
    let other = silent_page(&mut customers, Some("tok-sup-other"), 8).await;
    assert_eq!(other.total, 0, "another tenant's silent list is empty");
    let mine = silent_page(&mut customers, Some("tok-sup"), 8).await;
    assert_eq!(mine.total, 1);

    // With auth on, who called is the token's name.
    let called = customers
        .mark_customer_called(with(
            "tok-sup",
            pb::MarkCustomerCalledRequest {
                customer: Some(by_id()),
                called_by: "someone-else".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(called.called_by, "sup");

    let delete = |tok: &str| {
        with(
            tok,
            pb::DeleteCustomerRequest {
                customer: Some(by_id()),
            },
        )
    };
    let denied = customers
        .delete_customer(delete("tok-sup"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let done = customers
        .delete_customer(delete("tok-admin"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.contacts_deleted, 1);
    let again = customers
        .delete_customer(delete("tok-admin"))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    server.stop().await.unwrap();
}

/// The silent customers page in a real headless Chromium: sign in as a supervisor, look a week
/// ahead, find the customer who gave up, mark them called, and watch them leave the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_silent_customers_page_in_a_real_browser() {
    use common::browser::Browser;
    use serde_json::json;
    let mut c = config();
    c.auth.mode = AuthMode::On;
    c.auth.tokens = vec![
        token("feeder", Role::Ingest, &[]),
        token("wu", Role::Supervisor, &[]),
    ];
    let mut server = TestServer::start(c).await;
    server.ready().await;
    let channel = server.channel().await;
    let ids = ["watch-contact-1", "watch-contact-2", "watch-contact-3"];
    common::contacts(FILE, channel.clone(), Some("tok-feeder"), &ids).await;

    let browser = Browser::start().await;
    browser
        .goto(&format!("http://{}/customers", server.web_addr))
        .await;
    browser
        .wait_for(
            "the sign-in form",
            Duration::from_secs(10),
            "return !document.getElementById('signin').hidden",
            json!([]),
        )
        .await;
    browser.type_into("#token", "tok-wu\u{E007}").await;
    browser
        .wait_for(
            "the empty list (nobody silent yet)",
            Duration::from_secs(10),
            "return !document.getElementById('customers').hidden \
             && !document.getElementById('silent-empty').hidden",
            json!([]),
        )
        .await;
    // A week and a day from now: the customer who gave up has been silent long enough.
    let row = smartwatch::silent_row_in_a_week(&browser).await;
    eprintln!("{row}");
    assert_eq!(row["outcome"], "resigned");
    let text = row["text"].as_str().unwrap();
    assert!(
        text.contains("watch-contact-3") && text.contains("gave up"),
        "{text}"
    );
    let csv = row["csv"].as_str().unwrap();
    assert!(
        csv.contains("in_days=8") && csv.contains("format=csv"),
        "{csv}"
    );
    let shot = common::repo_path("target/test-artifacts");
    std::fs::create_dir_all(&shot).unwrap();
    browser.screenshot(&shot.join("silent-customers.png")).await;

    browser.click("#silent-rows button.called").await;
    smartwatch::silent_list_empties(&browser, "the list empty after the call-back").await;
    let record = CustomerMemoryClient::new(channel)
        .get_customer(with(
            "tok-wu",
            pb::GetCustomerRequest {
                customer: Some(by_id()),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        record.called_by, "wu",
        "the signed-in supervisor is recorded"
    );

    // The QA report page, signed in already: the three contacts, one of them resigned.
    browser
        .goto(&format!("http://{}/report", server.web_addr))
        .await;
    let rows = browser
        .wait_for(
            "the report's rows",
            Duration::from_secs(15),
            "const get = (m) => document.querySelector(`#metric-rows tr[data-metric='${m}'] td`); \
             return get('contacts') && {contacts: get('contacts').textContent, \
                 resigned: get('share ended resigned').textContent, \
                 csv: document.getElementById('csv').getAttribute('href')}",
            json!([]),
        )
        .await;
    eprintln!("{rows}");
    assert_eq!(rows["contacts"], "3");
    assert_eq!(rows["resigned"], "33.3%");
    assert!(rows["csv"].as_str().unwrap().contains("format=csv"));
    browser.screenshot(&shot.join("qa-report.png")).await;

    // Both pages in Chinese: asked for once (`?lang=zh`), then remembered.
    browser
        .goto(&format!("http://{}/report?lang=zh", server.web_addr))
        .await;
    let zh = browser
        .wait_for(
            "the report in Chinese",
            Duration::from_secs(15),
            "const row = (m) => document.querySelector(`#metric-rows tr[data-metric='${m}']`);              const alerts = [...document.querySelectorAll('#metric-rows tr')].find(r => r.dataset.metric.startsWith('alerts '));              return row('contacts') && {h1: document.querySelector('h1').textContent,                contacts: row('contacts').querySelector('th').textContent,                value: row('contacts').querySelector('td').textContent,                alerts: alerts ? alerts.querySelector('th').textContent : null, lang: document.documentElement.lang}",
            json!([]),
        )
        .await;
    eprintln!("{zh}");
    assert_eq!(zh["h1"], "质检报告");
    assert_eq!(zh["contacts"], "联系次数");
    assert_eq!(zh["value"], "3");
    if let Some(alerts) = zh["alerts"].as_str() {
        assert!(alerts.starts_with("告警："), "{zh}");
    }
    assert_eq!(zh["lang"], "zh-CN");
    browser.screenshot(&shot.join("qa-report-zh.png")).await;
    browser
        .goto(&format!("http://{}/customers", server.web_addr))
        .await;
    let zh = browser
        .wait_for(
            "the silent list in Chinese",
            Duration::from_secs(15),
            "return !document.getElementById('customers').hidden &&                {h1: document.querySelector('h1').textContent,                 empty: document.getElementById('silent-empty').textContent,                 show: document.querySelector('#filters button').textContent}",
            json!([]),
        )
        .await;
    assert_eq!(zh["h1"], "沉默客户", "{zh}");
    assert_eq!(zh["empty"], "名单为空。");
    assert_eq!(zh["show"], "显示");
    browser.quit().await;
    server.stop().await.unwrap();
}
