//! `observatory leaderboard ...` (the server and the instructor's commands) and
//! `observatory lab submit N` (a student's upload of their last passed check).

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use observatory_course::check::Outcome;
use observatory_course::progress::Workspace;
use observatory_course::spec::{Lab, find, load_labs};
use observatory_course::submission::{SubmitContext, bundle_of, rule_of, this_machine};
use observatory_leaderboard::GradingRule;
use observatory_leaderboard_server::client::Client;
use observatory_leaderboard_server::wire::*;
use observatory_leaderboard_server::{Config, LabInfo, limits::RateLimit};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

/// Where the server is and who is calling.
#[derive(Args, Clone, Debug)]
pub struct Remote {
    /// The leaderboard server.
    #[arg(
        long,
        env = "OBSERVATORY_LEADERBOARD",
        default_value = "http://127.0.0.1:8088"
    )]
    pub server: String,
    /// The cohort.
    #[arg(long, env = "OBSERVATORY_COHORT", default_value = "")]
    pub cohort: String,
    /// Your token (the admin's for `cohort create`, the instructor's for the rest, a
    /// student's for `lab submit`).
    #[arg(
        long,
        env = "OBSERVATORY_TOKEN",
        hide_env_values = true,
        default_value = ""
    )]
    pub token: String,
}

impl Remote {
    pub fn client(&self) -> Client {
        Client::new(
            &self.server,
            Some(&self.token)
                .filter(|t| !t.is_empty())
                .map(|t| t.as_str()),
        )
    }

    pub fn cohort(&self) -> anyhow::Result<&str> {
        if self.cohort.is_empty() {
            bail!("which cohort? --cohort ID (or OBSERVATORY_COHORT)");
        }
        Ok(&self.cohort)
    }
}

