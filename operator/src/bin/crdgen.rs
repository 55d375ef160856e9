//! `crdgen`: write the `Pipeline` and `Experiment` CRDs as YAML, generated from the Rust types.
//!
//! `crdgen` prints it; `crdgen --out deploy/base/crd.yaml` writes the file that `deploy/`
//! applies (a test fails when the committed file differs from what the code generates).

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    about = "Write the Pipeline and Experiment CustomResourceDefinitions as YAML, generated from the operator's types."
)]
struct Args {
    /// Write to this file instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let yaml = operator::pipeline::crd::crd_yaml()?;
    match args.out {
        Some(path) => {
            std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{yaml}"),
    }
    Ok(())
}
