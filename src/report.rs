//! The QA report (issue 17): over a period, for a tenant and optionally a queue or an agent, how
//! contacts ended (the customer store's contacts), which alerts were raised, how many bot
//! conversations were handed to a person with the customer already frustrated, how long customers
//! stayed upset after a mood alert, which agents had strained conversations, and how many repeat
//! contacts came in; beside the period before it. Read from the durable alert log (both
//! audiences) and the contacts, never from live state, so it is the same on every replica and
//! after a restart. Blocking (reads SQLite): call from the blocking pool.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::alerts::log::{LogError, Query};
use crate::alerts::{AlertFilter, AlertLog, Audience};
use crate::customers::{ContactFilter, CustomerError, CustomerStore, Outcome};
use crate::pb;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Contacts(#[from] CustomerError),
}

/// What to report on.
#[derive(Debug, Clone)]
pub struct ReportQuery {
    /// Empty: every tenant.
    pub tenants: Vec<String>,
    /// Empty: any.
    pub queue: String,
    pub agent_id: String,
    pub since: SystemTime,
    pub until: SystemTime,
    /// A hand-off is frustrated when the brief's customer score is at or below this
    /// (`assist.mood_turned_below`) or an escalation phrase was heard.
    pub frustrated_below: f32,
}

/// Events read from the log per query.
const PAGE: usize = 5_000;
/// Frustrated hand-offs listed per period (the newest).
const LISTED: usize = 50;

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn seconds(t: Option<&prost_types::Timestamp>) -> f64 {
    t.map_or(0.0, |t| t.seconds as f64 + f64::from(t.nanos) / 1e9)
}

/// Every event of `audience` in the period, oldest first, page by page.
fn each_event(
    log: &dyn AlertLog,
    q: &ReportQuery,
    audience: Audience,
    mut f: impl FnMut(&pb::Alert),
) -> Result<(), LogError> {
    let filter = AlertFilter {
        tenants: q.tenants.clone(),
        queues: (!q.queue.is_empty())
            .then(|| q.queue.clone())
            .into_iter()
            .collect(),
        agent_ids: (!q.agent_id.is_empty())
            .then(|| q.agent_id.clone())
            .into_iter()
            .collect(),
        min_severity: None,
        audience,
    };
    let mut after = 0;
    loop {
        let page = log.query(&Query {
            filter: filter.clone(),
            since: Some(q.since),
            until: Some(q.until),
            after_sequence: Some(after),
            limit: PAGE,
            ..Default::default()
        })?;
        page.iter().for_each(&mut f);
        match page.last() {
            Some(last) if page.len() == PAGE => after = last.sequence,
            _ => return Ok(()),
        }
    }
}

