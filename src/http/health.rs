//! Health endpoints, one question each:
//!
//! - `GET /livez`: is the process serving HTTP? For liveness checks and the container's
//!   `HEALTHCHECK`: a node that answers it is worth keeping, so a Redis outage (which every node
//!   sees at once) never makes an orchestrator restart the whole fleet.
//! - `GET /readyz`: can this node take clients now? 503 with the reason while it cannot
//!   (cluster mode: Redis unreachable, or the cross-node bus not subscribed): for load
//!   balancers and readiness checks, which stop sending clients until it recovers by itself.
//! - `GET /healthz`: readiness plus counts, as existing users read it (fields kept).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Json;
use serde::Serialize;

use super::AppState;

/// `/livez` and `/readyz` answer.
#[derive(Serialize)]
pub(super) struct Probe {
    /// `ok`, or `unavailable` (readiness only).
    status: &'static str,
    /// Why the node cannot take clients.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// `/healthz` answer.
#[derive(Serialize)]
pub(super) struct Health {
    status: &'static str,
    /// Why the node is unhealthy (cluster mode: Redis cannot be reached).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// `memory` (one node) or `cluster` (several nodes on Redis).
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_id: Option<String>,
    /// Channels of the whole deployment.
    channels: usize,
    sockets: usize,
    indexed_sockets: usize,
    /// Client addresses owning a channel (per-address limits); 0 when no channel is open.
    indexed_addresses: usize,
    /// Client addresses with an open Socket.IO session; 0 when nobody is connected.
    client_addresses: usize,
}

/// Why this node cannot take clients now, if it cannot.
fn unready(state: &AppState) -> Option<String> {
    state
        .cluster
        .as_ref()
        .and_then(|cluster| cluster.health.problem())
}

fn status_code(problem: &Option<String>) -> StatusCode {
    match problem {
        Some(_) => StatusCode::SERVICE_UNAVAILABLE,
        None => StatusCode::OK,
    }
}

fn status_word(problem: &Option<String>) -> &'static str {
    match problem {
        Some(_) => "unavailable",
        None => "ok",
    }
}

/// `GET /livez`: answering at all is the answer; nothing it depends on is consulted.
pub(super) async fn livez() -> Json<Probe> {
    Json(Probe {
        status: "ok",
        reason: None,
    })
}

/// `GET /readyz`.
pub(super) async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Probe>) {
    let reason = unready(&state);
    let probe = Probe {
        status: status_word(&reason),
        reason,
    };
    (status_code(&probe.reason), Json(probe))
}

/// `GET /healthz`.
pub(super) async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let problem = unready(&state);
    // While Redis is away the counts would only repeat the failure.
    let stats = match problem {
        Some(_) => Default::default(),
        None => state.registry.stats().await,
    };
    let health = Health {
        status: status_word(&problem),
        mode: if state.cluster.is_some() {
            "cluster"
        } else {
            "memory"
        },
        node_id: state.cluster.as_ref().map(|c| c.node.to_string()),
        channels: stats.channels,
        sockets: state.public_ids.len(),
        indexed_sockets: stats.indexed_sockets,
        indexed_addresses: stats.indexed_addresses,
        client_addresses: state.sessions.addresses(),
        reason: problem,
    };
    (status_code(&health.reason), Json(health))
}
