//! The cohort leaderboard server (`observatory leaderboard serve`): instructors create a
//! cohort, hand out tokens from a roster, open labs with deadlines and grading; students
//! upload the bundle of a passed `lab check` (`observatory lab submit N`); everybody watches
//! the boards. The rankings themselves (tie bands, tiers, validation, grades) are
//! `observatory-leaderboard`'s; this crate stores, serves and draws them.
//!
//! - [`db`]: SQLite (default, a file) or PostgreSQL, the same statements on both, migrations
//!   embedded and run at start.
//! - [`auth`]: tokens (shown once, stored hashed, revocable, rotatable), 401 and 403.
//! - [`limits`]: body size (413), rate per token (429), uploads per student per lab per day.
//! - [`api`]: the JSON API and its OpenAPI document (`/api/openapi.json`, from the code).
//! - [`web`]: server-rendered pages (minijinja templates, SVG plots from [`plot`]).
//! - [`views`]: boards, overviews, histories, grades, who is stuck: computed once for both.
//! - [`client`]: the HTTP client the CLI, the operator and the tests use.
//!
//! Without the default feature `server`, only [`wire`] and [`client`] are built: what the
//! operator needs to post an Experiment's verdict, without a database or templates.

pub mod client;
pub mod wire;

#[cfg(feature = "server")]
pub mod api;
#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod db;
#[cfg(feature = "server")]
pub mod limits;
#[cfg(feature = "server")]
pub mod plot;
#[cfg(feature = "server")]
mod server;
#[cfg(feature = "server")]
pub mod views;
#[cfg(feature = "server")]
pub mod web;

#[cfg(feature = "server")]
pub use server::*;
