//! The pages' plots, drawn inside their tables: each row carries a small SVG of its ratio (a
//! point) and 95% interval (a whisker) on an axis shared by the table, with the lab's pass
//! bound as a line, so every plotted row has its student's name, place and figures beside it,
//! a hover (`<title>`) and text the page's own size. Only the geometry is computed here; the
//! templates draw it.

use serde::Serialize;

/// The width of a row's plot, in CSS pixels (its SVG is drawn at this size, never scaled, so
/// its axis labels stay readable on a phone).
pub const WIDTH: f64 = 140.0;

/// One row's interval, in pixels from the plot's left edge.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Interval {
    pub low: f64,
    pub ratio: f64,
    pub high: f64,
}

/// The axis a table's plots share.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Axis {
    pub lo: f64,
    pub hi: f64,
    /// Where the pass bound is (pixels), and its value.
    pub bound_x: f64,
    pub bound: f64,
    /// Tick marks: (pixels, label).
    pub ticks: Vec<(f64, String)>,
    pub width: f64,
}

impl Axis {
    /// An axis spanning `values` (intervals' ends) and the bound, padded by 6%.
    pub fn new(values: impl Iterator<Item = f64>, bound: f64) -> Axis {
        let (mut lo, mut hi) = (bound, bound);
        for v in values.filter(|v| v.is_finite()) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        let pad = ((hi - lo) * 0.06).max(hi.abs() * 0.01).max(1e-9);
        let (lo, hi) = ((lo - pad).max(0.0), hi + pad);
        let mut axis = Axis {
            lo,
            hi,
            bound_x: 0.0,
            bound,
            ticks: Vec::new(),
            width: WIDTH,
        };
        axis.bound_x = axis.x(bound);
        // Three ticks: the ends and the middle, at a precision that tells them apart.
        let digits = if hi - lo >= 1.0 {
            2
        } else if hi - lo >= 0.1 {
            3
        } else {
            4
        };
        axis.ticks = [lo, (lo + hi) / 2.0, hi]
            .iter()
            .map(|v| (axis.x(*v), format!("{v:.digits$}")))
            .collect();
        axis
    }

    /// Pixels from the left edge for `v` (clamped to the plot).
    pub fn x(&self, v: f64) -> f64 {
        let x = (v - self.lo) / (self.hi - self.lo) * self.width;
        (x.clamp(0.0, self.width) * 10.0).round() / 10.0
    }

    pub fn interval(&self, ratio: f64, low: f64, high: f64) -> Interval {
        Interval {
            low: self.x(low),
            ratio: self.x(ratio),
            high: self.x(high),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_axis_holds_every_interval_and_the_bound_inside_the_plot() {
        let a = Axis::new([0.30, 0.31, 0.29, 0.46].into_iter(), 0.5);
        assert!(a.lo < 0.29 && a.hi > 0.5, "{a:?}");
        let iv = a.interval(0.30, 0.29, 0.31);
        assert!(0.0 < iv.low && iv.low < iv.ratio && iv.ratio < iv.high && iv.high < a.bound_x);
        assert!(a.bound_x < WIDTH);
        assert_eq!(a.ticks.len(), 3);
        assert_eq!(a.ticks[0].0, 0.0);
        assert_eq!(a.ticks[2].0, WIDTH);
        // A value outside (a lying row) stays on the plot; one value alone still spans.
        assert_eq!(a.x(100.0), WIDTH);
        let one = Axis::new(std::iter::empty(), 2.0);
        assert!(one.lo < 2.0 && 2.0 < one.hi && one.x(2.0) > 0.0);
    }
}
