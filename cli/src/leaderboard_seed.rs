//! `observatory leaderboard seed`: a cohort of synthetic students with a passed submission of
//! every lab, some of them verified (a few flagged), through the real API. It is what an
//! instructor looks at before the first real upload, the README's screenshots, and the load
//! benchmark's data (`make bench-leaderboard`). Every bundle says it is synthetic (its CPU
//! model is `Synthetic ...`); the cohort's name says so too.

use crate::leaderboard::{Remote, course_labs};
use anyhow::{Context, bail};
use futures::StreamExt;
use hyper::{Method, StatusCode};
use observatory_leaderboard::synthetic;
use observatory_leaderboard_server::LabInfo;
use observatory_leaderboard_server::client::{Client, ClientError};
use observatory_leaderboard_server::limits::MAX_DAILY_LIMIT;
use observatory_leaderboard_server::wire::*;
use observatory_stats::RatioInterval;
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct SeedArgs {
    /// Synthetic students (1 to 5000).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub students: u32,
    /// How many of the course's labs, in order, are opened and submitted to.
    #[arg(long, default_value_t = 14)]
    pub labs: usize,
    /// The share of submissions the instructor verifies (1 in 10 of those disagrees and is
    /// flagged).
    #[arg(long, default_value_t = 0.3)]
    pub verified: f64,
    /// The random seed (the same seed makes the same cohort).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Uploads at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Write the tokens here as CSV (`role,student,token`), for scripts that act as them.
    #[arg(long)]
    pub tokens_out: Option<PathBuf>,
    /// Write one more upload here (the first student's, of the first lab, not sent) whose
    /// idempotency key is `@KEY@`: a load test fills in a new key per request.
    #[arg(long)]
    pub upload_template: Option<PathBuf>,
    /// The server, the cohort to make (--cohort: it must not exist yet) and the admin token.
    #[command(flatten)]
    pub remote: Remote,
}

/// Machines a cohort's laptops might be.
const MACHINES: [(&str, u32); 5] = [
    ("Synthetic Intel Core i5-8250U", 4),
    ("Synthetic AMD Ryzen 7 5800U", 8),
    ("Synthetic Apple M1", 8),
    ("Synthetic Intel Core i7-1165G7", 4),
    ("Synthetic AMD Ryzen 5 3500U", 4),
];

