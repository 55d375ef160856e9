//! The leaderboard server as a user meets it: the real `observatory leaderboard serve` process
//! on loopback, on a real SQLite file and (when one can be reached) a real PostgreSQL server,
//! driven over real HTTP. The same suite runs against both databases.
//!
//! PostgreSQL: `OBSERVATORY_TEST_POSTGRES_URL` (`.ci/run` starts Debian's PostgreSQL and sets
//! it). Without it the PostgreSQL half says it is skipped and why.

use hyper::{Method, StatusCode};
use observatory_course::submission::rule_of;
use observatory_leaderboard::{LabRule, synthetic};
use observatory_leaderboard_server::client::Client;
use observatory_leaderboard_server::wire::*;
use observatory_stats::RatioInterval;
mod common;

use common::{Server, serve};
use std::path::{Path, PathBuf};
use std::process::Command;

fn course_rule(n: u32) -> LabRule {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let labs = observatory_course::load_labs(&root.join("course/labs")).unwrap();
    rule_of(labs.iter().find(|l| l.number() == n).unwrap())
}

/// A bundle for `rule` whose change has `factor` times the baseline's samples (with a
/// spread `spread`), its ratio and pass computed the way the lab runner computes them.
///
/// The key is prefixed with this test process's tag: a synthetic bundle's samples follow its
/// key, and the server refuses another student's samples in any cohort (a PostgreSQL database
/// keeps earlier runs' cohorts).
fn bundle(rule: &LabRule, key: &str, factor: f64, spread: f64, change: &str) -> Upload {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let key = format!("{}-{key}", RUN.get_or_init(tag));
    let mut bundle = synthetic::bundle(rule, &key, factor, spread, change);
    bundle.fingerprint = synthetic::fingerprint("Test CPU @ 2.0GHz", 2);
    Upload {
        bundle,
        change: change.to_string(),
    }
}

async fn status_of<B: serde::Serialize>(
    c: &Client,
    m: Method,
    path: &str,
    body: &B,
) -> (StatusCode, String) {
    let a = c
        .raw(
            m,
            path,
            Some("application/json"),
            serde_json::to_vec(body).unwrap(),
        )
        .await
        .unwrap();
    (a.status, a.text())
}

async fn history_len(c: &Client, cohort: &str, student: &str) -> usize {
    let v: StudentView = c
        .get(&format!("/api/cohorts/{cohort}/students/{student}"))
        .await
        .unwrap();
    v.submissions.len()
}