/// One period of the report.
pub fn period(
    log: &dyn AlertLog,
    contacts: Option<&dyn CustomerStore>,
    q: &ReportQuery,
) -> Result<pb::ReportPeriod, ReportError> {
    let mut out = pb::ReportPeriod {
        since: Some(q.since.into()),
        until: Some(q.until.into()),
        ..Default::default()
    };
    if let Some(store) = contacts {
        let counts = store.outcomes(&ContactFilter {
            tenants: q.tenants.clone(),
            queue: q.queue.clone(),
            agent_id: q.agent_id.clone(),
            since_ms: ms(q.since),
            until_ms: ms(q.until),
        })?;
        out.contacts = counts.iter().sum::<u64>() as u32;
        out.ended_negative = counts[Outcome::Negative.code() as usize] as u32;
        out.ended_open_incident = counts[Outcome::OpenIncident.code() as usize] as u32;
        out.ended_resigned = counts[Outcome::Resigned.code() as usize] as u32;
    }

    let raised = pb::AlertState::Raised as i32;
    let mut alerts: BTreeMap<(String, i32), u32> = BTreeMap::new();
    // Customer-mood incidents raised in the period: when, by alert id.
    let mut upset: HashMap<String, f64> = HashMap::new();
    let mut recoveries = Vec::new();
    let mut strained: HashMap<String, (HashSet<String>, u32)> = HashMap::new();
    each_event(log, q, Audience::Supervisor, |e| {
        let at = seconds(e.created_at.as_ref());
        let agent = e.context.as_ref().map_or("", |c| c.agent_id.as_str());
        if e.state == raised {
            *alerts.entry((e.kind.clone(), e.severity)).or_default() += 1;
            match e.kind.as_str() {
                "rolling_valence" | "sustained_negativity" => {
                    upset.insert(e.alert_id.clone(), at);
                }
                "agent_strain" => {
                    let entry = strained.entry(agent.to_string()).or_default();
                    entry.0.insert(e.conversation_id.clone());
                }
                "repeat_contact" => out.repeat_contacts += 1,
                _ => {}
            }
        } else if e.state == pb::AlertState::Resolved as i32
            && let Some(from) = upset.remove(&e.alert_id)
        {
            recoveries.push((at - from).max(0.0));
        }
    })?;
    let mut frustrated = Vec::new();
    each_event(log, q, Audience::Agent, |e| {
        let agent = e.context.as_ref().map_or("", |c| c.agent_id.as_str());
        match (e.kind.as_str(), &e.brief) {
            ("handoff_brief", Some(b)) => {
                out.handoffs += 1;
                if b.customer_rolling_valence <= q.frustrated_below
                    || !b.escalation_phrases.is_empty()
                {
                    out.frustrated_handoffs += 1;
                    frustrated.push(pb::FrustratedHandoff {
                        conversation_id: e.conversation_id.clone(),
                        queue: e
                            .context
                            .as_ref()
                            .map(|c| c.queue.clone())
                            .unwrap_or_default(),
                        agent_id: agent.to_string(),
                        language: b.language.clone(),
                        customer_rolling_valence: b.customer_rolling_valence,
                        escalation_phrases: b.escalation_phrases.clone(),
                        at: e.created_at,
                    });
                }
            }
            ("break_suggested", _) => strained.entry(agent.to_string()).or_default().1 += 1,
            _ => {}
        }
    })?;
    out.alerts = (alerts.into_iter())
        .map(|((kind, severity), raised)| pb::AlertCount {
            kind,
            severity,
            raised,
        })
        .collect();
    frustrated.reverse();
    frustrated.truncate(LISTED);
    out.frustrated = frustrated;
    out.recovered = recoveries.len() as u32;
    out.not_recovered = upset.len() as u32;
    out.median_recovery_seconds = median(&mut recoveries);
    let mut agents: Vec<pb::StrainedAgent> = (strained.into_iter())
        .map(|(agent_id, (conversations, breaks))| pb::StrainedAgent {
            agent_id,
            strained_conversations: conversations.len() as u32,
            breaks_suggested: breaks,
        })
        .collect();
    agents.sort_by(|a, b| {
        (b.strained_conversations, b.breaks_suggested, &a.agent_id).cmp(&(
            a.strained_conversations,
            a.breaks_suggested,
            &b.agent_id,
        ))
    });
    out.strained_agents = agents;
    Ok(out)
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    match v.len() % 2 {
        0 => (v[mid - 1] + v[mid]) / 2.0,
        _ => v[mid],
    }
}

/// The report: the period asked for and the one of the same length before it.
pub fn report(
    log: &dyn AlertLog,
    contacts: Option<&dyn CustomerStore>,
    q: &ReportQuery,
) -> Result<pb::Report, ReportError> {
    let length = q.until.duration_since(q.since).unwrap_or(Duration::ZERO);
    let before = ReportQuery {
        since: q.since.checked_sub(length).unwrap_or(UNIX_EPOCH),
        until: q.since,
        ..q.clone()
    };
    Ok(pb::Report {
        current: Some(period(log, contacts, q)?),
        previous: Some(period(log, contacts, &before)?),
        contacts_recorded: contacts.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_even_and_none() {
        assert_eq!(median(&mut []), 0.0);
        assert_eq!(median(&mut [5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
