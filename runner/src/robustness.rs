//! The robustness report: attacks on a real local run (stage processes on loopback, a token
//! per run, as `observatory up --local` starts them), made from outside it the way a hostile
//! or broken pod in the same namespace would, and what the pipeline counted
//! (`observatory robustness`, `make chaos`; `tests/robustness.rs` runs it in `make test`).
//!
//! Two runs. In the first, while the real source streams, every data port gets: forged ends
//! of stream (no hello, a guessed token, none), insiders holding the run's token (another
//! pipeline, the wrong role, the replica already connected, one the plan lacks), a frame of
//! 10,000 random records, frames announced just under the size limit and held half sent, and
//! a flood of connections of random bytes; every admin port gets 100 connections that never
//! finish their request headers and an abandoned 300 s profile. The second run's input holds
//! one event eleven days in the future. Each run must end by itself, conserve what the real
//! source sent (a refused impostor is rejected traffic, not loss), leave a log that reads back
//! with no bad record, keep every stage under its memory bound, and count each attack under
//! its reason.
//!
//! A silent upstream cannot be staged from outside a run: in run mode each upstream seat is
//! taken by the real replica before an attacker could say hello. Its rule (idle upstreams
//! stop holding windows back) is tested with real processes in
//! `pipeline/tests/hostile.rs::a_silent_upstream_stops_holding_windows_back_after_the_idle_timeout`.

use crate::chaos::{memory_check, ready, slug};
use crate::local::{TOKEN_FILE, find_pipeline_bin};
use crate::run::{RunConfig, run_local, sink_log_dir};
use crate::summary::RunSummary;
use anyhow::Context;
use pipeline::admission::{role_index, token_digest};
use pipeline::codec::{Hello, OutFrame};
use pipeline::context::StageStats;
use pipeline::stage::ReadyInfo;
use pipeline_plan::{Plan, Role};
use rand::{Rng, RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What one attack did and what the stages counted for it.
#[derive(Clone, Debug, Serialize)]
pub struct AttackRow {
    pub attack: String,
    /// Where it was aimed.
    pub target: String,
    /// Connections the attacker opened.
    pub connections: u64,
    /// The reasons the stage must count it under (at least one each).
    pub expected: Vec<String>,
    /// Of those connections, how many the stage had closed within the limit (hello timeout
    /// plus a margin).
    pub closed: u64,
    /// What the attack measured (e.g. "0 of 100 still open after 7 s").
    pub outcome: String,
    pub problems: Vec<String>,
}

/// One run under attack.
#[derive(Clone, Debug, Serialize)]
pub struct RunRow {
    pub run: String,
    pub events_emitted: u64,
    pub events_persisted: u64,
    pub lost: u64,
    pub unaccounted: i64,
    pub conserved: bool,
    /// The log read back: records that are not window results, windows held twice.
    pub undecodable_in_log: u64,
    pub duplicated_windows: u64,
    /// Per stage: rejected frames and connections by reason.
    pub rejected: BTreeMap<String, BTreeMap<String, u64>>,
    /// Per stage: dropped events by reason.
    pub dropped: BTreeMap<String, BTreeMap<String, u64>>,
    /// Per stage: "refused a connection" log lines.
    pub refusal_log_lines: BTreeMap<String, u64>,
    pub peak_rss_mib: BTreeMap<String, f64>,
    pub bound_mib: BTreeMap<String, f64>,
    pub attacks: Vec<AttackRow>,
    pub problems: Vec<String>,
}

impl RunRow {
    pub fn passed(&self) -> bool {
        self.problems.is_empty() && self.attacks.iter().all(|a| a.problems.is_empty())
    }
}

/// Where to run the report.
#[derive(Clone, Debug)]
pub struct Options {
    pub pipeline_bin: PathBuf,
    pub dir: PathBuf,
}

impl Options {
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        Ok(Options {
            pipeline_bin: find_pipeline_bin()?,
            dir: dir.to_path_buf(),
        })
    }
}

/// How long a refused connection may stay open: the hello timeout and a margin.
const CLOSE_LIMIT: Duration = Duration::from_secs(8);
const PIPELINE: &str = "robustness";

/// A connection of an attacker.
struct Peer {
    sock: TcpStream,
}

