//! The server: its configuration, state, page cache, router and `serve` (feature `server`).

use crate::{api, auth, db, limits, web};
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
    /// A code lab (the change is code in a slot, compared across students for copies), not a
    /// knob lab (whose few right answers everybody shares).
    pub code: bool,
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
/// generation): the board is read far more often than it changes. One computation per page and
/// generation: the first reader after a write computes it (so a lone client reads its own
/// writes); readers that arrive while it computes get the last page computed before it instead
/// of waiting, if there is one (under a steady stream of uploads a busy board would otherwise
/// keep its readers waiting on one recomputation after another). A page served so is at most
/// one computation behind.
#[derive(Default)]
pub struct Cache {
    generation: AtomicU64,
    entries: Mutex<HashMap<String, (u64, Arc<Slot>)>>,
}

/// A page of one generation: computed once, by the first request that needs it.
#[derive(Default)]
pub struct Slot {
    cell: tokio::sync::OnceCell<Arc<Cached>>,
    /// A request is computing it.
    started: std::sync::atomic::AtomicBool,
    /// The last page computed before this generation's.
    stale: Option<Arc<Cached>>,
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

    /// The slot of `key` for the current generation (a new, empty one when there is none yet,
    /// holding the last page computed as its stale one).
    fn slot(&self, key: &str) -> Arc<Slot> {
        let generation = self.generation.load(Ordering::SeqCst);
        let Ok(mut map) = self.entries.lock() else {
            // A poisoned lock: serve uncached rather than fail.
            return Arc::default();
        };
        let stale = match map.get(key) {
            Some((g, slot)) if *g == generation => return slot.clone(),
            Some((_, old)) => old.cell.get().cloned().or_else(|| old.stale.clone()),
            None => None,
        };
        if map.len() >= CACHE_ENTRIES {
            map.clear();
        }
        let slot = Arc::new(Slot {
            stale,
            ..Slot::default()
        });
        map.insert(key.to_string(), (generation, slot.clone()));
        slot
    }

    /// The page `key` of this generation: computed by the first request, the last page while
    /// it computes (see [`Cache`]). A failure is not kept: the next request computes again.
    pub async fn get_or_compute<E, F, Fut>(&self, key: &str, compute: F) -> Result<Arc<Cached>, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Arc<Cached>, E>>,
    {
        let slot = self.slot(key);
        if let Some(c) = slot.cell.get() {
            return Ok(c.clone());
        }
        if slot.started.swap(true, Ordering::SeqCst)
            && let Some(stale) = &slot.stale
        {
            return Ok(stale.clone());
        }
        let got = slot.cell.get_or_try_init(compute).await.cloned();
        if got.is_err() {
            slot.started.store(false, Ordering::SeqCst);
        }
        got
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
    let ranks: Vec<(i64, observatory_stats::Better)> = config
        .labs
        .iter()
        .map(|l| (i64::from(l.rule.lab), l.rule.better))
        .collect();
    db.rebuild_bests(&ranks).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    async fn page(
        cache: &Cache,
        computed: &AtomicUsize,
        fail: bool,
    ) -> Result<Arc<Cached>, &'static str> {
        cache
            .get_or_compute("board", || async {
                let n = computed.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                if fail {
                    return Err("the database is down");
                }
                Ok(Arc::new(Cached {
                    content_type: "text/html",
                    body: bytes::Bytes::from(format!("<table>{n}")),
                }))
            })
            .await
    }

    #[tokio::test]
    async fn readers_of_one_page_share_one_computation_per_generation() {
        let cache = Arc::new(Cache::default());
        let computed = Arc::new(AtomicUsize::new(0));
        let readers: Vec<_> = (0..32)
            .map(|_| {
                let (cache, computed) = (cache.clone(), computed.clone());
                tokio::spawn(async move { page(&cache, &computed, false).await })
            })
            .collect();
        for r in readers {
            assert_eq!(&r.await.unwrap().unwrap().body[..], b"<table>0");
        }
        assert_eq!(
            computed.load(Ordering::SeqCst),
            1,
            "32 readers, one computation"
        );
        // A write: the next reader computes the page again, once, and reads the new page.
        cache.invalidate();
        assert_eq!(
            &page(&cache, &computed, false).await.unwrap().body[..],
            b"<table>1"
        );
        page(&cache, &computed, false).await.unwrap();
        assert_eq!(computed.load(Ordering::SeqCst), 2);
        // A write while readers stream in: the first computes, the others get the last page at
        // once instead of waiting; after it, everybody gets the new one.
        cache.invalidate();
        let first = {
            let (cache, computed) = (cache.clone(), computed.clone());
            tokio::spawn(async move { page(&cache, &computed, false).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let meanwhile = page(&cache, &computed, false).await.unwrap();
        assert_eq!(
            &meanwhile.body[..],
            b"<table>1",
            "the last page, while it computes"
        );
        assert!(
            !first.is_finished(),
            "served without waiting for the computation"
        );
        assert_eq!(&first.await.unwrap().unwrap().body[..], b"<table>2");
        assert_eq!(
            &page(&cache, &computed, false).await.unwrap().body[..],
            b"<table>2"
        );
        assert_eq!(computed.load(Ordering::SeqCst), 3);
        // A failure is not kept: the next reader tries again (and a reader of a page that was
        // never computed waits for it).
        cache.invalidate();
        assert!(page(&cache, &computed, true).await.is_err());
        assert!(page(&cache, &computed, false).await.is_ok());
        assert_eq!(computed.load(Ordering::SeqCst), 5);
        let fresh = Cache::default();
        let waited = page(&fresh, &computed, false).await.unwrap();
        assert_eq!(&waited.body[..], b"<table>5");
    }
}
