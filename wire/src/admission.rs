//! Admission: which connections a data port takes frames from.
//!
//! In Kubernetes every pod in the namespace can reach every data port, so a stage trusts
//! nothing it has not admitted. A connection's first frame must be a [`Hello`] that names
//! this pipeline, the role that feeds this stage (its upstream in the plan), a replica the
//! plan has (in run mode, each once: a second connection for a live or finished replica is
//! refused) and, when a shared token is configured, the token (compared in constant time).
//! Until then the connection may send only frames of at most [`crate::codec::HELLO_MAX`]
//! bytes and must say hello within [`HELLO_TIMEOUT`]; it holds a permit of the port's
//! connection limit. Every refusal is counted in `pipeline_frames_rejected_total` under its
//! reason, and logged at most once a second ([`LogThrottle`]).
//!
//! The token is a shared secret, sent as its SHA-256 digest: it keeps out a peer that does
//! not have it (a stray or hostile pod, a mis-wired pipeline), not one that can read the
//! traffic (there is no TLS). NetworkPolicies (rendered by the operator) are the other layer.

use crate::codec::{FrameError, Hello};
use pipeline_plan::{Role, StageConfig};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// How long a new connection may take to say hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a started frame may take to arrive completely, once the stage is reading.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// The SHA-256 digest of a shared token.
pub type TokenDigest = [u8; 32];

/// The digest of a token given as text (surrounding whitespace, a trailing newline, ignored).
pub fn token_digest(token: &str) -> TokenDigest {
    Sha256::digest(token.trim().as_bytes()).into()
}

/// Read a token file (a Secret mounted as a file in Kubernetes). An empty file is an error:
/// it would admit every peer while looking configured.
pub fn read_token_file(path: &Path) -> Result<TokenDigest, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading the token file {}: {e}", path.display()))?;
    if text.trim().is_empty() {
        return Err(format!("the token file {} is empty", path.display()));
    }
    Ok(token_digest(&text))
}

/// The hello this stage sends on a new downstream connection with stream id `stream_id`.
pub fn hello(cfg: &StageConfig, token: Option<&TokenDigest>, stream_id: u32) -> Hello {
    let role = cfg.role();
    Hello {
        stream_id,
        role: role_index(role),
        replica: cfg.replica,
        token: token.copied().unwrap_or([0; 32]),
        pipeline: cfg.pipeline.clone(),
    }
}

/// A role as the hello names it: its index in [`Role::CHAIN`].
pub fn role_index(role: Role) -> u8 {
    Role::CHAIN.iter().position(|r| *r == role).unwrap_or(0) as u8
}

/// What a data port admits: the stage's own plan.
#[derive(Clone, Debug)]
pub struct Expect {
    pub pipeline: String,
    /// The role that feeds this stage (`None`: none does, and nothing is admitted).
    pub upstream: Option<Role>,
    /// Replicas of the upstream stage.
    pub upstreams: u32,
    /// Run mode: each replica is admitted once (service mode: pods come and go, and a
    /// Deployment's pods have no index).
    pub one_per_replica: bool,
    pub token: Option<TokenDigest>,
}

impl Expect {
    pub fn of(cfg: &StageConfig, token: Option<TokenDigest>) -> Self {
        Expect {
            pipeline: cfg.pipeline.clone(),
            upstream: cfg.role().upstream(),
            upstreams: cfg.upstreams,
            one_per_replica: !cfg.service,
            token,
        }
    }

    /// Check a hello against the plan (not yet against the live connections: [`Roster`]).
    pub fn check(&self, hello: &Hello) -> Result<(), FrameError> {
        if let Some(want) = &self.token {
            // Constant time: how much of a guess matched is not observable.
            if !bool::from(hello.token.ct_eq(want)) {
                return Err(FrameError::BadToken);
            }
        }
        if hello.pipeline != self.pipeline {
            return Err(FrameError::WrongPipeline);
        }
        if self.upstream.map(role_index) != Some(hello.role) {
            return Err(FrameError::WrongRole);
        }
        if self.one_per_replica && hello.replica >= self.upstreams {
            return Err(FrameError::BadReplica);
        }
        Ok(())
    }
}

/// The replicas connected now, and (run mode) those whose stream has ended.
#[derive(Default)]
pub struct Roster {
    inner: Mutex<RosterState>,
}

#[derive(Default)]
struct RosterState {
    live: HashSet<u32>,
    ended: HashSet<u32>,
}

/// A replica's place in the roster, held by its connection; released when dropped.
pub struct Seat {
    roster: Arc<Roster>,
    replica: Option<u32>,
}

impl Seat {
    /// The replica's stream ended cleanly: in run mode it is not admitted again.
    pub fn ended(&self) {
        if let (Some(r), Ok(mut s)) = (self.replica, self.roster.inner.lock()) {
            s.ended.insert(r);
        }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        if let (Some(r), Ok(mut s)) = (self.replica, self.roster.inner.lock()) {
            s.live.remove(&r);
        }
    }
}

