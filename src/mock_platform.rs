//! `shopd mock-platform`: a real receiver for shopd's events, for tests, demos and benchmarks.
//! It verifies signatures, dedupes on `shopd-event-id`, can fail or be slow on purpose, and
//! reports what it received.
//!
//! - `POST /events` (or `POST /`): receive one event
//! - `GET /events`: the distinct events received, in arrival order
//! - `GET /stats`: counters, distinct events by type (`shopd-event-type`, whatever the type),
//!   the most requests it ever had in flight at once, the connections it accepted, and the
//!   latency from each event's `occurredAt` to its first arrival
//! - `PUT /config {failRate?, delayMs?}`: change behaviour while running
//!
//! Connections are kept alive (HTTP/1.1 keep-alive, `TCP_NODELAY`), so a sender with a
//! connection pool reuses a handful of them however many events it sends.
//!
//! It keeps what it received in memory: it stands in for someone else's system, not for
//! shopd's storage.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
use axum::serve::ListenerExt;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::signature;

#[derive(Clone, Debug, Default)]
pub struct MockConfig {
    /// Verify `shopd-signature` with this secret (reject with 401 when wrong).
    pub secret: Option<String>,
    /// Fraction of deliveries answered `503` on purpose (0.0..=1.0).
    pub fail_rate: f64,
    /// Delay before answering.
    pub delay: Duration,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MockStats {
    /// Requests received, whatever happened to them.
    pub requests: u64,
    /// Distinct events accepted.
    pub unique_events: u64,
    /// Redeliveries of an event already accepted (answered 200, not stored again).
    pub duplicates: u64,
    pub failed_on_purpose: u64,
    pub bad_signatures: u64,
    pub malformed: u64,
    /// Distinct events accepted, by `shopd-event-type` (the payload's `type` when the header
    /// is missing). Any type is counted: a new one needs no change here.
    pub by_type: BTreeMap<String, u64>,
    /// Requests being handled right now.
    pub in_flight: u64,
    /// The most requests ever handled at once (a sender's concurrency bound, seen from here).
    pub max_in_flight: u64,
    /// TCP connections accepted (with keep-alive, a pooled sender opens few).
    pub connections: u64,
    /// From each distinct event's `occurredAt` to its first arrival here, in milliseconds
    /// (absent until an event with an `occurredAt` arrived).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<LatencyStats>,
}

/// Percentiles of a set of latencies, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LatencyStats {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl LatencyStats {
    /// Nearest-rank percentiles; `None` for no samples.
    pub fn of(samples: &[f64]) -> Option<LatencyStats> {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let last = sorted.len().checked_sub(1)?;
        let at = |q: f64| {
            let rank = (q * sorted.len() as f64).ceil() as usize;
            sorted[rank.saturating_sub(1).min(last)]
        };
        Some(LatencyStats {
            count: sorted.len() as u64,
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: sorted[last],
        })
    }
}

/// Latency samples kept (enough for minutes at thousands of events a second).
const MAX_LATENCY_SAMPLES: usize = 4_000_000;

#[derive(Default)]
struct Inner {
    config: MockConfig,
    seen: HashSet<String>,
    events: Vec<Value>,
    stats: MockStats,
    latencies_ms: Vec<f64>,
}

/// Counts a request in flight until dropped (also when the sender hangs up mid-request).
struct InFlight(MockPlatform);

impl InFlight {
    fn enter(platform: &MockPlatform) -> InFlight {
        platform.with(|i| {
            i.stats.requests += 1;
            i.stats.in_flight += 1;
            i.stats.max_in_flight = i.stats.max_in_flight.max(i.stats.in_flight);
        });
        InFlight(platform.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .with(|i| i.stats.in_flight = i.stats.in_flight.saturating_sub(1));
    }
}

#[derive(Clone, Default)]
pub struct MockPlatform(Arc<Mutex<Inner>>);

impl MockPlatform {
    pub fn new(config: MockConfig) -> Self {
        MockPlatform(Arc::new(Mutex::new(Inner {
            config,
            ..Inner::default()
        })))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = match self.0.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut inner)
    }

    pub fn stats(&self) -> MockStats {
        let (mut stats, latencies) = self.with(|i| (i.stats.clone(), i.latencies_ms.clone()));
        stats.latency_ms = LatencyStats::of(&latencies);
        stats
    }