/// Calls the server, waiting out 429s (the rate limit says when to come back).
async fn with_retry<T, F, Fut>(mut call: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let mut waited = 0;
    loop {
        match call().await {
            Err(ClientError::Status { status, .. })
                if status == StatusCode::TOO_MANY_REQUESTS && waited < 600 =>
            {
                waited += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => return other,
        }
    }
}

pub async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.verified) {
        bail!("--verified is a share, from 0 to 1");
    }
    let labs: Vec<LabInfo> = course_labs(None)?
        .into_iter()
        .take(args.labs.max(1))
        .collect();
    let Some(first_lab) = labs.first().map(|l| l.rule.lab) else {
        bail!("the course has no labs to seed");
    };
    let cohort = args.remote.cohort()?.to_string();
    let admin = args.remote.client();
    let (_, created): (_, CohortCreated) = admin
        .send(
            Method::POST,
            "/api/cohorts",
            &NewCohort {
                id: cohort.clone(),
                name: format!("Synthetic cohort ({} students, seeded)", args.students),
                daily_limit: Some(MAX_DAILY_LIMIT),
            },
        )
        .await
        .with_context(|| format!("creating cohort {cohort}"))?;
    let instructor = admin.with_token(Some(&created.instructor_token));
    let c = &cohort;
    let mut roster = String::from("student,name,email\n");
    for i in 1..=args.students {
        roster.push_str(&format!("s{i:04},Student {i:04},\n"));
    }
    let (_, imported): (_, RosterImported) = instructor
        .call(
            Method::POST,
            &format!("/api/cohorts/{c}/roster"),
            Some("text/csv"),
            roster.into_bytes(),
        )
        .await
        .context("importing the roster")?;
    for lab in &labs {
        // Opening 20 labs right after the roster is a burst over a token's rate limit: wait
        // and retry a 429 (a review saw `seed --labs 20` fail there).
        let path = format!("/api/cohorts/{c}/labs/{}", lab.rule.lab);
        let settings = LabSettings {
            opens_at: None,
            closes_at: "2099-01-01T00:00:00Z".into(),
            grading: None,
        };
        let _: (_, LabSummary) = with_retry(|| instructor.send(Method::PUT, &path, &settings))
            .await
            .with_context(|| format!("opening lab {}", lab.rule.lab))?;
    }
    if let Some(path) = &args.tokens_out {
        let mut text = format!(
            "role,student,token\ninstructor,,{}\n",
            created.instructor_token
        );
        for t in &imported.issued {
            text.push_str(&format!("student,{},{}\n", t.student, t.token));
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }

    // Every student's upload of every lab, with its (seeded) effect and machine.
    let mut rng = Pcg64Mcg::seed_from_u64(args.seed);
    struct Job {
        client: Client,
        upload: Upload,
        verify: Option<f64>,
    }
    let mut jobs = Vec::new();
    for t in &imported.issued {
        let client = admin.with_token(Some(&t.token));
        let skill: f64 = rng.random_range(0.0..1.0);
        let (cpu, cores) = MACHINES[rng.random_range(0..MACHINES.len())];
        for lab in &labs {
            // Inside (0, 1): students differ, and no two land on the same clamped value.
            let strength = 0.05 + 0.8 * skill + rng.random_range(-0.05..0.05);
            let factor = synthetic::passing_factor(&lab.rule, strength);
            let change = format!("synthetic change of {} for lab {}", t.student, lab.rule.lab);
            let key = format!("seed-{:04}-{}-lab{:02}", args.seed, t.student, lab.rule.lab);
            let mut bundle = synthetic::bundle(
                &lab.rule,
                &key,
                factor,
                rng.random_range(0.002..0.03),
                &change,
            );
            bundle.fingerprint = synthetic::fingerprint(cpu, cores);
            let verify = (rng.random_range(0.0..1.0) < args.verified).then(|| {
                // Nine in ten re-runs land near the self-reported ratio; one is far off.
                if rng.random_range(0..10) == 0 {
                    1.3
                } else {
                    rng.random_range(0.99..1.01)
                }
            });
            jobs.push(Job {
                client: client.clone(),
                upload: Upload { bundle, change },
                verify,
            });
        }
    }
    if let (Some(path), Some(first)) = (&args.upload_template, jobs.first()) {
        let mut upload = first.upload.clone();
        upload.bundle.idempotency_key = "@KEY@".into();
        let text = serde_json::to_string(&upload)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let bar = crate::bench::count_bar(jobs.len(), "uploads");
    let path = format!("/api/cohorts/{c}/submissions");
    let results: Vec<anyhow::Result<bool>> = futures::stream::iter(jobs)
        .map(|job| {
            let (path, instructor, bar) = (&path, &instructor, &bar);
            async move {
                let (_, s): (_, Submitted) =
                    with_retry(|| job.client.send(Method::POST, path, &job.upload))
                        .await
                        .with_context(|| {
                            format!("uploading {}", job.upload.bundle.idempotency_key)
                        })?;
                let mut flagged = false;
                if let Some(off) = job.verify {
                    let ratio = s.ratio.map(|r| RatioInterval {
                        ratio: r.ratio * off,
                        low: r.low * off * 0.99,
                        high: r.high * off * 1.01,
                    });
                    let v = Verification {
                        passed: true,
                        ratio,
                        machine: "Synthetic instructor box".into(),
                    };
                    let verify = format!("/api/cohorts/{c}/submissions/{}/verification", s.id);
                    let (_, answer): (_, Verified) =
                        with_retry(|| instructor.send(Method::POST, &verify, &v))
                            .await
                            .with_context(|| format!("verifying {}", s.id))?;
                    flagged = answer.flagged;
                }
                bar.inc(1);
                Ok(flagged)
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect()
        .await;
    bar.finish_and_clear();
    let mut flagged = 0;
    for r in results {
        flagged += usize::from(r?);
    }
    let server = args.remote.server.trim_end_matches('/');
    println!(
        "cohort {c}: {} synthetic students, {} labs, {} uploads ({flagged} verifications flagged)",
        args.students,
        labs.len(),
        args.students as usize * labs.len()
    );
    println!("  board: {server}/c/{c}/labs/{first_lab}?tier=self_reported");
    println!("instructor token (shown once; keep it secret):");
    println!("{}", created.instructor_token);
    Ok(())
}
