//! Write the fuzz targets' seeds (`pipeline::fuzzing::seeds`) into a corpus folder:
//! `cargo run --release -p pipeline --example fuzz_seeds -- fuzz/corpus`.

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .context("usage: fuzz_seeds CORPUS_DIR (e.g. fuzz/corpus)")?;
    if dir == "--help" || dir == "-h" {
        println!("usage: fuzz_seeds CORPUS_DIR: writes seed-NAME files under CORPUS_DIR/TARGET/");
        return Ok(());
    }
    let mut n = 0;
    for (target, name, data) in pipeline::fuzzing::seeds() {
        let folder = std::path::Path::new(&dir).join(target);
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("creating {}", folder.display()))?;
        let path = folder.join(format!("seed-{name}"));
        std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
        n += 1;
    }
    eprintln!("wrote {n} seeds under {dir}");
    Ok(())
}
