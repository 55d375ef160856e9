//! Flamegraphs from collapsed stacks (inferno): one per stage, and the differential one that
//! shows which functions got cheaper (blue) or dearer (red) from A to B.

use std::io::BufWriter;
use std::path::Path;

/// A small SVG that says why there is no flamegraph.
pub fn empty_svg(title: &str, note: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1200\" height=\"80\"><text x=\"600\" y=\"30\" text-anchor=\"middle\" font-size=\"17\">{title}</text><text x=\"600\" y=\"60\" text-anchor=\"middle\" font-size=\"14\">{note}</text></svg>\n"
    )
}

/// Render collapsed stacks (`a;b;c 12` lines) as a flamegraph SVG.
pub fn render(folded: &str, title: &str, out: &Path) -> anyhow::Result<()> {
    if folded.trim().is_empty() {
        std::fs::write(
            out,
            empty_svg(
                title,
                "no CPU samples: the stage was idle while profiled, or its work ended before the profile started",
            ),
        )?;
        return Ok(());
    }
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = title.to_string();
    let file = BufWriter::new(std::fs::File::create(out)?);
    inferno::flamegraph::from_lines(&mut opts, folded.lines(), file)?;
    Ok(())
}

/// Render the differential flamegraph from `before` (A) to `after` (B), counts normalised so a
/// longer profile on one side does not paint everything red. It is drawn in A's shape, so what
/// B no longer does (say, the allocations borrowed parsing avoids) is still there to see:
/// blue where B spends less of its CPU, red where it spends more.
pub fn diff(before: &str, after: &str, title: &str, out: &Path) -> anyhow::Result<()> {
    if before.trim().is_empty() || after.trim().is_empty() {
        std::fs::write(
            out,
            empty_svg(title, "no differential: a side has no CPU samples"),
        )?;
        return Ok(());
    }
    let mut diffed = Vec::new();
    let opts = inferno::differential::Options {
        normalize: true,
        strip_hex: true,
    };
    // Differences of A over B, in A's shape; negated hues then read from B's point of view.
    inferno::differential::from_readers(opts, after.as_bytes(), before.as_bytes(), &mut diffed)?;
    let mut fopts = inferno::flamegraph::Options::default();
    fopts.title = title.to_string();
    fopts.subtitle = Some("frames of A; blue: less of the CPU in B, red: more".to_string());
    fopts.negate_differentials = true;
    let file = BufWriter::new(std::fs::File::create(out)?);
    inferno::flamegraph::from_reader(&mut fopts, diffed.as_slice(), file)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_flamegraph_and_a_differential_one() {
        let dir = tempfile::tempdir().unwrap();
        let before = "main;parse_into;alloc 60\nmain;parse_into;serde 30\nmain;write 10\n";
        let after = "main;parse_into;serde 30\nmain;write 10\n";
        render(before, "A", &dir.path().join("a.svg")).unwrap();
        let a = std::fs::read_to_string(dir.path().join("a.svg")).unwrap();
        assert!(a.contains("<svg") && a.contains("parse_into"));
        diff(before, after, "A to B", &dir.path().join("d.svg")).unwrap();
        let d = std::fs::read_to_string(dir.path().join("d.svg")).unwrap();
        assert!(d.contains("parse_into") && d.contains("A to B"));
        // The frame B no longer runs is still drawn (A's shape), marked as shrunk.
        assert!(d.contains("alloc"), "the vanished frame is in the diff");
        assert!(d.contains("frames of A"));
        render("", "idle", &dir.path().join("e.svg")).unwrap();
        assert!(
            std::fs::read_to_string(dir.path().join("e.svg"))
                .unwrap()
                .contains("no CPU samples")
        );
    }
}
