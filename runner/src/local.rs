//! Running a [`Plan`] as child processes on loopback: the same plan, knobs and stage configs
//! the operator renders for Kubernetes, started last stage first so every stage finds its
//! downstream. Ports are chosen by the stages themselves (port 0) and announced in ready files,
//! so there is no race for free ports.
//!
//! Children die with the runner (`PR_SET_PDEATHSIG`), so an interrupted runner leaves no
//! orphan process.

use anyhow::{Context, bail};
use pipeline::context::StageStats;
use pipeline::stage::ReadyInfo;
use pipeline_plan::{Plan, Role};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// Where and how to run.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// The `pipeline` binary.
    pub pipeline_bin: PathBuf,
    /// Working directory of the processes: configs, logs, ready and stats files, the sink's log.
    pub workdir: PathBuf,
    /// Keep admin ports up this long after the stream ends.
    pub linger: Duration,
}

/// One running stage process.
pub struct StageProc {
    pub role: Role,
    /// `parse`, or `parse-0`, `parse-1`, … when the stage has several replicas.
    pub name: String,
    pub ready: ReadyInfo,
    pub log: PathBuf,
    pub stats_file: PathBuf,
    child: Child,
    status: Option<ExitStatus>,
    /// When the runner saw the process exit.
    pub exited_at: Option<Instant>,
    /// The runner has reported this exit.
    reported: bool,
    /// Its config (a restart reuses it, with the ports it had).
    pub cfg: pipeline_plan::StageConfig,
    /// How often it was restarted.
    pub restarts: u32,
}

/// How a stage process ended, as people read it.
pub fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = status.signal() {
        let name = match sig {
            libc::SIGKILL => " (SIGKILL)",
            libc::SIGTERM => " (SIGTERM)",
            libc::SIGSEGV => " (SIGSEGV)",
            libc::SIGABRT => " (SIGABRT: a panic that aborted, or an abort)",
            libc::SIGBUS => " (SIGBUS)",
            libc::SIGINT => " (SIGINT)",
            _ => "",
        };
        format!("killed by signal {sig}{name}")
    } else {
        match status.code() {
            Some(c) => format!("exited with code {c}"),
            None => status.to_string(),
        }
    }
}

/// "killed by signal 9" -> "was killed by signal 9"; "exited with code 2" stays.
pub fn with_verb(how: &str) -> String {
    if how.starts_with("killed") {
        format!("was {how}")
    } else {
        how.to_string()
    }
}

/// The error a stage printed as it failed (`pipeline: error: ...`), if it did.
pub fn stage_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("pipeline: error: "))
        .map(str::to_string)
}

/// How one stage ended, after the run.
#[derive(Debug)]
pub struct StageEnd {
    pub name: String,
    pub role: Role,
    pub status: ExitStatus,
    /// Its final stats (`None` when it died without writing them).
    pub stats: Option<StageStats>,
    pub log: PathBuf,
}

impl StageProc {
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ready.admin_addr)
    }

    pub fn pid(&self) -> u32 {
        self.ready.pid
    }

    pub fn has_exited(&mut self) -> bool {
        if self.status.is_none()
            && let Ok(Some(s)) = self.child.try_wait()
        {
            self.status = Some(s);
            self.exited_at = Some(Instant::now());
        }
        self.status.is_some()
    }

    /// How it exited (`None` while it runs).
    pub fn status(&self) -> Option<ExitStatus> {
        self.status
    }
}

/// The last lines of a log, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Find the `pipeline` binary: `$PIPELINE_BIN`, next to this executable (or its parent, for
/// test binaries in `target/*/deps`), or on `PATH`.
pub fn find_pipeline_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("PIPELINE_BIN") {
        return Ok(PathBuf::from(p));
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let candidate = dir.join("pipeline");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("pipeline");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "cannot find the `pipeline` binary: build it (`cargo build --release`) or set PIPELINE_BIN"
    )
}

/// The run's shared token, in the work directory: every stage's data port admits only
/// connections that carry it (see `pipeline::admission`).
pub const TOKEN_FILE: &str = "pipeline.token";

