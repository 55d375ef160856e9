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
//! - [`client`]: the HTTP client the CLI and the tests use.

pub mod api;
pub mod auth;
pub mod client;
pub mod db;
pub mod limits;
pub mod plot;
pub mod views;
pub mod web;
pub mod wire;

use observatory_leaderboard::LabRule;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The web page's cookie that carries a token.
pub const COOKIE: &str = "observatory_token";

/// A lab the server knows: the course's rule (what bundles are checked against) and title.
#[derive(Clone, Debug, PartialEq)]
pub struct LabInfo {
    pub rule: LabRule,
    pub title: String,
}

/// How to serve.
#[derive(Clone, Debug)]
pub struct Config {
    /// `sqlite://FILE?mode=rwc` or `postgres://...`.
    pub database_url: String,
    pub listen: SocketAddr,
    /// The server's admin token (creates cohorts).
    pub admin_token: String,
    /// The course's labs.
    pub labs: Vec<LabInfo>,
    pub rate: limits::RateLimit,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// Rendered answers of the public pages, valid until the next write (every write bumps the
/// generation): the board is read far more often than it changes.
#[derive(Default)]
pub struct Cache {
    generation: AtomicU64,
    entries: Mutex<HashMap<String, (u64, Arc<Cached>)>>,
}

/// A cached answer.
pub struct Cached {
    pub content_type: &'static str,
    pub body: bytes::Bytes,
}

/// Entries kept at most (past it, the cache starts over).
const CACHE_ENTRIES: usize = 4096;

impl Cache {
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn get(&self, key: &str) -> Option<Arc<Cached>> {
        let generation = self.generation.load(Ordering::SeqCst);
        let map = self.entries.lock().ok()?;
        map.get(key)
            .filter(|(g, _)| *g == generation)
            .map(|(_, c)| c.clone())
    }

    /// Keep `value` for `key` if nothing was written since `generation` was read.
    pub fn put(&self, key: String, generation: u64, value: Arc<Cached>) {
        if let Ok(mut map) = self.entries.lock() {
            if map.len() >= CACHE_ENTRIES {
                map.clear();
            }
            map.insert(key, (generation, value));
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
}

/// The server's state.
pub struct App {
    pub db: db::Db,
    pub admin_sha256: String,
    pub labs: BTreeMap<u32, LabInfo>,
    pub limiter: limits::Limiter,
    pub cache: Cache,
    pub templates: minijinja::Environment<'static>,
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// A time for people and for the API: RFC 3339, UTC, to the second.
pub fn show_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// Parse an RFC 3339 time into Unix milliseconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| format!("{s:?} is not an RFC 3339 time (like 2026-12-24T18:00:00Z): {e}"))
}

/// Open the database, run the migrations, and build the app.
pub async fn app(config: &Config) -> Result<Arc<App>, ServeError> {
    let db = db::Db::open(&config.database_url).await?;
    Ok(Arc::new(App {
        db,
        admin_sha256: auth::digest(&config.admin_token),
        labs: config
            .labs
            .iter()
            .map(|l| (l.rule.lab, l.clone()))
            .collect(),
        limiter: limits::Limiter::new(config.rate),
        cache: Cache::default(),
        templates: web::templates(),
    }))
}

/// The whole router: the API, the OpenAPI document and the pages.
pub fn router(app: Arc<App>) -> axum::Router {
    api::routes()
        .merge(web::routes())
        .layer(axum::extract::DefaultBodyLimit::max(limits::MAX_BODY_BYTES))
        .with_state(app)
}

/// Serve until SIGINT or SIGTERM. `ready(addr)` is called once the socket listens (the CLI
/// prints the address; tests read it).
pub async fn serve(config: Config, ready: impl FnOnce(SocketAddr)) -> Result<(), ServeError> {
    let app = app(&config).await?;
    tracing::info!(
        engine = app.db.engine,
        labs = app.labs.len(),
        "database ready"
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(ServeError::Serve)?;
    ready(addr);
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown())
        .await
        .map_err(ServeError::Serve)
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}
