//! Roles and tenant isolation with auth on: unauthenticated calls are refused, each role reaches
//! only its calls, and a token limited to tenant A never sees or writes tenant B.

mod common;

use common::{TestServer, angry_call, config, next_alert, token, with};
use emotion_service::auth::Role;
use emotion_service::config::AuthMode;
use emotion_service::pb;
use emotion_service::pb::emotion_analysis_client::EmotionAnalysisClient;
use tokio_stream::StreamExt;

const INGEST_ACME: &str = "tok-ingest-acme";
const SUP_ACME: &str = "tok-sup-acme";
const ADMIN: &str = "tok-admin";

async fn server() -> TestServer {
    let mut config = config();
    config.auth.mode = AuthMode::On;
    config.auth.tokens = vec![
        token("ingest-acme", Role::Ingest, &["acme"]),
        token("sup-acme", Role::Supervisor, &["acme"]),
        token("admin", Role::Admin, &[]),
    ];
    TestServer::start(config).await
}

fn in_tenant(mut turns: Vec<pb::TurnRequest>, tenant: &str) -> Vec<pb::TurnRequest> {
    for t in &mut turns {
        t.context.get_or_insert_with(Default::default).tenant = tenant.into();
    }
    turns
}

async fn send(
    client: &mut EmotionAnalysisClient<tonic::transport::Channel>,
    token: &str,
    turns: Vec<pb::TurnRequest>,
) -> Result<Vec<pb::TurnResult>, tonic::Status> {
    let results = client
        .stream_turns(with(token, tokio_stream::iter(turns)))
        .await?
        .into_inner();
    results.collect::<Result<Vec<_>, _>>().await
}

#[tokio::test]
async fn unauthenticated_and_wrong_role_calls_are_refused() {
    let server = server().await;
    let mut client = server.client().await;
    let mut feed = server.alerts().await;

    let none = client
        .stream_turns(tokio_stream::iter(angry_call("x")))
        .await
        .unwrap_err();
    assert_eq!(none.code(), tonic::Code::Unauthenticated, "{none:?}");
    let bad = send(&mut client, "tok-nobody", angry_call("x"))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::Unauthenticated);
    let sub = feed
        .subscribe_alerts(pb::SubscribeAlertsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(sub.code(), tonic::Code::Unauthenticated);

    // Health stays open for load balancers.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();

    // Supervisors cannot send turns; ingest cannot read alerts.
    let denied = send(&mut client, SUP_ACME, angry_call("x"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("ingest"), "{denied:?}");
    for err in [
        feed.subscribe_alerts(with(INGEST_ACME, pb::SubscribeAlertsRequest::default()))
            .await
            .map(|_| ())
            .unwrap_err(),
        feed.list_alerts(with(INGEST_ACME, pb::ListAlertsRequest::default()))
            .await
            .map(|_| ())
            .unwrap_err(),
    ] {
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_token_limited_to_a_tenant_never_reaches_another() {
    let server = server().await;
    let mut client = server.client().await;
    let mut feed = server.alerts().await;
    let mut acme_feed = feed
        .subscribe_alerts(with(
            SUP_ACME,
            pb::SubscribeAlertsRequest {
                after_sequence: Some(0),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();

    // The tenant-limited ingest token writes acme only.
    let ok = send(
        &mut client,
        INGEST_ACME,
        in_tenant(angry_call("acme-1"), "acme"),
    )
    .await
    .unwrap();
    assert!(ok.iter().all(|r| r.error.is_none()), "{ok:?}");
    for turns in [
        in_tenant(angry_call("globex-x"), "globex"),
        angry_call("no-tenant"),
    ] {
        let results = send(&mut client, INGEST_ACME, turns).await.unwrap();
        for r in &results {
            let e = r.error.as_ref().expect("refused");
            assert_eq!(e.code, tonic::Code::PermissionDenied as i32, "{e:?}");
        }
    }
    // The admin writes both tenants; a conversation's tenant cannot change afterwards.
    send(
        &mut client,
        ADMIN,
        in_tenant(angry_call("globex-1"), "globex"),
    )
    .await
    .unwrap();
    let hijack = vec![common::turn("globex-1", 3, pb::Speaker::Customer, "hello")];
    let hijack = send(&mut client, INGEST_ACME, in_tenant(hijack, "acme"))
        .await
        .unwrap();
    assert_eq!(
        hijack[0].error.as_ref().unwrap().code,
        tonic::Code::FailedPrecondition as i32
    );
    send(&mut client, ADMIN, in_tenant(angry_call("acme-2"), "acme"))
        .await
        .unwrap();

    // The acme supervisor sees acme's two alerts, in order, and not globex's in between.
    let first = next_alert(&mut acme_feed).await;
    let second = next_alert(&mut acme_feed).await;
    assert_eq!(
        (
            first.conversation_id.as_str(),
            second.conversation_id.as_str()
        ),
        ("acme-1", "acme-2")
    );
    assert_eq!((first.sequence, second.sequence), (1, 3));
    let history = feed
        .list_alerts(with(SUP_ACME, pb::ListAlertsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(
        history
            .alerts
            .iter()
            .all(|a| a.context.as_ref().unwrap().tenant == "acme"),
        "{history:?}"
    );
    assert_eq!(history.alerts.len(), 2);
    let asked = feed
        .list_alerts(with(
            SUP_ACME,
            pb::ListAlertsRequest {
                tenants: vec!["globex".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(asked.code(), tonic::Code::PermissionDenied);

    // Acknowledging: another tenant's alert does not exist for this token; the recorded name is
    // the token's, whatever the request says.
    let everything = feed
        .list_alerts(with(ADMIN, pb::ListAlertsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let globex_alert = everything
        .alerts
        .iter()
        .find(|a| a.conversation_id == "globex-1")
        .unwrap();
    let ack = |alert_id: &str| {
        with(
            SUP_ACME,
            pb::AcknowledgeAlertRequest {
                alert_id: alert_id.into(),
                supervisor: "someone-else".into(),
                note: String::new(),
            },
        )
    };
    let err = feed
        .acknowledge_alert(ack(&globex_alert.alert_id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let taken = feed
        .acknowledge_alert(ack(&first.alert_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(taken.acknowledged_by, "sup-acme");

    // Conversations of another tenant are not there either.
    let err = client
        .get_conversation(with(
            SUP_ACME,
            pb::GetConversationRequest {
                conversation_id: "globex-1".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let own = client
        .get_conversation(with(
            SUP_ACME,
            pb::GetConversationRequest {
                conversation_id: "acme-1".into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(own.into_inner().conversation_id, "acme-1");
    server.stop().await.unwrap();
}
