//! shopd: a commerce order and payment service.
//!
//! Layout (see `docs/architecture.md`):
//! - [`api`]: HTTP resources (routers, request/response types, OpenAPI annotations)
//! - [`domain`]: pure business rules, parsed at the edge
//! - [`store`]: business commands and queries, one code path for SQLite and PostgreSQL
//! - [`db`]: pools, transactions, the dialect-neutral statement macros, migrations
//! - [`idempotency`], [`auth`], [`extract`], [`error`]: cross-cutting HTTP mechanisms
//! - [`http`]: routes, OpenAPI document, middleware, metrics endpoint
//! - [`app`], [`workers`], [`cli`], [`config`]: assembly and operations

pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod console;
pub mod db;
pub mod domain;
pub mod error;
pub mod extract;
pub mod fuzzing;
pub mod http;
pub mod idempotency;
pub mod mock_platform;
pub mod ranking;
pub mod relay;
pub mod seed;
pub mod signature;
pub mod state;
pub mod store;
pub mod workers;

pub use app::Application;
pub use state::AppState;
