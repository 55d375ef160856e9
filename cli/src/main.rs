//! `observatory`: the one user-facing command of the Rust Performance Observatory. This file
//! parses the arguments and dispatches; each command lives in its own module.

/// `println!` through [`out::write`]: a closed stdout ends the process quietly.
macro_rules! println {
    () => {
        $crate::out::write(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::out::write(format_args!($($arg)*), true)
    };
}

/// `print!` through [`out::write`].
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::out::write(format_args!($($arg)*), false)
    };
}

mod out;

mod args;
mod bench;
mod lab;
mod lab_dev;
mod lab_k8s;
mod leaderboard;
mod leaderboard_seed;
mod local;
mod verify_sandbox;

use args::{BenchCommand, BenchMode, Cli, Command, Sides};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One thread: the work happens in the stage processes; spawning children from one
    // long-lived thread also keeps their parent-death signal tied to this process. The
    // leaderboard server is the exception: it serves many clients on every core, and logs
    // every state change (who, what, when) at its default level.
    let serving = matches!(
        cli.command,
        Command::Leaderboard(leaderboard::LeaderboardCommand::Serve(_))
    );
    let default_filter = if serving {
        "warn,observatory_leaderboard_server=info,observatory::leaderboard=info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .init();
    let mut builder = if serving {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("observatory: error: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(w) => local::up(w).await,
            Command::Run { workload, json } => local::run(workload, json).await,
            Command::Knobs => {
                local::knobs();
                Ok(())
            }
            Command::Bench(BenchCommand::Ab {
                workload,
                sides,
                repeat,
                mode,
                stage,
            }) => match mode {
                BenchMode::Wall => bench::bench_ab(workload, sides, repeat, false).await,
                BenchMode::Instructions => {
                    bench::bench_instructions(workload, sides, repeat, &stage)
                }
            },
            Command::Bench(BenchCommand::Aa { workload, repeat }) => {
                let sides = Sides {
                    a_label: "A".into(),
                    a: vec![],
                    b_label: "A'".into(),
                    b: vec![],
                };
                bench::bench_ab(workload, sides, repeat, true).await
            }
            Command::Bench(BenchCommand::Compare {
                old,
                new,
                threshold,
            }) => match bench::bench_compare(&old, &new, threshold) {
                Ok(true) => Ok(()),
                Ok(false) => Err(anyhow::anyhow!(
                    "significant regression (see the table above)"
                )),
                Err(e) => Err(e),
            },
            Command::Bench(BenchCommand::Run { filter, json }) => bench::bench_run(filter, json),
            Command::Lab(cmd) => lab::run(cmd).await,
            Command::Leaderboard(cmd) => leaderboard::run(cmd).await,
            Command::Chaos { short, report_dir } => local::chaos(short, &report_dir).await,
            Command::Robustness { report_dir } => local::robustness(&report_dir).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("observatory: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