impl Roster {
    /// Seat a checked hello's replica: refused if it is connected already or (run mode) its
    /// stream has ended.
    pub fn seat(self: &Arc<Self>, expect: &Expect, hello: &Hello) -> Result<Seat, FrameError> {
        if !expect.one_per_replica {
            return Ok(Seat {
                roster: self.clone(),
                replica: None,
            });
        }
        let mut s = self.inner.lock().map_err(|_| FrameError::BadReplica)?;
        if s.ended.contains(&hello.replica) || !s.live.insert(hello.replica) {
            return Err(FrameError::BadReplica);
        }
        Ok(Seat {
            roster: self.clone(),
            replica: Some(hello.replica),
        })
    }
}

/// At most one log line per interval for a kind of event that a peer can repeat at will (a
/// flood of rejected connections): the line says how many were not logged since the last.
pub struct LogThrottle {
    every: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl LogThrottle {
    pub const fn new(every: Duration) -> Self {
        LogThrottle {
            every,
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed since the last line)` if a line may be logged now.
    pub fn allow(&self) -> Option<u64> {
        let Ok(mut last) = self.last.lock() else {
            return None;
        };
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < self.every) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline_plan::StageKnobs;

    fn cfg(role: Role) -> StageConfig {
        let mut c = StageConfig::new("demo", StageKnobs::defaults(role));
        c.upstreams = 2;
        c
    }

    fn parse_hello(replica: u32) -> Hello {
        let mut c = cfg(Role::Parse);
        c.replica = replica;
        hello(&c, None, 9)
    }

    #[test]
    fn a_hello_is_checked_against_the_plan() {
        let expect = Expect::of(&cfg(Role::Aggregate), None);
        assert_eq!(expect.check(&parse_hello(1)), Ok(()));
        assert_eq!(
            expect.check(&parse_hello(2)),
            Err(FrameError::BadReplica),
            "the plan has two parse replicas"
        );
        let source = hello(&cfg(Role::Source), None, 9);
        assert_eq!(expect.check(&source), Err(FrameError::WrongRole));
        let other = Hello {
            pipeline: "other".into(),
            ..parse_hello(0)
        };
        assert_eq!(expect.check(&other), Err(FrameError::WrongPipeline));
        // The source has no upstream: nothing is admitted to it.
        let none = Expect::of(&cfg(Role::Source), None);
        assert_eq!(none.check(&source), Err(FrameError::WrongRole));
    }

    #[test]
    fn with_a_token_only_its_holders_are_admitted() {
        let t = token_digest("s3cret\n");
        assert_eq!(
            t,
            token_digest("s3cret"),
            "a trailing newline is not part of it"
        );
        let expect = Expect::of(&cfg(Role::Aggregate), Some(t));
        assert_eq!(expect.check(&parse_hello(0)), Err(FrameError::BadToken));
        let mut wrong = parse_hello(0);
        wrong.token = token_digest("s3cret!");
        assert_eq!(expect.check(&wrong), Err(FrameError::BadToken));
        let mut c = cfg(Role::Parse);
        c.replica = 1;
        assert_eq!(expect.check(&hello(&c, Some(&t), 3)), Ok(()));
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(read_token_file(&empty).unwrap_err().contains("empty"));
        assert!(read_token_file(&dir.path().join("absent")).is_err());
    }

    #[test]
    fn in_run_mode_each_replica_is_seated_once_and_not_again_after_its_end() {
        let expect = Expect::of(&cfg(Role::Aggregate), None);
        let roster = Arc::new(Roster::default());
        let first = roster.seat(&expect, &parse_hello(0)).unwrap();
        assert!(
            roster.seat(&expect, &parse_hello(0)).is_err(),
            "replica 0 is live"
        );
        drop(first);
        // Gone without ending (killed, restarted): it may come back.
        let again = roster.seat(&expect, &parse_hello(0)).unwrap();
        again.ended();
        drop(again);
        assert!(
            roster.seat(&expect, &parse_hello(0)).is_err(),
            "a finished replica's stream does not start again"
        );
        assert!(roster.seat(&expect, &parse_hello(1)).is_ok());
        // Service mode: pods come and go.
        let mut svc = cfg(Role::Aggregate);
        svc.service = true;
        let expect = Expect::of(&svc, None);
        let _a = roster.seat(&expect, &parse_hello(0)).unwrap();
        let _b = roster.seat(&expect, &parse_hello(0)).unwrap();
    }

    #[test]
    fn a_throttled_log_says_how_many_lines_it_left_out() {
        let t = LogThrottle::new(Duration::from_millis(200));
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(t.allow(), Some(2));
    }
}
