//! The pages' plots (plotters, SVG into a string): a lab's strip plot (every student's ratio
//! with its interval, best first, and the lab's pass bound as a line) and a student's history
//! (ratio over time, per lab).

use crate::wire::{BoardView, HistoryRow};
use plotters::prelude::*;

const BAND_1: RGBColor = RGBColor(31, 119, 180);
const OTHER: RGBColor = RGBColor(120, 120, 120);
const FLAG: RGBColor = RGBColor(214, 39, 40);
const BOUND: RGBColor = RGBColor(44, 160, 44);
/// One strong colour per lab (matplotlib's category10), so that a point reads on white.
const LABS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn span(values: impl Iterator<Item = f64>, bound: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (bound, bound);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let pad = ((hi - lo) * 0.08).max(0.02);
    ((lo - pad).max(0.0), hi + pad)
}

/// The strip plot of a board: one row per student (best at the top).
pub fn strip(board: &BoardView) -> Result<String, String> {
    let rows: Vec<_> = board
        .rows
        .iter()
        .filter_map(|r| Some((r, r.ratio?, r.low?, r.high?)))
        .collect();
    let n = rows.len().max(1);
    // 14 px a row up to 40 rows, then the plot stops growing and rows get thinner.
    let height = 90 + (n.min(40) * 14) as u32;
    let (lo, hi) = span(rows.iter().flat_map(|(_, _, l, h)| [*l, *h]), board.bound);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(12)
            .build_cartesian_2d(lo..hi, (n as f64 + 0.5)..0.5)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .disable_y_mesh()
            .disable_y_axis()
            .x_desc(format!(
                "B/A ({} is better); the line: the pass bound {:.3}",
                match board.better {
                    observatory_stats::Better::Lower => "lower",
                    observatory_stats::Better::Higher => "higher",
                },
                board.bound
            ))
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(
                [(board.bound, 0.5), (board.bound, n as f64 + 0.5)],
                BOUND.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
        for (i, (r, ratio, low, high)) in rows.iter().enumerate() {
            let y = (i + 1) as f64;
            let color = if r.flagged {
                FLAG
            } else if r.band == 1 {
                BAND_1
            } else {
                OTHER
            };
            chart
                .draw_series(LineSeries::new(
                    [(*low, y), (*high, y)],
                    color.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series([Circle::new((*ratio, y), 4, color.filled())])
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// A student's history: each lab's ratios in the order submitted.
pub fn history(rows: &[HistoryRow]) -> Result<String, String> {
    let points: Vec<(usize, u32, f64, f64, f64)> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let x = r.ratio?;
            Some((i + 1, r.lab, x.ratio, x.low, x.high))
        })
        .collect();
    let n = rows.len().max(1);
    let (lo, hi) = span(points.iter().flat_map(|p| [p.3, p.4]), 1.0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 300)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(50)
            .build_cartesian_2d(0.5..(n as f64 + 0.5), lo..hi)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc("submission, oldest first (one colour per lab; the grey line: no change)")
            .y_desc("B/A")
            .x_labels(n.min(12))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(
                [(0.5, 1.0), (n as f64 + 0.5, 1.0)],
                OTHER.stroke_width(1),
            ))
            .map_err(|e| e.to_string())?;
        for (i, lab, ratio, low, high) in &points {
            let x = *i as f64;
            let color = LABS[*lab as usize % LABS.len()];
            chart
                .draw_series(LineSeries::new(
                    [(x, *low), (x, *high)],
                    color.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series([Circle::new((x, *ratio), 5, color.filled())])
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}
