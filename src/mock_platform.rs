//! `shopd mock-platform`: a real receiver for `ORDER_PAID` events, for tests, demos and
//! benchmarks. It verifies signatures, dedupes on `shopd-event-id`, can fail or be slow on
//! purpose, and reports what it received.
//!
//! - `POST /events` (or `POST /`): receive one event
//! - `GET /events`: the distinct events received, in arrival order
//! - `GET /stats`: counters
//! - `PUT /config {failRate?, delayMs?}`: change behaviour while running
//!
//! It keeps what it received in memory: it stands in for someone else's system, not for
//! shopd's storage.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
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
}

#[derive(Default)]
struct Inner {
    config: MockConfig,
    seen: HashSet<String>,
    events: Vec<Value>,
    stats: MockStats,
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
        self.with(|i| i.stats.clone())
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

    /// Serve on `listener` until `shutdown`.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }
}

async fn receive(
    State(platform): State<MockPlatform>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, axum::Json<Value>) {
    let (delay, secret, fail_rate) = platform.with(|i| {
        i.stats.requests += 1;
        (i.config.delay, i.config.secret.clone(), i.config.fail_rate)
    });
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
    let duplicate = platform.with(|i| {
        if i.seen.insert(event_id.clone()) {
            i.stats.unique_events += 1;
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