/// The whole suite against one server; `tag` keeps cohorts of runs on one database apart.
async fn suite(s: &Server, tag: &str) {
    let anon = Client::new(&s.base, None);
    let admin = anon.with_token(Some(&s.admin));
    let cohort = format!("perf-{tag}");

    // A cohort: only the admin makes one; its instructor token is shown once.
    let (st, created): (_, CohortCreated) = admin
        .send(
            Method::POST,
            "/api/cohorts",
            &NewCohort {
                id: cohort.clone(),
                name: "Rust performance, winter".into(),
                daily_limit: Some(6),
            },
        )
        .await
        .unwrap();
    assert_eq!(st, StatusCode::CREATED);
    let again = status_of(
        &admin,
        Method::POST,
        "/api/cohorts",
        &NewCohort {
            id: cohort.clone(),
            name: "again".into(),
            daily_limit: None,
        },
    )
    .await;
    assert_eq!(again.0, StatusCode::CONFLICT, "{}", again.1);
    let instructor = anon.with_token(Some(&created.instructor_token));

    // The roster: a bad one is refused whole, with the line; a good one issues tokens once.
    let roster = format!("/api/cohorts/{cohort}/roster");
    let bad = instructor
        .raw(
            Method::POST,
            &roster,
            Some("text/csv"),
            b"student,name\nada,Ada\nbad id!,X\n".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(
        bad.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        bad.text()
    );
    assert!(bad.text().contains("roster line 3"), "{}", bad.text());
    let o: Overview = anon.get(&format!("/api/cohorts/{cohort}")).await.unwrap();
    assert_eq!(o.students, 0, "a refused roster stores nobody");
    let csv =
        b"student,name,email\nada,Ada L,ada@example.org\nbob,Bob,\ncy,Cy,\ndee,Dee,\n".to_vec();
    let (_, imported): (_, RosterImported) = instructor
        .call(Method::POST, &roster, Some("text/csv"), csv.clone())
        .await
        .unwrap();
    assert_eq!(imported.issued.len(), 4);
    let (_, again): (_, RosterImported) = instructor
        .call(Method::POST, &roster, Some("text/csv"), csv)
        .await
        .unwrap();
    assert!(again.issued.is_empty(), "a re-import issues no new token");
    assert_eq!(again.already_on_roster.len(), 4);
    let token = |who: &str| {
        imported
            .issued
            .iter()
            .find(|t| t.student == who)
            .unwrap()
            .token
            .clone()
    };
    let ada = anon.with_token(Some(&token("ada")));
    let bob = anon.with_token(Some(&token("bob")));
    let cy = anon.with_token(Some(&token("cy")));
    let dee = anon.with_token(Some(&token("dee")));

    // Instructor routes: no token and a wrong token are 401, a student's token is 403.
    let rule = course_rule(11);
    let open = LabSettings {
        opens_at: None,
        closes_at: "2099-01-01T00:00:00Z".into(),
        grading: None,
    };
    let lab_path = format!("/api/cohorts/{cohort}/labs/11");
    for (who, want) in [
        (&anon, StatusCode::UNAUTHORIZED),
        (
            &anon.with_token(Some("obs_not-a-token")),
            StatusCode::UNAUTHORIZED,
        ),
        (&ada, StatusCode::FORBIDDEN),
    ] {
        let (st, body) = status_of(who, Method::PUT, &lab_path, &open).await;
        assert_eq!(st, want, "{body}");
    }
    let grades_path = format!("/api/cohorts/{cohort}/grades");
    let a = ada
        .raw(Method::GET, &grades_path, None, vec![])
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text());
    assert!(a.text().contains("instructor token"), "{}", a.text());

    // A lab that is not open refuses uploads.
    let submit = format!("/api/cohorts/{cohort}/submissions");
    let first = bundle(&rule, "ada-check-0001-aaaa", 0.30, 0.01, "all.leak=off");
    let (st, body) = status_of(&ada, Method::POST, &submit, &first).await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("not open"), "{body}");
    let (st, body) = status_of(&instructor, Method::PUT, &lab_path, &open).await;
    assert_eq!(st, StatusCode::OK, "{body}");

    // An accepted upload, then its retry: stored once.
    let (st, got): (_, Submitted) = ada.send(Method::POST, &submit, &first).await.unwrap();
    assert_eq!(st, StatusCode::CREATED);
    assert!(!got.duplicate);
    let (st, dup): (_, Submitted) = ada.send(Method::POST, &submit, &first).await.unwrap();
    assert_eq!(
        (st, dup.duplicate, &dup.id),
        (StatusCode::OK, true, &got.id)
    );
    assert_eq!(history_len(&anon, &cohort, "ada").await, 1);

    // Refusals: each with a clear message, and nothing stored.
    let mut failed = bundle(&rule, "ada-check-0002-bbbb", 0.9, 0.01, "all.leak=on");
    assert!(!failed.bundle.passed, "0.9 does not clear lab 11's bound");
    let mut claims_pass = failed.clone();
    claims_pass.bundle.passed = true;
    claims_pass.bundle.idempotency_key = "ada-check-0003-cccc".into();
    let mut tampered = bundle(&rule, "ada-check-0004-dddd", 0.30, 0.01, "all.leak=off");
    if let Some(r) = tampered.bundle.ratio.as_mut() {
        r.ratio *= 0.9;
        r.low *= 0.9;
    }
    let mut other_change = bundle(&rule, "ada-check-0005-eeee", 0.30, 0.01, "all.leak=off");
    other_change.change = "all.leak=off\nall.something=else".into();
    let mut wrong_lab = bundle(&rule, "ada-check-0006-ffff", 0.30, 0.01, "x");
    wrong_lab.bundle.min_effect = 0.01;
    failed.bundle.idempotency_key = "ada-check-0007-gggg".into();
    for (what, upload, want, says) in [
        (
            "a failed check",
            &failed,
            StatusCode::UNPROCESSABLE_ENTITY,
            "did not pass",
        ),
        (
            "a failed check that claims a pass",
            &claims_pass,
            StatusCode::UNPROCESSABLE_ENTITY,
            "did not pass",
        ),
        (
            "a tampered ratio",
            &tampered,
            StatusCode::UNPROCESSABLE_ENTITY,
            "changed after the check",
        ),
        (
            "another change than the one checked",
            &other_change,
            StatusCode::UNPROCESSABLE_ENTITY,
            "not the change that was checked",
        ),
        (
            "a lab rule the course does not have",
            &wrong_lab,
            StatusCode::UNPROCESSABLE_ENTITY,
            "minimum",
        ),
    ] {
        let (st, body) = status_of(&ada, Method::POST, &submit, upload).await;
        assert_eq!(st, want, "{what}: {body}");
        assert!(body.contains(says), "{what}: {body}");
    }
    assert_eq!(
        history_len(&anon, &cohort, "ada").await,
        1,
        "no refusal was stored"
    );

    // Not JSON, and an oversized body.
    let a = ada
        .raw(
            Method::POST,
            &submit,
            Some("application/json"),
            b"{not json".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    assert!(a.content_type.starts_with("application/json"));
    let mut huge = bundle(&rule, "ada-check-0008-hhhh", 0.30, 0.01, "x");
    huge.change = "x".repeat(300 * 1024);
    let (st, body) = status_of(&ada, Method::POST, &submit, &huge).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(history_len(&anon, &cohort, "ada").await, 1);

    // The daily limit (6 uploads per lab per 24 h, refused ones count): ada has used 6.
    let late = bundle(&rule, "ada-check-0009-iiii", 0.31, 0.01, "all.leak=off");
    let (st, body) = status_of(&ada, Method::POST, &submit, &late).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body.contains("last 24 hours"), "{body}");

    // Places in B/A order; tie bands from intervals: bob's interval overlaps ada's (band 1
    // with her, "≈ #1"), cy's does not (band 2, place 3), dee is far behind (band 3).
    for (who, key, factor, spread) in [
        (&bob, "bob-check-0001-aaaa", 0.305, 0.02),
        (&cy, "cy-check-0001-aaaaa", 0.40, 0.005),
        (&dee, "dee-check-0001-aaaa", 0.46, 0.001),
    ] {
        let (st, _): (_, Submitted) = who
            .send(
                Method::POST,
                &submit,
                &bundle(&rule, key, factor, spread, "all.leak=off"),
            )
            .await
            .unwrap();
        assert_eq!(st, StatusCode::CREATED);
    }
    let board: BoardView = anon
        .get(&format!(
            "/api/cohorts/{cohort}/labs/11/board?tier=self_reported"
        ))
        .await
        .unwrap();
    let placed: Vec<(&str, u32, u32, u32)> = board
        .rows
        .iter()
        .map(|r| (r.student.as_str(), r.band, r.place, r.band_leader))
        .collect();
    assert_eq!(
        placed,
        vec![
            ("ada", 1, 1, 1),
            ("bob", 1, 2, 1),
            ("cy", 2, 3, 3),
            ("dee", 3, 4, 4)
        ],
        "{board:?}"
    );
    for r in &board.rows {
        assert!(r.low.unwrap() <= r.ratio.unwrap() && r.ratio.unwrap() <= r.high.unwrap());
        assert_eq!(r.cpu_model, "Test CPU @ 2.0GHz");
    }
    let verified: BoardView = anon
        .get(&format!("/api/cohorts/{cohort}/labs/11/board"))
        .await
        .unwrap();
    assert!(verified.rows.is_empty(), "nothing is verified yet");

    // Verification: ada's re-run agrees; cy's is far from what cy reported (flagged).
    let id_of = |b: &BoardView, who: &str| {
        b.rows
            .iter()
            .find(|r| r.student == who)
            .unwrap()
            .submission
            .clone()
    };
    let verify = |id: String| format!("/api/cohorts/{cohort}/submissions/{id}/verification");
    let rerun = |ratio: f64, low: f64, high: f64| Verification {
        passed: true,
        ratio: Some(RatioInterval { ratio, low, high }),
        machine: "instructor box".into(),
    };
    let (st, body) = status_of(
        &bob,
        Method::POST,
        &verify(id_of(&board, "ada")),
        &rerun(0.3, 0.29, 0.31),
    )
    .await;
    assert_eq!(
        st,
        StatusCode::FORBIDDEN,
        "a student does not verify: {body}"
    );
    let (_, v): (_, Verified) = instructor
        .send(
            Method::POST,
            &verify(id_of(&board, "ada")),
            &rerun(0.302, 0.295, 0.31),
        )
        .await
        .unwrap();
    assert!(v.agrees && !v.flagged);
    let (_, v): (_, Verified) = instructor
        .send(
            Method::POST,
            &verify(id_of(&board, "cy")),
            &rerun(0.47, 0.465, 0.475),
        )
        .await
        .unwrap();
    assert!(
        !v.agrees && v.flagged,
        "0.47 is outside cy's ~0.40 interval and 0.40 outside 0.465..0.475"
    );
    let detail: SubmissionDetail = instructor
        .get(&format!(
            "/api/cohorts/{cohort}/submissions/{}",
            id_of(&board, "cy")
        ))
        .await
        .unwrap();
    assert_eq!(
        detail.change, "all.leak=off",
        "the change travels for the re-run"
    );
    let a = cy
        .raw(
            Method::GET,
            &format!("/api/cohorts/{cohort}/submissions/{}", id_of(&board, "cy")),
            None,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        a.status,
        StatusCode::FORBIDDEN,
        "the hidden seed is the instructor's"
    );
    let verified: BoardView = anon
        .get(&format!("/api/cohorts/{cohort}/labs/11/board"))
        .await
        .unwrap();
    let rows: Vec<(&str, bool, &str)> = verified
        .rows
        .iter()
        .map(|r| (r.student.as_str(), r.flagged, r.cpu_model.as_str()))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("ada", false, "instructor box"),
            ("cy", true, "instructor box")
        ]
    );

    // Revocation and rotation: the old token is 401 at once, the new one works.
    let (st, body) = status_of(
        &instructor,
        Method::POST,
        &format!("/api/cohorts/{cohort}/students/dee/rotate"),
        &(),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let fresh: IssuedToken = serde_json::from_str(&body).unwrap();
    let again = bundle(&rule, "dee-check-0002-aaaa", 0.46, 0.001, "all.leak=off");
    let (st, body) = status_of(&dee, Method::POST, &submit, &again).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("revoked"), "{body}");
    let dee2 = anon.with_token(Some(&fresh.token));
    let (st, body) = status_of(&dee2, Method::POST, &submit, &again).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let (st, _) = status_of(
        &instructor,
        Method::POST,
        &format!("/api/cohorts/{cohort}/students/dee/revoke"),
        &(),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = status_of(&dee2, Method::POST, &submit, &again).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // Who is stuck: ada had 4 refusals and a pass (not stuck); nobody else was refused.
    let stuck: Vec<StuckRow> = instructor
        .get(&format!("/api/cohorts/{cohort}/stuck?tries=1"))
        .await
        .unwrap();
    assert!(stuck.is_empty(), "{stuck:?}");

    // The exports: grades from the verified board (ada passed with the bonus; cy's verified
    // re-run passed but 0.47 is not within 1.05x of 0.302, and is flagged), every accepted
    // submission. bob and dee are not verified yet: the grades say they are provisional.
    let a = instructor
        .raw(
            Method::GET,
            &format!("/api/cohorts/{cohort}/export/grades.csv"),
            None,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.content_type.starts_with("text/csv"));
    let grades = a.text();
    let lines: Vec<&str> = grades.lines().collect();
    assert!(
        lines[0]
            .starts_with("# PROVISIONAL: 2 result(s) are self-reported passes not verified yet"),
        "{grades}"
    );
    assert_eq!(
        lines[1], "student,lab,standing,passed,bonus,points",
        "{grades}"
    );
    assert!(
        lines.contains(&"ada,11,verified_passed,true,true,2.0"),
        "{grades}"
    );
    assert!(lines.contains(&"cy,11,flagged,true,false,1.0"), "{grades}");
    assert!(
        lines.contains(&"bob,11,not_verified_yet,false,false,0.0"),
        "bob is not verified: {grades}"
    );
    assert_eq!(lines.len(), 6, "{grades}");
    let o: Overview = anon.get(&format!("/api/cohorts/{cohort}")).await.unwrap();
    let l = &o.labs[0];
    assert_eq!(
        (
            l.submitted,
            l.passed,
            l.not_verified_yet,
            l.flagged,
            l.verified_failed
        ),
        (4, 2, 2, 1, 0),
        "the overview counts what the grades count: {l:?}"
    );
    let subs = instructor
        .raw(
            Method::GET,
            &format!("/api/cohorts/{cohort}/export/submissions.csv"),
            None,
            vec![],
        )
        .await
        .unwrap()
        .text();
    assert!(subs.starts_with("# PROVISIONAL"), "{subs}");
    assert!(
        subs.lines().nth(1)
            == Some(
                "id,student,lab,ratio,low,high,cpu_model,cores,submitted_at,standing,verified,verified_passed,verified_ratio,flagged"
            ),
        "{subs}"
    );
    assert_eq!(
        subs.lines().count(),
        2 + 5,
        "ada, bob, cy, dee, dee again: {subs}"
    );
    assert!(
        subs.lines()
            .any(|l| l.starts_with(&id_of(&board, "cy"))
                && l.ends_with(",flagged,true,true,0.47,true")),
        "{subs}"
    );
    let a = ada
        .raw(
            Method::GET,
            &format!("/api/cohorts/{cohort}/export/grades.csv"),
            None,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::FORBIDDEN);

    // The pages: the board with its rows and plot, a student's page with its history.
    let page = anon
        .raw(
            Method::GET,
            &format!("/c/{cohort}/labs/11?tier=self_reported"),
            None,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    for want in ["<svg", "ada", "bob", "cy", "dee", "Test CPU", "≈ #1"] {
        assert!(html.contains(want), "{want} on the board page");
    }
    // The verified board: ada leads alone (cy's re-run is far behind), so nobody is "≈ #1".
    let verified_page = anon
        .raw(Method::GET, &format!("/c/{cohort}/labs/11"), None, vec![])
        .await
        .unwrap()
        .text();
    assert!(verified_page.contains("ada") && verified_page.contains("flagged"));
    assert!(
        !verified_page.contains("≈ #1"),
        "a lone leader has no band to share"
    );
    let page = anon
        .raw(
            Method::GET,
            &format!("/c/{cohort}/students/ada"),
            None,
            vec![],
        )
        .await
        .unwrap()
        .text();
    assert!(
        page.contains("<svg") && page.contains("verified passed"),
        "{page}"
    );
    let page = anon
        .raw(Method::GET, "/c/nope/labs/11", None, vec![])
        .await
        .unwrap();
    assert_eq!(page.status, StatusCode::NOT_FOUND);

    // A burst over the rate limit (30, then 10 a second): 429 with Retry-After, for this
    // token only, and nothing stored. (Bodies that are not JSON: no daily limit is involved.)
    let before = history_len(&anon, &cohort, "bob").await;
    let mut limited = 0;
    for _ in 0..60 {
        let a = bob
            .raw(
                Method::POST,
                &submit,
                Some("application/json"),
                b"[]".to_vec(),
            )
            .await
            .unwrap();
        match a.status {
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(
                    a.text().contains("too many requests with this token"),
                    "{}",
                    a.text()
                );
                limited += 1;
            }
            StatusCode::BAD_REQUEST => {}
            other => panic!("{other}: {}", a.text()),
        }
    }
    assert!(
        limited > 0,
        "a burst of 60 over an allowance of 30 is limited"
    );
    let (st, body) = status_of(&ada, Method::POST, &submit, &first).await;
    assert_eq!(
        st,
        StatusCode::OK,
        "another token has its own allowance: {body}"
    );
    assert_eq!(history_len(&anon, &cohort, "bob").await, before);
}