/// A fresh random token, readable by the owner only.
fn write_token(path: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let token = pipeline_plan::new_token().context("making the run's token")?;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(token.as_bytes()))
        .with_context(|| format!("writing the run's token {}", path.display()))
}

/// A running pipeline.
pub struct LocalRun {
    /// In data-flow order.
    pub stages: Vec<StageProc>,
}

impl LocalRun {
    /// Start every stage of `plan`, last first, each once its downstream is listening.
    pub async fn start(plan: &Plan, opts: &LocalOptions) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&opts.workdir)
            .with_context(|| format!("creating {}", opts.workdir.display()))?;
        // The stages run inside the work directory: every path handed to them is absolute.
        let workdir = opts.workdir.canonicalize()?;
        write_token(&workdir.join(TOKEN_FILE))?;
        let mut stages: Vec<StageProc> = Vec::new();
        let mut downstream: Vec<String> = Vec::new();
        for stage in plan.stages().iter().rev() {
            let role = stage.role();
            if role == Role::Source && stage.replicas != 1 {
                bail!("the local runner runs one source (source.replicas = 1)");
            }
            let cfg = plan.stage_config(role, "127.0.0.1:0", "127.0.0.1:0", &downstream)?;
            let mut replicas = Vec::new();
            for i in 0..stage.replicas {
                let name = if stage.replicas == 1 {
                    role.to_string()
                } else {
                    format!("{role}-{i}")
                };
                let mut cfg = cfg.clone();
                cfg.replica = i;
                replicas.push(spawn_stage(opts, &workdir, name, &cfg).await?);
            }
            // The stage before this one connects to every replica of it.
            downstream = replicas
                .iter()
                .filter_map(|s| s.ready.data_addr.clone())
                .collect();
            // Started last stage first; kept in data-flow order, replicas in order.
            stages.splice(0..0, replicas);
        }
        Ok(LocalRun { stages })
    }

    /// Start stage `i` again, on the ports it had (its upstreams reconnect to the same
    /// address); the log of the one that died is kept as `<name>.<n>.log`.
    pub async fn restart(&mut self, i: usize, opts: &LocalOptions) -> anyhow::Result<()> {
        let workdir = opts.workdir.canonicalize()?;
        let old = &self.stages[i];
        let mut cfg = old.cfg.clone();
        if let Some(data) = &old.ready.data_addr {
            cfg.listen = data.clone();
        }
        cfg.admin = old.ready.admin_addr.clone();
        let restarts = old.restarts + 1;
        let kept = workdir.join(format!("{}.{}.log", old.name, restarts - 1));
        let _ = std::fs::rename(&old.log, &kept);
        let mut new = spawn_stage(opts, &workdir, old.name.clone(), &cfg).await?;
        new.restarts = restarts;
        self.stages[i] = new;
        Ok(())
    }

    pub fn stage(&self, role: Role) -> Option<&StageProc> {
        self.stages.iter().find(|s| s.role == role)
    }

    /// Whether every stage process has exited.
    pub fn all_exited(&mut self) -> bool {
        self.stages.iter_mut().all(StageProc::has_exited)
    }

    /// The stages that exited since the last call, by index.
    pub fn newly_exited(&mut self) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, s) in self.stages.iter_mut().enumerate() {
            if s.has_exited() && !s.reported {
                s.reported = true;
                out.push(i);
            }
        }
        out
    }

    /// Send a signal to every stage still running.
    pub fn signal(&mut self, sig: libc::c_int) {
        for s in &mut self.stages {
            if !s.has_exited() {
                // SAFETY: kill with a pid we spawned and have not reaped.
                unsafe {
                    libc::kill(s.pid() as libc::pid_t, sig);
                }
            }
        }
    }

    /// Live stats of every stage (`None` where the stage does not answer within 400 ms: a
    /// stopped or dead stage does not hold up the others' figures).
    pub async fn poll(&self) -> Vec<Option<StageStats>> {
        let polls = self.stages.iter().map(|s| async move {
            crate::http::get_ok(&s.admin_url("/stats"), Duration::from_millis(400))
                .await
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
        });
        futures::future::join_all(polls).await
    }

    /// Wait for every process to exit (killing the rest after `timeout`), then read their
    /// final stats: how each one ended, with its stats where it wrote them.
    pub async fn finish(mut self, timeout: Duration) -> Vec<StageEnd> {
        let deadline = Instant::now() + timeout;
        while !self.all_exited() {
            if Instant::now() >= deadline {
                tracing::warn!("stages did not exit within {timeout:?}; killing them");
                self.signal(libc::SIGKILL);
                for s in &mut self.stages {
                    if let Ok(status) = s.child.wait().await {
                        s.status.get_or_insert(status);
                    }
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stages
            .into_iter()
            .filter_map(|s| {
                let status = s.status?;
                let stats = if status.success() {
                    std::fs::read(&s.stats_file)
                        .ok()
                        .and_then(|t| serde_json::from_slice(&t).ok())
                } else {
                    None
                };
                Some(StageEnd {
                    name: s.name,
                    role: s.role,
                    status,
                    stats,
                    log: s.log,
                })
            })
            .collect()
    }
}

/// Start one stage process from its config and wait until its ports are bound.
async fn spawn_stage(
    opts: &LocalOptions,
    workdir: &Path,
    name: String,
    cfg: &pipeline_plan::StageConfig,
) -> anyhow::Result<StageProc> {
    let file = |suffix: &str| workdir.join(format!("{name}{suffix}"));
    let (config, ready_file, stats_file, log) = (
        file(".toml"),
        file(".ready.json"),
        file(".stats.json"),
        file(".log"),
    );
    std::fs::write(&config, cfg.to_toml())
        .with_context(|| format!("writing {}", config.display()))?;
    for stale in [&ready_file, &stats_file] {
        let _ = std::fs::remove_file(stale);
    }
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(&opts.pipeline_bin);
    cmd.arg(cfg.role().as_str())
        .arg("--config")
        .arg(&config)
        .arg("--ready-file")
        .arg(&ready_file)
        .arg("--stats-out")
        .arg(&stats_file)
        .arg("--linger-seconds")
        .arg(opts.linger.as_secs_f64().to_string())
        .arg("--token-file")
        .arg(workdir.join(TOKEN_FILE))
        .current_dir(workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        // Own process group: a terminal's Ctrl-C reaches only the runner, which then drains
        // the stages with exactly one SIGTERM.
        .process_group(0)
        .kill_on_drop(true);
    // The plan is the only source of knobs: drop any stray overrides of the caller.
    for (var, _) in std::env::vars_os() {
        if var
            .to_string_lossy()
            .starts_with(pipeline_plan::KNOB_ENV_PREFIX)
        {
            cmd.env_remove(var);
        }
    }
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the child when this
    // (the spawning) thread exits.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    crate::sandbox::confine(cmd.as_std_mut(), crate::sandbox::Kind::Run);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", opts.pipeline_bin.display()))?;
    let ready = wait_ready(&name, &ready_file, &mut child, &log).await?;
    Ok(StageProc {
        role: cfg.role(),
        name,
        ready,
        log,
        stats_file,
        child,
        status: None,
        exited_at: None,
        reported: false,
        cfg: cfg.clone(),
        restarts: 0,
    })
}

async fn wait_ready(
    name: &str,
    file: &Path,
    child: &mut Child,
    log: &Path,
) -> anyhow::Result<ReadyInfo> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read(file) {
            return serde_json::from_slice(&text).context("parsing a ready file");
        }
        if let Some(status) = child.try_wait()? {
            match stage_error(log) {
                Some(error) => bail!(
                    "the {name} stage failed at start-up: {error}\n(the end of {}:)\n{}",
                    log.display(),
                    log_tail(log, 15)
                ),
                None => bail!(
                    "the {name} stage {} before it was ready; the end of {}:\n{}",
                    describe_exit(status),
                    log.display(),
                    log_tail(log, 15)
                ),
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "the {name} stage was not ready within 30 s; see {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
