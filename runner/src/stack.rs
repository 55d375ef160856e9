//! The observability stack around a local run, from whatever is installed: Prometheus
//! (`prometheus` on PATH, e.g. the Debian package) scraping every stage every second, and
//! Grafana (`grafana-server` or `grafana`) with the observatory's dashboards provisioned from
//! the same files Kubernetes mounts. What is missing is said in one line; the run goes on.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// A service of the stack, stopped when dropped.
pub struct Service {
    pub url: String,
    _child: Child,
}

/// Prometheus and Grafana, each if it could be started.
pub struct Stack {
    pub prometheus: Option<Service>,
    pub grafana: Option<Service>,
    /// One line per service: where it is, or why it is not there.
    pub notes: Vec<String>,
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `preferred` if it is free, else any free port.
fn port(preferred: u16) -> u16 {
    TcpListener::bind(("127.0.0.1", preferred))
        .or_else(|_| TcpListener::bind(("127.0.0.1", 0)))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(preferred)
}

async fn wait_ok(url: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if crate::http::get_ok(url, Duration::from_secs(1))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The Prometheus config for a local run: every admin address, scraped every second.
pub fn prometheus_config(targets: &[String]) -> String {
    let quoted: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "# Written by observatory for a local run.\nglobal:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: observatory\n    static_configs:\n      - targets: [{}]\n",
        quoted.join(", ")
    )
}

fn spawn(cmd: &mut Command, log: &Path) -> std::io::Result<Child> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(log)?))
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe; the service dies with the runner.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn()
}

async fn start_prometheus(dir: &Path, targets: &[String]) -> Result<Service, String> {
    let bin = on_path("prometheus").ok_or("Prometheus and Grafana: not started, prometheus is not installed (apt-get install prometheus); the metrics stay on each stage's /metrics")?;
    let dir = dir.join("prometheus");
    std::fs::create_dir_all(&dir).map_err(|e| format!("Prometheus: {e}"))?;
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, prometheus_config(targets)).map_err(|e| format!("Prometheus: {e}"))?;
    let addr = format!("127.0.0.1:{}", port(9090));
    let child = spawn(
        Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}")),
        &dir.join("prometheus.log"),
    )
    .map_err(|e| format!("Prometheus: could not start: {e}"))?;
    let url = format!("http://{addr}");
    if !wait_ok(&format!("{url}/-/ready"), Duration::from_secs(15)).await {
        return Err(format!(
            "Prometheus: did not become ready; see {}",
            dir.join("prometheus.log").display()
        ));
    }
    Ok(Service { url, _child: child })
}

async fn start_grafana(dir: &Path, prometheus_url: &str) -> Result<Service, String> {
    let (bin, sub) = match (on_path("grafana-server"), on_path("grafana")) {
        (Some(b), _) => (b, None),
        (None, Some(b)) => (b, Some("server")),
        (None, None) => return Err("Grafana: not installed; the dashboards are in dashboards/ (import them into any Grafana)".into()),
    };
    let home = std::env::var("GRAFANA_HOME").unwrap_or_else(|_| "/usr/share/grafana".into());
    let dir = dir.join("grafana");
    let provisioning = observatory_dashboards::write_provisioning(&dir, prometheus_url)
        .map_err(|e| format!("Grafana: {e}"))?;
    let port = port(3000);
    let mut cmd = Command::new(bin);
    if let Some(s) = sub {
        cmd.arg(s);
    }
    cmd.arg("--homepath")
        .arg(&home)
        .env("GF_PATHS_PROVISIONING", &provisioning)
        .env("GF_PATHS_DATA", dir.join("data"))
        .env("GF_PATHS_LOGS", dir.join("logs"))
        .env("GF_SERVER_HTTP_ADDR", "127.0.0.1")
        .env("GF_SERVER_HTTP_PORT", port.to_string())
        .env("GF_AUTH_ANONYMOUS_ENABLED", "true")
        .env("GF_AUTH_ANONYMOUS_ORG_ROLE", "Viewer")
        .env("GF_ANALYTICS_REPORTING_ENABLED", "false")
        .env("GF_ANALYTICS_CHECK_FOR_UPDATES", "false");
    let child = spawn(&mut cmd, &dir.join("grafana.log"))
        .map_err(|e| format!("Grafana: could not start: {e}"))?;
    let url = format!("http://127.0.0.1:{port}");
    if !wait_ok(&format!("{url}/api/health"), Duration::from_secs(60)).await {
        return Err(format!(
            "Grafana: did not become healthy; see {}",
            dir.join("grafana.log").display()
        ));
    }
    Ok(Service { url, _child: child })
}

/// Start what is installed, scraping `targets` (admin addresses). Never fails the run.
pub async fn start(dir: &Path, targets: &[String]) -> Stack {
    let mut notes = Vec::new();
    let prometheus = match start_prometheus(dir, targets).await {
        Ok(p) => {
            notes.push(format!(
                "Prometheus: {} (scraping {} stage processes every second; try pipeline_events_persisted_total)",
                p.url,
                targets.len()
            ));
            Some(p)
        }
        Err(why) => {
            notes.push(why);
            None
        }
    };
    let grafana = match &prometheus {
        // Already said, in the one line about Prometheus.
        None => None,
        Some(p) => match start_grafana(dir, &p.url).await {
            Ok(g) => {
                notes.push(format!(
                    "Grafana: {}/d/obs-pipeline-overview (Pipeline overview; also Stage detail, Lab comparison, Operator), anonymous viewer",
                    g.url
                ));
                Some(g)
            }
            Err(why) => {
                notes.push(why);
                None
            }
        },
    };
    Stack {
        prometheus,
        grafana,
        notes,
    }
}
