//! The Tickets helpdesk API that `examples/tickets-source` reads (see its README),
//! served in process: bearer auth, `per_page` pages linked by a `Link: <...>;
//! rel="next"` header (relative for tickets, absolute for agents) and a `since`
//! filter on tickets. Tickets are ordered by `updated_at`, then `id`; two tickets
//! share each timestamp, so a `since` boundary holds more than one ticket.
//! Every request's path and query is recorded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::lock;

/// The most records per page the API serves.
pub const MAX_PAGE_SIZE: usize = 1000;

/// State of a Tickets server.
pub struct TicketsApi {
    /// The token every request must carry as `Authorization: Bearer <token>`.
    pub token: String,
    tickets: Mutex<Vec<Value>>,
    agents: Vec<Value>,
    requests: Mutex<Vec<String>>,
}

/// A router serving tickets `1..=tickets` and agents `1..=agents`.
pub fn router(token: &str, tickets: u64, agents: u64) -> (Router, Arc<TicketsApi>) {
    let state = Arc::new(TicketsApi {
        token: token.to_string(),
        tickets: Mutex::new(
            (1..=tickets)
                .map(|id| ticket(id, timestamp(id / 2)))
                .collect(),
        ),
        agents: (1..=agents).map(agent).collect(),
        requests: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/api/tickets", get(list_tickets))
        .route("/api/agents", get(list_agents))
        .with_state(state.clone());
    (app, state)
}

/// `2024-03-01T00:00:00Z` plus `minutes`, in the API's one timestamp format.
pub fn timestamp(minutes: u64) -> String {
    format!(
        "2024-03-{:02}T{:02}:{:02}:00Z",
        1 + minutes / 1440,
        minutes / 60 % 24,
        minutes % 60
    )
}

/// Ticket `id`, last updated at `updated_at`.
pub fn ticket(id: u64, updated_at: String) -> Value {
    const STATUS: [&str; 4] = ["open", "pending", "solved", "closed"];
    json!({
        "id": id,
        "subject": format!("Ticket number {id}"),
        "status": STATUS[(id % 4) as usize],
        "assignee_id": if id.is_multiple_of(3) { Value::Null } else { json!(id % 7 + 1) },
        "created_at": timestamp(id / 2),
        "updated_at": updated_at,
    })
}

fn agent(id: u64) -> Value {
    json!({"id": id, "name": format!("Agent {id}"), "email": format!("agent{id}@example.com")})
}

impl TicketsApi {
    /// Set the `updated_at` of ticket `id`, adding the ticket if it is new.
    pub fn upsert(&self, id: u64, updated_at: String) {
        let mut tickets = lock(&self.tickets);
        tickets.retain(|t| t["id"].as_u64() != Some(id));
        tickets.push(ticket(id, updated_at));
    }

    /// Ids of the tickets a read with `since` must return, in the API's order.
    pub fn ids_since(&self, since: Option<&str>) -> Vec<u64> {
        selected(&lock(&self.tickets), since)
            .iter()
            .filter_map(|t| t["id"].as_u64())
            .collect()
    }

    /// Every ticket, in the API's order.
    pub fn tickets(&self) -> Vec<Value> {
        selected(&lock(&self.tickets), None)
    }

    /// Ids of all agents.
    pub fn agent_ids(&self) -> Vec<u64> {
        self.agents
            .iter()
            .filter_map(|a| a["id"].as_u64())
            .collect()
    }

    /// Path and query of every request so far, oldest first.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.requests).clone()
    }
}

/// Tickets with `updated_at >= since`, ordered by `updated_at`, then `id`.
fn selected(tickets: &[Value], since: Option<&str>) -> Vec<Value> {
    let mut out: Vec<Value> = tickets
        .iter()
        .filter(|t| since.is_none_or(|s| t["updated_at"].as_str().is_some_and(|u| u >= s)))
        .cloned()
        .collect();
    out.sort_by(|a, b| {
        let key = |t: &Value| {
            (
                t["updated_at"].as_str().map(str::to_owned),
                t["id"].as_u64(),
            )
        };
        key(a).cmp(&key(b))
    });
    out
}

type Params = Query<HashMap<String, String>>;

async fn list_tickets(
    State(api): State<Arc<TicketsApi>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    let since = params.get("since").cloned();
    respond(&api, &headers, &params, "/api/tickets", |api| {
        selected(&lock(&api.tickets), since.as_deref())
    })
}

async fn list_agents(
    State(api): State<Arc<TicketsApi>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    respond(&api, &headers, &params, "/api/agents", |api| {
        api.agents.clone()
    })
}

/// Check auth and paging parameters, then answer one page of `records`.
fn respond(
    api: &TicketsApi,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
    path: &str,
    records: impl FnOnce(&TicketsApi) -> Vec<Value>,
) -> Response {
    let mut query: Vec<_> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    query.sort();
    lock(&api.requests).push(format!("{path}?{}", query.join("&")));

    let bearer = format!("Bearer {}", api.token);
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(&bearer)
    {
        return (StatusCode::UNAUTHORIZED, "bad token").into_response();
    }
    if headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) != Some("application/json") {
        return (StatusCode::NOT_ACCEPTABLE, "send Accept: application/json").into_response();
    }
    let per_page = params.get("per_page").and_then(|p| p.parse::<usize>().ok());
    let Some(per_page) = per_page.filter(|n| (1..=MAX_PAGE_SIZE).contains(n)) else {
        return (StatusCode::BAD_REQUEST, "per_page must be 1 to 1000").into_response();
    };
    let page = match params.get("page").map(|p| p.parse::<usize>()) {
        None => 1,
        Some(Ok(p)) if p >= 1 => p,
        Some(_) => return (StatusCode::BAD_REQUEST, "bad page").into_response(),
    };
    let all = records(api);
    let start = (page - 1) * per_page;
    let body: Vec<&Value> = all.iter().skip(start).take(per_page).collect();
    let mut response = axum::Json(body).into_response();
    if start + per_page < all.len() {
        let mut next = format!("{path}?per_page={per_page}&page={}", page + 1);
        if let Some(since) = params.get("since") {
            next.push_str("&since=");
            next.push_str(&encode(since));
        }
        // Tickets link relatively, agents absolutely: the README allows both.
        if path == "/api/agents" {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            next = format!("http://{host}{next}");
        }
        let link = format!("<{next}>; rel=\"next\"");
        if let Ok(value) = link.parse() {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    response
}

/// Percent-encode everything but unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