/// Headless Chromium (Debian's `chromium`) loads the board and a student's page: the DOM it
/// built has the expected rows and the plot, and a screenshot of each (desktop and phone
/// widths) goes to reports/leaderboard/.
fn in_chromium(s: &Server, cohort: &str) {
    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs Debian's chromium: the browser test must run there"
        );
        eprintln!(
            "SKIPPED: the browser half of the leaderboard test: no chromium on this machine (apt-get install chromium)"
        );
        return;
    };
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../reports/leaderboard");
    std::fs::create_dir_all(&out).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let run = |extra: &[String], url: &str| {
        let o = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(url)
            .output()
            .expect("running chromium");
        assert!(
            o.status.success(),
            "chromium: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // (name, url, the table and its rows, the table whose rows carry plots)
    let pages = [
        ("cohort", format!("{}/c/{cohort}", s.base), "labs", 1, None),
        (
            "board",
            format!("{}/c/{cohort}/labs/11?tier=self_reported", s.base),
            "board",
            4,
            Some("strip"),
        ),
        (
            "student",
            format!("{}/c/{cohort}/students/ada", s.base),
            "submissions-11",
            1,
            Some("submissions-11"),
        ),
    ];
    for (name, url, table, rows, plot) in pages {
        let dom = run(&["--dump-dom".to_string()], &url);
        let start = dom
            .find(&format!("<table id=\"{table}\""))
            .unwrap_or_else(|| panic!("{name}: no table in {dom}"));
        let end = start + dom[start..].find("</table>").unwrap();
        // The header row and one row per entry.
        assert_eq!(
            dom[start..end].matches("<tr").count(),
            1 + rows,
            "{name}: {}",
            &dom[start..end]
        );
        if let Some(plot) = plot {
            // Every row plots its interval, with a hover naming it, on the header's axis.
            let p = dom
                .find(&format!("id=\"{plot}\""))
                .unwrap_or_else(|| panic!("{name}: no plot"));
            assert!(dom[p..end].contains("<svg"), "{name}: the axis is an SVG");
            assert_eq!(
                dom[start..end].matches("<circle").count(),
                rows,
                "{name}: a point per row"
            );
            assert_eq!(
                dom[start..end].matches("<title>").count(),
                rows,
                "{name}: a hover per row"
            );
        }
        // Deadlines and times are shown in the reader's time zone by the page's script.
        if name == "cohort" {
            assert!(
                dom.contains("(in "),
                "{name}: a countdown to the deadline: {dom}"
            );
        }
        for (size, suffix) in [("1280,900", ""), ("390,844", "-phone")] {
            let png = out.join(format!("{name}{suffix}.png"));
            let _ = std::fs::remove_file(&png);
            run(
                &[
                    format!("--window-size={size}"),
                    format!("--screenshot={}", png.display()),
                ],
                &url,
            );
            let bytes = std::fs::read(&png).unwrap_or_else(|_| panic!("{name}: no screenshot"));
            assert!(
                bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
                "{name}: a real screenshot"
            );
        }
    }
}

fn tag() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 1_000_000
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaderboard_on_a_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let data: PathBuf = dir.path().join("data");
    let t = tag();
    {
        let s = serve(&data, None, 30);
        suite(&s, &t).await;
        in_chromium(&s, &format!("perf-{t}"));
    }
    assert!(data.join("leaderboard.db").is_file());
    // A restarted server has everything (the migrations do not run twice).
    let s = serve(&data, None, 30);
    let o: Overview = Client::new(&s.base, None)
        .get(&format!("/api/cohorts/perf-{t}"))
        .await
        .unwrap();
    assert_eq!(o.students, 4);
    assert_eq!(o.labs.len(), 1);
    assert_eq!((o.labs[0].submitted, o.labs[0].passed), (4, 2));
}

