//! Every query of every dashboard, against what the services really export.
//!
//! Two local pipelines run (labelled `side="baseline"` and `side="variant"`, like an A/B run),
//! with the operator binary beside them (serving its metrics while it waits for a cluster);
//! a real Prometheus (the Debian package) scrapes them all. Then, for each panel target,
//! annotation and variable of every dashboard:
//! - the PromQL parses (promql-parser), and every metric it names appears in a live scrape of
//!   the services (not in a hand-kept list);
//! - run through Prometheus's HTTP API after the runs, it returns data.
//!
//! Needs `prometheus` on PATH (`apt-get install prometheus`); fails without it unless
//! OBSERVATORY_SKIP_PROMETHEUS=1 says to skip (and it then says so).

use observatory_dashboards::{ALL, Place, label_values, queries, substitute};
use observatory_runner::http::get_ok;
use observatory_runner::local::{LocalOptions, LocalRun, find_pipeline_bin};
use observatory_testkit::{exposed_names, free_port, have, urlencode};
use pipeline_plan::Plan;
use promql_parser::parser::{Expr, parse};
use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Metric names a PromQL expression selects.
fn metric_names(e: &Expr, out: &mut BTreeSet<String>) {
    match e {
        Expr::Aggregate(a) => {
            metric_names(&a.expr, out);
            if let Some(p) = &a.param {
                metric_names(p, out);
            }
        }
        Expr::Unary(u) => metric_names(&u.expr, out),
        Expr::Binary(b) => {
            metric_names(&b.lhs, out);
            metric_names(&b.rhs, out);
        }
        Expr::Paren(p) => metric_names(&p.expr, out),
        Expr::Subquery(s) => metric_names(&s.expr, out),
        Expr::VectorSelector(v) => {
            out.extend(v.name.clone());
        }
        Expr::MatrixSelector(m) => {
            out.extend(m.vs.name.clone());
        }
        Expr::Call(c) => {
            for a in &c.args.args {
                metric_names(a, out);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn prom_json(prom: &str, path: &str) -> serde_json::Value {
    let body = get_ok(&format!("http://{prom}{path}"), Duration::from_secs(10))
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], "success", "{path}: {v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_parses_names_real_metrics_and_returns_data() {
    if !have("prometheus") {
        if std::env::var_os("OBSERVATORY_SKIP_PROMETHEUS").is_some() {
            eprintln!(
                "SKIPPED: prometheus is not installed and OBSERVATORY_SKIP_PROMETHEUS is set"
            );
            return;
        }
        panic!(
            "this test needs Prometheus: apt-get install prometheus (or set OBSERVATORY_SKIP_PROMETHEUS=1 to skip it)"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let pipeline_bin = find_pipeline_bin().unwrap();
    let operator_bin = pipeline_bin.with_file_name("operator");
    assert!(
        operator_bin.is_file(),
        "build the operator first: cargo build --release --bins"
    );

    // Two pipelines, baseline and variant, as an A/B run labels them.
    let mut runs = Vec::new();
    for (side, extra) in [
        ("baseline", "parse.mode=owned"),
        ("variant", "parse.mode=borrowed"),
    ] {
        let mut plan = Plan::new("lab");
        plan.labels.insert("side".into(), side.into());
        for a in [
            "source.events=400000",
            "source.rate=100000",
            "source.malformed_rate=0.01",
            "aggregate.window_ms=200",
            extra,
        ] {
            plan.assign(a).unwrap();
        }
        let opts = LocalOptions {
            pipeline_bin: pipeline_bin.clone(),
            workdir: dir.path().join(side),
            linger: Duration::from_secs(120),
        };
        runs.push(LocalRun::start(&plan, &opts).await.unwrap());
    }

    // The operator, with no cluster to reach: it serves its metrics meanwhile.
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster: {server: \"https://127.0.0.1:1\"}\n  name: c\ncontexts:\n- context: {cluster: c, user: u}\n  name: x\ncurrent-context: x\nusers:\n- name: u\n  user: {token: t}\n",
    )
    .unwrap();
    let operator_admin = format!("127.0.0.1:{}", free_port());
    let _operator = Killed(
        Command::new(&operator_bin)
            .args(["run", "--no-leader-election", "--admin", &operator_admin])
            .env("KUBECONFIG", &kubeconfig)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("operator.log")).unwrap())
            .spawn()
            .unwrap(),
    );

    // A real Prometheus scraping every admin port.
    let mut targets: Vec<String> = runs
        .iter()
        .flat_map(|r| r.stages.iter().map(|s| s.ready.admin_addr.clone()))
        .collect();
    targets.push(operator_admin.clone());
    let config = dir.path().join("prometheus.yml");
    let quoted: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: observatory\n    static_configs:\n      - targets: [{}]\n", quoted.join(", ")),
    )
    .unwrap();
    let prom = format!("127.0.0.1:{}", free_port());
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={prom}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .unwrap(),
    );

    let ready_by = tokio::time::Instant::now() + Duration::from_secs(30);
    while get_ok(&format!("http://{prom}/-/ready"), Duration::from_secs(2))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < ready_by,
            "prometheus did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Wait for both runs to finish and for every target to be scraped after that.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let finished = prom_json(
            &prom,
            &format!(
                "/api/v1/query?query={}",
                urlencode("count(pipeline_stage_finished_timestamp_seconds > 0)")
            ),
        )
        .await;
        // Rates need at least two samples in their window: every target scraped three times.
        let up = prom_json(
            &prom,
            &format!(
                "/api/v1/query?query={}",
                urlencode("count(count_over_time(up[1m]) >= 3)")
            ),
        )
        .await;
        let n = |v: &serde_json::Value| {
            v["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|s| s.parse::<usize>().ok())
                .unwrap_or(0)
        };
        if n(&finished) == 8 && n(&up) == targets.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "runs did not finish and get scraped in time"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // What the services really export, from a live scrape of each.
    let mut exported = BTreeSet::new();
    for t in &targets {
        let body = get_ok(&format!("http://{t}/metrics"), Duration::from_secs(5))
            .await
            .unwrap();
        exported.extend(exposed_names(&String::from_utf8_lossy(&body)));
    }
    assert!(
        exported.contains("pipeline_events_persisted_total")
            && exported.contains("observatory_operator_reconciliations_total")
    );

    let vars = [
        ("__rate_interval", "1m"),
        ("__range", "10m"),
        ("pipeline", ".*"),
        ("stage", "aggregate"),
        ("baseline", "baseline"),
        ("variant", "variant"),
    ];
    let mut failures = Vec::new();
    let mut checked = 0;
    for d in ALL {
        for q in queries(&d) {
            let expr = substitute(&q.expr, &vars);
            let where_ = format!("{} / {:?}", q.dashboard, q.place);
            // Variables are Grafana's `label_values(selector, label)`: check the selector.
            let (promql, label) = match (&q.place, label_values(&expr)) {
                (Place::Variable(_), Some((sel, label))) => {
                    (sel.to_string(), Some(label.to_string()))
                }
                (Place::Variable(_), None) => {
                    failures.push(format!("{where_}: not label_values(...): {expr}"));
                    continue;
                }
                _ => (expr.clone(), None),
            };
            let ast = match parse(&promql) {
                Ok(ast) => ast,
                Err(e) => {
                    failures.push(format!("{where_}: does not parse: {e}: {promql}"));
                    continue;
                }
            };
            let mut names = BTreeSet::new();
            metric_names(&ast, &mut names);
            for n in names.iter().filter(|n| !exported.contains(*n)) {
                failures.push(format!("{where_}: names `{n}`, which no service exports"));
            }
            let has_data = match &label {
                Some(label) => {
                    let v = prom_json(
                        &prom,
                        &format!(
                            "/api/v1/label/{label}/values?match[]={}",
                            urlencode(&promql)
                        ),
                    )
                    .await;
                    !v["data"].as_array().unwrap().is_empty()
                }
                None => {
                    let v = prom_json(
                        &prom,
                        &format!("/api/v1/query?query={}", urlencode(&promql)),
                    )
                    .await;
                    !v["data"]["result"].as_array().unwrap().is_empty()
                }
            };
            if !has_data {
                failures.push(format!("{where_}: returned no data: {promql}"));
            }
            checked += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} queries failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 50, "{checked} queries checked");
    eprintln!("{checked} dashboard queries parse, name exported metrics, and return data");
    for r in &mut runs {
        r.signal(libc::SIGTERM);
    }
}

#[test]
fn metric_names_are_found_in_every_kind_of_expression() {
    let ast = parse("histogram_quantile(0.9, sum by (le) (rate(a_bucket[1m]))) / on (x) (b - c offset 5m) and max_over_time(d[5m:1m])").unwrap();
    let mut names = BTreeSet::new();
    metric_names(&ast, &mut names);
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["a_bucket", "b", "c", "d"]
    );
    let text = "# HELP x y\n# TYPE x counter\nx{a=\"1\"} 2\ny 3\nz_bucket{le=\"+Inf\"} 1\n";
    assert_eq!(
        exposed_names(text).into_iter().collect::<Vec<_>>(),
        ["x", "y", "z_bucket"]
    );
}
