//! Black-box tests: the real router over HTTP against a real database, on SQLite and
//! PostgreSQL. One binary (faster to link); one module per resource.

mod browser;
mod helpers;
mod invariants;
mod layers;

mod admin;
mod balance;
mod cli;
mod concurrency;
mod console;
mod coupons;
mod crash;
mod formats;
mod group_commit;
mod input;
mod members;
mod model;
mod openapi;
mod order_races;
mod orders;
mod outbox;
mod products;
mod ranking;
mod refunds;
mod rules;
mod stats;
mod token_cache;