    pub fn events(&self) -> Vec<Value> {
        self.with(|i| i.events.clone())
    }

    pub fn set_fail_rate(&self, rate: f64) {
        self.with(|i| i.config.fail_rate = rate.clamp(0.0, 1.0));
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/", post(receive))
            .route("/events", post(receive).get(list_events))
            .route("/stats", get(stats))
            .route("/config", put(configure))
            .with_state(self.clone())
    }

    /// Serve on `listener` until `shutdown`: connections are kept alive between requests
    /// (hyper's default) and answers are not held back by Nagle (`TCP_NODELAY`).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let counter = self.clone();
        let listener = listener.tap_io(move |stream| {
            counter.with(|i| i.stats.connections += 1);
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(error = %err, "cannot set TCP_NODELAY");
            }
        });
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }
}

/// A listener for `shopd mock-platform` with a long accept queue (4,096, capped by the
/// kernel's `somaxconn`), so a burst of new connections is queued rather than refused.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// How long ago `occurred_at` (RFC 3339) was, in milliseconds.
fn age_ms(occurred_at: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> Option<f64> {
    let at = chrono::DateTime::parse_from_rfc3339(occurred_at?).ok()?;
    let micros = (now - at.with_timezone(&chrono::Utc)).num_microseconds()?;
    Some(micros as f64 / 1000.0)
}

async fn receive(
    State(platform): State<MockPlatform>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, axum::Json<Value>) {
    let arrived = chrono::Utc::now();
    let _in_flight = InFlight::enter(&platform);
    let (delay, secret, fail_rate) =
        platform.with(|i| (i.config.delay, i.config.secret.clone(), i.config.fail_rate));
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(secret) = secret {
        let header = headers
            .get(signature::HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if let Err(err) =
            signature::verify(&secret, header, &body, chrono::Utc::now().timestamp(), 300)
        {
            platform.with(|i| i.stats.bad_signatures += 1);
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({ "error": err.to_string() })),
            );
        }
    }
    if fail_rate > 0.0 && rand::rng().random::<f64>() < fail_rate {
        platform.with(|i| i.stats.failed_on_purpose += 1);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "error": "failing on purpose" })),
        );
    }
    let event_id = headers
        .get("shopd-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let payload: Option<Value> = serde_json::from_slice(&body).ok();
    let (Some(event_id), Some(payload)) = (event_id, payload) else {
        platform.with(|i| i.stats.malformed += 1);
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": "need shopd-event-id and a JSON body" })),
        );
    };
    let event_type = headers
        .get("shopd-event-type")
        .and_then(|v| v.to_str().ok())
        .or_else(|| payload["type"].as_str())
        .unwrap_or("UNKNOWN")
        .to_string();
    let age = age_ms(payload["occurredAt"].as_str(), arrived);
    let duplicate = platform.with(|i| {
        if i.seen.insert(event_id.clone()) {
            i.stats.unique_events += 1;
            *i.stats.by_type.entry(event_type).or_default() += 1;
            if let Some(age) = age
                && i.latencies_ms.len() < MAX_LATENCY_SAMPLES
            {
                i.latencies_ms.push(age);
            }
            i.events.push(payload);
            false
        } else {
            i.stats.duplicates += 1;
            true
        }
    });
    (
        StatusCode::OK,
        axum::Json(json!({ "eventId": event_id, "duplicate": duplicate })),
    )
}

async fn list_events(State(platform): State<MockPlatform>) -> axum::Json<Value> {
    axum::Json(json!({ "events": platform.events() }))
}

async fn stats(State(platform): State<MockPlatform>) -> axum::Json<MockStats> {
    axum::Json(platform.stats())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigRequest {
    fail_rate: Option<f64>,
    delay_ms: Option<u64>,
}

async fn configure(
    State(platform): State<MockPlatform>,
    axum::Json(req): axum::Json<ConfigRequest>,
) -> StatusCode {
    platform.with(|i| {
        if let Some(rate) = req.fail_rate {
            i.config.fail_rate = rate.clamp(0.0, 1.0);
        }
        if let Some(ms) = req.delay_ms {
            i.config.delay = Duration::from_millis(ms);
        }
    });
    StatusCode::NO_CONTENT
}
