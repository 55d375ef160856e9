//! Plots of a measurement (plotters, SVG): one point per run, a line per side, so a reader sees
//! the spread and any drift, not just the medians.

use plotters::prelude::*;
use std::path::Path;

/// One line of a plot.
pub struct Line<'a> {
    pub label: String,
    pub values: &'a [f64],
    pub color: RGBColor,
}

pub const A_COLOR: RGBColor = RGBColor(31, 119, 180);
pub const B_COLOR: RGBColor = RGBColor(255, 127, 14);
pub const A_LIGHT: RGBColor = RGBColor(140, 190, 225);
pub const B_LIGHT: RGBColor = RGBColor(255, 190, 130);

/// Values per run (x: run 1..n of each side), scaled by `scale` for the axis unit.
pub fn per_run(
    out: &Path,
    title: &str,
    y_label: &str,
    scale: f64,
    lines: &[Line<'_>],
) -> anyhow::Result<()> {
    let n = lines
        .iter()
        .map(|l| l.values.len())
        .max()
        .unwrap_or(0)
        .max(1);
    let finite = || {
        lines
            .iter()
            .flat_map(|l| l.values.iter())
            .map(|v| v * scale)
            .filter(|v| v.is_finite())
    };
    let max = finite().fold(0.0f64, f64::max);
    let min = finite().fold(f64::INFINITY, f64::min);
    let (lo, hi) = if max > 0.0 {
        ((min * 0.9).max(0.0), max * 1.1)
    } else {
        (0.0, 1.0)
    };
    let root = SVGBackend::new(out, (900, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.5f64..(n as f64 + 0.5), lo..hi)?;
    chart
        .configure_mesh()
        .x_desc("run")
        .y_desc(y_label)
        .x_labels(n.min(20))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()?;
    for line in lines {
        let pts: Vec<(f64, f64)> = line
            .values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, v)| ((i + 1) as f64, v * scale))
            .collect();
        let color = line.color;
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(line.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg_with_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("t.svg");
        per_run(
            &out,
            "throughput",
            "M events/s",
            1e-6,
            &[
                Line {
                    label: "side-A".into(),
                    values: &[1.4e6, 1.5e6, 1.45e6],
                    color: A_COLOR,
                },
                Line {
                    label: "side-B".into(),
                    values: &[1.6e6, f64::NAN, 1.65e6],
                    color: B_COLOR,
                },
            ],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(
            svg.starts_with("<svg")
                && svg.contains("throughput")
                && svg.contains("side-A")
                && svg.contains("side-B"),
            "{svg}"
        );
        assert!(
            svg.matches("<circle").count() >= 5,
            "one point per finite run"
        );
    }
}