impl Peer {
    async fn connect(addr: &str) -> anyhow::Result<Peer> {
        let sock = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        Ok(Peer { sock })
    }

    /// Send, ignoring a refusal (the stage may close before all of it is written).
    async fn send(&mut self, bytes: &[u8]) {
        let _ = self.sock.write_all(bytes).await;
    }

    async fn hello(&mut self, pipeline: &str, role: Role, replica: u32, token: Option<&str>) {
        let h = Hello {
            stream_id: 0xBAD,
            role: role_index(role),
            replica,
            token: token.map(token_digest).unwrap_or([0; 32]),
            pipeline: pipeline.into(),
        };
        self.send(&h.to_frame()).await;
    }

    async fn forged_end(&mut self) {
        self.send(&OutFrame::end(1_000_000_000_000, 1_000_000_000_000).finish(0xBAD, 0))
            .await;
    }

    /// Whether the stage closes the connection within `limit` (reading and discarding).
    async fn closed_within(mut self, limit: Duration) -> bool {
        let mut buf = [0u8; 4096];
        let read = async {
            loop {
                match self.sock.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(limit, read).await.is_ok()
    }
}

/// An attack's row before it is made.
pub fn row(attack: &str, target: &str, expected: &[&str]) -> AttackRow {
    AttackRow {
        attack: attack.into(),
        target: target.into(),
        connections: 0,
        expected: expected.iter().map(|s| s.to_string()).collect(),
        closed: 0,
        outcome: String::new(),
        problems: Vec::new(),
    }
}

/// Open the connections of one attack concurrently and count those closed in time.
async fn closing<F, Fut>(r: &mut AttackRow, n: u64, open: F) -> anyhow::Result<()>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Peer>>,
{
    let mut peers = Vec::new();
    for i in 0..n {
        peers.push(open(i).await?);
    }
    let closed =
        futures::future::join_all(peers.into_iter().map(|p| p.closed_within(CLOSE_LIMIT))).await;
    r.connections += n;
    r.closed += closed.iter().filter(|c| **c).count() as u64;
    if r.closed != r.connections {
        r.problems.push(format!(
            "{} of {} connections still open after {} s",
            r.connections - r.closed,
            r.connections,
            CLOSE_LIMIT.as_secs()
        ));
    }
    Ok(())
}

/// The attacks on one data port, fed by `upstream`.
async fn attack_data_port(
    stage: &str,
    addr: &str,
    upstream: Role,
    token: &str,
    max_frame: usize,
) -> anyhow::Result<Vec<AttackRow>> {
    let mut rows = Vec::new();
    let mut r = row(
        "forged end of stream (totals 10^12), no hello",
        stage,
        &["not_admitted"],
    );
    closing(&mut r, 3, |_| async move {
        let mut p = Peer::connect(addr).await?;
        p.forged_end().await;
        Ok(p)
    })
    .await?;
    rows.push(r);

    let mut r = row(
        "hello with a guessed token or none, then a forged end",
        stage,
        &["bad_token"],
    );
    closing(&mut r, 2, |i| async move {
        let mut p = Peer::connect(addr).await?;
        p.hello(PIPELINE, upstream, 0, (i == 0).then_some("guess"))
            .await;
        p.forged_end().await;
        Ok(p)
    })
    .await?;
    rows.push(r);

    let mut r = row(
        "insider with the token: another pipeline, the wrong role, the connected replica, a replica the plan lacks",
        stage,
        &["wrong_pipeline", "wrong_role", "bad_replica"],
    );
    closing(&mut r, 4, |i| async move {
        let mut p = Peer::connect(addr).await?;
        match i {
            0 => p.hello("other", upstream, 0, Some(token)).await,
            1 => p.hello(PIPELINE, Role::Sink, 0, Some(token)).await,
            2 => p.hello(PIPELINE, upstream, 0, Some(token)).await,
            _ => p.hello(PIPELINE, upstream, 7, Some(token)).await,
        }
        p.forged_end().await;
        Ok(p)
    })
    .await?;
    rows.push(r);

    let mut r = row(
        "a frame of 10,000 random records, after a guessed hello and with none",
        stage,
        &["bad_token", "not_admitted"],
    );
    closing(&mut r, 2, |i| async move {
        let mut rng = Pcg64Mcg::seed_from_u64(i);
        let mut f = OutFrame::data(1 << 20);
        for _ in 0..10_000 {
            let len = rng.random_range(0..100usize);
            f.push_with(|out| out.extend((0..len).map(|_| rng.random::<u8>())));
        }
        let mut p = Peer::connect(addr).await?;
        if i == 0 {
            p.hello(PIPELINE, upstream, 0, Some("guess")).await;
        }
        p.send(&f.finish(0xBAD, 0)).await;
        Ok(p)
    })
    .await?;
    rows.push(r);

    let mut r = row(
        "40 frames announced just under the size limit, most of each sent, then held",
        stage,
        &["not_admitted"],
    );
    closing(&mut r, 40, |_| async move {
        let mut p = Peer::connect(addr).await?;
        let announce = (max_frame - 1) as u32;
        p.send(&announce.to_be_bytes()).await;
        p.send(&vec![0x5A; (max_frame * 3) / 4]).await;
        Ok(p)
    })
    .await?;
    rows.push(r);

    let mut r = row(
        "a flood: 500 connections of 64 random bytes",
        stage,
        &["not_admitted"],
    );
    closing(&mut r, 500, |i| async move {
        let mut rng = Pcg64Mcg::seed_from_u64(1000 + i);
        let mut bytes = [0u8; 64];
        rng.fill_bytes(&mut bytes);
        let mut p = Peer::connect(addr).await?;
        p.send(&bytes).await;
        Ok(p)
    })
    .await?;
    rows.push(r);
    Ok(rows)
}

/// The attacks on one admin port.
async fn attack_admin_port(stage: &str, addr: &str) -> anyhow::Result<Vec<AttackRow>> {
    let mut rows = Vec::new();
    let mut r = row(
        "100 connections that never finish their request headers",
        &format!("{stage} admin"),
        &[],
    );
    let mut socks = Vec::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(addr).await?;
        let _ = s
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await;
        socks.push(Peer { sock: s });
    }
    let t0 = Instant::now();
    let closed =
        futures::future::join_all(socks.into_iter().map(|p| p.closed_within(CLOSE_LIMIT))).await;
    let open = closed.iter().filter(|c| !**c).count();
    r.connections = 100;
    r.closed = 100 - open as u64;
    r.outcome = format!(
        "{open} of 100 still open after {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    if open > 0 {
        r.problems.push(r.outcome.clone());
    }
    rows.push(r);

    let mut r = row(
        "a 300 s CPU profile whose client leaves after 2 s",
        &format!("{stage} admin"),
        &[],
    );
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        b"GET /debug/pprof/profile?seconds=300 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(s);
    r.connections = 1;
    // The profiler slot is free again once the stage has seen the client go: a 1 s profile
    // is answered, not refused with 409 (asked every 100 ms for up to 5 s).
    let t0 = Instant::now();
    let url = format!("http://{addr}/debug/pprof/profile?seconds=1");
    let mut refused = 0;
    let outcome = loop {
        let asked = Instant::now();
        match crate::http::get(&url, Duration::from_secs(10)).await {
            Ok((status, _)) if status.is_success() => {
                break Ok(format!(
                    "the next profile answered {status} {:.1} s after the client left ({refused} refused with 409 before)",
                    asked.duration_since(t0).as_secs_f64()
                ));
            }
            Ok((hyper::StatusCode::CONFLICT, _)) if t0.elapsed() < Duration::from_secs(5) => {
                refused += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok((status, _)) => break Err(format!("the next profile answered {status}")),
            Err(e) => break Err(format!("the next profile failed: {e:#}")),
        }
    };
    match outcome {
        Ok(o) => {
            r.closed = 1;
            r.outcome = o;
        }
        Err(o) => {
            r.outcome = o.clone();
            r.problems.push(o);
        }
    }
    rows.push(r);
    Ok(rows)
}

/// The reasons `a` must be counted under that its target's rejection counts lack.
pub fn uncounted(a: &AttackRow, counted: Option<&BTreeMap<String, u64>>) -> Vec<String> {
    a.expected
        .iter()
        .filter(|reason| counted.and_then(|c| c.get(*reason)).copied().unwrap_or(0) == 0)
        .map(|reason| format!("{} counted nothing under {reason}", a.target))
        .collect()
}

/// A stage's final figures (written by the stage as it ends).
fn final_stats(run_dir: &Path) -> BTreeMap<String, StageStats> {
    let mut out = BTreeMap::new();
    for role in Role::CHAIN {
        let path = run_dir.join(format!("{role}.stats.json"));
        if let Some(st) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<StageStats>(&b).ok())
        {
            out.insert(role.to_string(), st);
        }
    }
    out
}

fn plan(extra: &[String]) -> anyhow::Result<Plan> {
    let mut plan = Plan::new(PIPELINE);
    for s in [
        "all.max_frame_bytes=1048576",
        "source.events=3000000",
        "source.rate=150000",
        "aggregate.window_ms=100",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(extra.iter().cloned())
    {
        plan.assign(&s)?;
    }
    Ok(plan)
}

/// Start `plan` as a local run; `during` attacks it once every stage is ready.
async fn attacked_run<F, Fut>(
    name: &str,
    plan: &Plan,
    opts: &Options,
    during: F,
) -> anyhow::Result<RunRow>
where
    F: FnOnce(PathBuf, BTreeMap<Role, ReadyInfo>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Vec<AttackRow>>>,
{
    let report = opts.dir.join(slug(name));
    let _ = std::fs::remove_dir_all(&report);
    let run_dir = report.join("run");
    let cfg = RunConfig::quiet(opts.pipeline_bin.clone(), report.clone());
    let (_interrupt, interrupts) = mpsc::unbounded_channel();
    let task_plan = plan.clone();
    let run = tokio::spawn(async move { run_local(&task_plan, &cfg, interrupts).await });
    let mut readies = BTreeMap::new();
    for role in Role::CHAIN {
        readies.insert(
            role,
            ready(&run_dir, role.as_str(), Duration::from_secs(30)).await?,
        );
    }
    let attacks = during(run_dir.clone(), readies).await?;
    let summary: RunSummary = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .context("the attacked run did not end within 180 s")?
        .context("the run task")??;
    let log = match sink_log_dir(plan, &run_dir) {
        Some(dir) if dir.exists() => pipeline::seglog::read_windows(&dir)
            .with_context(|| format!("reading the sink's log {}", dir.display()))?,
        _ => Default::default(),
    };
    let mut problems = Vec::new();
    let mem = memory_check(plan, &summary, &mut problems);
    if !summary.conserved || summary.lost > 0 || summary.unaccounted != 0 {
        problems.push(format!(
            "not conserved: lost {}, unaccounted {} ({})",
            summary.lost,
            summary.unaccounted,
            summary.not_conserved_because.as_deref().unwrap_or("-")
        ));
    }
    if !summary.failures.is_empty() {
        problems.push(format!("stages failed: {:?}", summary.failures));
    }
    if log.undecodable > 0 || log.duplicated > 0 || log.events != summary.events_persisted {
        problems.push(format!(
            "the log holds {} undecodable records, {} windows twice, {} events (persisted {})",
            log.undecodable, log.duplicated, log.events, summary.events_persisted
        ));
    }
    let stats = final_stats(&run_dir);
    let refusal_log_lines = Role::CHAIN
        .iter()
        .map(|r| {
            let text =
                std::fs::read_to_string(run_dir.join(format!("{r}.log"))).unwrap_or_default();
            let n = text
                .lines()
                .filter(|l| l.contains("refused a connection"))
                .count() as u64;
            (r.to_string(), n)
        })
        .collect::<BTreeMap<_, _>>();
    // One line a second at most (LogThrottle), so a flood cannot fill the disk.
    let allowed = summary.duration_seconds.ceil() as u64 + 2;
    for (stage, n) in &refusal_log_lines {
        if *n > allowed {
            problems.push(format!(
                "{stage} logged {n} refusal lines in a {:.0} s run",
                summary.duration_seconds
            ));
        }
    }
    let mut attacks = attacks;
    for a in &mut attacks {
        let counted = stats.get(&a.target).map(|s| &s.frames_rejected);
        let missing = uncounted(a, counted);
        a.problems.extend(missing);
        if a.outcome.is_empty() {
            a.outcome = format!(
                "{} of {} connections closed within {} s",
                a.closed,
                a.connections,
                CLOSE_LIMIT.as_secs()
            );
        }
    }
    Ok(RunRow {
        run: name.into(),
        events_emitted: summary.events_emitted,
        events_persisted: summary.events_persisted,
        lost: summary.lost,
        unaccounted: summary.unaccounted,
        conserved: summary.conserved,
        undecodable_in_log: log.undecodable,
        duplicated_windows: log.duplicated,
        rejected: stats
            .iter()
            .map(|(k, s)| (k.clone(), s.frames_rejected.clone()))
            .collect(),
        dropped: stats
            .iter()
            .map(|(k, s)| (k.clone(), s.dropped.clone()))
            .collect(),
        refusal_log_lines,
        peak_rss_mib: mem.peak_rss_mib,
        bound_mib: mem.bound_mib,
        attacks,
        problems,
    })
}

/// The first run: every attack on every data and admin port while the real source streams.
async fn impostors(opts: &Options) -> anyhow::Result<RunRow> {
    let plan = plan(&[])?;
    attacked_run(
        "impostors and floods",
        &plan,
        opts,
        |run_dir, readies| async move {
            let token = std::fs::read_to_string(run_dir.join(TOKEN_FILE))
                .context("reading the run's token")?;
            let token = token.trim().to_string();
            // Every port at once, as a hostile pod would.
            let mut data = Vec::new();
            for role in [Role::Parse, Role::Aggregate, Role::Sink] {
                let addr = readies[&role].data_addr.clone().context("a data port")?;
                let upstream = role.upstream().context("an upstream role")?;
                let token = token.clone();
                data.push(async move {
                    attack_data_port(role.as_str(), &addr, upstream, &token, 1 << 20).await
                });
            }
            let admin = [Role::Parse, Role::Sink]
                .map(|role| attack_admin_port(role.as_str(), &readies[&role].admin_addr));
            let (data, admin) = futures::join!(
                futures::future::join_all(data),
                futures::future::join_all(admin)
            );
            let mut rows = Vec::new();
            for r in data.into_iter().chain(admin) {
                rows.extend(r?);
            }
            Ok(rows)
        },
    )
    .await
}

/// The second run: one event of the input is eleven days in the future.
async fn far_future(opts: &Options) -> anyhow::Result<RunRow> {
    let dir = opts.dir.join("far-future-input");
    std::fs::create_dir_all(&dir)?;
    let replay = dir.join("replay.jsonl");
    let events = 300_000u64;
    write_replay_with_a_future_event(&replay, events, 1_000_000_000_000)?;
    let plan = plan(&[
        format!("source.replay={}", replay.display()),
        "source.event_time_step_us=100".into(),
        "source.malformed_rate=0".into(),
        "source.rate=100000".into(),
    ])?;
    let mut row = attacked_run(
        "one event eleven days in the future",
        &plan,
        opts,
        |_, _| async {
            let mut r = row(
                "one event of the source's input 10^12 us (11.6 days) ahead",
                "parse",
                &[],
            );
            r.connections = 0;
            Ok(vec![r])
        },
    )
    .await?;
    let parse = row.dropped.get("parse").cloned().unwrap_or_default();
    let late: u64 = row.dropped.values().filter_map(|d| d.get("late")).sum();
    let future = parse.get("future_timestamp").copied().unwrap_or(0);
    let outcome = format!(
        "{future} dropped as future_timestamp, {late} as late; {} of {} persisted",
        row.events_persisted, row.events_emitted
    );
    let a = &mut row.attacks[0];
    a.outcome = outcome;
    if future != 1 || late != 0 || row.events_persisted != events {
        a.problems.push(a.outcome.clone());
    }
    Ok(row)
}

/// A replay file of `events` generated records plus one whose time is `skew_us` ahead.
fn write_replay_with_a_future_event(path: &Path, events: u64, skew_us: u64) -> anyhow::Result<()> {
    let knobs = pipeline_plan::SourceKnobs {
        malformed_rate: 0.0,
        event_time_step_us: 100,
        ..Default::default()
    };
    let mut g = pipeline::generate::Generator::new(&knobs);
    let mut out = Vec::new();
    for i in 0..events {
        let mut rec = Vec::new();
        g.next_into(&mut rec);
        if i == events / 2 {
            let mut v: serde_json::Value = serde_json::from_slice(&rec)?;
            let ts = v["ts"].as_u64().context("a generated record has a ts")?;
            v["ts"] = (ts + skew_us).into();
            out.extend_from_slice(v.to_string().as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(&rec);
        out.push(b'\n');
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// Run the report, writing `robustness.md` and `robustness.json` to `opts.dir`.
pub async fn run_report(
    opts: &Options,
    mut progress: impl FnMut(usize, usize, &str),
) -> anyhow::Result<Vec<RunRow>> {
    std::fs::create_dir_all(&opts.dir)
        .with_context(|| format!("creating {}", opts.dir.display()))?;
    progress(1, 2, "impostors and floods on every port");
    let a = impostors(opts).await?;
    progress(2, 2, "one event eleven days in the future");
    let b = far_future(opts).await?;
    let rows = vec![a, b];
    std::fs::write(opts.dir.join("robustness.md"), table(&rows))?;
    std::fs::write(
        opts.dir.join("robustness.json"),
        serde_json::to_vec_pretty(&rows)?,
    )?;
    Ok(rows)
}

fn counts(m: &BTreeMap<String, BTreeMap<String, u64>>) -> String {
    let parts: Vec<String> = m
        .iter()
        .filter(|(_, c)| !c.is_empty())
        .map(|(stage, c)| {
            let inner: Vec<String> = c.iter().map(|(k, v)| format!("{k} {v}")).collect();
            format!("{stage}: {}", inner.join(", "))
        })
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join("; ")
    }
}

/// The report people read (Markdown).
pub fn table(rows: &[RunRow]) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "# Robustness: attacks on a real local run\n");
    for r in rows {
        let _ = writeln!(t, "## {}\n", r.run);
        let _ = writeln!(
            t,
            "| attack | target | connections | must be counted as | outcome | result |"
        );
        let _ = writeln!(t, "|---|---|---:|---|---|---|");
        for a in &r.attacks {
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} |",
                a.attack,
                a.target,
                a.connections,
                if a.expected.is_empty() {
                    "-".into()
                } else {
                    a.expected.join(", ")
                },
                a.outcome,
                if a.problems.is_empty() {
                    "pass".into()
                } else {
                    format!("FAIL: {}", a.problems.join("; "))
                }
            );
        }
        let rss: Vec<String> = r
            .peak_rss_mib
            .iter()
            .map(|(k, v)| format!("{k} {v} ({})", r.bound_mib.get(k).copied().unwrap_or(0.0)))
            .collect();
        let lines: Vec<String> = r
            .refusal_log_lines
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            t,
            "\n- emitted {}, persisted {}, lost {}, unaccounted {}, conserved: {}",
            r.events_emitted, r.events_persisted, r.lost, r.unaccounted, r.conserved
        );
        let _ = writeln!(
            t,
            "- the log read back: {} undecodable records, {} windows twice",
            r.undecodable_in_log, r.duplicated_windows
        );
        let _ = writeln!(t, "- rejected: {}", counts(&r.rejected));
        let _ = writeln!(t, "- dropped: {}", counts(&r.dropped));
        let _ = writeln!(t, "- refusal log lines: {}", lines.join(", "));
        let _ = writeln!(t, "- peak RSS MiB (bound): {}", rss.join(", "));
        let _ = writeln!(
            t,
            "- result: {}\n",
            if r.passed() {
                "pass".to_string()
            } else {
                let failed = r.attacks.iter().filter(|a| !a.problems.is_empty()).count();
                let mut p = r.problems.clone();
                if failed > 0 {
                    p.push(format!("{failed} attacks did not hold"));
                }
                format!("FAIL: {}", p.join("; "))
            }
        );
    }
    let _ = writeln!(
        t,
        "A silent upstream cannot be staged from outside a run (each upstream seat is held by the real replica); its rule is tested in pipeline/tests/hostile.rs."
    );
    t
}