/// What a student who wants the grade without the work tries, and bad input an instructor's
/// roster or a client can carry (issue 35): each refused with its reason, nothing stored, the
/// instructor shown who matched whom, every state change in the server's log.
/// Run on SQLite here and on PostgreSQL after the suite there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_replays_forgeries_and_bad_input_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(&dir.path().join("data"), None, 200);
    copies(&s, "copies").await;
}

async fn copies(s: &Server, cohort: &str) {
    // Keys (and so the synthetic figures) apart from the suite's, which may run on the same
    // database: another cohort's same figures would be refused as a copy, as they should.
    let k = |key: &str| format!("c-{key}");
    let anon = Client::new(&s.base, None);
    let admin = anon.with_token(Some(&s.admin));
    let (_, created): (_, CohortCreated) = admin
        .send(
            Method::POST,
            "/api/cohorts",
            &NewCohort {
                id: cohort.into(),
                name: "Copies".into(),
                daily_limit: Some(50),
            },
        )
        .await
        .unwrap();
    let instructor = anon.with_token(Some(&created.instructor_token));
    let roster = format!("/api/cohorts/{cohort}/roster");
    // Ids that are not safe slugs, and names carrying control or bidi characters.
    for (bad, why) in [
        ("student\n..\n", "roster line 2: student"),
        ("student\n.\n", "roster line 2: student"),
        ("student\n-A1\n", "roster line 2: student"),
        ("student,name\nmal,Bell\u{7}\n", "roster line 2: name"),
        ("student,name\nmal,\u{1b}[31mRed\n", "roster line 2: name"),
        (
            "student,name\nmal,Eve\u{202E}gnp.exe\n",
            "roster line 2: name",
        ),
    ] {
        let a = instructor
            .raw(
                Method::POST,
                &roster,
                Some("text/csv"),
                bad.as_bytes().to_vec(),
            )
            .await
            .unwrap();
        assert_eq!(
            a.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad:?}: {}",
            a.text()
        );
        assert!(a.text().contains(why), "{bad:?}: {}", a.text());
    }
    let (_, imported): (_, RosterImported) = serde_json::from_str::<RosterImported>(
        &instructor
            .raw(
                Method::POST,
                &roster,
                Some("text/csv"),
                b"student,name\nada,Ada\nbob,Bob\ncy,Cy\n".to_vec(),
            )
            .await
            .unwrap()
            .text(),
    )
    .map(|r| ((), r))
    .unwrap();
    let token = |who: &str| {
        let t = imported.issued.iter().find(|t| t.student == who).unwrap();
        anon.with_token(Some(&t.token))
    };
    let (ada, bob, cy) = (token("ada"), token("bob"), token("cy"));
    let open = LabSettings {
        opens_at: None,
        closes_at: "2099-01-01T00:00:00Z".into(),
        grading: None,
    };
    for lab in [9, 11] {
        let (st, body) = status_of(
            &instructor,
            Method::PUT,
            &format!("/api/cohorts/{cohort}/labs/{lab}"),
            &open,
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    let submit = format!("/api/cohorts/{cohort}/submissions");
    let rule = course_rule(11);
    let ada_upload = bundle(&rule, &k("ada-check-0001-aaaa"), 0.30, 0.01, "all.leak=off");
    let (st, body) = status_of(&ada, Method::POST, &submit, &ada_upload).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");

    // 1. Ada's exact bundle replayed under bob's token.
    // 2. Ada's figures paired with another change (its sha256 made to match).
    // 3. Ada's figures and so her ratio scaled by 0.5 (the ratio recomputes the same).
    let mut other_change = ada_upload.clone();
    other_change.change = "all.leak=off\nparse.workers=2".into();
    other_change.bundle.change_sha256 =
        observatory_leaderboard::sha256_hex(other_change.change.as_bytes());
    other_change.bundle.idempotency_key = k("bob-check-0002-bbbb");
    let mut scaled = ada_upload.clone();
    scaled.bundle.idempotency_key = k("bob-check-0003-cccc");
    if let Some(observatory_stats::Figures::Samples { a, b }) = scaled.bundle.figures.as_mut() {
        a.iter_mut().chain(b.iter_mut()).for_each(|x| *x *= 0.5);
    }
    scaled.bundle.ratio = scaled.bundle.figures.as_ref().map(|f| f.ratio());
    for (what, forged, words) in [
        ("a replay", &ada_upload, "the same figures"),
        ("another change", &other_change, "the same figures"),
        (
            "scaled figures",
            &scaled,
            "the same samples, reordered, rescaled or nudged",
        ),
    ] {
        let (st, body) = status_of(&bob, Method::POST, &submit, forged).await;
        assert_eq!(st, StatusCode::CONFLICT, "{what}: {body}");
        assert!(body.contains(words), "{what}: {body}");
        assert!(
            !body.contains("ada"),
            "the student is not told whose: {body}"
        );
    }
    assert_eq!(history_len(&anon, cohort, "bob").await, 0, "nothing stored");
    // bob's own check is accepted; the same student resubmitting his figures is not a copy.
    let bob_own = bundle(
        &rule,
        &k("bob-check-0004-dddd"),
        0.31,
        0.012,
        "all.leak=off",
    );
    let (st, body) = status_of(&bob, Method::POST, &submit, &bob_own).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let mut bob_again = bob_own.clone();
    bob_again.bundle.idempotency_key = k("bob-check-0005-eeee");
    let (st, body) = status_of(&bob, Method::POST, &submit, &bob_again).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");

    // A reused idempotency key with another body: 409, not a silent drop.
    let mut reused = bundle(&rule, &k("ada-check-0001-aaaa"), 0.29, 0.01, "all.leak=off");
    reused.bundle.checked_at = "2026-12-06T00:00:00Z".into();
    let (st, body) = status_of(&ada, Method::POST, &submit, &reused).await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    assert!(
        body.contains("idempotency key was used for another bundle"),
        "{body}"
    );
    let (st, _) = status_of(&ada, Method::POST, &submit, &ada_upload).await;
    assert_eq!(st, StatusCode::OK, "the same bundle again is a retry");

    // Check times and machines that cannot be.
    for (i, (at, cores, why)) in [
        ("not a time", 2, "checked_at"),
        ("2099-01-01T00:00:00Z", 2, "between 2025 and now"),
        ("2019-01-01T00:00:00Z", 2, "between 2025 and now"),
        ("2026-12-05T00:00:00Z", 0, "cores 0"),
        ("2026-12-05T00:00:00Z", u32::MAX, "cores 4294967295"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut b = bundle(
            &rule,
            &k(&format!("cy-check-000{i}-ffff")),
            0.33 + i as f64 / 100.0,
            0.01,
            "all.leak=off",
        );
        b.bundle.checked_at = at.into();
        b.bundle.fingerprint.cores = cores;
        let (st, body) = status_of(&cy, Method::POST, &submit, &b).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{at} {cores}: {body}");
        assert!(body.contains(why), "{why}: {body}");
    }
    assert_eq!(history_len(&anon, cohort, "cy").await, 0);

    // A code lab: ada's and cy's code is the same once comments and whitespace are out.
    let rule9 = course_rule(9);
    let ada_code = "fn student(key: &str) -> u32 {\n    // one hash\n    let h = fnv(key);\n    (h % 64) as u32\n}\n";
    let cy_code = "fn student(key:&str)->u32{ let h=fnv(key); (h % 64) as u32 }";
    let bob_code = "fn student(key: &str) -> u32 {\n    key.bytes().fold(7u32, |n, b| n.rotate_left(5) ^ b as u32) & 63\n}\n";
    for (who, key, factor, code) in [
        (&ada, &k("ada-lab9-0001-aaaa"), 0.52, ada_code),
        (&cy, &k("cy-lab9-0001-aaaaa"), 0.55, cy_code),
        (&bob, &k("bob-lab9-0001-aaaa"), 0.58, bob_code),
    ] {
        let (st, body) = status_of(
            who,
            Method::POST,
            &submit,
            &bundle(&rule9, key, factor, 0.01, code),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED, "{body}");
    }

    // One verification, then the instructor's view of copies.
    // A student's first submission to lab 11, from their public page.
    let lab11 = |student: &'static str| {
        let anon = anon.clone();
        async move {
            let v: StudentView = anon
                .get(&format!("/api/cohorts/{cohort}/students/{student}"))
                .await
                .unwrap();
            v.submissions
                .iter()
                .find(|h| h.lab == 11)
                .unwrap()
                .id
                .clone()
        }
    };
    let ada_sub = lab11("ada").await;
    let (st, body) = status_of(
        &instructor,
        Method::POST,
        &format!("/api/cohorts/{cohort}/submissions/{ada_sub}/verification"),
        &Verification {
            passed: true,
            ratio: Some(RatioInterval {
                ratio: 0.301,
                low: 0.295,
                high: 0.31,
            }),
            machine: "instructor box".into(),
        },
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    // A re-run that did not pass is "verified failed", not flagged (a review found it shown as
    // flagged, in red, beside the same figures).
    let bob_sub = lab11("bob").await;
    let (_, v): (_, Verified) = instructor
        .send(
            Method::POST,
            &format!("/api/cohorts/{cohort}/submissions/{bob_sub}/verification"),
            &Verification {
                passed: false,
                ratio: Some(RatioInterval {
                    ratio: 0.31,
                    low: 0.30,
                    high: 0.32,
                }),
                machine: "instructor box".into(),
            },
        )
        .await
        .unwrap();
    assert!(!v.agrees && !v.flagged, "{v:?}");
    // A bundle whose text would forge a line of the server's log is refused, and the log
    // quotes it escaped.
    let mut forged = bundle(&rule, &k("cy-check-0100-ffff"), 0.33, 0.01, "all.leak=off");
    forged.bundle.metric =
        "peak_rss\n2026-12-08T01:40:00.000000Z  INFO forged: verification recorded".into();
    let (st, body) = status_of(&cy, Method::POST, &submit, &forged).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let export: Export = instructor
        .get(&format!("/api/cohorts/{cohort}/export.json"))
        .await
        .unwrap();
    let bob_row = export.submissions.iter().find(|r| r.id == bob_sub).unwrap();
    assert_eq!(
        (bob_row.standing, bob_row.flagged),
        (observatory_leaderboard::Standing::VerifiedFailed, false)
    );
    let refused: Vec<(&str, u32, &str)> = export
        .copies
        .refused
        .iter()
        .map(|r| (r.student.as_str(), r.lab, r.what.as_str()))
        .collect();
    assert_eq!(refused.len(), 3, "{refused:?}");
    for (student, lab, what) in &refused {
        assert_eq!((*student, *lab), ("bob", 11));
        assert!(
            what.contains(&ada_sub) && what.ends_with("of ada"),
            "{what}"
        );
    }
    let alike: Vec<(u32, &str, &str, f64)> = export
        .copies
        .alike
        .iter()
        .map(|a| (a.lab, a.student.as_str(), a.other.as_str(), a.similarity))
        .collect();
    // Lab 9: the same code reformatted; lab 11 (a code lab too): both sent the same text.
    // bob's own lab-9 code is not listed.
    assert_eq!(alike, [(9, "ada", "cy", 1.0), (11, "ada", "bob", 1.0)]);
    assert_eq!(
        export.not_verified_yet, 4,
        "ada, bob and cy on lab 9, bob on lab 11 (ada's lab 11 is verified)"
    );
    let page = instructor
        .raw(
            Method::GET,
            &format!("/c/{cohort}/instructor"),
            None,
            vec![],
        )
        .await
        .unwrap()
        .text();
    assert!(
        page.contains("the same code as cy") && page.contains("PROVISIONAL"),
        "{page}"
    );

    // Every state change is in the log at the server's default level: who, what, when.
    let log = s.log_text();
    for line in [
        "cohort created",
        "roster imported",
        "lab opened or changed",
        "submission stored",
        "upload refused as a copy",
        "upload refused",
        "verification recorded",
    ] {
        assert!(
            log.contains(line),
            "{line:?} is not in the server's log:\n{log}"
        );
    }
    // Refusals of every kind are logged with their reason; nothing a bundle carries starts a
    // line of its own.
    assert!(
        log.contains("idempotency key was used for another bundle"),
        "{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.starts_with("2026-12-08T01:40:00.000000Z  INFO forged")),
        "a forged log line:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaderboard_on_postgresql() {
    let Ok(url) = std::env::var("OBSERVATORY_TEST_POSTGRES_URL") else {
        eprintln!(
            "SKIPPED: the PostgreSQL half of the leaderboard suite: OBSERVATORY_TEST_POSTGRES_URL is not set (.ci/run starts Debian's PostgreSQL and sets it)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = serve(&dir.path().join("data"), Some(&url), 30);
    let t = tag();
    suite(&s, &t).await;
    copies(&s, &format!("copies-{t}")).await;
}
