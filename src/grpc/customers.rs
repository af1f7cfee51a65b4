//! `CustomerMemory`: the silent list, one customer's record, call-backs and erasure. The
//! operations are plain functions over [`App`] so the dashboard's API calls the same ones.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tonic::{Request, Response, Status};

use super::App;
use crate::auth::{Identity, Role};
use crate::customers::{self, Contact, CustomerMemory, CustomerSummary, SilentQuery};
use crate::error::RequestError;
use crate::pb;
use crate::pb::customer_memory_server::CustomerMemory as CustomerMemoryApi;
use crate::pipeline::validate::check_identifier;

/// The largest page of the silent list.
pub const MAX_PAGE: u32 = 1_000;
/// The most contacts a record carries.
const RECORD_CONTACTS: usize = 50;
const MAX_CALLED_BY_BYTES: usize = 128;

pub struct CustomerMemoryService {
    app: Arc<App>,
}

impl CustomerMemoryService {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

fn memory(app: &App) -> Result<Arc<CustomerMemory>, Status> {
    app.customers
        .clone()
        .ok_or_else(|| RequestError::CustomersOff.into())
}

/// Runs blocking store work off the runtime's threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, customers::CustomerError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(Status::from)
}

/// The pseudonym a [`pb::CustomerRef`] names. INVALID_ARGUMENT naming the field when it names
/// none, both, or a malformed one.
pub fn resolve(
    app: &App,
    memory: &CustomerMemory,
    r: Option<pb::CustomerRef>,
) -> Result<String, Status> {
    let r = r.unwrap_or_default();
    let limit = app.config.limits.max_context_field_bytes;
    match (r.customer_id.is_empty(), r.customer_key.is_empty()) {
        (true, true) => Err(RequestError::Missing {
            field: "customer.customer_id or customer.customer_key",
        }
        .into()),
        (false, false) => Err(RequestError::AmbiguousCustomer.into()),
        (false, true) => {
            check_identifier("customer.customer_id", &r.customer_id, limit)?;
            check_identifier("customer.tenant", &r.tenant, limit)?;
            Ok(memory.pseudonyms.pseudonym(&r.tenant, &r.customer_id))
        }
        (true, false) if customers::is_pseudonym(&r.customer_key) => Ok(r.customer_key),
        (true, false) => {
            let shown = r.customer_key.chars().take(40).collect();
            Err(RequestError::BadCustomerKey(shown).into())
        }
    }
}

/// The customer's row, if the caller may see their tenant (others read as unknown).
async fn summary(
    memory: &Arc<CustomerMemory>,
    identity: &Identity,
    key: &str,
) -> Result<CustomerSummary, Status> {
    let (m, k) = (memory.clone(), key.to_string());
    blocking(move || m.store.summary(&k))
        .await?
        .filter(|s| identity.may_see_tenant(&s.tenant))
        .ok_or_else(|| RequestError::UnknownCustomer(key.to_string()).into())
}

fn timestamp(ms: u64) -> Option<prost_types::Timestamp> {
    Some((UNIX_EPOCH + Duration::from_millis(ms)).into())
}

pub fn contact(c: &Contact) -> pb::CustomerContact {
    pb::CustomerContact {
        conversation_id: c.conversation_id.clone(),
        queue: c.queue.clone(),
        agent_id: c.agent_id.clone(),
        started_at: timestamp(c.started_ms),
        ended_at: timestamp(c.ended_ms),
        final_score: c.final_score,
        lowest_score: c.lowest_score,
        alert_events: c.alert_events,
        emotions: c.emotions.clone(),
        outcome: c.outcome.as_str().to_string(),
    }
}

async fn record(
    memory: &Arc<CustomerMemory>,
    s: CustomerSummary,
) -> Result<pb::CustomerRecord, Status> {
    let (m, k) = (memory.clone(), s.customer.clone());
    let recent = blocking(move || m.store.recent(&k, RECORD_CONTACTS)).await?;
    let (called_at, called_by) = match s.called {
        Some((at, by)) => (timestamp(at), by),
        None => (None, String::new()),
    };
    Ok(pb::CustomerRecord {
        customer_key: s.customer,
        tenant: s.tenant,
        contacts: s.contacts,
        bad_contacts: s.bad_contacts,
        rank: s.rank,
        recent: recent.iter().map(contact).collect(),
        called_at,
        called_by,
    })
}

/// The silent list as the caller may see it.
pub async fn silent(
    app: &App,
    identity: &Identity,
    req: pb::ListSilentCustomersRequest,
) -> Result<pb::ListSilentCustomersResponse, Status> {
    let memory = memory(app)?;
    let page = match req.page_size {
        0 => 100,
        n if n <= MAX_PAGE => n,
        n => {
            return Err(RequestError::OutOfRange {
                field: "page_size",
                actual: n as f32,
                min: 0.0,
                max: MAX_PAGE as f32,
            }
            .into());
        }
    };
    let as_of_ms = match req.as_of {
        None => customers::now_ms(),
        Some(t) => std::time::SystemTime::try_from(t)
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
            .ok_or(RequestError::OutOfRange {
                field: "as_of",
                actual: f32::NAN,
                min: 0.0,
                max: f32::MAX,
            })?,
    };
    let query = SilentQuery {
        tenants: identity.scope_tenants(req.tenants)?,
        as_of_ms,
        silent_after: memory.config.silent_after(),
        limit: page as usize,
        offset: req.offset as usize,
    };
    let m = memory.clone();
    let found = blocking(move || m.store.silent(&query)).await?;
    Ok(pb::ListSilentCustomersResponse {
        customers: (found.customers.iter())
            .map(|s| pb::SilentCustomer {
                customer_key: s.customer.clone(),
                tenant: s.tenant.clone(),
                contacts: s.contacts,
                bad_contacts: s.bad_contacts,
                rank: s.rank,
                last: Some(contact(&s.last)),
            })
            .collect(),
        total: found.total,
    })
}

