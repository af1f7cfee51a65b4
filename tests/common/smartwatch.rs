//! The sample customer of `examples/customer-smartwatch-zh.jsonl`: three contacts about a
//! child's smartwatch, the last ending in 算了，不折腾了. Shared by the customer-memory tests of one
//! process and of a cluster.

use std::time::Duration;

use emotion_service::pb;
use emotion_service::pb::customer_memory_client::CustomerMemoryClient;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use super::{TestServer, stream_all};

pub const FILE: &str = "examples/customer-smartwatch-zh.jsonl";
pub const TENANT: &str = "xinhe-telecom";
pub const CUSTOMER_ID: &str = "C-20260412-0042";
/// The customer's words in the sample (their first and last contacts).
pub const WORDS: [&str; 3] = ["算了，不折腾了", "打了七次电话了", "儿童手表定位一直不准"];

pub fn by_id() -> pb::CustomerRef {
    pb::CustomerRef {
        tenant: TENANT.into(),
        customer_id: CUSTOMER_ID.into(),
        customer_key: String::new(),
    }
}

pub fn by_key(key: &str) -> pb::CustomerRef {
    pb::CustomerRef {
        customer_key: key.into(),
        ..Default::default()
    }
}

/// A new contact ("watch-contact-4", the first turn of the first one) streamed through `via`:
/// the `repeat_contact` it raises, as `watcher`'s alert feed delivers it (within 15 s), checked
/// to name the customer `key`.
pub async fn repeat_contact(
    watcher: &TestServer,
    via: &mut pb::emotion_analysis_client::EmotionAnalysisClient<Channel>,
    key: &str,
) -> pb::Alert {
    let mut feed = watcher.feed(Some(0)).await;
    let all = emotion_service::client::read_conversation_file(&super::repo_path(FILE)).unwrap();
    let mut first = all[0].clone();
    first.conversation_id = "watch-contact-4".into();
    let results = stream_all(via, vec![first]).await;
    assert!(results[0].error.is_none(), "{results:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let repeat = loop {
        let event = tokio::time::timeout_at(deadline, feed.next())
            .await
            .expect("repeat_contact within 15 s")
            .unwrap()
            .unwrap();
        if event.kind == "repeat_contact" && event.conversation_id == "watch-contact-4" {
            break event;
        }
    };
    eprintln!("repeat_contact: {:?} {}", repeat.severity(), repeat.detail);
    assert!(repeat.severity() >= pb::Severity::Warning);
    assert_eq!(repeat.context.as_ref().unwrap().customer_key, key);
    repeat
}

/// DeleteCustomer of the sample customer, after their three contacts and the live fourth: checked
/// to have erased all of it.
pub async fn erase(client: &mut CustomerMemoryClient<Channel>, key: &str) {
    let erased = client
        .delete_customer(pb::DeleteCustomerRequest {
            customer: Some(by_id()),
        })
        .await
        .unwrap()
        .into_inner();
    eprintln!("{erased:?}");
    assert_eq!(erased.customer_key, key);
    assert_eq!(erased.contacts_deleted, 3);
    assert_eq!(erased.conversations_forgotten, 1);
    assert!(erased.alert_events_erased >= 1);
}

/// On the silent customers page (`/customers`, its list shown): looks 8 days ahead and returns
/// the first row (its outcome and text) once the list has one.
pub async fn silent_row_in_a_week(browser: &super::browser::Browser) -> serde_json::Value {
    browser
        .eval(
            "document.getElementById('in-days').value = '8'; return true",
            serde_json::json!([]),
        )
        .await;
    browser.click("#filters button[type=submit]").await;
    browser
        .wait_for(
            "the customer's row",
            Duration::from_secs(15),
            "const r = document.querySelector('#silent-rows tr'); \
             return r && {outcome: r.dataset.outcome, text: r.textContent, \
                          csv: document.getElementById('csv').getAttribute('href')}",
            serde_json::json!([]),
        )
        .await
}

/// Waits until the silent customers page shows an empty list.
pub async fn silent_list_empties(browser: &super::browser::Browser, what: &str) {
    browser
        .wait_for(
            what,
            Duration::from_secs(10),
            "return document.querySelectorAll('#silent-rows tr').length === 0 \
             && !document.getElementById('silent-empty').hidden",
            serde_json::json!([]),
        )
        .await;
}
