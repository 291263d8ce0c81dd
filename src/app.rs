//! Application assembly: state, the HTTP surface (`http.rs`), background workers, graceful
//! shutdown.
//!
//! `Application::build()` → `port()` → `run_until_stopped()`: tests start the real app on
//! port 0 exactly as `shopd serve` does.

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::db::Db;
use crate::http::{prometheus, router};
use crate::state::AppState;
use crate::workers;

pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    generated_admin_token: Option<String>,
    shutdown: CancellationToken,
}

impl Application {
    /// Connect, migrate, make sure an admin token exists, and bind the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = Db::connect(
            &settings.database.database_url,
            &settings.database.db_options(),
        )
        .await?;
        db.migrate().await?;
        Self::build_with_db(settings, db).await
    }

    /// Like [`Application::build`] on an already connected and migrated database.
    pub async fn build_with_db(settings: Settings, db: Db) -> anyhow::Result<Self> {
        let (admin_token_hashes, generated_admin_token) =
            crate::auth::ensure_admin_tokens(&db, &settings.admin_token).await?;
        prometheus();
        let listener = TcpListener::bind(&settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let state = AppState {
            db,
            limits: settings.balance_limits(),
            settings: Arc::new(settings),
            admin_token_hashes: admin_token_hashes.into(),
            outbox_wakeup: crate::state::Wakeup::default(),
            ranking: crate::ranking::RankingCache::default(),
            member_tokens: crate::state::MemberTokenCache::default(),
        };
        // Best-sellers are served from memory: load them before serving (and so before /readyz
        // answers 200). If this fails, /readyz says 503 until the job's first run loads them.
        if let Err(err) = state.ranking.reload(&state.db).await {
            tracing::warn!(error = ?err, "cannot load the best-seller snapshot at start-up");
        }
        let router = router(state.clone());
        Ok(Self {
            listener,
            router,
            state,
            generated_admin_token,
            shutdown: CancellationToken::new(),
        })
    }

    /// The address actually bound (the port is chosen by the system for `:0`).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener.local_addr().ok()
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The admin token generated on this start (first start of an embedded database only).
    pub fn generated_admin_token(&self) -> Option<&str> {
        self.generated_admin_token.as_deref()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Cancel this token to stop the server as SIGTERM would.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serve until SIGTERM / Ctrl-C (or the shutdown token): stop accepting, finish in-flight
    /// requests, then stop the background workers.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let shutdown = self.shutdown.clone();
        let workers = workers::spawn(self.state.clone(), shutdown.clone());
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await?;
        shutdown.cancel();
        workers.join().await;
        self.state.db.close().await;
        Ok(())
    }
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        _ = terminate => tracing::info!("SIGTERM: shutting down"),
        _ = shutdown.cancelled() => {}
    }
    shutdown.cancel();
}
