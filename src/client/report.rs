//! `emotion report`: the QA report with the week-on-week change, as text or CSV.

use std::time::{Duration, SystemTime};

use crate::client::Server;
use crate::client::customers::csv_field;
use crate::pb;
use crate::pb::quality_report_client::QualityReportClient;

/// The report's figures as (metric, current, previous) rows: what the text, the CSV and the
/// dashboard print.
pub fn rows(r: &pb::Report) -> Vec<(String, f64, f64)> {
    let (c, p) = (
        r.current.clone().unwrap_or_default(),
        r.previous.clone().unwrap_or_default(),
    );
    let share = |n: u32, of: u32| match of {
        0 => 0.0,
        _ => f64::from(n) / f64::from(of),
    };
    let mut rows = vec![
        (
            "contacts".to_string(),
            f64::from(c.contacts),
            f64::from(p.contacts),
        ),
        (
            "share ended negative".into(),
            share(c.ended_negative, c.contacts),
            share(p.ended_negative, p.contacts),
        ),
        (
            "share ended with an open incident".into(),
            share(c.ended_open_incident, c.contacts),
            share(p.ended_open_incident, p.contacts),
        ),
        (
            "share ended resigned".into(),
            share(c.ended_resigned, c.contacts),
            share(p.ended_resigned, p.contacts),
        ),
        (
            "repeat contacts".into(),
            c.repeat_contacts.into(),
            p.repeat_contacts.into(),
        ),
        ("bot hand-offs".into(), c.handoffs.into(), p.handoffs.into()),
        (
            "frustrated hand-offs".into(),
            c.frustrated_handoffs.into(),
            p.frustrated_handoffs.into(),
        ),
        (
            "mood alerts recovered".into(),
            c.recovered.into(),
            p.recovered.into(),
        ),
        (
            "mood alerts not recovered".into(),
            c.not_recovered.into(),
            p.not_recovered.into(),
        ),
        (
            "median minutes to recover".into(),
            c.median_recovery_seconds / 60.0,
            p.median_recovery_seconds / 60.0,
        ),
    ];
    let mut kinds: Vec<(String, i32)> = (c.alerts.iter().chain(&p.alerts))
        .map(|a| (a.kind.clone(), a.severity))
        .collect();
    kinds.sort();
    kinds.dedup();
    for (kind, severity) in kinds {
        let count = |period: &pb::ReportPeriod| {
            (period.alerts.iter())
                .find(|a| a.kind == kind && a.severity == severity)
                .map_or(0.0, |a| f64::from(a.raised))
        };
        let sev = pb::Severity::try_from(severity)
            .map_or("?", |s| s.as_str_name().trim_start_matches("SEVERITY_"));
        rows.push((format!("alerts {kind} {sev}"), count(&c), count(&p)));
    }
    for a in &c.strained_agents {
        let before = (p.strained_agents.iter())
            .find(|b| b.agent_id == a.agent_id)
            .map_or(0.0, |b| f64::from(b.strained_conversations));
        rows.push((
            format!("strained conversations of {}", a.agent_id),
            a.strained_conversations.into(),
            before,
        ));
    }
    rows
}

pub fn number(metric: &str, v: f64) -> String {
    match metric.starts_with("share") {
        true => format!("{:.1}%", v * 100.0),
        false if v.fract() == 0.0 => format!("{v:.0}"),
        false => format!("{v:.1}"),
    }
}

pub fn change(metric: &str, now: f64, before: f64) -> String {
    match metric.starts_with("share") {
        true => format!("{:+.1} pt", (now - before) * 100.0),
        false if before == 0.0 && now == 0.0 => "=".into(),
        false if before == 0.0 => "new".into(),
        false => format!("{:+.0}%", (now - before) / before * 100.0),
    }
}

pub const CSV_HEADER: &str = "metric,current,previous,change";

pub fn csv(r: &pb::Report) -> String {
    let mut out = format!("{CSV_HEADER}\n");
    for (metric, now, before) in rows(r) {
        out.push_str(&format!(
            "{},{},{},{}\n",
            csv_field(&metric),
            number(&metric, now),
            number(&metric, before),
            csv_field(&change(&metric, now, before))
        ));
    }
    out
}

pub fn text(r: &pb::Report) -> String {
    let mut out = String::new();
    if !r.contacts_recorded {
        out.push_str("(customer memory is off: no contacts are recorded)\n");
    }
    out.push_str(&format!(
        "{:<44} {:>10} {:>10} {:>9}\n",
        "", "this period", "previous", "change"
    ));
    for (metric, now, before) in rows(r) {
        out.push_str(&format!(
            "{:<44} {:>10} {:>10} {:>9}\n",
            metric,
            number(&metric, now),
            number(&metric, before),
            change(&metric, now, before)
        ));
    }
    let current = r.current.clone().unwrap_or_default();
    for f in &current.frustrated {
        out.push_str(&format!(
            "frustrated hand-off {} (queue {}, {}, customer {:+.2}{})\n",
            f.conversation_id,
            f.queue,
            f.language,
            f.customer_rolling_valence,
            match f.escalation_phrases.is_empty() {
                true => String::new(),
                false => format!(", heard {}", f.escalation_phrases.join(", ")),
            }
        ));
    }
    out
}

pub async fn print(
    server: &Server,
    request: pb::GetReportRequest,
    as_csv: bool,
) -> anyhow::Result<()> {
    let mut client = QualityReportClient::new(server.channel().await?);
    let r = client
        .get_report(server.request(request))
        .await?
        .into_inner();
    print!("{}", if as_csv { csv(&r) } else { text(&r) });
    Ok(())
}

/// The `days` up to now.
pub fn last_days(days: u32) -> (prost_types::Timestamp, prost_types::Timestamp) {
    let until = SystemTime::now();
    let since = until - Duration::from_secs(u64::from(days) * 86_400);
    (since.into(), until.into())
}
