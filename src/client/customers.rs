//! `emotion customers`: the silent list (table or CSV), one customer, call-backs, erasure.

use std::time::{Duration, SystemTime};

use crate::client::Server;
use crate::pb;
use crate::pb::customer_memory_client::CustomerMemoryClient;

/// Minutes-resolution UTC time of a timestamp, "" when unset.
pub(crate) fn when(t: Option<&prost_types::Timestamp>) -> String {
    t.map(|t| {
        let secs = t.seconds;
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil(days);
        format!(
            "{y:04}-{m:02}-{d:02} {:02}:{:02}",
            rem / 3600,
            (rem % 3600) / 60
        )
    })
    .unwrap_or_default()
}

/// Days since 1970-01-01 to (year, month, day) (proleptic Gregorian).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A CSV field: quoted when it holds a comma, quote or line break; a leading =, +, - or @ is
/// prefixed with ' so a spreadsheet does not read it as a formula.
pub fn csv_field(s: &str) -> String {
    let s = match s.starts_with(['=', '+', '-', '@']) && s.parse::<f64>().is_err() {
        true => format!("'{s}"),
        false => s.to_string(),
    };
    match s.contains([',', '"', '\n', '\r']) {
        true => format!("\"{}\"", s.replace('"', "\"\"")),
        false => s,
    }
}

pub const SILENT_CSV_HEADER: &str = "customer_key,tenant,rank,contacts,bad_contacts,last_outcome,\
last_ended_at,last_conversation_id,last_queue,last_agent_id,last_final_score,last_lowest_score,last_emotions";

/// One silent customer as a CSV row (the columns of [`SILENT_CSV_HEADER`]).
pub fn silent_csv_row(s: &pb::SilentCustomer) -> String {
    let last = s.last.clone().unwrap_or_default();
    [
        s.customer_key.clone(),
        s.tenant.clone(),
        format!("{:.2}", s.rank),
        s.contacts.to_string(),
        s.bad_contacts.to_string(),
        last.outcome.clone(),
        when(last.ended_at.as_ref()),
        last.conversation_id.clone(),
        last.queue.clone(),
        last.agent_id.clone(),
        format!("{:.3}", last.final_score),
        format!("{:.3}", last.lowest_score),
        last.emotions.join(" "),
    ]
    .iter()
    .map(|f| csv_field(f))
    .collect::<Vec<_>>()
    .join(",")
}

pub async fn silent(
    server: &Server,
    tenants: Vec<String>,
    in_days: u32,
    limit: u32,
    csv: bool,
) -> anyhow::Result<()> {
    let mut client = CustomerMemoryClient::new(server.channel().await?);
    let as_of = SystemTime::now() + Duration::from_secs(u64::from(in_days) * 86_400);
    let page = client
        .list_silent_customers(server.request(pb::ListSilentCustomersRequest {
            tenants,
            as_of: Some(as_of.into()),
            page_size: limit,
            offset: 0,
        }))
        .await?
        .into_inner();
    if csv {
        println!("{SILENT_CSV_HEADER}");
        for s in &page.customers {
            println!("{}", silent_csv_row(s));
        }
        return Ok(());
    }
    println!(
        "{} silent customer(s){}",
        page.total,
        match page.total as usize > page.customers.len() {
            true => format!(", the worst {} shown", page.customers.len()),
            false => String::new(),
        }
    );
    for s in &page.customers {
        let last = s.last.clone().unwrap_or_default();
        println!(
            "{}  rank {:.2}  {}/{} bad  last: {} {} (conversation {}, queue {}, lowest {:+.2}, {})",
            s.customer_key,
            s.rank,
            s.bad_contacts,
            s.contacts,
            last.outcome,
            when(last.ended_at.as_ref()),
            last.conversation_id,
            last.queue,
            last.lowest_score,
            last.emotions.join(" ")
        );
    }
    Ok(())
}

pub fn print_record(r: &pb::CustomerRecord) {
    println!(
        "customer {} (tenant {:?}): {} contact(s), {} ended badly, rank {:.2}{}",
        r.customer_key,
        r.tenant,
        r.contacts,
        r.bad_contacts,
        r.rank,
        match &r.called_at {
            Some(t) => format!(", called back {} by {}", when(Some(t)), r.called_by),
            None => String::new(),
        }
    );
    for c in &r.recent {
        println!(
            "  {}  {:<13} final {:+.2}  lowest {:+.2}  alerts {}  {}  conversation {} (queue {}, agent {})",
            when(c.ended_at.as_ref()),
            c.outcome,
            c.final_score,
            c.lowest_score,
            c.alert_events,
            c.emotions.join(" "),
            c.conversation_id,
            c.queue,
            c.agent_id
        );
    }
}

pub async fn show(server: &Server, customer: pb::CustomerRef) -> anyhow::Result<()> {
    let mut client = CustomerMemoryClient::new(server.channel().await?);
    let r = client
        .get_customer(server.request(pb::GetCustomerRequest {
            customer: Some(customer),
        }))
        .await?
        .into_inner();
    print_record(&r);
    Ok(())
}

pub async fn called(server: &Server, customer: pb::CustomerRef, by: String) -> anyhow::Result<()> {
    let mut client = CustomerMemoryClient::new(server.channel().await?);
    let r = client
        .mark_customer_called(server.request(pb::MarkCustomerCalledRequest {
            customer: Some(customer),
            called_by: by,
        }))
        .await?
        .into_inner();
    print_record(&r);
    Ok(())
}

pub async fn delete(server: &Server, customer: pb::CustomerRef) -> anyhow::Result<()> {
    let mut client = CustomerMemoryClient::new(server.channel().await?);
    let r = client
        .delete_customer(server.request(pb::DeleteCustomerRequest {
            customer: Some(customer),
        }))
        .await?
        .into_inner();
    println!(
        "customer {} erased: {} contact(s) deleted, {} alert event(s) scrubbed, {} live conversation(s) forgotten",
        r.customer_key, r.contacts_deleted, r.alert_events_erased, r.conversations_forgotten
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_field("-0.42"), "-0.42");
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(20_819), (2027, 1, 1));
    }
}