pub async fn get(
    app: &App,
    identity: &Identity,
    customer: Option<pb::CustomerRef>,
) -> Result<pb::CustomerRecord, Status> {
    let memory = memory(app)?;
    let key = resolve(app, &memory, customer)?;
    let s = summary(&memory, identity, &key).await?;
    record(&memory, s).await
}

pub async fn mark_called(
    app: &App,
    identity: &Identity,
    customer: Option<pb::CustomerRef>,
    called_by: String,
) -> Result<pb::CustomerRecord, Status> {
    let memory = memory(app)?;
    let key = resolve(app, &memory, customer)?;
    // Who called is who is signed in, not what the request says.
    let by = match identity.authenticated {
        true => identity.name.clone(),
        false => called_by.trim().to_string(),
    };
    if by.is_empty() {
        return Err(RequestError::Missing { field: "called_by" }.into());
    }
    check_identifier("called_by", &by, MAX_CALLED_BY_BYTES)?;
    summary(&memory, identity, &key).await?;
    let (m, k) = (memory.clone(), key.clone());
    blocking(move || m.store.mark_called(&k, &by, customers::now_ms())).await?;
    let s = summary(&memory, identity, &key).await?;
    record(&memory, s).await
}

/// Right to erasure: live conversations first (so no new contact of theirs is recorded after;
/// in a cluster, wherever they are decided), then the store, then the alert log's events of
/// every conversation of theirs (in a cluster, the other replicas' copies when they apply the
/// erasure from the customers stream).
pub async fn delete(
    app: &App,
    identity: &Identity,
    customer: Option<pb::CustomerRef>,
) -> Result<pb::DeleteCustomerResponse, Status> {
    let memory = memory(app)?;
    let key = resolve(app, &memory, customer)?;
    // A tenant-limited token may erase only its tenants' customers.
    let known = {
        let (m, k) = (memory.clone(), key.clone());
        blocking(move || m.store.summary(&k)).await?
    };
    if let Some(s) = &known
        && !identity.may_see_tenant(&s.tenant)
    {
        return Err(RequestError::UnknownCustomer(key).into());
    }
    let live = app.store.forget_customer_everywhere(&key).await?;
    // Conversations of theirs that are neither contacts nor live (ended before customer memory
    // recorded them, or their replica died) are found by their events; the erasure names them
    // with the live ones (in cluster mode every replica blanks what it is told).
    let (log, k) = (app.hub.log().clone(), key.clone());
    let named = tokio::task::spawn_blocking(move || log.conversations_of(&k))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut others = live.clone();
    others.extend(named.into_iter().filter(|c| !live.contains(c)));
    // Contacts handed to the writer before now are in the store when it is erased, or dropped
    // (the store failing): none is written after.
    let (m, k, l) = (memory.clone(), key.clone(), others.clone());
    let erased = blocking(move || {
        m.forget_pending(&k);
        m.store.delete(&k, &l)
    })
    .await?;
    if known.is_none() && others.is_empty() && erased.contacts == 0 {
        return Err(RequestError::UnknownCustomer(key).into());
    }
    let mut conversations = erased.conversation_ids;
    conversations.extend(others);
    conversations.sort();
    conversations.dedup();
    let events = app
        .hub
        .erase(conversations)
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    // The conversation state file: the forgotten conversations' rows go now, and no earlier
    // version of them (or of the ended ones) stays in its write-ahead log.
    if let Some(state) = app.state.clone() {
        tokio::task::spawn_blocking(move || state.save_and_scrub())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::unavailable(e.to_string()))?;
    }
    tracing::info!(
        customer = %key,
        contacts = erased.contacts,
        events,
        live = live.len(),
        by = %identity.name,
        "customer erased"
    );
    Ok(pb::DeleteCustomerResponse {
        customer_key: key,
        contacts_deleted: erased.contacts as u32,
        alert_events_erased: events as u32,
        conversations_forgotten: live.len() as u32,
    })
}

#[tonic::async_trait]
impl CustomerMemoryApi for CustomerMemoryService {
    async fn list_silent_customers(
        &self,
        request: Request<pb::ListSilentCustomersRequest>,
    ) -> Result<Response<pb::ListSilentCustomersResponse>, Status> {
        let identity = Identity::require(&request, &[Role::Supervisor])?;
        silent(&self.app, &identity, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_customer(
        &self,
        request: Request<pb::GetCustomerRequest>,
    ) -> Result<Response<pb::CustomerRecord>, Status> {
        let identity = Identity::require(&request, &[Role::Supervisor])?;
        get(&self.app, &identity, request.into_inner().customer)
            .await
            .map(Response::new)
    }

    async fn mark_customer_called(
        &self,
        request: Request<pb::MarkCustomerCalledRequest>,
    ) -> Result<Response<pb::CustomerRecord>, Status> {
        let identity = Identity::require(&request, &[Role::Supervisor])?;
        let req = request.into_inner();
        mark_called(&self.app, &identity, req.customer, req.called_by)
            .await
            .map(Response::new)
    }

    async fn delete_customer(
        &self,
        request: Request<pb::DeleteCustomerRequest>,
    ) -> Result<Response<pb::DeleteCustomerResponse>, Status> {
        let identity = Identity::require(&request, &[Role::Admin])?;
        delete(&self.app, &identity, request.into_inner().customer)
            .await
            .map(Response::new)
    }
}