#[derive(Subcommand)]
pub enum LeaderboardCommand {
    /// Serve the leaderboard (JSON API, OpenAPI document at /api/openapi.json, web pages) on
    /// SQLite (a file under --data-dir) or PostgreSQL (--database-url postgres://...).
    Serve(ServeArgs),
    /// Create a cohort (the server's admin token); prints the instructor's token once.
    CohortCreate {
        id: String,
        #[arg(long)]
        name: String,
        /// Uploads per student per lab in any 24 hours.
        #[arg(long)]
        daily_limit: Option<u32>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Import a CSV roster (`student,name,email`); prints each new student's token once, as
    /// CSV (`student,token`), to standard output or --out.
    Roster {
        csv: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke every token of a student.
    Revoke {
        student: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke a student's tokens and issue a new one (printed once).
    Rotate {
        student: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Open a lab until its deadline, and set its grading.
    Open {
        lab: u32,
        /// The deadline (RFC 3339, like 2026-12-24T18:00:00Z).
        #[arg(long)]
        closes: String,
        /// When it opens (RFC 3339; default now).
        #[arg(long)]
        opens: Option<String>,
        /// Threshold grading: a bonus within this factor of the best verified ratio.
        #[arg(long, default_value_t = 1.05, conflicts_with = "rank_points")]
        bonus_within: f64,
        /// Rank grading instead: points per tie band, like `3,2,1`.
        #[arg(long, value_delimiter = ',')]
        rank_points: Option<Vec<f64>>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print a lab's board (verified by default).
    Board {
        lab: u32,
        #[arg(long)]
        self_reported: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Students with no pass on a lab after N refused uploads.
    Stuck {
        #[arg(long, default_value_t = 3)]
        tries: u32,
        #[command(flatten)]
        remote: Remote,
    },
    /// Export grades or submissions (CSV) or everything (JSON).
    Export {
        #[arg(long, value_enum, default_value = "grades-csv")]
        what: ExportWhat,
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Fill a new cohort with synthetic students, each with a passed upload of every lab (some
    /// verified, a few flagged): a board to look at before real uploads, and the load
    /// benchmark's data. Needs the server's admin token.
    Seed(crate::leaderboard_seed::SeedArgs),
    /// Re-run a submission's change on this machine, on the cohort's hidden workload seed, and
    /// post the verdict (the verified tier; a disagreement beyond both intervals is flagged).
    /// The code runs confined (needs bubblewrap and Landlock): no network, no token, none of
    /// your files but the checkout's tracked ones. With --k8s: as an Experiment on the
    /// cluster, whose verdict the operator posts.
    Verify {
        submission: String,
        /// How this machine is named on the board (with --k8s, the Experiment names itself).
        #[arg(long, default_value = "instructor")]
        machine: String,
        /// Re-run as an Experiment on the Kubernetes cluster (knob labs measured by wall clock);
        /// the instructor's token goes into a Secret the operator reads.
        #[arg(long)]
        k8s: bool,
        /// With --k8s: the leaderboard as the operator reaches it inside the cluster.
        #[arg(long, default_value = "http://leaderboard.observatory.svc:8088")]
        in_cluster_url: String,
        #[command(flatten)]
        cluster: crate::lab::ClusterArgs,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ExportWhat {
    GradesCsv,
    SubmissionsCsv,
    Json,
}

#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8088")]
    pub listen: std::net::SocketAddr,
    /// `postgres://USER:PASSWORD@HOST/DB`; default: SQLite, DATA_DIR/leaderboard.db.
    #[arg(long, env = "OBSERVATORY_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The SQLite file's folder and the admin token's (made on first start).
    #[arg(long, default_value = ".observatory/leaderboard")]
    pub data_dir: PathBuf,
    /// The admin token (creates cohorts); default: DATA_DIR/admin-token, made if missing.
    #[arg(long, env = "OBSERVATORY_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// The course whose labs are served (its `course/labs`); default: this repository's.
    #[arg(long)]
    pub course: Option<PathBuf>,
    /// Requests per token per minute (a burst over it is 429).
    #[arg(long, default_value_t = NonZeroU32::new(120).unwrap_or(NonZeroU32::MIN))]
    pub rate_per_minute: NonZeroU32,
    #[arg(long, default_value_t = NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN))]
    pub burst: NonZeroU32,
}

fn admin_token(args: &ServeArgs) -> anyhow::Result<(String, PathBuf)> {
    let path = args
        .admin_token_file
        .clone()
        .unwrap_or_else(|| args.data_dir.join("admin-token"));
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_string();
        if t.len() < 16 {
            bail!(
                "{}: an admin token of at least 16 characters",
                path.display()
            );
        }
        return Ok((t, path));
    }
    let t = observatory_leaderboard_server::auth::new_token()
        .map_err(|e| anyhow::anyhow!("making a token: {e}"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{t}")?;
    Ok((t, path))
}

/// The course's labs as the server knows them.
pub fn course_labs(course: Option<&Path>) -> anyhow::Result<Vec<LabInfo>> {
    let root = match course {
        Some(c) => c.to_path_buf(),
        None => crate::lab::root()?,
    };
    let labs = load_labs(&root.join("course/labs"))
        .with_context(|| format!("loading the labs of {}", root.display()))?;
    Ok(labs
        .iter()
        .map(|l| LabInfo {
            rule: rule_of(l),
            title: l.spec.title.clone(),
            code: l.is_code_lab(),
        })
        .collect())
}

/// `observatory leaderboard serve` (on its own multi-threaded runtime: see main).
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let database_url = match &args.database_url {
        Some(u) => u.clone(),
        None => format!(
            "sqlite://{}?mode=rwc",
            args.data_dir.join("leaderboard.db").display()
        ),
    };
    let (admin, admin_path) = admin_token(&args)?;
    let labs = course_labs(args.course.as_deref())?;
    let config = Config {
        database_url: database_url.clone(),
        listen: args.listen,
        admin_token: admin,
        labs,
        rate: RateLimit {
            per_minute: args.rate_per_minute,
            burst: args.burst,
        },
    };
    let shown = observatory_leaderboard_server::db::redact(&database_url);
    observatory_leaderboard_server::serve(config, |addr| {
        println!("leaderboard: listening on http://{addr}");
        println!("  database: {shown}");
        println!("  admin token: {}", admin_path.display());
    })
    .await
    .context("serving the leaderboard")
}

fn write_out(out: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match out {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

pub async fn run(cmd: LeaderboardCommand) -> anyhow::Result<()> {
    use hyper::Method;
    match cmd {
        LeaderboardCommand::Serve(args) => serve(args).await,
        LeaderboardCommand::CohortCreate {
            id,
            name,
            daily_limit,
            remote,
        } => {
            let (_, c): (_, CohortCreated) = remote
                .client()
                .send(
                    Method::POST,
                    "/api/cohorts",
                    &NewCohort {
                        id,
                        name,
                        daily_limit,
                    },
                )
                .await?;
            println!("cohort {} created", c.cohort);
            println!("instructor token (shown once; keep it secret):");
            println!("{}", c.instructor_token);
            Ok(())
        }
        LeaderboardCommand::Roster { csv, out, remote } => {
            let body = std::fs::read(&csv).with_context(|| format!("reading {}", csv.display()))?;
            let path = format!("/api/cohorts/{}/roster", remote.cohort()?);
            let (_, r): (_, RosterImported) = remote
                .client()
                .call(Method::POST, &path, Some("text/csv"), body)
                .await?;
            let mut text = String::from("student,token\n");
            for t in &r.issued {
                text.push_str(&format!("{},{}\n", t.student, t.token));
            }
            write_out(out.as_deref(), &text)?;
            eprintln!(
                "{} tokens issued (shown once: hand each to its student){}",
                r.issued.len(),
                if r.already_on_roster.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; already on the roster, tokens kept: {}",
                        r.already_on_roster.join(", ")
                    )
                }
            );
            Ok(())
        }
        LeaderboardCommand::Revoke { student, remote } => {
            let path = format!(
                "/api/cohorts/{}/students/{student}/revoke",
                remote.cohort()?
            );
            let _: (_, IssuedToken) = remote
                .client()
                .call(Method::POST, &path, None, Vec::new())
                .await?;
            println!("every token of {student} is revoked");
            Ok(())
        }
        LeaderboardCommand::Rotate { student, remote } => {
            let path = format!(
                "/api/cohorts/{}/students/{student}/rotate",
                remote.cohort()?
            );
            let (_, t): (_, IssuedToken) = remote
                .client()
                .call(Method::POST, &path, None, Vec::new())
                .await?;
            println!("{student}'s new token (shown once): {}", t.token);
            Ok(())
        }
        LeaderboardCommand::Open {
            lab,
            closes,
            opens,
            bonus_within,
            rank_points,
            remote,
        } => {
            let grading = match rank_points {
                Some(points) => GradingRule::Rank { points },
                None => GradingRule::Threshold { bonus_within },
            };
            let path = format!("/api/cohorts/{}/labs/{lab}", remote.cohort()?);
            let (_, s): (_, LabSummary) = remote
                .client()
                .send(
                    Method::PUT,
                    &path,
                    &LabSettings {
                        opens_at: opens,
                        closes_at: closes,
                        grading: Some(grading),
                    },
                )
                .await?;
            println!(
                "lab {} ({}) open from {} until {}",
                s.lab, s.title, s.opens_at, s.closes_at
            );
            Ok(())
        }
        LeaderboardCommand::Board {
            lab,
            self_reported,
            remote,
        } => {
            let tier = if self_reported {
                "self_reported"
            } else {
                "verified"
            };
            let path = format!(
                "/api/cohorts/{}/labs/{lab}/board?tier={tier}",
                remote.cohort()?
            );
            let b: BoardView = remote.client().get(&path).await?;
            println!(
                "lab {} ({}), {tier}: {} entries",
                b.lab,
                b.title,
                b.rows.len()
            );
            println!(
                "{:>5}  {:<5}  {:<20} {:>9}  {:<21} {}",
                "place", "band", "student", "B/A", "95% interval", "machine"
            );
            for r in &b.rows {
                let (ratio, interval) = match (r.ratio, r.low, r.high) {
                    (Some(x), Some(l), Some(h)) => (format!("{x:.4}"), format!("{l:.4} .. {h:.4}")),
                    _ => ("passed".into(), String::new()),
                };
                // "≈#3": indistinguishable from the band's first entry, placed 3rd.
                let band = if r.band_leader == r.place {
                    String::new()
                } else {
                    format!("≈#{}", r.band_leader)
                };
                println!(
                    "{:>5}  {band:<5}  {:<20} {ratio:>9}  {interval:<21} {}{}",
                    r.place,
                    r.student,
                    r.cpu_model,
                    if r.flagged { "  FLAGGED" } else { "" }
                );
            }
            if b.rows.iter().any(|r| r.band_leader != r.place) {
                println!(
                    "places follow B/A; ≈#N: the interval overlaps the interval of #N, the first of its tie band"
                );
            }
            Ok(())
        }
        LeaderboardCommand::Stuck { tries, remote } => {
            let path = format!("/api/cohorts/{}/stuck?tries={tries}", remote.cohort()?);
            let rows: Vec<StuckRow> = remote.client().get(&path).await?;
            if rows.is_empty() {
                println!("nobody is stuck (no pass after {tries} tries)");
            }
            for r in rows {
                println!(
                    "{} on lab {}: {} tries; last: {}",
                    r.student, r.lab, r.tries, r.last_reason
                );
            }
            Ok(())
        }
        LeaderboardCommand::Export { what, out, remote } => {
            let c = remote.cohort()?;
            let path = match what {
                ExportWhat::GradesCsv => format!("/api/cohorts/{c}/export/grades.csv"),
                ExportWhat::SubmissionsCsv => format!("/api/cohorts/{c}/export/submissions.csv"),
                ExportWhat::Json => format!("/api/cohorts/{c}/export.json"),
            };
            let a = remote
                .client()
                .raw(Method::GET, &path, None, Vec::new())
                .await?;
            if !a.status.is_success() {
                bail!("{}: {}", a.status, a.text().trim());
            }
            let text = a.text();
            // A CSV export's first line says what its grades count and whether they are final.
            if let Some(note) = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("# PROVISIONAL"))
            {
                eprintln!("warning: PROVISIONAL{}", note.trim_end_matches('"'));
            }
            write_out(out.as_deref(), &text)
        }
        LeaderboardCommand::Seed(args) => crate::leaderboard_seed::seed(args).await,
        LeaderboardCommand::Verify {
            submission,
            k8s: true,
            in_cluster_url,
            cluster,
            remote,
            ..
        } => {
            let c = remote.cohort()?;
            let d: SubmissionDetail = remote
                .client()
                .get(&format!("/api/cohorts/{c}/submissions/{submission}"))
                .await?;
            let root = crate::lab::root()?;
            let labs = load_labs(&root.join("course/labs"))?;
            let e = crate::lab_k8s::verification_experiment(
                find(&labs, d.lab)?,
                c,
                &d,
                &cluster.options(None),
                &in_cluster_url,
            )?;
            crate::lab_k8s::verify_on_cluster(e, &remote.token).await
        }
        LeaderboardCommand::Verify {
            submission,
            machine,
            remote,
            ..
        } => verify(&remote, &submission, &machine).await,
    }
}

/// Re-run the submission's change on the hidden seed, confined ([`crate::verify_sandbox`]: the
/// code never runs with the token, the instructor's files or the network in reach), and post
/// the verdict.
async fn verify(remote: &Remote, submission: &str, machine: &str) -> anyhow::Result<()> {
    let c = remote.cohort()?;
    let client = remote.client();
    let d: SubmissionDetail = client
        .get(&format!("/api/cohorts/{c}/submissions/{submission}"))
        .await?;
    let root = crate::lab::root()?;
    let labs = load_labs(&root.join("course/labs"))?;
    let lab = find(&labs, d.lab)?;
    let (slot_text, answer) = match lab.conformance_file() {
        Some(file) => {
            let path = root.join(&file);
            let mine = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let protected = observatory_course::spec::protected_part(&mine)
                .context("the slot file has no STUDENT marker")?;
            (Some(format!("{protected}{}", d.change)), Vec::new())
        }
        None => (None, d.change.lines().map(str::to_string).collect()),
    };
    let o = crate::verify_sandbox::check_confined(
        &root,
        lab,
        slot_text,
        answer,
        d.hidden_seed,
        &format!("{c}-{}", d.id),
    )
    .await?;
    post_verification(&client, c, &d, o, machine).await
}

async fn post_verification(
    client: &Client,
    cohort: &str,
    d: &SubmissionDetail,
    o: Outcome,
    machine: &str,
) -> anyhow::Result<()> {
    let (_, v): (_, Verified) = client
        .send(
            hyper::Method::POST,
            &format!("/api/cohorts/{cohort}/submissions/{}/verification", d.id),
            &Verification {
                passed: o.passed,
                ratio: o.ratio,
                machine: machine.to_string(),
            },
        )
        .await?;
    let mine = d.bundle.ratio.map_or("passed".to_string(), |r| {
        format!("{:.4} [{:.4} .. {:.4}]", r.ratio, r.low, r.high)
    });
    let theirs = o.ratio.map_or("-".to_string(), |r| {
        format!("{:.4} [{:.4} .. {:.4}]", r.ratio, r.low, r.high)
    });
    println!(
        "{}: lab {} self-reported {mine}, verified {theirs} ({}): {}",
        d.student,
        d.lab,
        if o.passed { "passed" } else { "did not pass" },
        if v.flagged {
            "FLAGGED: it disagrees beyond both intervals"
        } else {
            "agrees"
        }
    );
    Ok(())
}

/// `observatory lab submit N`: the bundle of the student's last check of lab N, refused here
/// when that check failed, was not of the student's change, or is stale.
pub async fn submit(lab: &Lab, ws: &Workspace, root: &Path, remote: &Remote) -> anyhow::Result<()> {
    let n = lab.number();
    let p = ws.load()?;
    let progress = p.labs.get(&n);
    let Some(dir) = progress.and_then(|x| x.last_report.clone()) else {
        bail!(observatory_course::submission::NotSubmittable::NoCheck(n));
    };
    let file = PathBuf::from(&dir).join("lab-check.json");
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("reading the last check, {}", file.display()))?;
    let outcome: Outcome = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a lab check's outcome", file.display()))?;
    let answer = if lab.is_code_lab() {
        Vec::new()
    } else {
        ws.answer(lab)?
    };
    let change = lab.change_text(root, &answer)?;
    let checked_at = std::fs::metadata(&file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| jiff::Timestamp::try_from(t).ok())
        .unwrap_or_else(jiff::Timestamp::now)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let cx = SubmitContext {
        change_sha256_now: observatory_course::spec::sha256_hex(change.as_bytes()),
        commit: git_commit(root),
        fingerprint: observatory_leaderboard::Fingerprint {
            aa_noise: aa_noise(&root.join("reports")),
            ..this_machine()
        },
        prediction: progress
            .and_then(|x| x.predictions.last())
            .and_then(|p| p.ratio),
        checked_at,
        // One key per check: a retried upload of the same check is stored once.
        idempotency_key: observatory_course::spec::sha256_hex(text.as_bytes())[..32].to_string(),
    };
    let bundle = bundle_of(lab, &outcome, cx)?;
    let noise = bundle.fingerprint.aa_noise;
    let path = format!("/api/cohorts/{}/submissions", remote.cohort()?);
    let (status, s): (_, Submitted) = remote
        .client()
        .send(hyper::Method::POST, &path, &Upload { bundle, change })
        .await?;
    let ratio = s.ratio.map_or(String::new(), |r| {
        format!(": B/A {:.4} [{:.4} .. {:.4}]", r.ratio, r.low, r.high)
    });
    if s.duplicate {
        println!(
            "lab {n}: this check was already submitted (as {}){ratio}",
            s.id
        );
    } else {
        println!("lab {n}: submitted as {} ({status}){ratio}", s.id);
    }
    println!(
        "  board: {}/c/{}/labs/{n}?tier=self_reported",
        remote.server.trim_end_matches('/'),
        remote.cohort
    );
    match noise {
        Some(r) => println!(
            "  with this machine's noise floor (its newest A/A run): B/A {:.4} [{:.4} .. {:.4}]",
            r.ratio, r.low, r.high
        ),
        None => println!(
            "  no A/A run on this machine yet: `observatory bench aa` measures its noise floor, which later uploads carry"
        ),
    }
    Ok(())
}

/// This machine's noise floor: the throughput B/A of the newest A/A run in a folder directly
/// under `reports` (where `observatory bench aa` writes by default; `make bench-e2e`'s
/// reports/bench-e2e/aa is one level deeper and not read), if one was made. A wide interval, or one far
/// from 1, says the machine was busy or noisy when it measured.
pub fn aa_noise(reports: &Path) -> Option<observatory_stats::RatioInterval> {
    /// The part of an `ab.json` this reads (the rest is the A/B report's).
    #[derive(serde::Deserialize)]
    struct Noise {
        mode: String,
        comparisons: Vec<observatory_stats::Comparison>,
    }
    let mut reports: Vec<PathBuf> = std::fs::read_dir(reports)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("ab.json")))
        .filter(|p| p.is_file())
        .collect();
    // Folders are named `<timestamp>-<command>`: the newest last.
    reports.sort();
    reports.iter().rev().find_map(|p| {
        let n: Noise = serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()?;
        (n.mode == "aa")
            .then(|| {
                n.comparisons
                    .iter()
                    .find(|c| c.metric == "throughput_eps")
                    .map(|c| c.ratio)
            })
            .flatten()
    })
}

fn git_commit(root: &Path) -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|c| (7..=40).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_hexdigit()))
        // Not a git checkout: a commit of zeros says so.
        .unwrap_or_else(|| "0000000".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use observatory_stats::Metric;

    #[test]
    fn the_noise_floor_is_the_newest_aa_runs_throughput_interval() {
        let dir = tempfile::tempdir().unwrap();
        let write = |folder: &str, text: String| {
            let d = dir.path().join(folder);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("ab.json"), text).unwrap();
        };
        assert_eq!(aa_noise(dir.path()), None, "no A/A run: none");
        let report = |mode: &str, b: &[f64]| {
            let c = Metric::ThroughputEps.compare(&[100.0, 101.0, 99.0], b, &Default::default());
            serde_json::json!({"ab_version": 2, "mode": mode, "comparisons": [c]}).to_string()
        };
        write("20261201-100000-aa", report("aa", &[100.5, 99.5, 100.0]));
        // Newer, but an A/B run (not noise), and a damaged file: both passed over.
        write("20261202-100000-ab", report("ab", &[200.0, 201.0, 199.0]));
        write("20261203-100000-aa", "{not json".into());
        let noise = aa_noise(dir.path()).unwrap();
        assert!(noise.low <= 1.0 && 1.0 <= noise.high, "{noise:?}");
        assert!((noise.ratio - 1.0).abs() < 0.02, "{noise:?}");
    }
}
